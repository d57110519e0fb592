package fsm

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/rules"
)

// ecmp gives vs the modes a bgp pool serves: mh and dr.
func ecmp(vs *edgelbv1.VirtualService) *edgelbv1.VirtualService {
	vs.Scheduler, vs.ForwardingMode = edgelbv1.Scheduler_SCHEDULER_MH, edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	return vs
}

// Raw entries (no API in front) that would put a service in a bgp pool with
// modes no member can serve at once are refused from level BGPModes on,
// with the API's reason, whichever way the service lands there: a named
// pool, an allocated VIP, a requested VIP, or an update. Entries of older
// levels replay as they applied.
func TestBGPPoolModesRawEntries(t *testing.T) {
	rr := func(vs *edgelbv1.VirtualService) *edgelbv1.VirtualService {
		vs = ecmp(vs)
		vs.Scheduler = edgelbv1.Scheduler_SCHEDULER_RR
		return vs
	}
	nat := func(vs *edgelbv1.VirtualService) *edgelbv1.VirtualService { return vs } // svc is nat
	setup := func() *harness {
		h := newHarness(t)
		h.ok(createPool(bgpPool("rack", "198.51.100.0/28"))) // the only pool: allocation lands there
		return h
	}
	for name, vs := range map[string]*edgelbv1.VirtualService{
		"rr in named pool":    inPool(rr(svc("t", "a", "")), "rack"),
		"nat in named pool":   inPool(nat(svc("t", "a", "")), "rack"),
		"nat allocated":       nat(svc("t", "a", "")),
		"rr at requested vip": rr(svc("t", "a", "198.51.100.5")),
	} {
		h := setup()
		r := h.refused(&raftv1.CreateVirtualService{Service: proto.Clone(vs).(*edgelbv1.VirtualService)}, codes.FailedPrecondition, "rack", "--scheduler mh --mode dr")
		if got := errinfo.Reason(r.Err()); got != errinfo.BgpPoolNeedsMhDr {
			t.Errorf("%s: reason %q, want %s", name, got, errinfo.BgpPoolNeedsMhDr)
		}
		// Written by a binary before the rule: applied as it was then.
		for _, lvl := range []rules.Level{rules.Legacy, rules.Strict} {
			h := setup()
			if r := h.applyAt(lvl, &raftv1.CreateVirtualService{Service: proto.Clone(vs).(*edgelbv1.VirtualService)}); r.Code != codes.OK {
				t.Errorf("%s at level %d: %v %s, want it applied as before", name, lvl, r.Code, r.Message)
			}
		}
	}

	// An update of a served service to nat is refused and changes nothing.
	h := setup()
	h.ok(&raftv1.CreateVirtualService{Service: inPool(ecmp(svc("t", "a", "")), "rack")})
	before := h.get("t", "a")
	upd := inPool(nat(svc("t", "a", "")), "rack")
	r := h.refused(&raftv1.UpdateVirtualService{Service: upd}, codes.FailedPrecondition, "forwarding nat")
	if errinfo.Reason(r.Err()) != errinfo.BgpPoolNeedsMhDr {
		t.Errorf("update to nat: reason %q", errinfo.Reason(r.Err()))
	}
	if after := h.get("t", "a"); !proto.Equal(before, after) {
		t.Errorf("refused update changed the service: %v", after)
	}

	// An l2 pool takes any modes.
	h = newHarness(t)
	h.ok(createPool(pool("lan", "192.0.2.0/28")))
	h.ok(&raftv1.CreateVirtualService{Service: rr(svc("t", "a", ""))})
	h.ok(&raftv1.CreateVirtualService{Service: nat(svc("t", "b", ""))})
}

// PlacementPool previews the pool the FSM would place a service in, as
// placeVIP decides it.
func TestPlacementPool(t *testing.T) {
	h := rackAndLAN(t)
	for _, c := range []struct {
		vs   *edgelbv1.VirtualService
		want string
	}{
		{inPool(svc("t", "a", ""), "rack"), "rack"},
		{inPool(svc("t", "a", ""), "lan"), "lan"},
		{svc("t", "a", "192.0.2.7"), "lan"},
		{svc("t", "a", "198.51.100.7"), "rack"},
		{svc("t", "a", ""), "lan"}, // allocation tries pools in name order
		{svc("t", "a", "203.0.113.1"), ""},
		{inPool(svc("t", "a", ""), "none"), ""},
	} {
		if got := h.f.PlacementPool(c.vs, false).GetName(); got != c.want {
			t.Errorf("PlacementPool(vip %q pool %q) = %q, want %q", c.vs.Vip, c.vs.Pool, got, c.want)
		}
	}
	// The update of a stored service that names no address stays in its pool.
	h.ok(&raftv1.CreateVirtualService{Service: inPool(ecmp(svc("t", "b", "")), "rack")})
	if got := h.f.PlacementPool(svc("t", "b", ""), true).GetName(); got != "rack" {
		t.Errorf("update preview: %q, want rack", got)
	}
	if got := h.f.PlacementPool(svc("t", "b", "192.0.2.9"), true).GetName(); got != "lan" {
		t.Errorf("update preview to a requested VIP: %q, want lan", got)
	}
}

// A VIP of a bgp pool never gets an owner: not at creation, whatever the
// leader proposed, nor by a later assignment. An l2 pool's does.
func TestBGPPoolVIPsHaveNoOwner(t *testing.T) {
	h := rackAndLAN(t)
	got := h.ok(&raftv1.CreateVirtualService{Service: inPool(ecmp(svc("t", "b", "")), "rack"), Owner: "m1"}).Service
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
	h := rackAndLAN(t)
	h.ok(&raftv1.CreateVirtualService{Service: inPool(withBackends(ecmp(svc("t", "b", "")), backend("10.0.0.1", 0)), "rack")})
	h.ok(&raftv1.CreateVirtualService{Service: inPool(withBackends(svc("t", "l", ""), backend("10.0.0.1", 30080)), "lan"), Owner: "m1"})
	down := &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY}
	for name, port := range map[string]uint32{"b": 0, "l": 30080} {
		h.ok(&raftv1.SetBackendHealth{Updates: []*raftv1.HealthUpdate{{Tenant: "t", Name: name, Address: "10.0.0.1", Port: port, Health: down, Reporter: "m2"}}})
	}
	if got := h.get("t", "b").Backends[0].GetHealth().GetState(); got != down.State {
		t.Errorf("bgp VIP backend health %v, want the report taken", got)
	}
	if got := h.get("t", "l").Backends[0].GetHealth().GetState(); got == down.State {
		t.Error("l2 VIP took a report from a member that does not own it")
	}
}

// bgpPool is pool announced by BGP.
func bgpPool(name string, ranges ...string) *edgelbv1.AddressPool {
	p := pool(name, ranges...)
	p.AnnounceMode = edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP
	return p
}

// rackAndLAN is a harness with two pools: rack (bgp, 198.51.100.0/28) and
// lan (l2, 192.0.2.0/28).
func rackAndLAN(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	h.ok(createPool(bgpPool("rack", "198.51.100.0/28")))
	h.ok(createPool(pool("lan", "192.0.2.0/28")))
	return h
}
