package fsm

import (
	"bytes"
	"io"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/rules"
)

// safeApply applies a log entry and turns a panic into a test failure that
// shows the command: a panic in Apply would crash every member on the same
// entry, and again on every restart as the log is replayed.
func safeApply(t testing.TB, f *FSM, l *raft.Log) (r *Result) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			var cmd raftv1.Command
			_ = proto.Unmarshal(l.Data, &cmd)
			t.Fatalf("Apply panicked on %v: %v", &cmd, p)
		}
	}()
	res := f.Apply(l)
	r, ok := res.(*Result)
	if !ok || r == nil {
		t.Fatalf("Apply returned %#v, want a *Result", res)
	}
	return r
}

// A log entry is replicated as written: whatever a proposer (an older or buggy
// binary, a bit flip that still decodes) put there, the FSM must refuse it with
// a code rather than panic, and leave the state as it was.
func TestApplyMalformedCommands(t *testing.T) {
	base := newHarness(t)
	populate(base)
	snap := persist(t, base.f)
	for name, op := range map[string]any{
		"create without service":            &raftv1.CreateVirtualService{},
		"create with unparsable vip":        &raftv1.CreateVirtualService{Service: &edgelbv1.VirtualService{Tenant: "t1", Name: "x", Vip: "not-an-ip", Ports: []*edgelbv1.Port{tcp(80)}}},
		"update without service":            &raftv1.UpdateVirtualService{},
		"update with unparsable vip":        &raftv1.UpdateVirtualService{Service: &edgelbv1.VirtualService{Tenant: "t1", Name: "a", Vip: "10.0.0.999"}},
		"set backends with a nil backend":   &raftv1.SetBackends{Tenant: "t1", Name: "a", Backends: []*edgelbv1.Backend{nil}},
		"add without backend":               &raftv1.AddBackend{Tenant: "t1", Name: "a"},
		"remove unparsable backend":         &raftv1.RemoveBackend{Tenant: "t1", Name: "a", Address: "bogus", Port: 1},
		"drain unparsable backend":          &raftv1.DrainBackend{Tenant: "t1", Name: "a", Address: "bogus", Drained: true},
		"create pool without pool":          &raftv1.CreateAddressPool{},
		"update pool with bad ranges":       &raftv1.UpdateAddressPool{Name: "p", AddRanges: []string{"", "10.0.0.0/33"}, RemoveRanges: []string{"x-y"}},
		"update unknown pool":               &raftv1.UpdateAddressPool{},
		"put member without member":         &raftv1.PutMember{},
		"set owners with a nil assignment":  &raftv1.SetOwners{Assignments: []*raftv1.Assignment{nil}},
		"health with a nil update":          &raftv1.SetBackendHealth{Updates: []*raftv1.HealthUpdate{nil}},
		"health of an unknown backend port": &raftv1.SetBackendHealth{Updates: []*raftv1.HealthUpdate{{Tenant: "t1", Name: "a", Address: "bogus", Reporter: "m1", Health: &edgelbv1.BackendHealth{}}}},
	} {
		t.Run(name, func(t *testing.T) {
			f := restored(t, snap)
			before := snapOf(t, f)
			data, err := proto.Marshal(command(base.idx+1, op))
			if err != nil {
				t.Fatal(err)
			}
			r := safeApply(t, f, rlog(base.idx+1, data))
			if r.Code != codes.OK && !proto.Equal(before, snapOf(t, f)) {
				t.Errorf("refused with %v %q but the state changed", r.Code, r.Message)
			}
		})
	}
}

// A snapshot is read back from disk; a damaged one must be refused with an
// error (raft then tries an older one), not crash the member.
func TestRestoreMalformedSnapshot(t *testing.T) {
	b, _ := proto.Marshal(&raftv1.Snapshot{
		Version:         snapshotVersion,
		AddressPools:    []*edgelbv1.AddressPool{pool("p", "10.0.0.0/24")},
		VirtualServices: []*edgelbv1.VirtualService{{Tenant: "t", Name: "n", Vip: "not-an-ip", Pool: "p"}},
	})
	f := New(quiet)
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Restore panicked on a snapshot with an unparsable VIP: %v", p)
		}
	}()
	if err := f.Restore(io.NopCloser(bytes.NewReader(b))); err == nil {
		t.Error("Restore accepted a service with an unparsable VIP")
	}
}

// FuzzApply feeds arbitrary log entries to a populated FSM. It must never panic;
// a refused command must change neither the revision nor the state; and a member
// that restored the same state from a snapshot must reach the same answer and state.
func FuzzApply(f *testing.F) {
	base := newHarness(f)
	populate(base)
	snap := persist(f, base.f)
	idx := base.idx + 1

	add := func(op any) {
		b, err := proto.Marshal(command(idx, op))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, op := range randomOps(1, 60) {
		add(op)
	}
	for _, op := range []any{
		create(svc("t1", "new", "")),
		create(shared(svc("t1", "join", "", tcp(22)), "k")),
		create(v6(svc("t2", "six2", ""))),
		&raftv1.UpdateVirtualService{Service: svc("t1", "a", "10.0.0.9"), ExpectedGeneration: 2},
		&raftv1.SetBackends{Tenant: "t1", Name: "a", Backends: []*edgelbv1.Backend{backend("192.0.2.7", 1)}},
		&raftv1.DrainBackend{Tenant: "t1", Name: "a", Address: "192.0.2.2", Port: 30080, Drained: true},
		&raftv1.RemoveMember{Id: "m2"},
		owners(assign("t1", "a", "m2")),
		createPool(pool("over", "10.0.0.8/29")),
		&raftv1.DeleteAddressPool{Name: "q"},
		&raftv1.UpdateAddressPool{Name: "p", AddRanges: []string{"2001:db8:1::/120"}, ExpectedGeneration: 1},
		&raftv1.UpdateAddressPool{Name: "p", RemoveRanges: []string{"2001:db8::/124"}},
		&raftv1.UpdateAddressPool{Name: "q", SetTenants: true},
		hostMember("m9", []string{"10.0.0.3"}, []string{"10.0.2.1"}),
	} {
		add(op)
	}
	// An entry of an older binary: allocation by the version-1 rules (the
	// IPv6 subnet-router anycast address is not skipped).
	old := command(idx, create(v6(svc("t2", "old6", ""))))
	old.Version = 1
	if b, err := proto.Marshal(old); err == nil {
		f.Add(b)
	}
	newer, _ := proto.Marshal(&raftv1.Command{Version: CommandVersion + 1, Op: &raftv1.Command_RemoveMember{RemoveMember: &raftv1.RemoveMember{Id: "m1"}}})
	f.Add(newer)
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})

	f.Fuzz(func(t *testing.T, data []byte) {
		// One FSM that reached the state by applying (allocation shortcuts, history)
		// and one that restored it.
		h := newHarness(t)
		populate(h)
		g := restored(t, snap)
		before := h.snap()
		rev := h.f.Revision()

		r1 := safeApply(t, h.f, rlog(idx, data))
		r2 := safeApply(t, g, rlog(idx, data))
		after := h.snap()

		if r1.Code != codes.OK {
			if h.f.Revision() != rev {
				t.Fatalf("refused (%v %q) but the revision moved %d → %d", r1.Code, r1.Message, rev, h.f.Revision())
			}
			if !proto.Equal(before, after) {
				t.Fatalf("refused (%v %q) but the state changed", r1.Code, r1.Message)
			}
			if evs, _, _ := h.f.EventsSince(rev); len(evs) != 0 {
				t.Fatalf("refused (%v %q) but recorded %d events", r1.Code, r1.Message, len(evs))
			}
		} else if cur := h.f.Revision(); cur != rev && cur != idx {
			t.Fatalf("revision moved to %d, neither the old %d nor the entry's index %d", cur, rev, idx)
		}
		// Whatever is stored passes the API's rules: at the least those of
		// every release (Legacy), and a service this command wrote those of
		// the level it was stamped with.
		var cmd raftv1.Command
		_ = proto.Unmarshal(data, &cmd)
		assertWellFormedState(t, h.f)
		if r1.Code == codes.OK && r1.Service != nil && cmd.GetDeleteVirtualService() == nil {
			lvl := min(rules.Level(cmd.Rules), rules.Current)
			if err := rules.Stored(r1.Service, lvl); err != nil {
				t.Fatalf("accepted %v at rules %d, storing a service the API would refuse: %v", &cmd, lvl, err)
			}
		}
		if r1.Code != r2.Code || r1.Message != r2.Message || r1.Revision != r2.Revision || !proto.Equal(r1.Service, r2.Service) {
			t.Fatalf("restored member answered differently: %v %q vs %v %q", r1.Code, r1.Message, r2.Code, r2.Message)
		}
		if !proto.Equal(after, snapOf(t, g)) {
			t.Fatal("restored member reached a different state")
		}
		// Whatever was accepted must survive a snapshot round-trip.
		b := persist(t, h.f)
		g2 := New(quiet)
		if err := g2.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
			t.Fatalf("snapshot of the accepted state does not restore: %v", err)
		}
		if !proto.Equal(after, snapOf(t, g2)) {
			t.Fatal("snapshot round-trip changed the state")
		}
	})
}

// assertWellFormedState fails unless every stored service and pool passes the
// rules every release enforced.
func assertWellFormedState(t testing.TB, f *FSM) {
	t.Helper()
	vss, pools, _ := f.st.snapshot()
	for _, vs := range vss {
		if err := rules.Stored(vs, rules.Legacy); err != nil {
			t.Fatalf("stored service %s/%s breaks the rules: %v", vs.Tenant, vs.Name, err)
		}
		if err := rules.Placed(vs, rules.Legacy); err != nil || vs.Vip == "" {
			t.Fatalf("stored service %s/%s has no usable VIP (%q): %v", vs.Tenant, vs.Name, vs.Vip, err)
		}
	}
	for _, p := range pools {
		if err := rules.StoredPool(p, rules.Legacy); err != nil {
			t.Fatalf("stored pool %s breaks the rules: %v", p.Name, err)
		}
	}
}
