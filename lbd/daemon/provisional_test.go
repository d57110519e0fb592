package daemon

import (
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/lease"
	"github.com/edgelb/edgelb/lbd/liveness"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node"
)

// fixedLiveness is a liveness layer frozen in one state: who is gone, whether
// the survivors agree, and whom this member has not heard for the grace.
type fixedLiveness struct {
	gone, silent map[string]bool
	agreed       bool
}

func (l fixedLiveness) Agreement(uint64) (map[string]bool, bool) {
	return maps.Clone(l.gone), l.agreed
}
func (l fixedLiveness) Silent(id string) bool { return l.silent[id] }

// walkedState is the FSM as the reconcile loop read it before the owner
// index: whether a gone member owns a service is found by walking every
// service. reads counts the walks.
type walkedState struct {
	*fsm.FSM
	reads *int
}

func (w walkedState) OwnsAny(ids map[string]bool) bool {
	all, _ := w.All()
	return slices.ContainsFunc(all, func(vs *edgelbv1.VirtualService) bool { return ids[vs.Owner] })
}

func (w walkedState) All() ([]*edgelbv1.VirtualService, uint64) {
	*w.reads++
	return w.FSM.All()
}

// countedState is the FSM with its owner index, counting whole reads.
type countedState struct {
	*fsm.FSM
	reads *int
}

func (c countedState) All() ([]*edgelbv1.VirtualService, uint64) {
	*c.reads++
	return c.FSM.All()
}

// randomFSM builds a state by random commands: members (some draining),
// services on a few shared addresses with random owners (members, none,
// members that left), pins, moves and deletes, so the FSM's owner index is
// the one its applies keep, not one built at once.
func randomFSM(t *testing.T, r *rand.Rand) (*fsm.FSM, []string) {
	f := fsm.New(slog.New(slog.DiscardHandler))
	idx := uint64(0)
	apply := func(cmd *raftv1.Command) bool {
		idx++
		return f.ApplyCommand(idx, cmd).Err() == nil
	}
	if !apply(&raftv1.Command{Op: &raftv1.Command_CreateAddressPool{CreateAddressPool: &raftv1.CreateAddressPool{
		Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/24"}}}}}) {
		t.Fatal("create pool")
	}
	nm := 2 + r.IntN(5)
	var members []string
	for i := range nm {
		id := fmt.Sprintf("m%d", i+1)
		members = append(members, id)
		st := edgelbv1.MemberState_MEMBER_STATE_ACTIVE
		if r.IntN(6) == 0 {
			st = edgelbv1.MemberState_MEMBER_STATE_DRAINING
		}
		apply(&raftv1.Command{Op: &raftv1.Command_PutMember{PutMember: &raftv1.PutMember{Member: &edgelbv1.Member{Id: id, State: st}}}})
	}
	owners := append(slices.Clone(members), "", "left")
	pick := func() string { return owners[r.IntN(len(owners))] }
	ns := r.IntN(80)
	nvips := 1 + r.IntN(30)
	for i := range ns {
		vs := &edgelbv1.VirtualService{Tenant: fmt.Sprintf("t%d", r.IntN(3)), Name: fmt.Sprintf("s%d", i),
			Vip: fmt.Sprintf("192.0.2.%d", 1+r.IntN(nvips)), IpFamily: edgelbv1.IPFamily_IP_FAMILY_IPV4,
			Scheduler: edgelbv1.Scheduler_SCHEDULER_MH, ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_NAT,
			Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: uint32(1000 + i), BackendPort: 30080}}}
		if r.IntN(8) == 0 {
			vs.PinnedMember = members[r.IntN(len(members))]
		}
		apply(&raftv1.Command{Op: &raftv1.Command_CreateVirtualService{CreateVirtualService: &raftv1.CreateVirtualService{Service: vs, Owner: pick()}}})
	}
	for range r.IntN(40) {
		all, _ := f.Shared(fsm.Filter{}) // in order: a seed replays its state
		if len(all) == 0 {
			break
		}
		vs := all[r.IntN(len(all))]
		if r.IntN(4) == 0 {
			apply(&raftv1.Command{Op: &raftv1.Command_DeleteVirtualService{DeleteVirtualService: &raftv1.DeleteVirtualService{Tenant: vs.Tenant, Name: vs.Name}}})
			continue
		}
		apply(&raftv1.Command{Op: &raftv1.Command_SetOwners{SetOwners: &raftv1.SetOwners{Assignments: []*raftv1.Assignment{
			{Tenant: vs.Tenant, Name: vs.Name, Owner: pick()}}}}})
	}
	return f, append(members, "left")
}

// taken is what a takeover serves: each copied service's key → its VIP.
func taken(t takeover) map[fsm.Key]string {
	out := map[fsm.Key]string{}
	for i, vs := range t.all {
		if vs != t.base[i] {
			out[fsm.KeyOf(vs)] = vs.Vip
		}
	}
	return out
}

// The provisional decision from the owner index equals the one from walking
// every service, for random states, gone sets, agreement and silence; and
// it reads the whole state only when a gone member owns a service.
func TestProvisionalIndexEqualsWalk(t *testing.T) {
	var took, skipped, pending int
	for seed := range uint64(3000) {
		r := rand.New(rand.NewPCG(seed, 21))
		f, ids := randomFSM(t, r)
		live := fixedLiveness{gone: map[string]bool{}, silent: map[string]bool{}, agreed: r.IntN(4) != 0}
		for _, id := range ids {
			if r.IntN(3) == 0 {
				live.gone[id] = true
			}
			if r.IntN(5) != 0 {
				live.silent[id] = true
			}
		}
		self := ids[r.IntN(len(ids)-1)]
		delete(live.gone, self)
		var walks, reads int
		want := planTakeover(live, self, walkedState{f, &walks})
		got := planTakeover(live, self, countedState{f, &reads})
		name := fmt.Sprintf("seed %d (gone %v, agreed %v, self %s)", seed, slices.Sorted(maps.Keys(live.gone)), live.agreed, self)
		if !slices.Equal(got.vips, want.vips) || !slices.Equal(got.owners, want.owners) || got.pending != want.pending {
			t.Fatalf("%s: index took %v from %v (pending %v); the walk %v from %v (pending %v)",
				name, got.vips, got.owners, got.pending, want.vips, want.owners, want.pending)
		}
		if g, w := taken(got), taken(want); !maps.Equal(g, w) {
			t.Fatalf("%s: index copies %v; the walk %v", name, g, w)
		}
		all, _ := f.All()
		owns := slices.ContainsFunc(all, func(vs *edgelbv1.VirtualService) bool { return live.gone[vs.Owner] })
		if reads > 0 && (!owns || !live.agreed) {
			t.Fatalf("%s: read every service though no gone member owns one or the survivors disagree", name)
		}
		switch {
		case len(got.vips) > 0:
			took++
			for i, vs := range got.all {
				if vs != got.base[i] && (vs.Owner != self || !slices.Contains(got.vips, vs.Vip) || !live.gone[got.base[i].Owner]) {
					t.Fatalf("%s: copy of %s (owner %s, was %s) is not a gone owner's service taken by this member", name, vs.Name, vs.Owner, got.base[i].Owner)
				}
			}
		case got.pending:
			pending++
		case reads == 0 && walks > 0:
			skipped++
		}
	}
	// The states must exercise every branch, or the comparison shows little.
	if took < 100 || skipped < 100 || pending < 100 {
		t.Fatalf("took over in %d states, skipped the walk in %d, pending in %d: the generator misses a branch", took, skipped, pending)
	}
	t.Logf("took over in %d states, skipped the walk in %d, pending in %d", took, skipped, pending)
}

// bigFSM is a state of n services × backends each, owned in turn by m1, m2
// and m3 (m4 is a member that owns nothing: the leader moved its services).
func bigFSM(b *testing.B, n, backends int) *fsm.FSM {
	f := fsm.New(slog.New(slog.DiscardHandler))
	idx := uint64(0)
	apply := func(cmd *raftv1.Command) {
		idx++
		if r := f.ApplyCommand(idx, cmd); r.Err() != nil {
			b.Fatal(r.Err())
		}
	}
	apply(&raftv1.Command{Op: &raftv1.Command_CreateAddressPool{CreateAddressPool: &raftv1.CreateAddressPool{
		Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.128.0.0/16"}}}}})
	for i := range 4 {
		apply(&raftv1.Command{Op: &raftv1.Command_PutMember{PutMember: &raftv1.PutMember{Member: &edgelbv1.Member{Id: fmt.Sprintf("m%d", i+1)}}}})
	}
	for i := range n {
		vs := &edgelbv1.VirtualService{Tenant: "t", Name: fmt.Sprintf("s%d", i),
			Vip: fmt.Sprintf("10.128.%d.%d", (i+1)>>8, (i+1)&0xff), IpFamily: edgelbv1.IPFamily_IP_FAMILY_IPV4,
			Scheduler: edgelbv1.Scheduler_SCHEDULER_MH, ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_NAT,
			Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}}}
		for j := range backends {
			vs.Backends = append(vs.Backends, &edgelbv1.Backend{Address: fmt.Sprintf("10.1.%d.%d", j>>8, 1+j&0xff), Weight: 1})
		}
		apply(&raftv1.Command{Op: &raftv1.Command_CreateVirtualService{CreateVirtualService: &raftv1.CreateVirtualService{Service: vs, Owner: fmt.Sprintf("m%d", 1+i%3)}}})
	}
	return f
}

// BenchmarkReconcileIteration10kx50 is what the reconcile loop's iteration
// costs on the control side for one commit (one backend of one service
// drained or undrained; the apply itself is not timed), with 10,000
// services × 50 backends: the provisional check and the change feed. The
// data plane's part for the change is lbd/dataplane's
// BenchmarkReconcileChangedOneBackend10kx50.
func BenchmarkReconcileIteration10kx50(b *testing.B) {
	f := bigFSM(b, 10000, 50)
	idx := uint64(1_000_000) // past bigFSM's entries
	commit := func() {
		idx++ // drains and undrains in turn, across the sub-benchmarks too
		cmd := &raftv1.Command{Op: &raftv1.Command_DrainBackend{DrainBackend: &raftv1.DrainBackend{
			Tenant: "t", Name: "s5000", Address: "10.1.0.26", Drained: idx%2 == 1}}}
		if r := f.ApplyCommand(idx, cmd); r.Err() != nil {
			b.Fatal(r.Err())
		}
	}
	d := &Daemon{node: &node.Node{FSM: f}}
	d.cfg.ID = "m1"
	d.live = liveness.New(liveness.Config{Self: "m1", Lease: lease.New("m1", time.Second, lease.System), Revision: f.Revision})
	run := func(b *testing.B, check func()) {
		feed := newChangeFeed()
		feed.resync(f, "m1")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			commit()
			b.StartTimer()
			check()
			feed.follow(f, "m1")
			if len(feed.take()) != 1 {
				b.Fatal("the feed did not report the one change")
			}
		}
	}
	b.Run("provisional-off", func(b *testing.B) { run(b, func() {}) })
	b.Run("provisional-on/nobody-gone", func(b *testing.B) {
		run(b, func() {
			if t := d.provisional(nil); len(t.vips) > 0 {
				b.Fatal("took over with nobody gone")
			}
		})
	})
	// A member gone for good whose services the leader has moved: before
	// the owner index, every pass walked every service to find that out.
	b.Run("provisional-on/gone-owns-nothing", func(b *testing.B) {
		live := fixedLiveness{gone: map[string]bool{"m4": true}, silent: map[string]bool{"m4": true}, agreed: true}
		run(b, func() {
			if t := planTakeover(live, "m1", f); len(t.vips) > 0 || t.all != nil {
				b.Fatal("read the services though the gone member owns none")
			}
		})
	})
}

// A copy that ends is withdrawn at once only while the committed state still
// gives its VIP to the owner it was taken from; one the leader moved to a
// survivor is handed over as any planned move.
func TestEndedCopies(t *testing.T) {
	vs := func(vip, owner string) *edgelbv1.VirtualService {
		return &edgelbv1.VirtualService{Name: vip + "-" + owner, Vip: vip, Owner: owner}
	}
	prev := map[string]string{"10.0.0.1": "lost", "10.0.0.2": "lost", "10.0.0.3": "lost"}
	all := []*edgelbv1.VirtualService{
		vs("10.0.0.1", "lost"),  // the owner is back: at once
		vs("10.0.0.1", "lost"),  // a second service at the same VIP: once
		vs("10.0.0.2", "edge3"), // the leader moved it: handover
		vs("10.0.0.3", "me"),    // still a copy this pass (in now)
		vs("10.0.0.4", "lost"),  // never a copy here
	}
	got := endedCopies(prev, []string{"10.0.0.3"}, all)
	if want := []netip.Addr{netip.MustParseAddr("10.0.0.1")}; !slices.Equal(got, want) {
		t.Fatalf("endedCopies = %v, want %v", got, want)
	}
	if got := endedCopies(nil, nil, all); got != nil {
		t.Fatalf("no copies before: %v", got)
	}
}

// enderDP is a data plane that is told which copies end.
type enderDP struct{ DataPlane }

func (enderDP) EndProvisional([]netip.Addr) {}

// The data plane is told which copies end, also behind the metrics wrapper
// the daemon puts around it (a type assertion on the wrapper alone found
// nothing, and copies were handed over: seen in the guest). The kernel's
// data plane has the method (asserted in lbd/dataplane handover.go).
func TestProvisionalEnderThroughMetricsWrapper(t *testing.T) {
	for _, dp := range []DataPlane{enderDP{}, &instrumentedDataPlane{DataPlane: enderDP{}}} {
		if provisionalEnderOf(dp) == nil {
			t.Errorf("%T: no provisionalEnder", dp)
		}
	}
}
