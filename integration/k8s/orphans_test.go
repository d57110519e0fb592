package k8se2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/edgelb/edgelb/cloudprovider/servicemap"
)

// TestCCMOrphans is issue 23's "no VIP outlives its cluster", against real
// kube-apiservers, the real CCM and a real three-member lbd with mutual TLS:
//   - cluster-b: a Service deleted while its CCM is down (finalizer removed
//     by hand) keeps its VIP while the returning CCM cannot list Services
//     (RBAC withdrawn), and loses it at the first sweep once it can; the
//     other Service's VIP stays; likewise while its Service list comes back
//     empty (a proxy in front of the apiserver empties it);
//   - cluster-a: its apiserver is stopped (the CCM keeps running, cut off):
//     past the silence threshold lbctl vip list --orphaned lists exactly its
//     VIPs, status counts them, and lbctl tenant gc removes them; cluster-b,
//     whose CCM keeps its heartbeat, is untouched.
func TestCCMOrphans(t *testing.T) {
	if os.Getenv("EDGELB_E2E") != "1" {
		t.Skip("set EDGELB_E2E=1 to run (real kube-apiservers, CCMs, lbd and lbctl on loopback)")
	}
	dir := t.TempDir()
	bins := BuildK8sBins(t)
	lbdBin := buildBins(t, dir, map[string]string{
		"edgelb-cloud-controller-manager": "./cloudprovider/cmd/edgelb-cloud-controller-manager",
		"lbctl":                           "./lbctl",
	})
	ccmBin, lbctlBin := filepath.Join(dir, "edgelb-cloud-controller-manager"), filepath.Join(dir, "lbctl")
	lb := startLBD(t, dir, lbdBin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	type cluster struct {
		tenant, work, sa, cfg, log string
		admin                      kubernetes.Interface
		ccm                        *exec.Cmd
	}
	newCluster := func(tenant, nodeIP string) *cluster {
		c := &cluster{tenant: tenant, work: filepath.Join(dir, tenant), log: filepath.Join(dir, "ccm-"+tenant+".log")}
		kc := StartAPIServer(t, bins, c.work)
		c.sa = ServiceAccountKubeconfig(t, bins, kc, filepath.Join(RepoRoot(), "configs", "ccm", "rbac.yaml"), "kube-system", "edgelb-cloud-controller-manager")
		c.admin = fastClient(t, kc)
		// Short periods, so the test sees several sweeps and heartbeats.
		c.cfg = writeCloudConfig(t, dir, "cloud-"+tenant+".yaml", lb, tenant, "tenant: "+tenant+"\norphanSweepInterval: 2s\nheartbeatInterval: 1s\n")
		addNode(t, c.admin, "node-1", nodeIP)
		return c
	}
	startCCM := func(c *cluster) {
		args := []string{"--cloud-provider=edgelb", "--cloud-config=" + c.cfg, "--cluster-name=" + c.tenant,
			"--controllers=service-lb-controller", "--leader-elect=false", "--secure-port=0",
			"--kubeconfig=" + c.sa, "--authentication-kubeconfig=" + c.sa, "--authorization-kubeconfig=" + c.sa, "--v=2"}
		// Each start appends to its own log, so what a test looks for is
		// from this run of the CCM.
		c.log = strings.TrimSuffix(c.log, ".log") + "+.log"
		c.ccm = Start(t, c.log, ccmBin, args...)
	}
	stopCCM := func(c *cluster) {
		syscall.Kill(-c.ccm.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { c.ccm.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-c.ccm.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	logHas := func(c *cluster, s string) bool {
		b, _ := os.ReadFile(c.log)
		return strings.Contains(string(b), s)
	}
	// sweeps waits until the CCM logged s in two sweeps: the refusal holds
	// from one sweep period to the next, not once by chance.
	sweeps := func(c *cluster, s string) {
		t.Helper()
		eventually(t, "two sweeps logging "+s, func() string {
			b, _ := os.ReadFile(c.log)
			if n := strings.Count(string(b), s); n < 2 {
				return fmt.Sprintf("%d logged", n)
			}
			return ""
		})
	}
	create := func(c *cluster, name string) *v1.Service {
		t.Helper()
		s, err := c.admin.CoreV1().Services("default").Create(ctx, lbService(name, tcp(80)), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := WaitIngress(ctx, c.admin, "default", name); err != nil {
			t.Fatal(err)
		}
		if lb.get(t, c.tenant, s) == nil {
			t.Fatalf("Service %s has an ingress but no VirtualService in tenant %s", name, c.tenant)
		}
		return s
	}
	admin := func(args ...string) (string, string, int) {
		ca, crt, key := lb.files(adminCert)
		return runLBCTL(t, lbctlBin, append([]string{"--endpoints", strings.Join(lb.endpoints(), ","), "--ca-file", ca, "--cert-file", crt, "--key-file", key, "--timeout", "20s"}, args...)...)
	}
	vipNames := func(out string) []string {
		var l struct {
			Items []struct{ Tenant, Name string } `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("lbctl output is not a JSON list: %v\n%s", err, out)
		}
		var n []string
		for _, it := range l.Items {
			n = append(n, it.Tenant+"/"+it.Name)
		}
		slices.Sort(n)
		return n
	}

	b := newCluster("cluster-b", "192.168.80.1")
	startCCM(b)
	keep, doomed := create(b, "keep"), create(b, "doomed")

	t.Run("a Service deleted while the CCM is down loses its VIP when the CCM returns, not before it can list Services", func(t *testing.T) {
		stopCCM(b)
		// As an operator would with a stuck finalizer: the CCM never hears of the delete.
		if _, err := b.admin.CoreV1().Services("default").Patch(ctx, "doomed", types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := b.admin.CoreV1().Services("default").Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "doomed deleted in the apiserver", func() string {
			if _, err := b.admin.CoreV1().Services("default").Get(ctx, "doomed", metav1.GetOptions{}); err == nil {
				return "still there"
			}
			return ""
		})
		// The returning CCM may not list Services: its sweep must fail closed.
		roles := b.admin.RbacV1().ClusterRoles()
		role, err := roles.Get(ctx, "system:edgelb-cloud-controller-manager", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		full := role.DeepCopy()
		role.Rules[0].Verbs = slices.DeleteFunc(slices.Clone(role.Rules[0].Verbs), func(v string) bool { return v == "list" })
		if _, err := roles.Update(ctx, role, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		startCCM(b)
		sweeps(b, "listing Services: ")
		if lb.get(t, b.tenant, doomed) == nil {
			t.Fatal("the CCM deleted a VirtualService although it could not list Services")
		}
		if logHas(b, "deleted orphaned VirtualService") {
			t.Fatal("the CCM logged an orphan delete without a Service list")
		}
		latest, err := roles.Get(ctx, full.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		latest.Rules = full.Rules
		if _, err := roles.Update(ctx, latest, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the orphaned VirtualService deleted", func() string {
			if lb.get(t, b.tenant, doomed) != nil {
				return "still in lbd"
			}
			return ""
		})
		// The CCM logs the delete once its call returns; lbd's member that
		// took the call answers when its own replica has applied it, which
		// can be after the member this test reads from did (one to two raft
		// commit timeouts): wait for the line, do not expect it at once.
		eventually(t, "a log line naming the deleted orphan", func() string {
			if !logHas(b, "deleted orphaned VirtualService") || !logHas(b, string(doomed.UID)) {
				return fmt.Sprintf("no log line names the deleted orphan (uid %s)", doomed.UID)
			}
			return ""
		})
		if lb.get(t, b.tenant, keep) == nil {
			t.Fatal("the sweep deleted the VirtualService of a Service that exists")
		}
	})

	t.Run("a CCM whose Service list comes back empty deletes nothing", func(t *testing.T) {
		gone := create(b, "gone-too")
		stopCCM(b)
		if _, err := b.admin.CoreV1().Services("default").Patch(ctx, "gone-too", types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := b.admin.CoreV1().Services("default").Delete(ctx, "gone-too", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// The real apiserver always lists default/kubernetes, so the empty
		// answer of a broken apiserver or cache is made by a proxy in front
		// of it that answers every list of all Services with no items (and
		// passes everything else through, with the CCM's credentials).
		real, sa := b.sa, b.sa
		b.sa = emptyServicesProxy(t, sa)
		startCCM(b)
		sweeps(b, "listed no Services at all")
		if lb.get(t, b.tenant, gone) == nil || lb.get(t, b.tenant, keep) == nil {
			t.Fatal("the CCM deleted VirtualServices on an empty Service list")
		}
		stopCCM(b)
		b.sa = real
		startCCM(b)
		eventually(t, "the orphan deleted once the list is real", func() string {
			if lb.get(t, b.tenant, gone) != nil {
				return "still in lbd"
			}
			return ""
		})
		if lb.get(t, b.tenant, keep) == nil {
			t.Fatal("the sweep deleted the VirtualService of a Service that exists")
		}
	})

	t.Run("a cluster whose apiserver is gone: its VIPs listed as orphaned and removed by tenant gc, others untouched", func(t *testing.T) {
		a := newCluster("cluster-a", "192.168.70.1")
		startCCM(a)
		create(a, "web")
		create(a, "api")
		var aNames []string
		out, errs, code := admin("vip", "list", "--tenant", "cluster-a", "-o", "json")
		if code != 0 {
			t.Fatalf("vip list: %d %s", code, errs)
		}
		aNames = vipNames(out)
		if len(aNames) != 2 {
			t.Fatalf("cluster-a's VIPs: %v", aNames)
		}
		eventually(t, "cluster-a's heartbeat in lbd", func() string {
			out, errs, code := admin("tenant", "list", "-o", "json")
			if code != 0 {
				return errs
			}
			if !strings.Contains(out, `"name": "cluster-a"`) || !strings.Contains(out, "lastSeen") {
				return out
			}
			return ""
		})
		// The cluster is torn down; its CCM, cut off, keeps running.
		if out, err := exec.Command("bash", filepath.Join(Dir(), "stop-cluster.sh"), a.work).CombinedOutput(); err != nil {
			t.Fatalf("stopping cluster-a's apiserver: %v %s", err, out)
		}
		const threshold = "5s"
		eventually(t, "exactly cluster-a's VIPs orphaned", func() string {
			out, errs, code := admin("vip", "list", "--orphaned", "--silent-threshold", threshold, "-o", "json")
			if code != 0 {
				return errs
			}
			if got := vipNames(out); !slices.Equal(got, aNames) {
				return fmt.Sprintf("orphaned %v, want %v", got, aNames)
			}
			return ""
		})
		if !logHas(a, "not renewing the heartbeat") {
			t.Errorf("cluster-a's CCM did not log why it stopped renewing its heartbeat")
		}
		out, errs, code = admin("status", "--silent-threshold", threshold, "-o", "json")
		var st struct {
			Orphaned        int
			OrphanedTenants []struct{ Tenant string }
		}
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Orphaned != 2 || len(st.OrphanedTenants) != 1 || st.OrphanedTenants[0].Tenant != "cluster-a" {
			t.Errorf("status: exit %d %s\n%s", code, errs, out)
		}
		table, _, _ := admin("status", "--silent-threshold", threshold)
		t.Logf("lbctl status:\n%s", table)
		// cluster-b's CCM renews: a gc of it is refused, nothing deleted.
		if _, errs, code := admin("tenant", "gc", "cluster-b", "--silent-threshold", threshold, "--yes"); code != 6 || !strings.Contains(errs, "last seen") {
			t.Errorf("gc of a live tenant: exit %d %s; want 6 (FailedPrecondition)", code, errs)
		}
		// Without --yes and without a terminal: the list, exit 2, nothing deleted.
		if out, errs, code := admin("tenant", "gc", "cluster-a", "--silent-threshold", threshold); code != 2 || !strings.Contains(errs, "--yes") || !strings.Contains(out, "would delete 2") {
			t.Errorf("gc without --yes: exit %d\n%s%s", code, out, errs)
		}
		out, errs, code = admin("tenant", "gc", "cluster-a", "--silent-threshold", threshold, "--yes", "-o", "json")
		if code != 0 {
			t.Fatalf("tenant gc: exit %d %s", code, errs)
		}
		t.Logf("lbctl tenant gc cluster-a:\n%s", out)
		out, _, _ = admin("vip", "list", "--all-tenants", "-o", "json")
		if got := vipNames(out); slices.ContainsFunc(got, func(n string) bool { return strings.HasPrefix(n, "cluster-a/") }) ||
			!slices.Contains(got, "cluster-b/"+servicemap.Name(keep, v1.IPv4Protocol)) {
			t.Errorf("after gc: %v; want no cluster-a VIP and cluster-b's keep", got)
		}
		if out, _, _ := admin("vip", "list", "--orphaned", "--silent-threshold", threshold, "-o", "json"); len(vipNames(out)) != 0 {
			t.Errorf("orphans left after gc: %s", out)
		}
	})
}

// emptyServicesProxy serves the apiserver of kubeconfig on a loopback port,
// except that a list of all Services answers an empty ServiceList, and
// returns a kubeconfig pointing there (the proxy adds the credentials).
func emptyServicesProxy(t *testing.T, kubeconfig string) string {
	t.Helper()
	rc := RestConfig(t, kubeconfig)
	rt, err := rest.TransportFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(rc.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = rt
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/api/v1/services" && r.URL.Query().Get("watch") == "" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}`)
			return
		}
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["proxy"] = &clientcmdapi.Cluster{Server: "http://" + l.Addr().String()}
	cfg.AuthInfos["proxy"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["proxy"] = &clientcmdapi.Context{Cluster: "proxy", AuthInfo: "proxy"}
	cfg.CurrentContext = "proxy"
	path := kubeconfig + "-empty-services"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
