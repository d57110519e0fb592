package fsm

import (
	"testing"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// lastReason applies op and returns the owner and ownership reason of the
// service event it recorded for tenant/name.
func (h *harness) lastReason(op any, tenant, name string) (string, edgelbv1.OwnershipReason) {
	h.t.Helper()
	rev := h.f.Revision()
	h.ok(op)
	evs, _, _ := h.f.EventsSince(rev)
	for i := len(evs) - 1; i >= 0; i-- {
		if vs := evs[i].GetVirtualService(); vs.GetTenant() == tenant && vs.GetName() == name {
			return vs.GetOwner(), evs[i].GetOwnershipReason()
		}
	}
	h.t.Fatalf("no event for %s/%s among %v", tenant, name, evs)
	return "", 0
}

// Every event that gives a service its owner carries why, from the
// command; entries written before the enum existed get it from what they
// hold, so replaying an old log reads the same.
func TestOwnershipReasonOnEvents(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/28")))
	h.ok(member("m1"))
	h.ok(member("m2"))
	check := func(what string, op any, name, wantOwner string, want edgelbv1.OwnershipReason) {
		t.Helper()
		owner, why := h.lastReason(op, "t1", name)
		if owner != wantOwner || why != want {
			t.Errorf("%s: owner %q reason %v, want %q %v", what, owner, why, wantOwner, want)
		}
	}
	check("create with the leader's decision", &raftv1.CreateVirtualService{Service: svc("t1", "a", "10.0.0.1", tcp(80)), Owner: "m2", OwnerReason: edgelbv1.OwnershipReason_OWNERSHIP_REASON_PINNED}, "a", "m2", edgelbv1.OwnershipReason_OWNERSHIP_REASON_PINNED)
	check("create from before the enum", createOwned(svc("t1", "b", "10.0.0.2", tcp(80)), "m1"), "b", "m1", edgelbv1.OwnershipReason_OWNERSHIP_REASON_ASSIGNED)
	check("create without an owner", create(svc("t1", "c", "10.0.0.3", tcp(80))), "c", "", edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED)
	check("assignment with the enum", owners(&raftv1.Assignment{Tenant: "t1", Name: "c", Owner: "m1", OwnershipReason: edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_UNREACHABLE, Reason: "owner unreachable"}), "c", "m1", edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_UNREACHABLE)
	check("assignment from before the enum", owners(&raftv1.Assignment{Tenant: "t1", Name: "a", Owner: "m1", Reason: "owner unreachable"}), "a", "m1", edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_UNREACHABLE)
	check("assignment with a text no release wrote", owners(assign("t1", "b", "m2")), "b", "m2", edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED)
	check("removing the owner", &raftv1.RemoveMember{Id: "m2"}, "b", "", edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_REMOVED)
}

// Services sharing an address share its owner. A create whose leader
// decided on state that changed before the entry applied (another create of
// the same address in flight) is normalised to the address's owner, the
// same on every member, instead of being refused.
func TestSharedVIPOwnerNormalised(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/28")))
	h.ok(member("m1"))
	h.ok(member("m2"))
	h.ok(&raftv1.CreateVirtualService{Service: shared(svc("t1", "web", "10.0.0.5", tcp(80)), "k"), Owner: "m1", OwnerReason: edgelbv1.OwnershipReason_OWNERSHIP_REASON_ASSIGNED})
	owner, why := h.lastReason(&raftv1.CreateVirtualService{Service: shared(svc("t1", "dns", "10.0.0.5", udp(53)), "k"), Owner: "m2", OwnerReason: edgelbv1.OwnershipReason_OWNERSHIP_REASON_ASSIGNED}, "t1", "dns")
	if owner != "m1" || why != edgelbv1.OwnershipReason_OWNERSHIP_REASON_SHARED_VIP {
		t.Errorf("joining a shared address with another owner: owner %q reason %v, want m1 %v", owner, why, edgelbv1.OwnershipReason_OWNERSHIP_REASON_SHARED_VIP)
	}
	// The leader's own decision for a shared address already agrees: kept as is.
	owner, why = h.lastReason(&raftv1.CreateVirtualService{Service: shared(svc("t1", "tls", "10.0.0.5", tcp(443)), "k"), Owner: "m1", OwnerReason: edgelbv1.OwnershipReason_OWNERSHIP_REASON_SHARED_VIP}, "t1", "tls")
	if owner != "m1" || why != edgelbv1.OwnershipReason_OWNERSHIP_REASON_SHARED_VIP {
		t.Errorf("joining with the address's owner: owner %q reason %v, want m1 %v", owner, why, edgelbv1.OwnershipReason_OWNERSHIP_REASON_SHARED_VIP)
	}
	// The same log gives the same state on a member restored from a snapshot.
	r := restored(t, persist(t, h.f))
	for _, n := range []string{"web", "dns", "tls"} {
		vs, ok := r.Service(Key{"t1", n})
		if !ok || vs.Owner != "m1" {
			t.Errorf("restored %s: %v", n, vs)
		}
	}
}
