package dataplane

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os/exec"
	"testing"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// The counters the daemon reads for metrics and GetServiceStats come from
// the kernel through the engine: every IPVS service (the daemon keeps
// edgelb's), and one virtual service's ports with their destinations.
func TestKernelCounters(t *testing.T) {
	kernelOnly(t)
	sh(t, "ip link add lbs0 type dummy && ip link set lbs0 up && ip addr add 10.98.0.1/24 dev lbs0")
	defer exec.Command("ip", "link", "del", "lbs0").Run()
	sh(t, "ipvsadm -A -t 10.76.0.1:80 -s rr") // someone else's, listed too
	defer exec.Command("ipvsadm", "-D", "-t", "10.76.0.1:80").Run()
	ctx := context.Background()
	e, err := Open(ctx, Config{Interface: "lbs0", StateDir: t.TempDir(), SNAT: "iptables-legacy", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GARPRepeatInterval: -1, FenceDelay: fenceDelay})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var k Kernel = e
	web := svc("web", "192.0.2.30", []*edgelbv1.Port{tcp(80, 30080), {Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: 53, BackendPort: 30053}}, "10.98.0.21", "10.98.0.22")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{web}, "me"); err != nil {
		t.Fatal(err)
	}
	defer e.Reconcile(ctx, nil, "me")

	all, err := k.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, s := range all {
		got[s.Protocol.String()+" "+netip.AddrPortFrom(s.Address, s.Port).String()] = len(s.Destinations)
	}
	want := map[string]int{"PROTOCOL_TCP 192.0.2.30:80": 2, "PROTOCOL_UDP 192.0.2.30:53": 2, "PROTOCOL_TCP 10.76.0.1:80": 0}
	for key, n := range want {
		if d, ok := got[key]; !ok || d != n {
			t.Errorf("Counters: %s with %d destinations (present %v), want %d; all %v", key, d, ok, n, got)
		}
	}

	ports, err := k.ServiceCounters(ctx, web)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 2 {
		t.Fatalf("ServiceCounters: %d ports, want 2: %+v", len(ports), ports)
	}
	for _, p := range ports {
		if p.Address != netip.MustParseAddr("192.0.2.30") || len(p.Destinations) != 2 {
			t.Errorf("ServiceCounters: %+v, want 192.0.2.30 with 2 destinations", p)
		}
		for _, d := range p.Destinations {
			if d.Weight != 1 || (d.Address.String() != "10.98.0.21" && d.Address.String() != "10.98.0.22") {
				t.Errorf("destination %+v, want one of the backends with weight 1", d)
			}
		}
	}
	// A service the kernel does not hold is an error naming it, not an empty answer.
	other := svc("other", "192.0.2.31", []*edgelbv1.Port{tcp(80, 30080)}, "10.98.0.21")
	if _, err := k.ServiceCounters(ctx, other); err == nil {
		t.Error("ServiceCounters of a service the kernel does not hold: no error")
	}
}
