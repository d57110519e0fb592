package dataplane

import (
	"context"
	"strings"
	"testing"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

type isoCount struct {
	nopObserver
	n int
}

func (o *isoCount) Isolated(n int) { o.n = n }

// A service the data plane cannot turn into IPVS services (a
// scheduler it does not know, say from a newer member, a VIP that does not parse) is left out and
// reported; every other service is programmed in the same pass.
func TestReconcileIsolatesUnprogrammableService(t *testing.T) {
	e, k, fa, _ := fakeEngine(t)
	obs := &isoCount{}
	e.obs = obs
	vss := many(3, 2)
	vss[1].Scheduler = 42
	vss[2].Vip = "not-an-ip"
	if err := e.Reconcile(context.Background(), vss, "me"); err != nil {
		t.Fatalf("one bad service failed the pass: %v", err)
	}
	if k.calls != 1+2 || len(fa.on) != 1 {
		t.Fatalf("%d IPVS calls, %d addresses; want the good service alone programmed (3, 1)", k.calls, len(fa.on))
	}
	iso := e.Isolated()
	if len(iso) != 2 || !strings.HasPrefix(iso[0], "t/s1: ") || !strings.Contains(iso[0], "scheduler") || !strings.HasPrefix(iso[1], "t/s2: ") {
		t.Errorf("Isolated() = %q; want t/s1 (scheduler) and t/s2", iso)
	}
	if obs.n != 2 {
		t.Errorf("observer told %d isolated services, want 2", obs.n)
	}
	// Fixed, it is programmed and no longer reported.
	fixed := many(3, 2)
	if err := e.Reconcile(context.Background(), fixed, "me"); err != nil {
		t.Fatal(err)
	}
	if len(e.Isolated()) != 0 || obs.n != 0 || len(fa.on) != 3 {
		t.Errorf("after the fix: isolated %q (observer %d), %d addresses; want none and 3", e.Isolated(), obs.n, len(fa.on))
	}
}

// The planner takes whatever the FSM holds without panicking.
func TestFromServiceRefusesOutOfRange(t *testing.T) {
	vs := many(1, 1)[0]
	vs.Ports[0].Port = 65536 + 80
	e, _, _, _ := fakeEngine(t)
	if err := e.Reconcile(context.Background(), []*edgelbv1.VirtualService{vs}, "me"); err != nil {
		t.Fatal(err)
	}
	if len(e.Isolated()) != 1 {
		t.Errorf("port 65616 (truncated to 80 by a 16-bit cast) was programmed: isolated %q", e.Isolated())
	}
}
