package fsm

import (
	"testing"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// A VIP of a bgp pool never gets an owner: not at creation, whatever the
// leader proposed, nor by a later assignment. An l2 pool's does.
func TestBGPPoolVIPsHaveNoOwner(t *testing.T) {
	h := newHarness(t)
	bp := pool("rack", "198.51.100.0/28")
	bp.AnnounceMode = edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP
	h.ok(createPool(bp))
	h.ok(createPool(pool("lan", "192.0.2.0/28")))
	got := h.ok(&raftv1.CreateVirtualService{Service: inPool(svc("t", "b", ""), "rack"), Owner: "m1"}).Service
	if got.Owner != "" {
		t.Errorf("bgp VIP created with owner %q", got.Owner)
	}
	h.ok(&raftv1.SetOwners{Assignments: []*raftv1.Assignment{{Tenant: "t", Name: "b", Owner: "m2"}}})
	if vs, _ := h.f.Service(Key{"t", "b"}); vs.Owner != "" {
		t.Errorf("bgp VIP assigned to %q", vs.Owner)
	}
	if l2 := h.ok(&raftv1.CreateVirtualService{Service: inPool(svc("t", "l", ""), "lan"), Owner: "m1"}).Service; l2.Owner != "m1" {
		t.Errorf("l2 VIP owner %q, want m1", l2.Owner)
	}
}

// A bgp-pool VIP has no owner: a health report from any member counts (the
// leader sends them); an l2 VIP's still only from its owner.
func TestBGPPoolHealthReports(t *testing.T) {
	h := newHarness(t)
	bp := pool("rack", "198.51.100.0/28")
	bp.AnnounceMode = edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP
	h.ok(createPool(bp))
	h.ok(createPool(pool("lan", "192.0.2.0/28")))
	h.ok(&raftv1.CreateVirtualService{Service: inPool(withBackends(svc("t", "b", ""), backend("10.0.0.1", 30080)), "rack")})
	h.ok(&raftv1.CreateVirtualService{Service: inPool(withBackends(svc("t", "l", ""), backend("10.0.0.1", 30080)), "lan"), Owner: "m1"})
	down := &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY}
	for _, name := range []string{"b", "l"} {
		h.ok(&raftv1.SetBackendHealth{Updates: []*raftv1.HealthUpdate{{Tenant: "t", Name: name, Address: "10.0.0.1", Port: 30080, Health: down, Reporter: "m2"}}})
	}
	if got := h.get("t", "b").Backends[0].GetHealth().GetState(); got != down.State {
		t.Errorf("bgp VIP backend health %v, want the report taken", got)
	}
	if got := h.get("t", "l").Backends[0].GetHealth().GetState(); got == down.State {
		t.Error("l2 VIP took a report from a member that does not own it")
	}
}
