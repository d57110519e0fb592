package k8se2e

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/edgelb/edgelb/cloudprovider/lbclient"
	"github.com/edgelb/edgelb/cloudprovider/servicemap"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

const waitFor = 60 * time.Second

// lbdMember is one lbd process of the loopback cluster.
type lbdMember struct {
	id, api, raft string
	cmd           *exec.Cmd
}

// lbdCluster is the real lbd the CCMs talk to: three members on loopback
// (control plane only), mutual TLS, every caller identified by its certificate.
type lbdCluster struct {
	pki     string // ca.crt and NAME.crt/NAME.key for every certificate issued
	members []*lbdMember
	admin   *lbclient.Client // the test's own view, as admin, over every endpoint
}

// adminCert names the test's own admin certificate; the CCMs' cloud-provider
// certificates are named after their tenants (cluster-a, cluster-b).
const adminCert = "e2e-admin"

func (l *lbdCluster) endpoints() []string {
	var eps []string
	for _, m := range l.members {
		eps = append(eps, m.api)
	}
	return eps
}

// files returns the CA, certificate and key files of certificate name.
func (l *lbdCluster) files(name string) (ca, cert, key string) {
	return filepath.Join(l.pki, "ca.crt"), filepath.Join(l.pki, name+".crt"), filepath.Join(l.pki, name+".key")
}

// dial opens a gRPC connection to one member with certificate name.
func (l *lbdCluster) dial(t *testing.T, api, name string) *grpc.ClientConn {
	t.Helper()
	ca, cert, key := l.files(name)
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cc, err := grpc.NewClient(api, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{kp}, RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// startLBD runs the real lbd as a three-member cluster (control plane only) on
// loopback with mutual TLS: `lbd certs` makes the CA, the members', an admin's
// and a cloud-provider certificate per tenant; members 2 and 3 join member 1.
// The pools are created as admin: pool-a open to cluster-a, pool-b to cluster-b.
func startLBD(t *testing.T, dir, bin string) *lbdCluster {
	l := &lbdCluster{pki: filepath.Join(dir, "pki")}
	certs := func(args ...string) {
		if out, err := exec.Command(bin, append([]string{"certs"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("lbd certs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	certs("ca", "--out", l.pki)
	issue := func(role, name string) {
		certs("issue", "--ca", l.pki, "--role", role, "--name", name, "--host", "127.0.0.1", "--out", l.pki)
	}
	for i := 1; i <= 3; i++ {
		m := &lbdMember{id: fmt.Sprintf("lb%d", i),
			api: fmt.Sprintf("127.0.0.1:%d", FreePort(t)), raft: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
		issue("member", m.id)
		l.members = append(l.members, m)
	}
	issue("admin", adminCert)
	issue("cloud-provider", "cluster-a")
	issue("cloud-provider", "cluster-b")
	for i, m := range l.members {
		ca, cert, key := l.files(m.id)
		args := []string{"--id", m.id, "--data-dir", filepath.Join(dir, m.id+"-data"),
			"--api-addr", m.api, "--raft-addr", m.raft, "--data-plane=none", "--metrics-addr=",
			"--tls-ca", ca, "--tls-cert", cert, "--tls-key", key}
		if i > 0 {
			args = append(args, "--join", l.members[0].api)
		}
		m.cmd = Start(t, filepath.Join(dir, m.id+".log"), bin, args...)
	}

	first := l.dial(t, l.members[0].api, adminCert)
	cluster := edgelbv1.NewClusterServiceClient(first)
	poll(t, 90*time.Second, "three lbd voters", func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := cluster.ListMembers(ctx, &edgelbv1.ListMembersRequest{})
		if err != nil {
			return err.Error()
		}
		voters := 0
		for _, m := range r.GetMembers() {
			if m.GetSuffrage() == "voter" {
				voters++
			}
		}
		if voters != 3 || r.GetLeaderId() == "" {
			return fmt.Sprintf("%d voters, leader %q", voters, r.GetLeaderId())
		}
		return ""
	})
	pools := edgelbv1.NewAddressPoolServiceClient(first)
	for _, p := range []*edgelbv1.AddressPool{
		{Name: "pool-a", Ranges: []string{"10.250.0.0/24"}, Tenants: []string{"cluster-a"}},
		{Name: "pool-b", Ranges: []string{"10.251.0.0/24"}, Tenants: []string{"cluster-b"}},
	} {
		poll(t, 30*time.Second, "creating pool "+p.Name, func() string {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: p})
			if err != nil && status.Code(err) != codes.AlreadyExists {
				return err.Error()
			}
			return ""
		})
	}
	ca, cert, key := l.files(adminCert)
	c, err := lbclient.New(lbclient.Options{Endpoints: l.endpoints(), CAFile: ca, CertFile: cert, KeyFile: key, AttemptTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	l.admin = c
	return l
}

// get reads a VirtualService as admin (any live member); nil when there is none.
func (l *lbdCluster) get(t *testing.T, tenant string, svc *v1.Service) *edgelbv1.VirtualService {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	vs, err := l.admin.Get(ctx, tenant, servicemap.Name(svc, v1.IPv4Protocol))
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		t.Fatalf("lbd get: %v", err)
	}
	return vs
}

// poll polls cond until it returns "" or d ends; the last reason is the failure.
func poll(t *testing.T, d time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after %s", what, why, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually polls cond until it returns "" or waitFor ends; the last reason is the failure.
func eventually(t *testing.T, what string, cond func() string) {
	t.Helper()
	poll(t, waitFor, what, cond)
}

func backendList(vs *edgelbv1.VirtualService) string {
	var s []string
	for _, b := range vs.GetBackends() {
		s = append(s, b.Address)
	}
	return strings.Join(s, ",")
}

// addNode registers a Node with its addresses in the create, as a kubelet
// does: the service controller syncs on Node add, and later address changes
// alone do not trigger a sync upstream.
func addNode(t *testing.T, cs kubernetes.Interface, name, ip string) {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}, {Type: v1.NodeHostName, Address: name}}
	n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "KubeletReady"}}
	got, err := cs.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Status.Addresses) == 0 {
		t.Fatalf("apiserver dropped the status of Node %s on create", name)
	}
}

func lbService(name string, ports ...v1.ServicePort) *v1.Service {
	for i := range ports {
		ports[i].TargetPort = intstr.FromInt32(ports[i].Port)
	}
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Annotations: map[string]string{}},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": name}, Ports: ports},
	}
}

func tcp(p int32) v1.ServicePort {
	return v1.ServicePort{Name: fmt.Sprintf("tcp-%d", p), Protocol: v1.ProtocolTCP, Port: p}
}
func udp(p int32) v1.ServicePort {
	return v1.ServicePort{Name: fmt.Sprintf("udp-%d", p), Protocol: v1.ProtocolUDP, Port: p}
}

// writeCloudConfig writes a CCM --cloud-config naming every lbd member, with
// mutual TLS as cloud-provider certificate cert (bound to its tenant).
func writeCloudConfig(t *testing.T, dir, name string, l *lbdCluster, cert, extra string) string {
	p := filepath.Join(dir, name)
	var eps []string
	for _, e := range l.endpoints() {
		eps = append(eps, strconv.Quote(e))
	}
	ca, crt, key := l.files(cert)
	cfg := fmt.Sprintf("endpoints: [%s]\nrequestTimeout: 3s\ntls:\n  caFile: %s\n  certFile: %s\n  keyFile: %s\n%s",
		strings.Join(eps, ", "), ca, crt, key, extra)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// lbctl runs the real lbctl binary with config file cfg and context ctxName;
// it returns stdout, stderr and the exit code (lbctl/README.md: 4 NotFound, 7 PermissionDenied).
func lbctl(t *testing.T, bin, cfg, ctxName string, args ...string) (string, string, int) {
	t.Helper()
	return runLBCTL(t, bin, append([]string{"--config", cfg, "--context", ctxName, "--timeout", "20s"}, args...)...)
}

// runLBCTL runs the lbctl binary bin with args and returns stdout, stderr and
// the exit code; only a failure to start it fails the test.
func runLBCTL(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running lbctl: %v", err)
	}
	return out.String(), errb.String(), 0
}

func refusedEvent(t *testing.T, cs kubernetes.Interface, svc string) string {
	evs, err := cs.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + svc})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.Reason == "SyncLoadBalancerFailed" && strings.Contains(e.Message, "edgelb refused") {
			return e.Message
		}
	}
	return ""
}

// buildBins builds the main packages of pkgs (binary name → package) into
// dir, in parallel, and lbd unless EDGELB_LBD_BIN names a prebuilt one
// (EDGELB_LBD_PKG: its package, default ./lbd); it returns lbd's path.
func buildBins(t *testing.T, dir string, pkgs map[string]string) string {
	t.Helper()
	pkgs = maps.Clone(pkgs)
	lbdBin := os.Getenv("EDGELB_LBD_BIN")
	if lbdBin == "" {
		pkgs["lbd"], lbdBin = cmp.Or(os.Getenv("EDGELB_LBD_PKG"), "./lbd"), filepath.Join(dir, "lbd")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for name, pkg := range pkgs {
		wg.Go(func() {
			if _, err := GoBuild(t, dir, pkg, name); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return lbdBin
}

func TestCCMAgainstRealAPIServer(t *testing.T) {
	if os.Getenv("EDGELB_E2E") != "1" {
		t.Skip("set EDGELB_E2E=1 to run: builds kube-apiserver/etcd (cached), the CCM, lbd and lbctl, and runs them on loopback (~1 min warm)")
	}
	dir := t.TempDir()
	t0 := time.Now()
	bins := BuildK8sBins(t)
	lbdBin := buildBins(t, dir, map[string]string{
		"edgelb-cloud-controller-manager": "./cloudprovider/cmd/edgelb-cloud-controller-manager",
		"lbctl":                           "./lbctl",
	})
	ccm, lbctlBin := filepath.Join(dir, "edgelb-cloud-controller-manager"), filepath.Join(dir, "lbctl")
	t1 := time.Now()
	lb := startLBD(t, dir, lbdBin)
	t2 := time.Now()

	// Two clusters (tenants), each with its own apiserver and CCM, one lbd
	// cluster. Each CCM authenticates to lbd with a cloud-provider certificate
	// bound to its tenant, and to its apiserver as the ServiceAccount of
	// configs/ccm/rbac.yaml (a TokenRequest token), so RBAC is evaluated.
	kcA := StartAPIServer(t, bins, filepath.Join(dir, "cluster-a"))
	kcB := StartAPIServer(t, bins, filepath.Join(dir, "cluster-b"))
	saA := ServiceAccountKubeconfig(t, bins, kcA, filepath.Join(RepoRoot(), "configs", "ccm", "rbac.yaml"), "kube-system", "edgelb-cloud-controller-manager")
	saB := ServiceAccountKubeconfig(t, bins, kcB, filepath.Join(RepoRoot(), "configs", "ccm", "rbac.yaml"), "kube-system", "edgelb-cloud-controller-manager")
	StartCCM(t, ccm, saA, writeCloudConfig(t, dir, "cloud-a.yaml", lb, "cluster-a", "tenant: cluster-a\nloadBalancerClasses: [edgelb.io/lb]\n"), "cluster-a", filepath.Join(dir, "ccm-a.log"))
	StartCCM(t, ccm, saB, writeCloudConfig(t, dir, "cloud-b.yaml", lb, "cluster-b", ""), "cluster-b", filepath.Join(dir, "ccm-b.log"),
		"service-lb-controller", "cloud-node-controller")
	a, b := Clientset(t, kcA), Clientset(t, kcB)
	t.Logf("setup: builds %s, 3-member lbd with TLS %s, 2 apiservers + RBAC + CCMs %s",
		t1.Sub(t0).Round(time.Millisecond), t2.Sub(t1).Round(time.Millisecond), time.Since(t2).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	addNode(t, a, "node-1", "192.168.50.1")
	addNode(t, a, "node-2", "192.168.50.2")
	addNode(t, b, "node-1", "192.168.60.1")

	var web *v1.Service
	var webIP string
	t.Run("EXTERNAL-IP and VIP", func(t *testing.T) {
		d, created, ips, err := MeasureServiceToIngress(ctx, a, lbService("web", tcp(80), udp(53)))
		if err != nil {
			t.Fatal(err)
		}
		web, webIP = created, ips[0]
		t.Logf("Service created → EXTERNAL-IP %s set: %s", webIP, d.Round(time.Millisecond))
		fmt.Printf("BENCH service-to-external-ip %s\n", d.Round(time.Millisecond))
		// The CCM's own account of the steps: Service created → its sync
		// (sinceCreated), lbd's reads and create (lbdWrite); the rest is the
		// status write and this test's watch.
		if b, err := os.ReadFile(filepath.Join(dir, "ccm-a.log")); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "edgelb load balancer ensured") && strings.Contains(l, `"default/web"`) {
					t.Logf("CCM: %s", l)
				}
			}
		}
		if !strings.HasPrefix(webIP, "10.250.0.") {
			t.Errorf("EXTERNAL-IP %s is not from cluster-a's pool", webIP)
		}
		vs := lb.get(t, "cluster-a", web)
		if vs == nil || vs.Vip != webIP || len(vs.Ports) != 2 {
			t.Fatalf("lbd has %v", vs)
		}
		for i, p := range web.Spec.Ports {
			if vs.Ports[i].Port != uint32(p.Port) || vs.Ports[i].BackendPort != uint32(p.NodePort) {
				t.Errorf("port %d: lbd %v, Service %v", i, vs.Ports[i], p)
			}
		}
		if got := backendList(vs); got != "192.168.50.1,192.168.50.2" {
			t.Errorf("backends %s", got)
		}
		if hc := vs.HealthCheck; hc.GetType() != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP || hc.Port != uint32(web.Spec.Ports[0].NodePort) {
			t.Errorf("health check %v, want TCP on the NodePort", hc)
		}
		s, _ := a.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if !slices.Contains(s.Finalizers, "service.kubernetes.io/load-balancer-cleanup") {
			t.Errorf("finalizers %v", s.Finalizers)
		}
	})
	if web == nil {
		t.FailNow()
	}

	t.Run("nodes follow", func(t *testing.T) {
		want := func(w string) func() string {
			return func() string {
				if got := backendList(lb.get(t, "cluster-a", web)); got != w {
					return "backends " + got + ", want " + w
				}
				return ""
			}
		}
		addNode(t, a, "node-3", "192.168.50.3")
		eventually(t, "node added", want("192.168.50.1,192.168.50.2,192.168.50.3"))
		n, _ := a.CoreV1().Nodes().Get(ctx, "node-2", metav1.GetOptions{})
		n.Labels = map[string]string{servicemap.LabelExcludeLB: ""}
		if _, err := a.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "node excluded", want("192.168.50.1,192.168.50.3"))
		if err := a.CoreV1().Nodes().Delete(ctx, "node-1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "node removed", want("192.168.50.3"))
		if vs := lb.get(t, "cluster-a", web); vs.Vip != webIP {
			t.Errorf("VIP moved from %s to %s on node changes", webIP, vs.Vip)
		}
	})

	t.Run("a resync that changes nothing writes nothing", func(t *testing.T) {
		gen := lb.get(t, "cluster-a", web).GetGeneration()
		// An annotation change makes the controller run EnsureLoadBalancer again.
		s, _ := a.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations["example.com/touched"] = "1"
		if _, err := a.CoreV1().Services("default").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "resync", func() string {
			evs, _ := a.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web,reason=EnsuredLoadBalancer"})
			for _, e := range evs.Items {
				if e.Count >= 2 {
					return ""
				}
			}
			return "no second EnsuredLoadBalancer Event"
		})
		if now := lb.get(t, "cluster-a", web).GetGeneration(); now != gen {
			t.Fatalf("generation %d → %d: an unchanged Service was written again (lbd defaults not normalised?)", gen, now)
		}
	})

	t.Run("externalTrafficPolicy switches the health check", func(t *testing.T) {
		s, _ := a.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s, err := a.CoreV1().Services("default").Update(ctx, s, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "Local", func() string {
			hc := lb.get(t, "cluster-a", web).GetHealthCheck()
			if hc.GetType() != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP || hc.GetPort() != uint32(s.Spec.HealthCheckNodePort) || hc.GetPath() != "/healthz" {
				return fmt.Sprintf("health check %v (healthCheckNodePort %d)", hc, s.Spec.HealthCheckNodePort)
			}
			return ""
		})
		s, _ = a.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyCluster
		if _, err := a.CoreV1().Services("default").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "Cluster", func() string {
			if hc := lb.get(t, "cluster-a", web).GetHealthCheck(); hc.GetType() != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP {
				return fmt.Sprintf("health check %v", hc)
			}
			return ""
		})
	})

	t.Run("refused loadBalancerIP stays pending with an Event", func(t *testing.T) {
		s := lbService("refused", tcp(8080))
		s.Spec.LoadBalancerIP = "10.251.0.9" // cluster-b's pool
		if _, err := a.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var msg string
		eventually(t, "refusal Event", func() string {
			if msg = refusedEvent(t, a, "refused"); msg == "" {
				return "no SyncLoadBalancerFailed Event"
			}
			return ""
		})
		t.Logf("Event: %s", msg)
		got, _ := a.CoreV1().Services("default").Get(ctx, "refused", metav1.GetOptions{})
		if len(got.Status.LoadBalancer.Ingress) != 0 {
			t.Errorf("refused Service got %v", got.Status.LoadBalancer.Ingress)
		}
	})

	t.Run("two Services share an IP", func(t *testing.T) {
		s1, s2 := lbService("share-1", tcp(80)), lbService("share-2", tcp(443))
		s1.Annotations[servicemap.AnnotationSharedIP] = "shared"
		s2.Annotations[servicemap.AnnotationSharedIP] = "shared"
		_, _, ip1, err := MeasureServiceToIngress(ctx, a, s1)
		if err != nil {
			t.Fatal(err)
		}
		_, _, ip2, err := MeasureServiceToIngress(ctx, a, s2)
		if err != nil {
			t.Fatal(err)
		}
		if ip1[0] != ip2[0] {
			t.Fatalf("share-1 %s, share-2 %s: want one IP", ip1[0], ip2[0])
		}
	})

	t.Run("tenants can neither see nor take each other's VIPs", func(t *testing.T) {
		// cluster-b's own Service named like cluster-a's gets a VIP of its own pool.
		_, sb, ips, err := MeasureServiceToIngress(ctx, b, lbService("web", tcp(80)))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(ips[0], "10.251.0.") || lb.get(t, "cluster-a", sb) != nil {
			t.Errorf("cluster-b's web got %v; visible to cluster-a: %v", ips, lb.get(t, "cluster-a", sb) != nil)
		}
		if vs := lb.get(t, "cluster-b", sb); vs == nil || vs.Vip != ips[0] {
			t.Fatalf("lbd has %v for cluster-b's web", vs)
		}

		// What cluster-b's CCM can see and do, with its certificate, through
		// the real lbctl and a context like an operator of cluster-b would use.
		ca, crt, key := lb.files("cluster-b")
		cfg := filepath.Join(dir, "lbctl.yaml")
		ctxYAML := fmt.Sprintf("current-context: cluster-b\ncontexts:\n  cluster-b:\n    endpoints: [%s]\n    tenant: cluster-b\n    ca-file: %s\n    cert-file: %s\n    key-file: %s\n",
			strings.Join(lb.endpoints(), ", "), ca, crt, key)
		if err := os.WriteFile(cfg, []byte(ctxYAML), 0o600); err != nil {
			t.Fatal(err)
		}
		aName := servicemap.Name(web, v1.IPv4Protocol)
		out, errs, code := lbctl(t, lbctlBin, cfg, "cluster-b", "vip", "list", "-o", "json")
		if code != 0 {
			t.Fatalf("lbctl vip list as cluster-b: exit %d: %s", code, errs)
		}
		var list struct {
			Items []struct{ Tenant, Name, Vip string }
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("lbctl vip list -o json: %v\n%s", err, out)
		}
		if !slices.ContainsFunc(list.Items, func(it struct{ Tenant, Name, Vip string }) bool {
			return it.Name == servicemap.Name(sb, v1.IPv4Protocol)
		}) {
			t.Errorf("cluster-b's listing lacks its own web: %s", out)
		}
		for _, it := range list.Items {
			if it.Tenant != "cluster-b" || it.Vip == webIP || it.Name == aName || strings.HasPrefix(it.Vip, "10.250.0.") {
				t.Errorf("cluster-b's listing shows %+v (cluster-a's web is %s %s)", it, aName, webIP)
			}
		}
		t.Logf("cluster-b lists %d VIP(s), all its own", len(list.Items))
		for _, args := range [][]string{
			{"vip", "get", aName, "--tenant", "cluster-a"},
			{"vip", "get", aName},
			{"vip", "list", "--tenant", "cluster-a"},
			{"vip", "delete", aName, "--tenant", "cluster-a"},
			{"vip", "delete", aName},
		} {
			_, errs, code := lbctl(t, lbctlBin, cfg, "cluster-b", args...)
			if code != 4 && code != 7 { // NotFound, PermissionDenied
				t.Errorf("cluster-b: lbctl %s: exit %d (%s); want 4 (NotFound) or 7 (PermissionDenied)", strings.Join(args, " "), code, strings.TrimSpace(errs))
			} else {
				t.Logf("cluster-b: lbctl %s → exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(errs))
			}
		}
		if vs := lb.get(t, "cluster-a", web); vs == nil || vs.Vip != webIP {
			t.Fatalf("cluster-a's web after cluster-b's attempts: %v", vs)
		}

		// cluster-b asking for cluster-a's VIP stays pending and says why.
		steal := lbService("steal", tcp(81))
		steal.Spec.LoadBalancerIP = webIP
		if _, err := b.CoreV1().Services("default").Create(ctx, steal, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var msg string
		eventually(t, "refusal of another tenant's VIP", func() string {
			if msg = refusedEvent(t, b, "steal"); msg == "" {
				return "no Event"
			}
			return ""
		})
		t.Logf("Event: %s", msg)
		for _, want := range []string{webIP, "cluster-b", "default/steal"} {
			if !strings.Contains(msg, want) {
				t.Errorf("the Event does not name %q: %s", want, msg)
			}
		}
		got, _ := b.CoreV1().Services("default").Get(ctx, "steal", metav1.GetOptions{})
		if len(got.Status.LoadBalancer.Ingress) != 0 {
			t.Errorf("steal got %v", got.Status.LoadBalancer.Ingress)
		}
		if vs := lb.get(t, "cluster-b", got); vs != nil {
			t.Errorf("lbd holds %v for steal", vs)
		}
		if vs := lb.get(t, "cluster-a", web); vs == nil || vs.Vip != webIP {
			t.Errorf("cluster-a's VIP changed: %v", vs)
		}
	})

	t.Run("the CCMs run as the ServiceAccount of configs/ccm/rbac.yaml", func(t *testing.T) {
		// The Services above got their EXTERNAL-IPs, finalizers and Events
		// from CCMs holding only that ServiceAccount's token; it is no admin.
		for _, kc := range []string{saA, saB} {
			for _, q := range [][]string{{"create", "pods"}, {"delete", "services"}, {"get", "secrets", "-n", "kube-system"}} {
				out, _ := exec.Command(filepath.Join(bins, "kubectl"), append([]string{"--kubeconfig", kc, "auth", "can-i"}, q...)...).CombinedOutput()
				if strings.TrimSpace(string(out)) != "no" {
					t.Errorf("%s: can-i %s = %q, want no", filepath.Base(filepath.Dir(kc)), strings.Join(q, " "), out)
				}
			}
			out, _ := exec.Command(filepath.Join(bins, "kubectl"), "--kubeconfig", kc, "auth", "can-i", "patch", "services/status").CombinedOutput()
			if strings.TrimSpace(string(out)) != "yes" {
				t.Errorf("can-i patch services/status = %q, want yes", out)
			}
		}
		s, _ := a.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if len(s.Status.LoadBalancer.Ingress) == 0 || s.Status.LoadBalancer.Ingress[0].IP != webIP {
			t.Errorf("web: ingress %v", s.Status.LoadBalancer.Ingress)
		}
	})

	t.Run("a configured loadBalancerClass is served", func(t *testing.T) {
		s := lbService("classed", tcp(8443))
		class := "edgelb.io/lb"
		s.Spec.LoadBalancerClass = &class
		d, created, ips, err := MeasureServiceToIngress(ctx, a, s)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("classed Service → EXTERNAL-IP %s: %s", ips[0], d.Round(time.Millisecond))
		if vs := lb.get(t, "cluster-a", created); vs == nil || vs.Vip != ips[0] {
			t.Fatalf("lbd has %v", vs)
		}
		if err := a.CoreV1().Services("default").Delete(ctx, "classed", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "classed Service gone", func() string {
			if _, err := a.CoreV1().Services("default").Get(ctx, "classed", metav1.GetOptions{}); err == nil {
				return "Service still there (finalizer)"
			}
			if lb.get(t, "cluster-a", created) != nil {
				return "VirtualService still in lbd"
			}
			return ""
		})
	})

	t.Run("InstancesV2 initialises an external-cloud-provider node", func(t *testing.T) {
		n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "fresh", Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": "192.168.60.9"}},
			Spec: v1.NodeSpec{Taints: []v1.Taint{{Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: v1.TaintEffectNoSchedule}}}}
		n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		if _, err := b.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "node initialised", func() string {
			got, err := b.CoreV1().Nodes().Get(ctx, "fresh", metav1.GetOptions{})
			if err != nil {
				return err.Error()
			}
			uninit := slices.ContainsFunc(got.Spec.Taints, func(t v1.Taint) bool { return t.Key == "node.cloudprovider.kubernetes.io/uninitialized" })
			if got.Spec.ProviderID != "edgelb://fresh" || uninit || len(got.Status.Addresses) == 0 || got.Status.Addresses[0].Address != "192.168.60.9" {
				return fmt.Sprintf("providerID %q, taints %v, addresses %v", got.Spec.ProviderID, got.Spec.Taints, got.Status.Addresses)
			}
			return ""
		})
	})

	t.Run("configs/ccm manifests are accepted by the apiserver", func(t *testing.T) {
		for _, f := range []string{"rbac.yaml", "deployment.yaml"} {
			out, err := exec.Command(filepath.Join(bins, "kubectl"), "--kubeconfig", kcA, "apply", "--dry-run=server",
				"-f", filepath.Join(RepoRoot(), "configs", "ccm", f)).CombinedOutput()
			if err != nil {
				t.Errorf("kubectl apply --dry-run=server %s: %v\n%s", f, err, out)
			}
		}
	})

	t.Run("SIGKILL of the first lbd endpoint: the CCM fails over", func(t *testing.T) {
		first := lb.members[0]
		cc := edgelbv1.NewClusterServiceClient(lb.dial(t, first.api, adminCert))
		lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
		leader, err := cc.GetLeader(lctx, &edgelbv1.GetLeaderRequest{})
		lcancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("killing %s (%s, first in both CCMs' endpoints); the leader is %s", first.id, first.api, leader.GetLeader().GetId())
		if err := syscall.Kill(-first.cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		first.cmd.Wait()
		fctx, fcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer fcancel()
		d, created, ips, err := MeasureServiceToIngress(fctx, a, lbService("after-kill", tcp(8081)))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Service created after the kill → EXTERNAL-IP %s: %s", ips[0], d.Round(time.Millisecond))
		if vs := lb.get(t, "cluster-a", created); vs == nil || vs.Vip != ips[0] {
			t.Fatalf("lbd has %v", vs)
		}
		if log, _ := os.ReadFile(filepath.Join(dir, "ccm-a.log")); strings.Contains(string(log), first.api) {
			for _, line := range strings.Split(string(log), "\n") {
				if strings.Contains(line, "trying again") && strings.Contains(line, first.api) {
					t.Logf("ccm-a: %s", line)
					break
				}
			}
		}
		// cluster-b's CCM too (its client had the same first endpoint).
		if _, _, _, err := MeasureServiceToIngress(fctx, b, lbService("after-kill", tcp(8081))); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("delete releases the VIP and the finalizer", func(t *testing.T) {
		if err := a.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "Service gone", func() string {
			if _, err := a.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{}); err == nil {
				return "Service still there (finalizer)"
			}
			if lb.get(t, "cluster-a", web) != nil {
				return "VirtualService still in lbd"
			}
			return ""
		})
	})
}
