package dataplane

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgelb/edgelb/lbd/dataplane/srcrange"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// fakeIptables answers -save with an empty table and records -restore input,
// failing while fail is set.
type fakeIptables struct {
	restores []string
	fail     error
}

func (f *fakeIptables) run(_ context.Context, name string, _ []string, stdin string) ([]byte, error) {
	if strings.HasSuffix(name, "-restore") {
		if f.fail != nil {
			return nil, f.fail
		}
		f.restores = append(f.restores, stdin)
	}
	return nil, nil
}

func ranged(name, vip, owner string, ranges ...string) *edgelbv1.VirtualService {
	vs := owned("t", name, vip, owner)
	vs.SourceRanges = ranges
	return vs
}

// A VIP with source ranges goes up only once the kernel filters it; a host
// that cannot filter leaves the service out rather than serving it open;
// a standby holds the filter, so taking the VIP over runs no iptables.
func TestReconcileSourceRangesFailClosed(t *testing.T) {
	ctx := context.Background()
	e, _, fa, _ := fakeEngine(t)
	closed := ranged("closed", "192.0.2.1", "me", "10.1.0.0/16")
	open := owned("t", "open", "192.0.2.2", "me")
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")

	// No filter on this host: isolated, not served open.
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{closed, open}, "me"); err != nil {
		t.Fatal(err)
	}
	if fa.on[a1] || !fa.on[a2] {
		t.Fatalf("without a filter: addresses %v; want only the open VIP up", fa.on)
	}
	if iso := e.Isolated(); len(iso) != 1 || !strings.HasPrefix(iso[0], "t/closed: ") || !strings.Contains(iso[0], "source ranges") {
		t.Fatalf("Isolated() = %q, want t/closed for its source ranges", iso)
	}

	// A filter whose restore fails: still not up, and the pass says why.
	ipt := &fakeIptables{fail: errors.New("iptables-legacy-restore: exit status 1")}
	f, err := srcrange.Open(ctx, "iptables-legacy", "ip6tables-legacy", ipt.run)
	if err != nil {
		t.Fatal(err)
	}
	e.filter = f
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{closed, open}, "me"); err == nil || !errors.Is(err, ipt.fail) {
		t.Fatalf("Reconcile = %v, want the restore's failure", err)
	}
	if fa.on[a1] {
		t.Fatal("a VIP with source ranges went up without its filter")
	}
	ipt.fail = nil
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{closed, open}, "me"); err != nil {
		t.Fatal(err)
	}
	if !fa.on[a1] || len(e.Isolated()) != 0 {
		t.Fatalf("filtered: addresses %v, isolated %q; want 192.0.2.1 up", fa.on, e.Isolated())
	}
	chain, _ := srcrange.Rules(srcrange.VIP{Addr: a1, Services: []*srcrange.Service{{Name: "t/closed",
		Ports: []srcrange.Port{{Proto: "tcp", Port: 80}}, Ranges: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}}})
	if n := len(ipt.restores); n != 1 || !strings.Contains(ipt.restores[0], "-A "+srcrange.Chain+" -d 192.0.2.1/32 -j "+chain) {
		t.Fatalf("restores %q, want one with 192.0.2.1's chain %s", ipt.restores, chain)
	}

	// A standby: the filter of a VIP owned elsewhere is programmed too;
	// the takeover then adds the address with no iptables run.
	standby := ranged("standby", "192.0.2.3", "edge2", "10.2.0.0/16")
	a3 := netip.MustParseAddr("192.0.2.3")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{closed, open, standby}, "me"); err != nil {
		t.Fatal(err)
	}
	if fa.on[a3] || len(ipt.restores) != 2 || !strings.Contains(ipt.restores[1], "-d 192.0.2.3/32") {
		t.Fatalf("standby: address up %v, restores %d; want the filter programmed and no address", fa.on[a3], len(ipt.restores))
	}
	ipt.fail = errors.New("no iptables during a takeover")
	took := ranged("standby", "192.0.2.3", "me", "10.2.0.0/16")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{closed, open, took}, "me"); err != nil {
		t.Fatalf("takeover ran iptables: %v", err)
	}
	if !fa.on[a3] {
		t.Fatal("taken-over VIP not up")
	}
}

// A service that denies all sources gets a chain of DROPs alone (no RETURN):
// its VIP goes up filtered, closed to every client; without a filter it is
// left out, as a service with ranges is.
func TestReconcileDenyAllSources(t *testing.T) {
	ctx := context.Background()
	e, _, fa, _ := fakeEngine(t)
	closed := owned("t", "closed6", "192.0.2.9", "me")
	closed.DenyAllSources = true
	a := netip.MustParseAddr("192.0.2.9")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{closed}, "me"); err != nil {
		t.Fatal(err)
	}
	if fa.on[a] || len(e.Isolated()) != 1 {
		t.Fatalf("without a filter: up %v, isolated %q; want it left out", fa.on[a], e.Isolated())
	}
	ipt := &fakeIptables{}
	f, err := srcrange.Open(ctx, "iptables-legacy", "ip6tables-legacy", ipt.run)
	if err != nil {
		t.Fatal(err)
	}
	e.filter = f
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{closed}, "me"); err != nil {
		t.Fatal(err)
	}
	if !fa.on[a] || len(ipt.restores) != 1 {
		t.Fatalf("up %v, restores %d; want the VIP up behind one restore", fa.on[a], len(ipt.restores))
	}
	r := ipt.restores[0]
	if strings.Contains(r, "RETURN") || !strings.Contains(r, "-p tcp -m multiport --dports 80 -m comment --comment \"edgelb:t/closed6\" -j DROP") {
		t.Fatalf("restore %q: want a DROP of port 80 and no RETURN", r)
	}
}
