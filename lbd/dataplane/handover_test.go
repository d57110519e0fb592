package dataplane

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func ownedBy(vs *edgelbv1.VirtualService, owner string) *edgelbv1.VirtualService {
	c := proto.Clone(vs).(*edgelbv1.VirtualService)
	c.Owner = owner
	return c
}

// reconcileAs runs one Reconcile of all as member owner ("" when fenced) and fails
// the test on its error.
func reconcileAs(t *testing.T, e *Engine, owner string, all ...*edgelbv1.VirtualService) {
	t.Helper()
	if err := e.Reconcile(context.Background(), all, owner); err != nil {
		t.Fatal(err)
	}
}

// movedAway is where every handover starts: an engine that owned one VIP
// (as "me") and has just seen it moved to "other".
func movedAway(t *testing.T) (*Engine, *fakeAddrs, *nopSender, *edgelbv1.VirtualService, netip.Addr) {
	t.Helper()
	e, _, fa, snd := fakeEngine(t)
	vs := many(1, 2)[0]
	reconcileAs(t, e, "me", vs)
	reconcileAs(t, e, "me", ownedBy(vs, "other"))
	return e, fa, snd, vs, netip.MustParseAddr(vs.Vip)
}

// A VIP moved to another member stays here, unannounced, until that member
// announces it; then it goes.
func TestHandoverKeepsVIPUntilNewOwnerAnnounces(t *testing.T) {
	e, fa, snd, vs, a := movedAway(t)
	if !fa.on[a] || !e.HandingOver() {
		t.Fatalf("right after the move: address held %v, handing over %v; want both (kept until the new owner announces)", fa.on[a], e.HandingOver())
	}
	sent := snd.n
	// An unrelated address announced elsewhere ends nothing.
	e.endHandovers(netip.MustParseAddr("10.9.9.9"), time.Now())
	if !fa.on[a] {
		t.Fatal("withdrawn on another VIP's announcement")
	}
	e.endHandovers(a, time.Now())
	if fa.on[a] || e.HandingOver() {
		t.Fatalf("after the new owner announced it: address held %v, handing over %v; want neither", fa.on[a], e.HandingOver())
	}
	if snd.n != sent {
		t.Fatalf("%d announcements after the handover began", snd.n-sent)
	}
	// The next pass leaves it withdrawn.
	reconcileAs(t, e, "me", ownedBy(vs, "other"))
	if fa.on[a] {
		t.Fatal("a later pass put the moved VIP back")
	}
}

// A new owner that never announces: the hold bounds the handover.
func TestHandoverEndsAfterHold(t *testing.T) {
	e, fa, _, _, a := movedAway(t)
	e.endHandovers(netip.Addr{}, time.Now().Add(HandoverHold/2))
	if !fa.on[a] {
		t.Fatal("withdrawn before the hold ran out")
	}
	e.endHandovers(netip.Addr{}, time.Now().Add(HandoverHold))
	if fa.on[a] || e.HandingOver() {
		t.Fatalf("after the hold: address held %v, handing over %v; want neither", fa.on[a], e.HandingOver())
	}
}

// Moved back before the new owner took it: it stays and is announced again.
func TestHandoverReclaimed(t *testing.T) {
	e, fa, snd, vs, a := movedAway(t)
	sent := snd.n
	reconcileAs(t, e, "me", ownedBy(vs, "me"))
	if !fa.on[a] || e.HandingOver() {
		t.Fatalf("moved back: address held %v, handing over %v; want held, no handover", fa.on[a], e.HandingOver())
	}
	if snd.n == sent {
		t.Fatal("moved back, but not announced again")
	}
	e.endHandovers(a, time.Now().Add(time.Hour))
	if !fa.on[a] {
		t.Fatal("a reclaimed VIP was withdrawn by its ended handover")
	}
}

// No handover when this member is fenced (no owner), when the VIP is gone,
// or when it is switched off: the address goes in the same pass.
func TestNoHandoverWithdrawsAtOnce(t *testing.T) {
	vs := many(1, 2)[0]
	a := netip.MustParseAddr(vs.Vip)
	for _, c := range []struct {
		name  string
		next  []*edgelbv1.VirtualService
		owner string
		off   bool
	}{
		{"fenced", []*edgelbv1.VirtualService{vs}, "", false},
		{"deleted", nil, "me", false},
		{"unowned", []*edgelbv1.VirtualService{ownedBy(vs, "")}, "me", false},
		{"switched off", []*edgelbv1.VirtualService{ownedBy(vs, "other")}, "me", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, _, fa, _ := fakeEngine(t)
			e.cfg.NoHandover = c.off
			reconcileAs(t, e, "me", vs)
			reconcileAs(t, e, c.owner, c.next...)
			if fa.on[a] || e.HandingOver() {
				t.Fatalf("address held %v, handing over %v; want withdrawn at once", fa.on[a], e.HandingOver())
			}
		})
	}
}

// A member fenced while it hands a VIP over withdraws it in that pass: the
// lease, not the new owner, decides then.
func TestHandoverEndsWhenFenced(t *testing.T) {
	e, fa, _, vs, a := movedAway(t)
	reconcileAs(t, e, "", ownedBy(vs, "other"))
	if fa.on[a] || e.HandingOver() {
		t.Fatalf("fenced during the handover: address held %v, handing over %v; want neither", fa.on[a], e.HandingOver())
	}
}

// A provisional copy that ends while the committed state still names the
// owner it was taken from goes at once (EndProvisional): that owner comes
// back and adds it, and a handover would keep it here beside the owner's
// until the owner's announcement arrives. Only the next pass is affected:
// a later move of the same VIP hands over as usual.
func TestEndProvisionalWithdrawsAtOnce(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	vs := many(1, 2)[0]
	a := netip.MustParseAddr(vs.Vip)
	reconcileAs(t, e, "me", ownedBy(vs, "me")) // the provisional copy
	if !fa.on[a] {
		t.Fatal("the copy's address is not held")
	}
	e.EndProvisional([]netip.Addr{a})
	reconcileAs(t, e, "me", ownedBy(vs, "lost")) // the owner is back
	if fa.on[a] || e.HandingOver() {
		t.Fatalf("copy ended: address held %v, handing over %v; want withdrawn at once", fa.on[a], e.HandingOver())
	}
	// The mark does not outlive its pass.
	reconcileAs(t, e, "me", ownedBy(vs, "me"))
	reconcileAs(t, e, "me", ownedBy(vs, "other"))
	if !fa.on[a] || !e.HandingOver() {
		t.Fatalf("a later move: address held %v, handing over %v; want a handover", fa.on[a], e.HandingOver())
	}
	// Ending a copy that is already being handed over ends the handover.
	e.EndProvisional([]netip.Addr{a})
	reconcileAs(t, e, "me", ownedBy(vs, "other"))
	if fa.on[a] || e.HandingOver() {
		t.Fatalf("copy ended during a handover: address held %v, handing over %v; want neither", fa.on[a], e.HandingOver())
	}
}
