package dataplane

import (
	"context"
	"net/netip"
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

// recordingRules keeps every list the engine sets.
type recordingRules struct {
	mu   sync.Mutex
	sets [][]snat.VIP
}

func (r *recordingRules) Set(_ context.Context, vips []snat.VIP) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, slices.Clone(vips))
	return nil
}
func (r *recordingRules) Backend() string { return "recording" }

// last is the most recent list as addr → guard (with its ports) or "".
func (r *recordingRules) last() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	if len(r.sets) == 0 {
		return out
	}
	for _, v := range r.sets[len(r.sets)-1] {
		out[v.Addr.String()] = ""
		if v.Guard {
			ports := slices.Clone(v.TCPPorts)
			slices.Sort(ports)
			var b strings.Builder
			for i, p := range ports {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strconv.Itoa(int(p)))
			}
			out[v.Addr.String()] = "guard " + b.String()
		}
	}
	return out
}

// A nat-mode VIP that comes here from another member is guarded for the
// window, with its TCP ports let through, and the guard is lifted when the
// window ends even if no pass runs. A VIP created here, one that comes back
// after this member was fenced, and a DR VIP get no guard.
func TestTakeoverGuard(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	buf := &logcapture.Buffer{}
	e.log = buf.Logger()
	rules := &recordingRules{}
	e.snat = rules
	e.cfg.TakeoverGuard = 300 * time.Millisecond
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
	if got := rules.last(); got["192.0.2.1"] != "" || len(got) != 1 {
		t.Fatalf("before the takeover: %v, want 192.0.2.1 unguarded (the DR VIP has no SNAT rule)", got)
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
	if !fa.on[netip.MustParseAddr("192.0.2.1")] || !fa.on[netip.MustParseAddr("192.0.2.2")] {
		t.Fatalf("addresses: %v", fa.on)
	}
	if got := rules.last(); got["192.0.2.1"] != "guard 80,443,8080" || got["192.0.2.2"] != "" {
		t.Fatalf("after the takeover: %v, want 192.0.2.1 guarded with its TCP ports 80, 443, 8080 and the new 192.0.2.2 not", got)
	}
	if recs := buf.MustRecords(t); !slices.ContainsFunc(recs, func(r map[string]any) bool {
		return r["vip"] == "192.0.2.1" && r["tenant"] == "t" && strings.Contains(r["msg"].(string), "taken over")
	}) {
		t.Errorf("no log line says 192.0.2.1 was taken over and guarded:\n%s", buf)
	}

	// Passes within the window keep the guard.
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, fresh}, "me"); err != nil {
		t.Fatal(err)
	}
	if got := rules.last(); got["192.0.2.1"] == "" {
		t.Fatalf("a pass inside the window dropped the guard: %v", got)
	}
	// No pass after that: the timer lifts it.
	deadline := time.Now().Add(5 * time.Second)
	for rules.last()["192.0.2.1"] != "" {
		if time.Now().After(deadline) {
			t.Fatalf("guard still up 5 s after a 300 ms window: %v", rules.last())
		}
		time.Sleep(20 * time.Millisecond)
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
	if got := rules.last(); got["192.0.2.1"] != "" || got["192.0.2.2"] != "" {
		t.Fatalf("back from a fence: %v, want no guard", got)
	}

	// With the guard off, a takeover sets none.
	e.cfg.TakeoverGuard = 0
	away := take(fresh, "edge3")
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, away}, "me"); err != nil {
		t.Fatal(err)
	}
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{moving, shared, dr, take(away, "me")}, "me"); err != nil {
		t.Fatal(err)
	}
	if got := rules.last(); got["192.0.2.2"] != "" {
		t.Fatalf("guard off: %v", got)
	}
	e.Close()
}
