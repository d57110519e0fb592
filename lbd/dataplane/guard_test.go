package dataplane

import (
	"context"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/internal/logcapture"
	"github.com/edgelb/edgelb/lbd/dataplane/snat"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// recordingRules keeps every list the engine sets and every guard it opens.
type recordingRules struct {
	mu     sync.Mutex
	sets   [][]snat.VIP
	guards []string
	// left is the rules in the kernel before the first Set (a previous
	// run's); onSet, if set, runs at each Set.
	left  map[netip.Addr]bool
	onSet func()
}

func (r *recordingRules) Set(_ context.Context, vips []snat.VIP) error {
	if r.onSet != nil {
		r.onSet()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, slices.Clone(vips))
	return nil
}
func (r *recordingRules) Guard(a netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.guards = append(r.guards, a.String())
	return nil
}
func (r *recordingRules) Backend() string { return "recording" }

// Present: as Set last applied.
func (r *recordingRules) Present(a netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sets) == 0 {
		return r.left[a]
	}
	return slices.ContainsFunc(r.sets[len(r.sets)-1], func(v snat.VIP) bool { return v.Addr == a })
}

// last is the most recent list as addr → its TCP ports.
func (r *recordingRules) last() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for _, v := range r.sets[len(r.sets)-1] {
		ports := slices.Clone(v.TCPPorts)
		slices.Sort(ports)
		var b strings.Builder
		for i, p := range ports {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(int(p)))
		}
		out[v.Addr.String()] = b.String()
	}
	return out
}

// takeGuards returns the guards opened since the last call.
func (r *recordingRules) takeGuards() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.guards
	r.guards = nil
	return g
}

// A nat-mode VIP that comes here from another member gets a takeover guard,
// opened before its address goes up; the SNAT list carries every nat VIP's
// TCP ports (which the guard lets through). A VIP created here, one that comes
// back after this member was fenced, and a DR VIP get no guard.
func TestTakeoverGuard(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	buf := &logcapture.Buffer{}
	e.log = buf.Logger()
	rules := &recordingRules{}
	e.snat = rules
	e.cfg.TakeoverGuard = 10 * time.Second
	ctx := context.Background()

	moving := owned("t", "web", "192.0.2.1", "edge2")
	moving.Ports = append(moving.Ports, tcp(443, 30443),
		&edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: 53, BackendPort: 30053})
	shared := owned("t", "web-extra", "192.0.2.1", "edge2") // same VIP, another port
	shared.Ports[0].Port = 8080
	dr := owned("t", "dr", "192.0.2.3", "edge2")
	dr.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	fresh := owned("t", "fresh", "192.0.2.2", "me")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr}, "me"); err != nil {
		t.Fatal(err)
	}
	if got := rules.last(); got["192.0.2.1"] != "80,443,8080" || len(got) != 1 {
		t.Fatalf("SNAT list %v, want 192.0.2.1 with its TCP ports 80, 443, 8080 (the DR VIP has no SNAT rule)", got)
	}
	if g := rules.takeGuards(); len(g) != 0 {
		t.Fatalf("guards opened before any takeover: %v", g)
	}

	take := func(vs *edgelbv1.VirtualService, owner string) *edgelbv1.VirtualService {
		c := proto.Clone(vs).(*edgelbv1.VirtualService)
		c.Owner = owner
		return c
	}
	moving, shared, dr = take(moving, "me"), take(shared, "me"), take(dr, "me")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, fresh}, "me"); err != nil {
		t.Fatal(err)
	}
	if !fa.on[netip.MustParseAddr("192.0.2.1")] || !fa.on[netip.MustParseAddr("192.0.2.2")] || !fa.on[netip.MustParseAddr("192.0.2.3")] {
		t.Fatalf("addresses: %v", fa.on)
	}
	if g := rules.takeGuards(); !slices.Equal(g, []string{"192.0.2.1"}) {
		t.Fatalf("guards opened by the takeover: %v, want the nat VIP that came from edge2 only (not the DR one, not the new one)", g)
	}
	if recs := buf.MustRecords(t); !slices.ContainsFunc(recs, func(r map[string]any) bool {
		return r["vip"] == "192.0.2.1" && r["tenant"] == "t" && strings.Contains(r["msg"].(string), "taken over")
	}) {
		t.Errorf("no log line says 192.0.2.1 was taken over and guarded:\n%s", buf)
	}

	// Passes while the VIP stays here open nothing more.
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, fresh}, "me"); err != nil {
		t.Fatal(err)
	}
	if g := rules.takeGuards(); len(g) != 0 {
		t.Fatalf("a pass without a takeover opened %v", g)
	}

	// Fenced (no owner given), then serving again: the VIPs were this
	// member's all along, nothing came from elsewhere, even though their
	// objects changed meanwhile (a backend added, say).
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, fresh}, ""); err != nil {
		t.Fatal(err)
	}
	moving, shared, dr, fresh = take(moving, "me"), take(shared, "me"), take(dr, "me"), take(fresh, "me")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, fresh}, "me"); err != nil {
		t.Fatal(err)
	}
	if g := rules.takeGuards(); len(g) != 0 {
		t.Fatalf("back from a fence: guards %v, want none", g)
	}

	// Away to edge3 and back: a takeover again.
	fresh = take(fresh, "edge3")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, fresh}, "me"); err != nil {
		t.Fatal(err)
	}
	e.endHandovers(netip.MustParseAddr("192.0.2.2"), time.Now()) // edge3 announced it: withdrawn here
	fresh = take(fresh, "me")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, fresh}, "me"); err != nil {
		t.Fatal(err)
	}
	if g := rules.takeGuards(); !slices.Equal(g, []string{"192.0.2.2"}) {
		t.Fatalf("back from edge3: guards %v, want 192.0.2.2", g)
	}

	// With the guard off, a takeover opens none.
	e.cfg.TakeoverGuard = 0
	fresh = take(fresh, "edge3")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, fresh}, "me"); err != nil {
		t.Fatal(err)
	}
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, take(fresh, "me")}, "me"); err != nil {
		t.Fatal(err)
	}
	if g := rules.takeGuards(); len(g) != 0 {
		t.Fatalf("guard off: %v", g)
	}
}

// An address goes up before the pass's SNAT run when it does not need it:
// its rule is in the kernel already (left by the previous run, whose fence
// withdrew the address when the restart outlasted the lease), or it is DR. A
// new nat VIP's address waits for its rule.
func TestAddressBeforeSNATWhenRuleIsThere(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	left, fresh, drA := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	var atSet map[netip.Addr]bool
	var recorded string
	e.snat = &recordingRules{left: map[netip.Addr]bool{left: true}, onSet: func() {
		atSet = maps.Clone(fa.on)
		b, _ := os.ReadFile(e.recordPath())
		recorded = string(b)
	}}
	dr := owned("t", "dr", drA.String(), "me")
	dr.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	all := []*edgelbv1.VirtualService{owned("t", "back", left.String(), "me"), owned("t", "new", fresh.String(), "me"), dr}
	if err := e.Reconcile(context.Background(), all, "me"); err != nil {
		t.Fatal(err)
	}
	if !atSet[left] || !atSet[drA] || atSet[fresh] {
		t.Errorf("addresses up when the SNAT rules were set: %v; want %s (its rule was there) and %s (DR), not %s (its rule was not)", atSet, left, drA, fresh)
	}
	// The fence withdraws what the record names: an address up during the
	// SNAT run is in it, should lbd die there.
	if !strings.Contains(recorded, `"`+left.String()+`"`) || !strings.Contains(recorded, `"`+drA.String()+`"`) {
		t.Errorf("record during the SNAT run: %s; want %s and %s in it", recorded, left, drA)
	}
	if !fa.on[left] || !fa.on[fresh] || !fa.on[drA] {
		t.Errorf("addresses after the pass: %v, want all three", fa.on)
	}
}
