package fsm

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func (h *harness) restore(s *raftv1.Snapshot) *Result {
	h.t.Helper()
	h.idx++
	cmd := command(h.idx, nil)
	cmd.Op = &raftv1.Command_RestoreState{RestoreState: &raftv1.RestoreState{Snapshot: s, RequestedBy: "test"}}
	return h.f.ApplyCommand(h.idx, cmd)
}

func TestRestoreStateReplacesServicesAndPoolsKeepsMembers(t *testing.T) {
	// The backup: pool a with web and api, both owned by m-old.
	src := newHarness(t)
	src.ok(member("m-old"))
	src.ok(createPool(pool("a", "192.0.2.0/24")))
	src.ok(createOwned(withBackends(svc("t", "web", "192.0.2.1"), backend("10.0.0.1", 8080), backend("10.0.0.2", 8080)), "m-old"))
	src.ok(createOwned(svc("t", "api", "192.0.2.2"), "m-old"))
	backup := src.snap()

	// The running cluster: members m1, m2; pool b with "gone"; web exists,
	// owned by m2, with a health verdict for one backend and a higher generation.
	h := newHarness(t)
	h.ok(member("m1"))
	h.ok(member("m2"))
	h.ok(createPool(pool("a", "192.0.2.0/24")))
	h.ok(createPool(pool("b", "198.51.100.0/24")))
	h.ok(createOwned(svc("t", "gone", "198.51.100.7"), "m1"))
	h.ok(createOwned(withBackends(svc("t", "web", "192.0.2.1"), backend("10.0.0.1", 8080)), "m2"))
	for range 5 {
		h.ok(&raftv1.DrainBackend{Tenant: "t", Name: "web", Address: "10.0.0.1", Port: 8080, Drained: true})
		h.ok(&raftv1.DrainBackend{Tenant: "t", Name: "web", Address: "10.0.0.1", Port: 8080, Drained: false})
	}
	unhealthy := &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY, LastError: "refused"}
	h.ok(&raftv1.SetBackendHealth{Updates: []*raftv1.HealthUpdate{{Tenant: "t", Name: "web", Address: "10.0.0.1", Port: 8080, Health: unhealthy, Reporter: "m2"}}})
	genBefore := h.get("t", "web").Generation
	revBefore := h.f.Revision()

	if r := h.restore(backup); r.Code != codes.OK {
		t.Fatalf("restore: %v %s", r.Code, r.Message)
	}
	if h.f.Revision() != h.idx {
		t.Errorf("revision %d, want the restore's index %d", h.f.Revision(), h.idx)
	}
	if _, ok := h.f.Service(Key{"t", "gone"}); ok {
		t.Error("t/gone survived a restore of a snapshot without it")
	}
	if _, _, _, ok := h.f.Pool("b"); ok {
		t.Error("pool b survived a restore of a snapshot without it")
	}
	web := h.get("t", "web")
	if len(web.Backends) != 2 {
		t.Errorf("web has %d backends, want the snapshot's 2", len(web.Backends))
	}
	if web.Owner != "m2" {
		t.Errorf("web owner %q, want its current owner m2 (a restore moves no VIP that need not move)", web.Owner)
	}
	if web.Generation <= genBefore {
		t.Errorf("web generation %d, want above the pre-restore %d", web.Generation, genBefore)
	}
	if !proto.Equal(web.Backends[0].Health, unhealthy) || web.Backends[1].Health != nil {
		t.Errorf("health: kept %v / %v, want the current verdict for 10.0.0.1 and none for 10.0.0.2", web.Backends[0].Health, web.Backends[1].Health)
	}
	if api := h.get("t", "api"); api.Owner != "" {
		t.Errorf("api owner %q: m-old is not a member, so it should have none (the assigner gives one)", api.Owner)
	}
	if ms := h.f.Members(); len(ms) != 2 || ms[0].Id != "m1" || ms[1].Id != "m2" {
		t.Errorf("members %v, want the running cluster's m1, m2", ms)
	}
	if vss, _ := h.f.Shared(Filter{Owner: "m1"}); len(vss) != 0 {
		t.Errorf("owner index still lists %d services for m1", len(vss))
	}

	evs, _, ok := h.f.EventsSince(revBefore)
	if !ok {
		t.Fatal("history lost")
	}
	var got []string
	for _, e := range evs {
		name := e.GetVirtualService().GetName() + e.GetAddressPool().GetName()
		got = append(got, e.Type.String()[len("EVENT_TYPE_"):]+" "+name+" ("+e.Reason+")")
	}
	want := []string{
		"DELETE gone (" + ReasonRemovedByRestore + ")",
		"DELETE b (" + ReasonRemovedByRestore + ")",
		"PUT a (" + ReasonRestored + ")",
		"PUT api (" + ReasonRestored + ")",
		"PUT web (" + ReasonRestored + ")",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The allocator works from the restored pools.
	r := h.ok(create(svc("t", "new", "")))
	if r.Service.Vip != "192.0.2.3" {
		t.Errorf("allocated %s after restore, want 192.0.2.3", r.Service.Vip)
	}
	// And the restored state survives a raft snapshot round trip.
	if again := restored(t, persist(t, h.f)); !proto.Equal(snapOf(t, again), h.snap()) {
		t.Error("state after restore does not survive a snapshot round trip")
	}
}

func TestRestoreStateRefusesBadSnapshotsChangingNothing(t *testing.T) {
	h := newHarness(t)
	h.ok(member("m1"))
	h.ok(createPool(pool("a", "192.0.2.0/24")))
	h.ok(createOwned(svc("t", "web", "192.0.2.1"), "m1"))
	good := h.snap()

	cases := map[string]struct {
		snap *raftv1.Snapshot
		code codes.Code
		frag string
	}{
		"nil":           {nil, codes.InvalidArgument, "no snapshot"},
		"newer version": {&raftv1.Snapshot{Version: snapshotVersion + 1}, codes.FailedPrecondition, "newer"},
		"bad pool":      {&raftv1.Snapshot{AddressPools: []*edgelbv1.AddressPool{pool("x", "not-a-range")}}, codes.InvalidArgument, "address pool x"},
		"nameless pool": {&raftv1.Snapshot{AddressPools: []*edgelbv1.AddressPool{nil}}, codes.InvalidArgument, "without a name"},
		"dup pool":      {&raftv1.Snapshot{AddressPools: []*edgelbv1.AddressPool{pool("x", "10.0.0.0/24"), pool("x", "10.0.1.0/24")}}, codes.InvalidArgument, "twice"},
		"bad vip":       {&raftv1.Snapshot{VirtualServices: []*edgelbv1.VirtualService{{Tenant: "t", Name: "x", Vip: "nope"}}}, codes.InvalidArgument, "not an IP"},
		"dup service": {&raftv1.Snapshot{AddressPools: []*edgelbv1.AddressPool{pool("p", "10.0.0.0/24")},
			VirtualServices: []*edgelbv1.VirtualService{svc("t", "x", "10.0.0.1"), svc("t", "x", "10.0.0.2")}}, codes.InvalidArgument, "twice"},
		"nil backend": {&raftv1.Snapshot{VirtualServices: []*edgelbv1.VirtualService{withBackends(svc("t", "x", "10.0.0.1"), nil)}}, codes.InvalidArgument, "empty backend"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			rev := h.f.Revision()
			r := h.restore(c.snap)
			if r.Code != c.code || !strings.Contains(r.Message, c.frag) {
				t.Fatalf("got %v %q, want %v mentioning %q", r.Code, r.Message, c.code, c.frag)
			}
			if h.f.Revision() != rev || !proto.Equal(h.snap(), good) {
				t.Fatalf("a refused restore changed the state: rev %d->%d\n%v\n%v", rev, h.f.Revision(), good, h.snap())
			}
		})
	}
}
