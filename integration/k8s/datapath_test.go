package k8se2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/probe"
	"github.com/edgelb/edgelb/integration/topo"
	"github.com/edgelb/edgelb/integration/uml"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// The real data path end to end: kube-apiserver, etcd and the CCM run on the
// host; three lbd members, three "Kubernetes nodes" and a client run inside a
// User-Mode Linux guest, reached over a tap device. A Service of type
// LoadBalancer gets its EXTERNAL-IP from lbd, the nodes serve the NodePort the
// apiserver assigned, and the client in the guest reaches them through the VIP.
//
// Host and guest meet through files in a shared work directory (the guest sees
// the host's file system): ready → nodeport → vip → answered → denied →
// widened → widened-answered → done.
//
// The Service carries loadBalancerSourceRanges: the client's extra address
// allowedSrc is inside them, its own address deniedSrc is not. The guest checks
// that the allowed one reaches a node through the VIP and the denied one is
// dropped (its connect times out; a reset would tell a scanner the VIP is
// there); the host then widens the ranges through the apiserver, and the guest
// sees the formerly denied client get through. All of it is sent from the
// client's namespace in the guest to the guest's VIP.

const (
	tapName  = "edgelbtap0"
	tapHost  = "198.51.100.1"
	tapGuest = "198.51.100.2"
	tapNet   = "198.51.100.0/30"
	dpTenant = "dp-cluster"
)

var (
	// allowedSrc is the client's first extra address (lab.Config.Clients),
	// inside dpRanges; deniedSrc, the client's own address, is outside them.
	allowedSrc = netip.AddrFrom4([4]byte{10, 1, 0, 1})
	deniedSrc  = topo.ClientHost().V4
	dpRanges   = []string{"10.1.0.0/16"}
)

func TestMain(m *testing.M) {
	uml.MaybeGuestInit()
	os.Exit(m.Run())
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func waitFile(path string, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not appear within %s", path, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServiceThroughUMLDataPath(t *testing.T) {
	if os.Getenv("EDGELB_E2E") != "1" || os.Getenv("EDGELB_UML") != "1" {
		t.Skip("set EDGELB_E2E=1 and EDGELB_UML=1: runs kube-apiserver+etcd+CCM on the host and lbd in a User-Mode Linux guest (sudo bash scripts/uml-deps.sh first)")
	}
	if uml.InGuest() {
		t.Skip("host side")
	}
	work := t.TempDir()
	bins := BuildK8sBins(t)
	binDir := filepath.Join(work, "bin")
	for _, p := range []struct{ pkg, name string }{
		{"./lbd", "lbd"}, {"./lbctl", "lbctl"}, {"./integration/cmd/nodeserver", "nodeserver"},
		{"./cloudprovider/cmd/edgelb-cloud-controller-manager", "ccm"},
	} {
		if _, err := GoBuild(t, binDir, p.pkg, p.name); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := StartAPIServer(t, bins, filepath.Join(work, "k8s"))
	cs := Clientset(t, kubeconfig)

	// The tap device: the host's end of a link only this machine has.
	exec.Command("ip", "link", "del", tapName).Run()
	run(t, "ip", "tuntap", "add", "dev", tapName, "mode", "tap")
	t.Cleanup(func() { exec.Command("ip", "link", "del", tapName).Run() })
	run(t, "ip", "addr", "add", tapHost+"/30", "dev", tapName)
	run(t, "ip", "link", "set", tapName, "up")
	run(t, "ip", "route", "replace", "10.0.0.0/24", "via", tapGuest, "dev", tapName)

	guestDone := make(chan error, 1)
	go func() {
		res, err := uml.Run(context.Background(), uml.Options{
			Argv:       []string{os.Args[0], "-test.run", "^TestGuestDataPath$", "-test.v"},
			Env:        append(os.Environ(), "EDGELB_DP_WORK="+work, "EDGELB_DP_BIN="+binDir),
			Stdout:     os.Stderr,
			Stderr:     os.Stderr,
			Timeout:    8 * time.Minute,
			Mem:        "1024M",
			WorkDir:    filepath.Join(work, "uml"),
			KernelArgs: []string{"vec0:transport=tap,ifname=" + tapName},
		})
		if err == nil && res.ExitCode != 0 {
			err = fmt.Errorf("guest exited %d (%s)", res.ExitCode, res.Stopped)
		}
		guestDone <- err
	}()
	if _, err := waitFile(filepath.Join(work, "ready"), 4*time.Minute); err != nil {
		t.Fatalf("guest lab: %v (guest: %v)", err, drain(guestDone))
	}

	// The CCM on the host reaches lbd in the guest through the tap.
	cfg := filepath.Join(work, "cloud.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("endpoints: [\"10.0.0.11:7700\", \"10.0.0.12:7700\", \"10.0.0.13:7700\"]\nrequestTimeout: 5s\ntenant: %s\ndirectRouting: true\nhealthCheck:\n  interval: 1s\n  timeout: 500ms\n", dpTenant)), 0o600)
	StartCCM(t, filepath.Join(binDir, "ccm"), kubeconfig, cfg, dpTenant, filepath.Join(work, "ccm.log"))
	for i := 1; i <= 3; i++ {
		addNode(t, cs, fmt.Sprintf("node%d", i), fmt.Sprintf("10.0.0.2%d", i))
	}

	svc := lbService("web", tcp(80))
	svc.Spec.LoadBalancerSourceRanges = dpRanges
	t0 := time.Now()
	created, err := cs.CoreV1().Services("default").Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	np := created.Spec.Ports[0].NodePort
	os.WriteFile(filepath.Join(work, "t0"), []byte(strconv.FormatInt(t0.UnixNano(), 10)), 0o644)
	os.WriteFile(filepath.Join(work, "nodeport"), []byte(strconv.Itoa(int(np))), 0o644)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ips, err := WaitIngress(ctx, cs, "default", "web")
	if err != nil {
		t.Fatalf("EXTERNAL-IP: %v", err)
	}
	ingress := time.Since(t0)
	// Hand the VIP to the guest's client rather than have it poll lbctl (each
	// process start costs ~0.5 s in the guest and would count as our latency).
	os.WriteFile(filepath.Join(work, "vip"), []byte(ips[0]), 0o644)
	ans, err := waitFile(filepath.Join(work, "answered"), 3*time.Minute)
	if err != nil {
		t.Fatalf("client in the guest: %v (guest: %v)", err, drain(guestDone))
	}
	var a struct {
		At   int64
		VIP  string
		Node string
	}
	if err := json.Unmarshal([]byte(ans), &a); err != nil {
		t.Fatal(err)
	}
	if len(ips) == 0 || ips[0] != a.VIP {
		t.Errorf("EXTERNAL-IP %v, but the guest reached %s", ips, a.VIP)
	}
	reach := time.Unix(0, a.At).Sub(t0)
	// The first Service (with source ranges, on a cluster that just started)
	// is logged; make bench's figure is measureReach's, over ten.
	t.Logf("Service created → EXTERNAL-IP %s: %s; → VIP answers TCP (node %s, NodePort %d): %s", ips[0], ingress.Round(time.Millisecond), a.Node, np, reach.Round(time.Millisecond))

	// The guest reports what the denied client saw; only a drop lets us go on.
	denied, err := waitFile(filepath.Join(work, "denied"), 2*time.Minute)
	if err != nil {
		t.Fatalf("denied client: %v (guest: %v)", err, drain(guestDone))
	}
	if denied != "dropped" {
		os.WriteFile(filepath.Join(work, "done"), []byte("1"), 0o644)
		t.Fatalf("denied client %s, outside %v: %s", deniedSrc, dpRanges, denied)
	}
	t.Logf("denied client %s dropped", deniedSrc)
	// Widen the ranges through the apiserver: the CCM carries the change to lbd.
	cur, err := cs.CoreV1().Services("default").Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.LoadBalancerSourceRanges = append(append([]string(nil), dpRanges...), deniedSrc.String()+"/32")
	tw := time.Now()
	if _, err := cs.CoreV1().Services("default").Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(work, "widened"), []byte(strconv.FormatInt(tw.UnixNano(), 10)), 0o644)
	wa, err := waitFile(filepath.Join(work, "widened-answered"), 3*time.Minute)
	if err != nil {
		t.Fatalf("formerly denied client after the ranges were widened: %v (guest: %v)", err, drain(guestDone))
	}
	t.Logf("ranges widened to %v → %s reached %s after %s", cur.Spec.LoadBalancerSourceRanges, deniedSrc, wa, time.Since(tw).Round(time.Millisecond))
	measureReach(t, cs, work, np, guestDone)

	// Issue 23: an externalTrafficPolicy: Local Service, with the cloud-config
	// saying edges and nodes share the segment (directRouting), is programmed
	// in dr: its backend sees the client's own address, and only the nodes
	// whose healthCheckNodePort answers get traffic.
	local := lbService("local", tcp(80))
	local.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	lc, err := cs.CoreV1().Services("default").Create(context.Background(), local, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(work, "local-hcnp"), []byte(strconv.Itoa(int(lc.Spec.HealthCheckNodePort))), 0o644)
	lctx, lcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer lcancel()
	lips, err := WaitIngress(lctx, cs, "default", "local")
	if err != nil {
		t.Fatalf("EXTERNAL-IP of the Local Service: %v", err)
	}
	lc, _ = cs.CoreV1().Services("default").Get(context.Background(), "local", metav1.GetOptions{})
	if in := lc.Status.LoadBalancer.Ingress; len(in) != 1 || in[0].IPMode == nil || *in[0].IPMode != v1.LoadBalancerIPModeVIP {
		t.Errorf("Local Service ingress %+v: want ipMode VIP (dr: packets reach the node addressed to the VIP)", in)
	}
	os.WriteFile(filepath.Join(work, "local-vip"), []byte(lips[0]), 0o644)
	la, err := waitFile(filepath.Join(work, "local-answered"), 4*time.Minute)
	if err != nil {
		t.Fatalf("client of the Local Service: %v (guest: %v)", err, drain(guestDone))
	}
	var lr localResult
	if err := json.Unmarshal([]byte(la), &lr); err != nil {
		t.Fatal(err)
	}
	if lr.Err != "" {
		t.Errorf("Local Service through the guest: %s", lr.Err)
	}
	for _, l := range lr.Seen {
		if f := strings.Fields(l); len(f) != 2 || f[1] != lr.Client || !strings.HasPrefix(f[0], "pod-node") || f[0] == "pod-node3" {
			t.Errorf("backend answered %q; want \"pod-node1|pod-node2 %s\" (the client's own address, a node with a ready endpoint)", l, lr.Client)
		}
	}
	if len(lr.Seen) == 0 {
		t.Error("no answer through the Local Service's VIP")
	}
	t.Logf("Local Service %s (dr, healthCheckNodePort %d): backends saw %q", lips[0], lc.Spec.HealthCheckNodePort, lr.Seen)
	os.WriteFile(filepath.Join(work, "done"), []byte("1"), 0o644)
	if err := <-guestDone; err != nil {
		t.Errorf("guest: %v", err)
	}
}

func drain(ch chan error) error {
	select {
	case err := <-ch:
		return err
	case <-time.After(time.Second):
		return nil
	}
}

// TestGuestDataPath runs inside the guest.
func TestGuestDataPath(t *testing.T) {
	work := os.Getenv("EDGELB_DP_WORK")
	if !uml.InGuest() || work == "" {
		t.Skip("guest side of TestServiceThroughUMLDataPath")
	}
	bin := os.Getenv("EDGELB_DP_BIN")
	run(t, "ip", "addr", "add", tapGuest+"/30", "dev", "vec0")
	run(t, "ip", "link", "set", "vec0", "up")
	run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l, err := lab.Start(lab.Config{Bin: bin, Work: filepath.Join(work, "lab"), Logf: t.Logf, Clients: 1,
		LBDConfig: lab.GuestTiming + "health:\n  enabled: true\n"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// A failure in the guest is only explained by what the edges did: who held
	// the VIP, what the client's neighbour table says, and the lbd logs.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		out, _ := topo.Run(topo.ClientHost().Name, "ip", "neigh", "show")
		t.Logf("---- client neighbours ----\n%s", out)
		for _, m := range l.Members {
			addrs, _ := topo.Run(m.Host.Name, "ip", "-br", "addr", "show")
			t.Logf("---- %s addresses ----\n%s\n---- lbd %s (log tail) ----\n%s", m.ID, addrs, m.ID, m.LogTail(60))
		}
	})
	for _, e := range l.Topo.Edges {
		run(t, "ip", "netns", "exec", e.Name, "ip", "route", "add", tapNet, "via", topo.ManagementV4)
	}
	if out, err := l.LBCTL("pool", "create", "k8s", "--range", topo.VIPPoolV4); err != nil {
		t.Fatalf("pool: %v %s", err, out)
	}
	os.WriteFile(filepath.Join(work, "ready"), []byte("1"), 0o644)

	npS, err := waitFile(filepath.Join(work, "nodeport"), 4*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NodePort %s known in the guest", npS)
	for _, n := range l.Topo.Nodes {
		if _, err := topo.StartLogged(n.Name, filepath.Join(work, "lab", n.Name+"-np.log"), filepath.Join(bin, "nodeserver"),
			"--name", n.Name, "--port", npS, "--health-port", "0"); err != nil {
			t.Fatal(err)
		}
	}
	// The VIP lbd gave the Service: the host writes it once the Service shows it.
	deadline := time.Now().Add(3 * time.Minute)
	vip, err := waitFile(filepath.Join(work, "vip"), 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t0, _ := waitFile(filepath.Join(work, "t0"), time.Second)
	since := func() time.Duration {
		ns, _ := strconv.ParseInt(t0, 10, 64)
		return time.Since(time.Unix(0, ns)).Round(time.Millisecond)
	}
	t.Logf("%s after the Service was created: VIP %s known in the guest", since(), vip)
	lastLog := time.Now()
	node, err := dialUntilAnswer(allowedSrc, vip, "80", time.Until(deadline), func(err error) {
		if time.Since(lastLog) > 300*time.Millisecond {
			t.Logf("%s: %v", since(), err)
			lastLog = time.Now()
		}
	})
	if err != nil {
		t.Fatalf("VIP %s never answered %s: %v", vip, allowedSrc, err)
	}
	t.Logf("%s: %s answered by %s", since(), allowedSrc, node)
	b, _ := json.Marshal(map[string]any{"At": time.Now().UnixNano(), "VIP": vip, "Node": node})
	os.WriteFile(filepath.Join(work, "answered"), b, 0o644)

	// The denied client: 3 s covers a SYN and its first retransmit; a reset
	// or an answer would come well within it.
	t1 := time.Now()
	got, err := connectFrom(deniedSrc, vip, 3*time.Second)
	var ne net.Error
	verdict := "dropped"
	switch {
	case err == nil:
		verdict = fmt.Sprintf("reached %s through %s", got, vip)
	case !errors.As(err, &ne) || !ne.Timeout():
		verdict = fmt.Sprintf("%v; want a timeout (dropped), not a reset", err)
	}
	t.Logf("denied client %s → %s: %v after %s (%s)", deniedSrc, vip, err, time.Since(t1).Round(time.Millisecond), verdict)
	os.WriteFile(filepath.Join(work, "denied"), []byte(verdict), 0o644)
	if verdict != "dropped" {
		t.Fatalf("denied client %s: %s", deniedSrc, verdict)
	}
	// The allowed client still gets through beside the drops.
	if node, err := connectFrom(allowedSrc, vip, 3*time.Second); err != nil {
		t.Errorf("allowed client %s after the denied one: %v", allowedSrc, err)
	} else {
		t.Logf("allowed client %s still reaches %s", allowedSrc, node)
	}

	if _, err := waitFile(filepath.Join(work, "widened"), 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	tw := time.Now()
	node, err = dialUntilAnswer(deniedSrc, vip, "80", 2*time.Minute, nil)
	if err != nil {
		t.Fatalf("after the ranges were widened, %s still cannot reach %s: %v", deniedSrc, vip, err)
	}
	t.Logf("%s: ranges widened, %s answered by %s", time.Since(tw).Round(time.Millisecond), deniedSrc, node)
	os.WriteFile(filepath.Join(work, "widened-answered"), []byte(node), 0o644)
	if _, err := connectFrom(allowedSrc, vip, 3*time.Second); err != nil {
		t.Errorf("allowed client %s after the ranges were widened: %v", allowedSrc, err)
	}
	guestReach(t, l, work, bin)
	guestLocal(t, l, work, bin)
	waitFile(filepath.Join(work, "done"), time.Minute)
}

// localResult is what the guest saw through the Local Service's VIP.
type localResult struct {
	Client string   // the client's own address
	Seen   []string // "NAME ADDRESS" per connection: the pod and the source it saw
	Err    string
}

// guestLocal is the guest's side of the Local Service. Each node is set up
// as kube-proxy (iptables mode) sets up a node for a Service with ipMode VIP
// and externalTrafficPolicy: Local: nodes 1 and 2 have a ready endpoint (a
// "pod" on 8080, as a nodeserver in the node's namespace), DNAT the VIP:80
// to it, and their healthCheckNodePort answers 200; node 3 has none, answers
// 503 and drops the VIP's packets. The node needs no address for the VIP
// and answers no ARP for it: the DNAT takes the packet in PREROUTING.
func guestLocal(t *testing.T, l *lab.Lab, work, bin string) {
	res := localResult{Client: topo.ClientHost().V4.String()}
	defer func() {
		b, _ := json.Marshal(res)
		os.WriteFile(filepath.Join(work, "local-answered"), b, 0o644)
	}()
	fail := func(format string, args ...any) {
		res.Err = fmt.Sprintf(format, args...)
		t.Error(res.Err)
	}
	hcnp, err := waitFile(filepath.Join(work, "local-hcnp"), 4*time.Minute)
	if err != nil {
		fail("%v", err)
		return
	}
	for i, n := range l.Topo.Nodes {
		args := []string{"--name", "pod-" + n.Name, "--port", "8080", "--health-port", hcnp}
		if i == 2 {
			args = append(args, "--unhealthy") // no local endpoint
		}
		if _, err := topo.StartLogged(n.Name, filepath.Join(work, "lab", n.Name+"-pod.log"), filepath.Join(bin, "nodeserver"), args...); err != nil {
			fail("%v", err)
			return
		}
	}
	vip, err := waitFile(filepath.Join(work, "local-vip"), 3*time.Minute)
	if err != nil {
		fail("%v", err)
		return
	}
	for i, n := range l.Topo.Nodes {
		rule := []string{"-t", "nat", "-A", "PREROUTING", "-d", vip + "/32", "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", topo.NodeHost(i+1).V4.String() + ":8080"}
		if i == 2 {
			rule = []string{"-A", "FORWARD", "-d", vip + "/32", "-p", "tcp", "--dport", "80", "-j", "DROP"}
		}
		if out, err := topo.Run(n.Name, "iptables-legacy", rule...); err != nil {
			fail("kube-proxy's rule on %s: %v %s", n.Name, err, out)
			return
		}
	}
	// Until the health checks have found node 3 down (rise/fall at a 1 s
	// interval) a connection may land there and time out: wait until lbd
	// reports node 3's backend unhealthy (five answers in a row alone came
	// before that once the guest got faster: a third of connections still
	// went to node 3), then for five answers in a row, then every one of
	// twelve more must come from a node with an endpoint and show the
	// client's address.
	if err := waitUnhealthy(l, vip, topo.NodeHost(3).V4.String(), 3*time.Minute); err != nil {
		fail("%v", err)
		return
	}
	addr := net.JoinHostPort(vip, "80")
	deadline, inRow := time.Now().Add(3*time.Minute), 0
	for inRow < 5 {
		if _, err := whoamiFromClient(addr); err != nil {
			inRow = 0
			if time.Now().After(deadline) {
				fail("the Local Service's VIP %s never answered five times in a row: %v", addr, err)
				return
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		inRow++
	}
	for range 12 {
		line, err := whoamiFromClient(addr)
		if err != nil {
			fail("after the warm-up, %s: %v", addr, err)
			return
		}
		res.Seen = append(res.Seen, line)
	}
	t.Logf("Local Service %s: %q", vip, res.Seen)
}

// waitUnhealthy waits until lbd reports the backend at node unhealthy in
// the virtual service at vip.
func waitUnhealthy(l *lab.Lab, vip, node string, within time.Duration) error {
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, err := l.LBCTL("vip", "list", "--all-tenants", "-o", "json")
		if err != nil {
			last = err.Error()
			continue
		}
		var list struct {
			Items []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			last = fmt.Sprintf("vip list: %v", err)
			continue
		}
		for _, raw := range list.Items {
			vs := &edgelbv1.VirtualService{}
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, vs); err != nil || vs.Vip != vip {
				continue
			}
			for _, b := range vs.Backends {
				if b.Address == node {
					last = b.GetHealth().GetState().String()
					if b.GetHealth().GetState() == edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY {
						return nil
					}
				}
			}
		}
	}
	return fmt.Errorf("lbd never reported %s's backend at %s unhealthy within %s (last: %s)", vip, node, within, last)
}

// whoamiFromClient asks, from the client's namespace and address, the
// backend behind addr which source address it sees.
func whoamiFromClient(addr string) (string, error) {
	return probe.Whoami(topo.ClientHost().Name, addr, 3*time.Second)
}

// connectFrom connects to vip:80 from src inside the guest's client namespace
// (probe.Once itself dials from the caller's namespace) and reads the node's
// greeting.
func connectFrom(src netip.Addr, vip string, timeout time.Duration) (string, error) {
	return connectTo(src, vip, "80", timeout)
}

// dialUntilAnswer connects to host:port from src every 10 ms (each try up
// to 300 ms) until a node answers or within has passed; progress, when set,
// hears each failed try.
func dialUntilAnswer(src netip.Addr, host, port string, within time.Duration, progress func(error)) (string, error) {
	deadline := time.Now().Add(within)
	for {
		node, err := connectTo(src, host, port, 300*time.Millisecond)
		if err == nil {
			return node, nil
		}
		if time.Now().After(deadline) {
			return "", err
		}
		if progress != nil {
			progress(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connectTo connects to host:port from src in the client's namespace and
// reads the node's greeting.
func connectTo(src netip.Addr, host, port string, timeout time.Duration) (string, error) {
	var node string
	err := netns.Do(topo.ClientHost().Name, func() (err error) {
		node, err = probe.Once(probe.Options{Addr: net.JoinHostPort(host, port), Timeout: timeout}.WithSources([]netip.Addr{src}))
		return err
	})
	return node, err
}
