package k8se2e

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/edgelb/edgelb/cloudprovider/servicemap"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

const waitFor = 60 * time.Second

type lbd struct {
	vs edgelbv1.VirtualServiceServiceClient
}

// startLBD runs the real lbd single-node cluster (control plane only) on
// loopback (the in-memory fake only when EDGELB_E2E_FAKE_LBD=1 asks for it).
func startLBD(t *testing.T, dir string) (string, *lbd) {
	// EDGELB_LBD_BIN: a prebuilt lbd; EDGELB_LBD_PKG: its package (default ./lbd);
	// EDGELB_E2E_FAKE_LBD=1: the fake on purpose.
	bin, err := os.Getenv("EDGELB_LBD_BIN"), error(nil)
	pkg := cmp.Or(os.Getenv("EDGELB_LBD_PKG"), "./lbd")
	if bin == "" && os.Getenv("EDGELB_E2E_FAKE_LBD") == "" {
		bin, err = GoBuild(t, dir, pkg, "lbd")
	}
	if err != nil {
		t.Fatalf("build lbd from %s: %v", pkg, err)
	}
	if bin == "" {
		t.Log("EDGELB_E2E_FAKE_LBD=1: the in-memory fake lbd stands in for the real one")
		if bin, err = GoBuild(t, dir, "./cloudprovider/internal/fakelbd/cmd/fakelbd", "fakelbd"); err != nil {
			t.Fatal(err)
		}
	}
	api := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	Start(t, filepath.Join(dir, "lbd.log"), bin, "--id", "lb1", "--data-dir", filepath.Join(dir, "lbd-data"),
		"--api-addr", api, "--raft-addr", fmt.Sprintf("127.0.0.1:%d", FreePort(t)), "--data-plane=none")
	cc, err := grpc.NewClient(api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	pools := edgelbv1.NewAddressPoolServiceClient(cc)
	for _, p := range []*edgelbv1.AddressPool{
		{Name: "pool-a", Ranges: []string{"10.250.0.0/24"}, Tenants: []string{"cluster-a"}},
		{Name: "pool-b", Ranges: []string{"10.251.0.0/24"}, Tenants: []string{"cluster-b"}},
	} {
		// Retry while lbd starts and elects itself leader.
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: p})
			cancel()
			if err == nil || status.Code(err) == codes.AlreadyExists {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("creating pool %s in lbd: %v", p.Name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return api, &lbd{vs: edgelbv1.NewVirtualServiceServiceClient(cc)}
}

func (l *lbd) get(t *testing.T, tenant string, svc *v1.Service) *edgelbv1.VirtualService {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := l.vs.GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Tenant: tenant, Name: servicemap.Name(svc, v1.IPv4Protocol)})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		t.Fatalf("lbd get: %v", err)
	}
	return r.Service
}

// eventually polls cond until it returns "" or the wait ends; the last reason is the failure.
func eventually(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after %s", what, why, waitFor)
		}
		time.Sleep(50 * time.Millisecond)
	}
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

func writeCloudConfig(t *testing.T, dir, name, api, extra string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(fmt.Sprintf("endpoints: [%q]\nrequestTimeout: 3s\n%s", api, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
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

func TestCCMAgainstRealAPIServer(t *testing.T) {
	if os.Getenv("EDGELB_E2E") != "1" {
		t.Skip("set EDGELB_E2E=1 to run: builds kube-apiserver/etcd (cached), the CCM and lbd, and runs them on loopback (~1 min warm)")
	}
	dir := t.TempDir()
	bins := BuildK8sBins(t)
	ccm, err := GoBuild(t, dir, "./cloudprovider/cmd/edgelb-cloud-controller-manager", "edgelb-cloud-controller-manager")
	if err != nil {
		t.Fatal(err)
	}
	api, lb := startLBD(t, dir)

	// Two clusters (tenants), each with its own apiserver and CCM, one lbd.
	kcA := StartAPIServer(t, bins, filepath.Join(dir, "cluster-a"))
	kcB := StartAPIServer(t, bins, filepath.Join(dir, "cluster-b"))
	StartCCM(t, ccm, kcA, writeCloudConfig(t, dir, "cloud-a.yaml", api, "tenant: cluster-a\nloadBalancerClasses: [edgelb.io/lb]\n"), "cluster-a", filepath.Join(dir, "ccm-a.log"))
	StartCCM(t, ccm, kcB, writeCloudConfig(t, dir, "cloud-b.yaml", api, ""), "cluster-b", filepath.Join(dir, "ccm-b.log"),
		"service-lb-controller", "cloud-node-controller")
	a, b := Clientset(t, kcA), Clientset(t, kcB)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
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

	t.Run("tenants are separate", func(t *testing.T) {
		// cluster-b's own Service named like cluster-a's gets a VIP of its own pool.
		_, sb, ips, err := MeasureServiceToIngress(ctx, b, lbService("web", tcp(80)))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(ips[0], "10.251.0.") || lb.get(t, "cluster-a", sb) != nil {
			t.Errorf("cluster-b's web got %v; visible to cluster-a: %v", ips, lb.get(t, "cluster-a", sb) != nil)
		}
		// cluster-b asking for cluster-a's VIP is refused.
		steal := lbService("steal", tcp(81))
		steal.Spec.LoadBalancerIP = webIP
		if _, err := b.CoreV1().Services("default").Create(ctx, steal, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "refusal of another tenant's VIP", func() string {
			if refusedEvent(t, b, "steal") == "" {
				return "no Event"
			}
			return ""
		})
		if vs := lb.get(t, "cluster-a", web); vs == nil || vs.Vip != webIP {
			t.Errorf("cluster-a's VIP changed: %v", vs)
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
