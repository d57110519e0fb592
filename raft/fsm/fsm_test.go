package fsm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func TestCreateAllocatesLowestFreeFromSortedPools(t *testing.T) {
	h := newHarness(t)
	// Created out of name order: allocation must follow names, not creation.
	h.ok(createPool(pool("b-pool", "10.0.1.0/30")))
	h.ok(createPool(pool("a-pool", "10.0.0.0/30", "2001:db8::/127")))
	manual := pool("0-manual", "10.0.9.0/30")
	manual.Manual = true
	h.ok(createPool(manual))
	private := pool("00-private", "10.0.8.0/30")
	private.Tenants = []string{"t2"}
	h.ok(createPool(private))

	wantVIP := func(tenant, name, vip, pool string) *edgelbv1.VirtualService {
		t.Helper()
		vs := h.get(tenant, name)
		if vs.Vip != vip || vs.Pool != pool {
			t.Fatalf("%s/%s got %s in %s, want %s in %s", tenant, name, vs.Vip, vs.Pool, vip, pool)
		}
		return vs
	}
	r := h.ok(create(svc("t1", "s1", "")))
	if r.Service == nil || r.Service.Vip != "10.0.0.1" || r.Service.Pool != "a-pool" {
		t.Fatalf("create answered %v", r.Service)
	}
	if r.Revision != h.idx {
		t.Errorf("Result.Revision = %d, want the log index %d", r.Revision, h.idx)
	}
	if r.Service.Generation != 1 {
		t.Errorf("new service has generation %d, want 1", r.Service.Generation)
	}
	if !r.Service.CreateTime.AsTime().Equal(epoch.Add(5e9)) || !proto.Equal(r.Service.CreateTime, r.Service.UpdateTime) {
		t.Errorf("create/update time = %v/%v, want the command's time", r.Service.CreateTime, r.Service.UpdateTime)
	}
	h.ok(create(svc("t1", "s2", "")))
	wantVIP("t1", "s2", "10.0.0.2", "a-pool")
	// a-pool's IPv4 side is full (/30 has two usable addresses): next pool by name.
	h.ok(create(svc("t1", "s3", "")))
	wantVIP("t1", "s3", "10.0.1.1", "b-pool")
	// IPv6 comes from the IPv6 side of the first pool that has one.
	h.ok(create(v6(svc("t1", "s6", ""))))
	wantVIP("t1", "s6", "2001:db8::", "a-pool")

	// A freed address is the lowest free again.
	h.ok(deleteVS("t1", "s1"))
	h.ok(create(svc("t1", "s4", "")))
	wantVIP("t1", "s4", "10.0.0.1", "a-pool")

	// t2 may use 00-private, which sorts first; the manual pool is skipped unless named.
	h.ok(create(svc("t2", "s1", "")))
	wantVIP("t2", "s1", "10.0.8.1", "00-private")
	h.ok(create(inPool(svc("t2", "s2", ""), "0-manual")))
	wantVIP("t2", "s2", "10.0.9.1", "0-manual")
	// Naming a pool allocates from it only.
	h.ok(create(inPool(svc("t1", "s5", ""), "b-pool")))
	wantVIP("t1", "s5", "10.0.1.2", "b-pool")
	// A requested VIP records the pool that holds it.
	h.ok(create(svc("t1", "s7", "10.0.9.2")))
	wantVIP("t1", "s7", "10.0.9.2", "0-manual")
}

func TestCreateRefusals(t *testing.T) {
	h := newHarness(t)
	private := pool("private", "10.0.8.0/30")
	private.Tenants = []string{"t2"}
	h.ok(createPool(private))
	// No pool open to t1 yet.
	h.refused(create(svc("t1", "a", "")), codes.FailedPrecondition, "no address pool is open to tenant t1")

	h.ok(createPool(pool("small", "10.0.0.0/30")))
	h.ok(create(svc("t1", "a", "")))

	h.refused(create(svc("t1", "a", "")), codes.AlreadyExists, "t1/a", "already exists")
	h.refused(create(svc("t1", "out", "192.0.2.1")), codes.FailedPrecondition, "192.0.2.1", "t1", "not in any address pool")
	// In a pool, but one closed to the tenant: as good as outside.
	h.refused(create(svc("t1", "closed", "10.0.8.1")), codes.FailedPrecondition, "10.0.8.1", "open to tenant t1")
	h.refused(create(inPool(svc("t1", "named", ""), "private")), codes.PermissionDenied, "private", "t1")
	h.refused(create(inPool(svc("t1", "missing", ""), "nope")), codes.FailedPrecondition, "nope", "does not exist")
	// A requested VIP must be in the pool named with it.
	h.refused(create(inPool(svc("t2", "mismatch", "10.0.0.2"), "private")), codes.FailedPrecondition, "10.0.0.2", "in pool private")
	// Requested address already used without a sharing key.
	h.refused(create(svc("t1", "dup", "10.0.0.1")), codes.AlreadyExists, "10.0.0.1", "t1/a", "sharing key")

	h.ok(create(svc("t1", "b", "")))
	h.refused(create(svc("t1", "c", "")), codes.ResourceExhausted, "small", "t1")
	// Named full pool too.
	h.refused(create(inPool(svc("t1", "d", ""), "small")), codes.ResourceExhausted, "small")
}

func TestSharing(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/29")))
	h.ok(create(shared(svc("t1", "web", "10.0.0.5", tcp(80)), "k")))
	h.ok(create(shared(svc("t1", "tls", "10.0.0.5", tcp(443)), "k")))
	// Same port number on another protocol is a distinct port.
	h.ok(create(shared(svc("t1", "dns", "10.0.0.5", udp(80)), "k")))

	h.refused(create(shared(svc("t1", "web2", "10.0.0.5", tcp(8080), tcp(80)), "k")), codes.AlreadyExists, "tcp/80", "10.0.0.5", "t1/web")
	h.refused(create(shared(svc("t1", "other-key", "10.0.0.5", tcp(81)), "x")), codes.AlreadyExists, "10.0.0.5", "sharing key")
	h.refused(create(svc("t1", "no-key", "10.0.0.5", tcp(82))), codes.AlreadyExists, "10.0.0.5")
	h.refused(create(shared(svc("t2", "web", "10.0.0.5", tcp(83)), "k")), codes.AlreadyExists, "10.0.0.5", "another tenant")

	// Allocation with a sharing key joins the VIP that has the key, if the ports fit.
	h.ok(create(shared(svc("t1", "ssh", "", tcp(22)), "k")))
	if got := h.get("t1", "ssh").Vip; got != "10.0.0.5" {
		t.Errorf("allocation with sharing key got %s, want to join 10.0.0.5", got)
	}
	// ... and takes a fresh address when they do not.
	h.ok(create(shared(svc("t1", "web3", "", tcp(80)), "k")))
	if got := h.get("t1", "web3").Vip; got != "10.0.0.1" {
		t.Errorf("allocation with clashing port got %s, want the lowest free 10.0.0.1", got)
	}

	// The address stays in use until its last service goes.
	if _, used, size, ok := h.f.Pool("p"); !ok || used != 2 || size != 6 {
		t.Errorf("Pool(p) used/size = %d/%d %v, want 2/6", used, size, ok)
	}
	for _, n := range []string{"web", "tls", "dns"} {
		h.ok(deleteVS("t1", n))
		h.refused(create(svc("t2", "grab", "10.0.0.5")), codes.AlreadyExists, "10.0.0.5")
	}
	h.ok(deleteVS("t1", "ssh"))
	h.ok(create(svc("t2", "grab", "10.0.0.5")))
}

func TestUpdate(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/29")))
	h.ok(member("m1"))
	created := h.ok(createOwned(svc("t1", "s", ""), "m1")).Service
	if created.Owner != "m1" {
		t.Fatalf("owner = %q, want m1", created.Owner)
	}

	// Stale generation: refused, nothing changes.
	upd := svc("t1", "s", "", tcp(80), tcp(443))
	h.refused(&raftv1.UpdateVirtualService{Service: upd, ExpectedGeneration: 7}, codes.Aborted, "generation 1", "not 7")

	r := h.ok(&raftv1.UpdateVirtualService{Service: upd, ExpectedGeneration: 1})
	got := h.get("t1", "s")
	if got.Generation != 2 || r.Service.Generation != 2 {
		t.Errorf("generation after update = %d (answer %d), want 2", got.Generation, r.Service.Generation)
	}
	if got.Vip != created.Vip || got.Pool != created.Pool {
		t.Errorf("update without a VIP moved it: %s/%s → %s/%s", created.Vip, created.Pool, got.Vip, got.Pool)
	}
	if got.Owner != "m1" {
		t.Errorf("update lost the owner: %q", got.Owner)
	}
	if len(got.Ports) != 2 {
		t.Errorf("update did not store the new ports: %v", got.Ports)
	}
	if !proto.Equal(got.CreateTime, created.CreateTime) || proto.Equal(got.UpdateTime, created.UpdateTime) {
		t.Errorf("times after update: create %v (was %v), update %v", got.CreateTime, created.CreateTime, got.UpdateTime)
	}
	// Generation 0 means unconditional.
	h.ok(&raftv1.UpdateVirtualService{Service: svc("t1", "s", "")})
	if g := h.get("t1", "s").Generation; g != 3 {
		t.Errorf("generation = %d, want 3", g)
	}
	// An update naming the pool it is in keeps the address too.
	h.ok(&raftv1.UpdateVirtualService{Service: inPool(svc("t1", "s", ""), "p")})
	if v := h.get("t1", "s").Vip; v != created.Vip {
		t.Errorf("update naming its own pool moved the VIP to %s", v)
	}
	// A requested new VIP moves it; the old one is free again.
	h.ok(&raftv1.UpdateVirtualService{Service: svc("t1", "s", "10.0.0.6")})
	if v := h.get("t1", "s").Vip; v != "10.0.0.6" {
		t.Errorf("update to 10.0.0.6 left VIP %s", v)
	}
	h.ok(create(svc("t1", "t", "")))
	if v := h.get("t1", "t").Vip; v != created.Vip {
		t.Errorf("freed %s was not reused, got %s", created.Vip, v)
	}
	h.refused(&raftv1.UpdateVirtualService{Service: svc("t1", "s", "192.0.2.1")}, codes.FailedPrecondition, "192.0.2.1")
	h.refused(&raftv1.UpdateVirtualService{Service: svc("t1", "s", created.Vip)}, codes.AlreadyExists, created.Vip)
	h.refused(&raftv1.UpdateVirtualService{Service: svc("t1", "nope", "")}, codes.NotFound, "t1/nope")

	// Delete with a stale generation is refused too.
	h.refused(&raftv1.DeleteVirtualService{Tenant: "t1", Name: "s", ExpectedGeneration: 1}, codes.Aborted)
	h.ok(&raftv1.DeleteVirtualService{Tenant: "t1", Name: "s", ExpectedGeneration: h.get("t1", "s").Generation})
	h.refused(deleteVS("t1", "s"), codes.NotFound, "t1/s")
}

func TestUpdateRespectsSharers(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/29")))
	h.ok(create(shared(svc("t1", "a", "10.0.0.1", tcp(80)), "k")))
	h.ok(create(shared(svc("t1", "b", "10.0.0.1", tcp(443)), "k")))
	// b cannot take a's port; keeping its own port with itself is fine.
	h.refused(&raftv1.UpdateVirtualService{Service: shared(svc("t1", "b", "", tcp(80)), "k")}, codes.AlreadyExists, "tcp/80")
	h.ok(&raftv1.UpdateVirtualService{Service: shared(svc("t1", "b", "", tcp(443), tcp(8443)), "k")})
	// Dropping the sharing key while sharing is refused.
	h.refused(&raftv1.UpdateVirtualService{Service: svc("t1", "b", "", tcp(443))}, codes.AlreadyExists, "sharing key")
}

func TestBackends(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/29", "2001:db8::/120")))
	h.ok(member("m1"))
	h.ok(createOwned(withBackends(svc("t1", "s", ""), backend("192.0.2.1", 30080)), "m1"))
	gen := func() uint64 { return h.get("t1", "s").Generation }

	// Set: replaces the list, checks the generation and the family.
	h.refused(&raftv1.SetBackends{Tenant: "t1", Name: "s", Backends: []*edgelbv1.Backend{backend("192.0.2.9", 1)}, ExpectedGeneration: 9}, codes.Aborted)
	h.refused(&raftv1.SetBackends{Tenant: "t1", Name: "s", Backends: []*edgelbv1.Backend{backend("2001:db8::9", 1)}}, codes.InvalidArgument, "2001:db8::9", "family")
	h.refused(&raftv1.SetBackends{Tenant: "t1", Name: "nope"}, codes.NotFound)

	// Health reported by the owner is kept for backends that stay.
	health := &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY}
	h.ok(&raftv1.SetBackendHealth{Updates: []*raftv1.HealthUpdate{{Tenant: "t1", Name: "s", Address: "192.0.2.1", Port: 30080, Health: health, Reporter: "m1"}}})
	h.ok(&raftv1.SetBackends{Tenant: "t1", Name: "s", ExpectedGeneration: 1, Backends: []*edgelbv1.Backend{backend("192.0.2.1", 30080), backend("192.0.2.2", 30080)}})
	vs := h.get("t1", "s")
	if vs.Generation != 2 || len(vs.Backends) != 2 {
		t.Fatalf("after set: generation %d, backends %v", vs.Generation, vs.Backends)
	}
	if !proto.Equal(vs.Backends[0].Health, health) || vs.Backends[1].Health != nil {
		t.Errorf("health after set: %v, %v; want the reported health kept and none for the new backend", vs.Backends[0].Health, vs.Backends[1].Health)
	}

	// Add.
	h.ok(&raftv1.AddBackend{Tenant: "t1", Name: "s", Backend: backend("192.0.2.3", 0)})
	if g := gen(); g != 3 {
		t.Errorf("generation after add = %d, want 3", g)
	}
	h.refused(&raftv1.AddBackend{Tenant: "t1", Name: "s", Backend: backend("192.0.2.3", 0)}, codes.AlreadyExists, "192.0.2.3")
	h.refused(&raftv1.AddBackend{Tenant: "t1", Name: "s", Backend: backend("2001:db8::3", 0)}, codes.InvalidArgument, "family")
	// Same address on another port is another backend.
	h.ok(&raftv1.AddBackend{Tenant: "t1", Name: "s", Backend: backend("192.0.2.3", 8080)})

	// Drain, and drain again: the second is a no-op with no event and no new generation.
	h.ok(&raftv1.DrainBackend{Tenant: "t1", Name: "s", Address: "192.0.2.2", Port: 30080, Drained: true})
	g, rev := gen(), h.f.Revision()
	r := h.ok(&raftv1.DrainBackend{Tenant: "t1", Name: "s", Address: "192.0.2.2", Port: 30080, Drained: true})
	if gen() != g || h.f.Revision() != rev {
		t.Errorf("no-op drain: generation %d→%d, revision %d→%d", g, gen(), rev, h.f.Revision())
	}
	if evs, _, _ := h.f.EventsSince(rev); len(evs) != 0 {
		t.Errorf("no-op drain recorded events: %v", evs)
	}
	if r.Service == nil || !r.Service.Backends[1].Drained || r.Revision != rev {
		t.Errorf("no-op drain answered %v at revision %d, want the stored service at %d", r.Service, r.Revision, rev)
	}
	h.ok(&raftv1.DrainBackend{Tenant: "t1", Name: "s", Address: "192.0.2.2", Port: 30080, Drained: false})
	if b := h.get("t1", "s").Backends[1]; b.Drained {
		t.Errorf("undrain left %v drained", b)
	}
	h.refused(&raftv1.DrainBackend{Tenant: "t1", Name: "s", Address: "192.0.2.99", Port: 1, Drained: true}, codes.NotFound, "192.0.2.99:1")

	// Remove.
	h.ok(&raftv1.RemoveBackend{Tenant: "t1", Name: "s", Address: "192.0.2.3", Port: 0})
	vs = h.get("t1", "s")
	if findBackend(vs.Backends, "192.0.2.3", 0) >= 0 || findBackend(vs.Backends, "192.0.2.3", 8080) < 0 {
		t.Errorf("remove of 192.0.2.3 port 0 left %v", vs.Backends)
	}
	h.refused(&raftv1.RemoveBackend{Tenant: "t1", Name: "s", Address: "192.0.2.3", Port: 0}, codes.NotFound, "192.0.2.3")

	// An IPv6 VIP takes IPv6 backends only.
	h.ok(create(withBackends(v6(svc("t1", "six", "")), backend("2001:db8:1::1", 8080))))
	h.refused(&raftv1.AddBackend{Tenant: "t1", Name: "six", Backend: backend("192.0.2.1", 80)}, codes.InvalidArgument, "family")
}

func TestBackendHealth(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/29")))
	h.ok(createOwned(withBackends(svc("t1", "s", ""), backend("192.0.2.1", 8080)), "m1"))
	up := &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY}
	report := func(reporter string) *raftv1.SetBackendHealth {
		return &raftv1.SetBackendHealth{Updates: []*raftv1.HealthUpdate{{Tenant: "t1", Name: "s", Address: "192.0.2.1", Port: 8080, Health: up, Reporter: reporter}}}
	}
	rev := h.f.Revision()
	h.ok(report("m2")) // not the owner: dropped
	if h.f.Revision() != rev || h.get("t1", "s").Backends[0].Health != nil {
		t.Fatal("a non-owner's health report was recorded")
	}
	h.ok(report("m1"))
	vs := h.get("t1", "s")
	if !proto.Equal(vs.Backends[0].Health, up) || vs.Generation != 1 {
		t.Errorf("owner's report: health %v generation %d; want recorded without a generation bump", vs.Backends[0].Health, vs.Generation)
	}
	rev = h.f.Revision()
	h.ok(report("m1")) // unchanged: no event
	if h.f.Revision() != rev {
		t.Error("an unchanged health report recorded an event")
	}
}

func TestPools(t *testing.T) {
	h := newHarness(t)
	r := h.ok(createPool(pool("a", "10.0.0.0/24")))
	if r.Pool == nil || !proto.Equal(r.Pool.CreateTime, timestamppb.New(epoch.Add(1e9))) {
		t.Errorf("created pool %v, want its create time from the command", r.Pool)
	}
	h.refused(createPool(pool("a", "10.1.0.0/24")), codes.AlreadyExists, "a")
	h.refused(createPool(pool("b", "10.0.0.200-10.0.1.5")), codes.FailedPrecondition, "overlaps pool a")
	h.refused(createPool(pool("b", "192.0.2.0/24", "10.0.0.5/32")), codes.FailedPrecondition, "overlaps pool a")
	h.refused(createPool(pool("b", "10.0.0.300/24")), codes.InvalidArgument, "b")
	h.ok(createPool(pool("b", "10.0.1.0/24")))
	if ps := h.f.Pools(); len(ps) != 2 || ps[0].Name != "a" || ps[1].Name != "b" {
		t.Errorf("Pools() = %v", ps)
	}

	h.ok(create(svc("t1", "s1", "")))
	h.ok(create(svc("t1", "s2", "")))
	h.refused(&raftv1.DeleteAddressPool{Name: "a"}, codes.FailedPrecondition, "in use by 2", "t1/s1", "t1/s2")
	h.refused(&raftv1.DeleteAddressPool{Name: "nope"}, codes.NotFound, "nope")
	h.ok(&raftv1.DeleteAddressPool{Name: "b"})
	rev := h.f.Revision()
	evs, _, _ := h.f.EventsSince(rev - 1)
	if len(evs) != 1 || evs[0].Type != edgelbv1.EventType_EVENT_TYPE_DELETE || evs[0].GetAddressPool().GetName() != "b" {
		t.Errorf("delete pool events = %v", evs)
	}
	// Its addresses may be pooled again.
	h.ok(createPool(pool("c", "10.0.1.0/25")))
	h.ok(deleteVS("t1", "s1"))
	h.ok(deleteVS("t1", "s2"))
	h.ok(&raftv1.DeleteAddressPool{Name: "a"})
	if _, _, _, ok := h.f.Pool("a"); ok {
		t.Error("deleted pool still readable")
	}
}

func TestMembersAndOwners(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/28")))
	r := h.ok(member("m1"))
	if r.Member.State != edgelbv1.MemberState_MEMBER_STATE_ACTIVE {
		t.Errorf("new member state %v, want ACTIVE by default", r.Member.State)
	}
	rev := h.f.Revision()
	h.ok(member("m1")) // identical: no event
	if h.f.Revision() != rev {
		t.Error("an identical PutMember recorded an event")
	}
	h.ok(member("m2"))
	h.ok(createOwned(svc("t1", "a", ""), "m1"))
	h.ok(createOwned(svc("t1", "b", ""), "m1"))
	h.ok(createOwned(svc("t1", "c", ""), "m2"))

	// SetOwners moves ownership without a generation bump; unknown services are skipped.
	before := h.get("t1", "a")
	rev = h.f.Revision()
	h.ok(owners(assign("t1", "a", "m2"), assign("t1", "ghost", "m2"), assign("t1", "c", "m2")))
	after := h.get("t1", "a")
	if after.Owner != "m2" || after.Generation != before.Generation || !proto.Equal(after.UpdateTime, before.UpdateTime) {
		t.Errorf("after SetOwners: owner %q generation %d→%d; want m2, generation unchanged", after.Owner, before.Generation, after.Generation)
	}
	evs, _, _ := h.f.EventsSince(rev)
	if len(evs) != 1 || evs[0].GetVirtualService().GetName() != "a" || evs[0].Reason != "test" {
		t.Errorf("SetOwners events = %v, want one for t1/a with the reason", evs)
	}
	if vss, _ := h.f.List(Filter{Owner: "m2"}); len(vss) != 2 || vss[0].Name != "a" || vss[1].Name != "c" {
		t.Errorf("List(owner m2) = %v", names(vss))
	}

	// Removing a member unowns its services, without bumping their generations.
	rev = h.f.Revision()
	h.ok(&raftv1.RemoveMember{Id: "m2"})
	for _, n := range []string{"a", "c"} {
		vs := h.get("t1", n)
		if vs.Owner != "" || vs.Generation != 1 {
			t.Errorf("%s after its owner left: owner %q generation %d", n, vs.Owner, vs.Generation)
		}
	}
	if h.get("t1", "b").Owner != "m1" {
		t.Error("removing m2 changed m1's service")
	}
	if vss, _ := h.f.List(Filter{Owner: "m2"}); len(vss) != 0 {
		t.Errorf("List(owner m2) after removal = %v", names(vss))
	}
	evs, cur, ok := h.f.EventsSince(rev)
	if !ok || cur != h.idx || len(evs) != 3 {
		t.Fatalf("RemoveMember events = %d (cur %d ok %v), want member delete + 2 service puts at %d", len(evs), cur, ok, h.idx)
	}
	if evs[0].Type != edgelbv1.EventType_EVENT_TYPE_DELETE || evs[0].GetMember().GetId() != "m2" {
		t.Errorf("first event %v, want member m2 deleted", evs[0])
	}
	for _, e := range evs {
		if e.Revision != h.idx {
			t.Errorf("event %v has revision %d, want %d", e, e.Revision, h.idx)
		}
	}
	if _, ok := h.f.Member("m2"); ok {
		t.Error("removed member still readable")
	}
	h.refused(&raftv1.RemoveMember{Id: "m2"}, codes.NotFound, "m2")
	if ms := h.f.Members(); len(ms) != 1 || ms[0].Id != "m1" {
		t.Errorf("Members() = %v", ms)
	}
}

func names(vss []*edgelbv1.VirtualService) []string {
	var out []string
	for _, vs := range vss {
		out = append(out, vs.Tenant+"/"+vs.Name)
	}
	return out
}

func TestListFilters(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/28")))
	h.ok(createPool(pool("q", "10.0.1.0/28")))
	a := svc("t2", "a", "")
	a.Labels = map[string]string{"app": "web", "tier": "front"}
	h.ok(create(a))
	h.ok(create(inPool(svc("t1", "b", ""), "q")))
	h.ok(create(svc("t1", "a", "")))
	h.ok(create(shared(svc("t1", "c", "10.0.0.9", tcp(80)), "k")))
	h.ok(create(shared(svc("t1", "d", "10.0.0.9", tcp(443)), "k")))
	for _, tc := range []struct {
		f    Filter
		want string
	}{
		{Filter{}, "t1/a t1/b t1/c t1/d t2/a"},
		{Filter{Tenant: "t1"}, "t1/a t1/b t1/c t1/d"},
		{Filter{Pool: "q"}, "t1/b"},
		{Filter{VIP: "10.0.0.1"}, "t2/a"},
		{Filter{VIP: "not-an-ip"}, ""},
		{Filter{VIP: "10.0.0.9"}, "t1/c t1/d"},
		{Filter{VIP: "10.0.0.9", Tenant: "t2"}, ""},
		{Filter{VIP: "10.0.0.14"}, ""},
		{Filter{Labels: map[string]string{"app": "web"}}, "t2/a"},
		{Filter{Labels: map[string]string{"app": "web", "tier": "back"}}, ""},
	} {
		got, rev := h.f.List(tc.f)
		if s := strings.Join(names(got), " "); s != tc.want {
			t.Errorf("List(%+v) = %q, want %q", tc.f, s, tc.want)
		}
		if rev != h.f.Revision() {
			t.Errorf("List revision %d, want %d", rev, h.f.Revision())
		}
	}
	// Copies: changing one does not change the store.
	got, _ := h.f.List(Filter{Tenant: "t2"})
	got[0].Vip = "192.0.2.99"
	if h.get("t2", "a").Vip == "192.0.2.99" {
		t.Error("List returned the stored object, not a copy")
	}
}

func TestCommandVersionAndEmpty(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/28")))
	rev := h.f.Revision()
	cmd := command(h.idx+1, create(svc("t1", "a", "")))
	cmd.Version = CommandVersion + 1
	r := h.f.ApplyCommand(h.idx+1, cmd)
	if r.Code != codes.Unimplemented || !strings.Contains(r.Message, "newer") {
		t.Errorf("newer command: %v %q, want Unimplemented", r.Code, r.Message)
	}
	if h.f.Revision() != rev {
		t.Error("a refused newer command moved the revision")
	}
	if _, ok := h.f.Service(Key{"t1", "a"}); ok {
		t.Error("a newer command was applied")
	}
	h.refused(nil, codes.InvalidArgument, "empty or unknown")

	// Apply decodes log entries; undecodable data is refused, not a panic.
	res := h.f.Apply(rlog(h.idx+1, []byte{0xff, 0xff, 0xff}))
	if r, ok := res.(*Result); !ok || r.Code != codes.Internal {
		t.Errorf("Apply(garbage) = %#v, want Internal", res)
	}
	// Encode fills the version, and Apply of its bytes works like ApplyCommand.
	b, err := Encode(command(0, create(svc("t1", "a", ""))))
	if err != nil {
		t.Fatal(err)
	}
	res = h.f.Apply(rlog(h.idx+2, b))
	if r, ok := res.(*Result); !ok || r.Code != codes.OK || r.Service.Vip != "10.0.0.1" {
		t.Errorf("Apply(encoded create) = %#v", res)
	}
	if st, _ := status.FromError((&Result{Code: codes.Aborted, Message: "m"}).Err()); st.Code() != codes.Aborted || st.Message() != "m" {
		t.Errorf("Result.Err() = %v", st)
	}
}

// Ordered reads stay in tenant/name order while services come and go between
// them: the order is patched on each write instead of rebuilt.
func TestOrderKeptAcrossWrites(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/16")))
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[Key]bool{}
	for i := 0; i < 600; i++ {
		k := Key{fmt.Sprintf("t%d", rng.IntN(3)), fmt.Sprintf("s%03d", rng.IntN(150))}
		if live[k] {
			h.ok(&raftv1.DeleteVirtualService{Tenant: k.Tenant, Name: k.Name})
			delete(live, k)
		} else {
			h.ok(&raftv1.CreateVirtualService{Service: inPool(svc(k.Tenant, k.Name, ""), "p")})
			live[k] = true
		}
		if i%7 != 0 {
			continue // let several writes land between reads
		}
		got, _ := h.f.List(Filter{})
		want := make([]Key, 0, len(live))
		for k := range live {
			want = append(want, k)
		}
		slices.SortFunc(want, compareKeys)
		gotKeys := make([]Key, 0, len(got))
		for _, vs := range got {
			gotKeys = append(gotKeys, KeyOf(vs))
		}
		if !slices.Equal(gotKeys, want) {
			t.Fatalf("after write %d: listed %v, want %v", i, gotKeys, want)
		}
	}
}
