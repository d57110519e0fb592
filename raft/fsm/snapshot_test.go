package fsm

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// populate builds a state with every kind of object and some history.
func populate(h *harness) {
	h.ok(member("m1"))
	h.ok(member("m2"))
	h.ok(createPool(pool("p", "10.0.0.0/28", "2001:db8::/124")))
	closed := pool("q", "10.0.1.0-10.0.1.3")
	closed.Tenants = []string{"t2"}
	closed.Manual = true
	h.ok(createPool(closed))
	h.ok(createOwned(withBackends(svc("t1", "a", ""), backend("192.0.2.1", 30080), backend("192.0.2.2", 30080)), "m1"))
	h.ok(create(shared(svc("t1", "b", "10.0.0.5", tcp(443)), "k")))
	h.ok(create(shared(svc("t1", "c", "10.0.0.5", tcp(80)), "k")))
	h.ok(create(v6(svc("t2", "six", ""))))
	h.ok(create(svc("t2", "m", "10.0.1.2")))
	h.ok(create(svc("t1", "gone", "")))
	h.ok(deleteVS("t1", "gone")) // leaves a hole below the next free address
	h.ok(&raftv1.DrainBackend{Tenant: "t1", Name: "a", Address: "192.0.2.2", Port: 30080, Drained: true})
	h.ok(&raftv1.RenewTenantHeartbeat{Tenant: "t1"}) // status: moves no revision
	h.ok(owners(assign("t1", "b", "m2"), assign("t1", "c", "m2")))
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	h := newHarness(t)
	populate(h)
	b := persist(t, h.f)
	g := restored(t, b)

	want, got := h.snap(), snapOf(t, g)
	if !proto.Equal(want, got) {
		t.Fatalf("restored state differs:\nwant %v\ngot  %v", want, got)
	}
	if got.Revision != h.idx || g.Revision() != h.idx {
		t.Errorf("restored revision %d/%d, want %d", got.Revision, g.Revision(), h.idx)
	}
	if len(got.VirtualServices) != 5 || len(got.AddressPools) != 2 || len(got.Members) != 2 {
		t.Errorf("snapshot holds %d services, %d pools, %d members", len(got.VirtualServices), len(got.AddressPools), len(got.Members))
	}
	// Reads agree.
	l1, _ := h.f.List(Filter{})
	l2, _ := g.List(Filter{})
	if len(l1) != len(l2) {
		t.Fatalf("List lengths %d vs %d", len(l1), len(l2))
	}
	for i := range l1 {
		if !proto.Equal(l1[i], l2[i]) {
			t.Errorf("List[%d]: %v vs %v", i, l1[i], l2[i])
		}
	}
	o1, _ := h.f.List(Filter{Owner: "m2"})
	o2, _ := g.List(Filter{Owner: "m2"})
	if len(o1) != 2 || len(o2) != 2 {
		t.Errorf("owner index: %d before, %d after restore; want 2", len(o1), len(o2))
	}

	// Both make the same next decisions, allocations included.
	h2 := &harness{t: t, f: g, idx: h.idx}
	for _, op := range []any{
		create(svc("t1", "next", "")),
		create(svc("t1", "next2", "")),
		create(v6(svc("t1", "next6", ""))),
		create(shared(svc("t1", "joins", "", tcp(22)), "k")),
		create(svc("t2", "dup", "10.0.0.5")),
		&raftv1.DeleteAddressPool{Name: "p"},
		&raftv1.RemoveMember{Id: "m2"},
	} {
		r1, r2 := h.apply(op), h2.apply(op)
		if r1.Code != r2.Code || r1.Message != r2.Message || !proto.Equal(r1.Service, r2.Service) || r1.Revision != r2.Revision {
			t.Errorf("%T: original %v %q %v; restored %v %q %v", op, r1.Code, r1.Message, r1.Service.GetVip(), r2.Code, r2.Message, r2.Service.GetVip())
		}
	}
	if v := h.get("t1", "next").Vip; v != "10.0.0.2" {
		t.Errorf("next allocation %s, want the hole 10.0.0.2 left by t1/gone", v)
	}
	if !proto.Equal(h.snap(), snapOf(t, g)) {
		t.Error("original and restored FSMs diverged")
	}
}

func TestSnapshotIsAPointInTime(t *testing.T) {
	h := newHarness(t)
	populate(h)
	want := h.snap()
	s, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Raft persists snapshots while applies continue.
	h.ok(&raftv1.UpdateVirtualService{Service: withBackends(svc("t1", "a", "", tcp(8080)), backend("192.0.2.1", 30080))})
	h.ok(&raftv1.AddBackend{Tenant: "t1", Name: "a", Backend: backend("192.0.2.3", 1)})
	h.ok(&raftv1.DrainBackend{Tenant: "t1", Name: "a", Address: "192.0.2.1", Port: 30080, Drained: true})
	h.ok(&raftv1.SetBackendHealth{Updates: []*raftv1.HealthUpdate{{Tenant: "t1", Name: "a", Address: "192.0.2.1", Port: 30080, Reporter: "m1",
		Health: &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY}}}})
	h.ok(owners(assign("t1", "a", "m2")))
	h.ok(&raftv1.RemoveMember{Id: "m1"})
	h.ok(deleteVS("t2", "six"))
	h.ok(member("m3"))
	sink := &memSink{}
	if err := s.Persist(sink); err != nil {
		t.Fatal(err)
	}
	s.Release()
	var got raftv1.Snapshot
	if err := proto.Unmarshal(sink.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(want, &got) {
		t.Errorf("snapshot changed by later applies:\nwant %v\ngot  %v", want, &got)
	}
}

func TestRestoreReplacesState(t *testing.T) {
	src := newHarness(t)
	src.ok(createPool(pool("only", "192.0.2.0/29")))
	src.ok(create(svc("x", "y", "")))
	b := persist(t, src.f)

	h := newHarness(t)
	populate(h)
	changed := h.f.Changed()
	if err := h.f.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("Restore did not signal a change")
	}
	if !proto.Equal(h.snap(), src.snap()) {
		t.Errorf("after Restore: %v, want %v", h.snap(), src.snap())
	}
	if _, ok := h.f.Service(Key{"t1", "a"}); ok {
		t.Error("a service from before the restore survived it")
	}
	if vss, _ := h.f.List(Filter{Owner: "m1"}); len(vss) != 0 {
		t.Errorf("owner index kept %d services from before the restore", len(vss))
	}
	// History before the restore cannot be replayed.
	if _, cur, ok := h.f.EventsSince(0); ok || cur != 2 {
		t.Errorf("EventsSince(0) after restore: cur %d ok %v, want 2 false", cur, ok)
	}
	if evs, cur, ok := h.f.EventsSince(2); !ok || len(evs) != 0 || cur != 2 {
		t.Errorf("EventsSince(2) after restore = %d events cur %d ok %v", len(evs), cur, ok)
	}
}

func TestRestoreRefusesBadSnapshots(t *testing.T) {
	h := newHarness(t)
	populate(h)
	before := h.snap()
	newer, _ := proto.Marshal(&raftv1.Snapshot{Version: snapshotVersion + 1, Revision: 99})
	badPool, _ := proto.Marshal(&raftv1.Snapshot{Version: 1, AddressPools: []*edgelbv1.AddressPool{pool("x", "nope")}})
	for name, b := range map[string][]byte{
		"newer":   newer,
		"garbage": {0xff, 0xff, 0xff},
		"pool":    badPool,
	} {
		err := h.f.Restore(io.NopCloser(bytes.NewReader(b)))
		if err == nil {
			t.Errorf("%s: Restore accepted it", name)
		}
		if name == "newer" && (err == nil || !strings.Contains(err.Error(), "newer")) {
			t.Errorf("newer snapshot: %v", err)
		}
	}
	if !proto.Equal(before, h.snap()) {
		t.Error("a refused Restore changed the state")
	}
}

func TestEventsSince(t *testing.T) {
	h := newHarness(t)
	if evs, cur, ok := h.f.EventsSince(0); !ok || cur != 0 || len(evs) != 0 {
		t.Fatalf("empty FSM: %v %d %v", evs, cur, ok)
	}
	changed := h.f.Changed()
	h.ok(createPool(pool("p", "10.0.0.0/28"))) // 1
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by a change")
	}
	h.ok(member("m1"))               // 2
	h.ok(create(svc("t1", "a", ""))) // 3
	h.refused(create(svc("t1", "a", "")), codes.AlreadyExists)
	h.ok(create(svc("t1", "b", ""))) // 5
	h.ok(deleteVS("t1", "a"))        // 6

	evs, cur, ok := h.f.EventsSince(0)
	if !ok || cur != 6 || len(evs) != 5 {
		t.Fatalf("EventsSince(0) = %d events cur %d ok %v, want 5 at 6", len(evs), cur, ok)
	}
	wantRevs := []uint64{1, 2, 3, 5, 6}
	for i, e := range evs {
		if e.Revision != wantRevs[i] {
			t.Errorf("event %d revision %d, want %d", i, e.Revision, wantRevs[i])
		}
	}
	if last := evs[4]; last.Type != edgelbv1.EventType_EVENT_TYPE_DELETE || last.GetVirtualService().GetName() != "a" || last.Reason == "" {
		t.Errorf("last event %v, want delete of a with a reason", last)
	}
	// Resume from any point, including one between revisions.
	for rev, want := range map[uint64]int{1: 4, 3: 2, 4: 2, 5: 1, 6: 0, 100: 0} {
		evs, cur, ok := h.f.EventsSince(rev)
		if !ok || cur != 6 || len(evs) != want {
			t.Errorf("EventsSince(%d) = %d events cur %d ok %v, want %d", rev, len(evs), cur, ok, want)
		}
		for _, e := range evs {
			if e.Revision <= rev {
				t.Errorf("EventsSince(%d) returned event at %d", rev, e.Revision)
			}
		}
	}

	snap, rev := h.f.SnapshotEvents()
	if rev != 6 || len(snap) != 3 {
		t.Fatalf("SnapshotEvents = %d events at %d, want 3 at 6", len(snap), rev)
	}
	if snap[0].GetMember() == nil || snap[1].GetAddressPool() == nil || snap[2].GetVirtualService().GetName() != "b" {
		t.Errorf("SnapshotEvents order: %v", snap)
	}
	for _, e := range snap {
		if e.Type != edgelbv1.EventType_EVENT_TYPE_PUT || e.Revision != 6 {
			t.Errorf("snapshot event %v, want PUT at 6", e)
		}
	}
}

func TestEventsSinceAfterHistoryTrim(t *testing.T) {
	h := newHarness(t)
	m := &edgelbv1.Member{Id: "m1", RaftAddress: "127.0.0.1:1", ApiAddress: "127.0.0.1:2"}
	n := 2*maxHistory + 1
	for i := range n {
		m.DataInterface = fmt.Sprint("eth", i%2)
		h.ok(&raftv1.PutMember{Member: m})
	}
	if got := len(h.f.history); got < maxHistory || got > 2*maxHistory {
		t.Fatalf("history holds %d events, want between %d and %d", got, maxHistory, 2*maxHistory)
	}
	floor := h.f.floor
	if floor == 0 {
		t.Fatal("history was never trimmed")
	}
	if _, cur, ok := h.f.EventsSince(0); ok || cur != uint64(n) {
		t.Errorf("EventsSince(0) after trim: cur %d ok %v, want %d false", cur, ok, n)
	}
	if _, _, ok := h.f.EventsSince(floor - 1); ok {
		t.Errorf("EventsSince(floor-1=%d) ok: events after it are gone", floor-1)
	}
	evs, cur, ok := h.f.EventsSince(floor)
	if !ok || cur != uint64(n) || uint64(len(evs)) != uint64(n)-floor || evs[0].Revision != floor+1 {
		t.Errorf("EventsSince(floor=%d) = %d events cur %d ok %v", floor, len(evs), cur, ok)
	}
	if evs, _, ok := h.f.EventsSince(uint64(n) - 3); !ok || len(evs) != 3 {
		t.Errorf("recent resume: %d events ok %v, want 3", len(evs), ok)
	}
}

// A reproducible stream of commands over small pools, so that allocation runs
// out, addresses are freed and reused, and most refusals happen.
func randomOps(seed uint64, n int) []any {
	rng := rand.New(rand.NewPCG(seed, 1))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	vipFor := func() string {
		switch rng.IntN(4) {
		case 0:
			return fmt.Sprintf("10.0.0.%d", rng.IntN(9))
		case 1:
			return fmt.Sprintf("10.0.1.%d", rng.IntN(5))
		case 2:
			return fmt.Sprintf("2001:db8::%x", rng.IntN(10))
		}
		return ""
	}
	service := func() *edgelbv1.VirtualService {
		vs := svc(pick("t1", "t2"), pick("a", "b", "c", "d", "e", "f", "g", "h"), vipFor(), []*edgelbv1.Port{tcp(80), tcp(443), udp(53)}[rng.IntN(3)])
		if rng.IntN(4) == 0 {
			vs.IpFamily = edgelbv1.IPFamily_IP_FAMILY_IPV6
		}
		if vs.Vip != "" && netip.MustParseAddr(vs.Vip).Is6() {
			vs.IpFamily = edgelbv1.IPFamily_IP_FAMILY_IPV6
		}
		vs.SharingKey = pick("", "", "k")
		if rng.IntN(5) == 0 {
			vs.Pool = pick("p1", "p2", "p3")
		}
		if vs.IpFamily == edgelbv1.IPFamily_IP_FAMILY_IPV6 {
			vs.Backends = []*edgelbv1.Backend{backend("2001:db8:9::1", 80)}
		} else {
			vs.Backends = []*edgelbv1.Backend{backend("192.0.2.1", 80)}
		}
		return vs
	}
	var ops []any
	ops = append(ops, createPool(pool("p1", "10.0.0.0/29")), member("m1"), member("m2"))
	p2 := pool("p2", "10.0.1.0/30", "2001:db8::/125")
	p2.Tenants = []string{"t1"}
	ops = append(ops, createPool(p2))
	for range n {
		var op any
		switch k := rng.IntN(20); {
		case k < 6:
			op = &raftv1.CreateVirtualService{Service: service(), Owner: pick("", "m1", "m2")}
		case k < 8:
			op = &raftv1.UpdateVirtualService{Service: service(), ExpectedGeneration: uint64(rng.IntN(3))}
		case k < 11:
			vs := service()
			op = &raftv1.DeleteVirtualService{Tenant: vs.Tenant, Name: vs.Name}
		case k == 11:
			vs := service()
			op = &raftv1.AddBackend{Tenant: vs.Tenant, Name: vs.Name, Backend: backend(pick("192.0.2.2", "2001:db8:9::2"), 80)}
		case k == 12:
			vs := service()
			op = &raftv1.DrainBackend{Tenant: vs.Tenant, Name: vs.Name, Address: "192.0.2.1", Port: 80, Drained: rng.IntN(2) == 0}
		case k == 13:
			vs := service()
			op = &raftv1.RemoveBackend{Tenant: vs.Tenant, Name: vs.Name, Address: "192.0.2.1", Port: 80}
		case k == 14:
			vs := service()
			op = owners(assign(vs.Tenant, vs.Name, pick("", "m1", "m2", "m3")))
		case k == 15:
			op = member(pick("m1", "m2", "m3"))
		case k == 16:
			op = &raftv1.RemoveMember{Id: pick("m1", "m2", "m3")}
		case k == 17:
			op = createPool(pool(pick("p1", "p3"), pick("10.0.0.0/29", "10.0.2.0/31", "10.0.0.6-10.0.0.9")))
		case k == 18:
			op = &raftv1.DeleteAddressPool{Name: pick("p1", "p2", "p3")}
		default:
			vs := service()
			op = &raftv1.SetBackendHealth{Updates: []*raftv1.HealthUpdate{{Tenant: vs.Tenant, Name: vs.Name, Address: "192.0.2.1", Port: 80, Reporter: pick("m1", "m2"),
				Health: &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState(1 + rng.IntN(3))}}}}
		}
		ops = append(ops, op)
	}
	return ops
}

// Two members fed the same log end identical, answering every command alike; so
// does a member that restarts from a snapshot now and then (losing its
// allocation shortcuts). The FSM must not modify the commands it applies.
func TestDeterminism(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			a, b, c := newHarness(t), newHarness(t), newHarness(t)
			refusals := map[codes.Code]int{}
			for i, op := range randomOps(seed, 400) {
				cmd := command(uint64(i+1), op)
				wire, _ := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
				a.idx, b.idx, c.idx = uint64(i), uint64(i), uint64(i)
				ra, rb, rc := a.apply(op), b.apply(op), c.apply(op)
				after, _ := proto.MarshalOptions{Deterministic: true}.Marshal(command(uint64(i+1), op))
				if !bytes.Equal(wire, after) {
					t.Fatalf("op %d (%T): the FSM modified the command", i, op)
				}
				refusals[ra.Code]++
				for name, r := range map[string]*Result{"b": rb, "restarted": rc} {
					if r.Code != ra.Code || r.Message != ra.Message || r.Revision != ra.Revision || !proto.Equal(r.Service, ra.Service) {
						t.Fatalf("op %d (%T %v): a answered %v %q %v, %s answered %v %q %v", i, op, op,
							ra.Code, ra.Message, ra.Service.GetVip(), name, r.Code, r.Message, r.Service.GetVip())
					}
				}
				// Odd seeds restart c before every command, so each allocation is a
				// full scan: the reference for a's and b's allocation shortcut.
				if seed%2 == 1 || i%37 == 36 {
					c.f = restored(t, persist(t, c.f))
				}
				if i%50 == 49 {
					checkInvariants(t, a.f)
				}
			}
			sa := a.snap()
			if !proto.Equal(sa, b.snap()) || !proto.Equal(sa, c.snap()) {
				t.Fatal("FSMs fed the same commands differ")
			}
			if refusals[codes.OK] < 50 || refusals[codes.AlreadyExists] == 0 || refusals[codes.NotFound] == 0 {
				t.Errorf("the stream exercises too little: %v", refusals)
			}
			checkInvariants(t, a.f)
		})
	}
}

// checkInvariants asserts what the FSM promises about any state it reaches.
func checkInvariants(t testing.TB, f *FSM) {
	t.Helper()
	s := snapOf(t, f)
	pools := map[string]*edgelbv1.AddressPool{}
	for _, p := range s.AddressPools {
		pools[p.Name] = p
	}
	byVIP := map[string][]*edgelbv1.VirtualService{}
	for _, vs := range s.VirtualServices {
		p, ok := pools[vs.Pool]
		if !ok {
			t.Errorf("%s/%s is in pool %q, which does not exist", vs.Tenant, vs.Name, vs.Pool)
			continue
		}
		if !PoolOpenTo(p, vs.Tenant) {
			t.Errorf("%s/%s is in pool %s, closed to its tenant", vs.Tenant, vs.Name, vs.Pool)
		}
		a, err := netip.ParseAddr(vs.Vip)
		if err != nil || !f.st.parsed[vs.Pool].Contains(a) {
			t.Errorf("%s/%s VIP %s is not in its pool %s", vs.Tenant, vs.Name, vs.Vip, vs.Pool)
		}
		if vs.Generation == 0 {
			t.Errorf("%s/%s has generation 0", vs.Tenant, vs.Name)
		}
		byVIP[vs.Vip] = append(byVIP[vs.Vip], vs)
	}
	for vip, g := range byVIP {
		if len(g) < 2 {
			continue
		}
		ports := map[string]string{}
		for _, vs := range g {
			if vs.Tenant != g[0].Tenant || vs.SharingKey == "" || vs.SharingKey != g[0].SharingKey {
				t.Errorf("VIP %s shared by %s/%s (key %q) and %s/%s (key %q)", vip, g[0].Tenant, g[0].Name, g[0].SharingKey, vs.Tenant, vs.Name, vs.SharingKey)
			}
			for _, p := range vs.Ports {
				k := fmt.Sprint(p.Protocol, p.Port)
				if other, dup := ports[k]; dup {
					t.Errorf("VIP %s: %s used by %s and %s", vip, k, other, vs.Name)
				}
				ports[k] = vs.Name
			}
		}
	}
}
