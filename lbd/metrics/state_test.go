package metrics

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgelb/edgelb/lbd/validate"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/rules"
)

// Ownership commits are counted by the enum the FSM puts on each event
// that changes an owner, old log entries (text only) included; events that
// change no owner are not counted.
func TestObserveOwnershipCountsByEnum(t *testing.T) {
	f := fsm.New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	idx := uint64(0)
	apply := func(cmd *raftv1.Command) {
		t.Helper()
		idx++
		cmd.Version, cmd.Rules, cmd.Time = fsm.VersionFor(cmd), uint32(rules.Current), timestamppb.Now()
		if r := f.ApplyCommand(idx, cmd); r.Err() != nil {
			t.Fatalf("apply %v: %v", cmd, r.Err())
		}
	}
	vs := func(name, vip string) *edgelbv1.VirtualService {
		vs := &edgelbv1.VirtualService{Tenant: "t", Name: name, Vip: vip, Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80}}}
		if err := validate.VirtualService(vs, validate.DefaultLimits); err != nil { // the form the API stores
			t.Fatal(err)
		}
		return vs
	}
	apply(&raftv1.Command{Op: &raftv1.Command_CreateAddressPool{CreateAddressPool: &raftv1.CreateAddressPool{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.0.0.0/28"}}}}})
	for _, id := range []string{"m1", "m2"} {
		apply(&raftv1.Command{Op: &raftv1.Command_PutMember{PutMember: &raftv1.PutMember{Member: &edgelbv1.Member{Id: id, RaftAddress: "127.0.0.1:7701", ApiAddress: "127.0.0.1:7700"}}}})
	}
	m := New("test")
	stop := make(chan struct{})
	defer close(stop)
	m.ObserveOwnership(f, stop)

	create := func(name, vip, owner string, why edgelbv1.OwnershipReason) {
		apply(&raftv1.Command{Op: &raftv1.Command_CreateVirtualService{CreateVirtualService: &raftv1.CreateVirtualService{Service: vs(name, vip), Owner: owner, OwnerReason: why}}})
	}
	create("a", "10.0.0.1", "m1", edgelbv1.OwnershipReason_OWNERSHIP_REASON_PINNED)
	create("b", "10.0.0.2", "m2", edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED) // a create from before the enum
	create("c", "10.0.0.3", "", edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED)   // no owner: not counted
	apply(&raftv1.Command{Op: &raftv1.Command_SetOwners{SetOwners: &raftv1.SetOwners{Assignments: []*raftv1.Assignment{
		{Tenant: "t", Name: "a", Owner: "m2", OwnershipReason: edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_UNREACHABLE, Reason: "owner unreachable"},
		{Tenant: "t", Name: "c", Owner: "m2", Reason: "moved by operator"}, // from before the enum
	}}}})
	apply(&raftv1.Command{Op: &raftv1.Command_RemoveMember{RemoveMember: &raftv1.RemoveMember{Id: "m2"}}})

	want := map[string]float64{"pinned": 1, "assigned": 1, "owner_unreachable": 1, "moved": 1, "owner_removed": 3, "shared_vip": 0, "owner_left": 0, "owner_draining": 0, "owner_stopping": 0}
	deadline := time.Now().Add(10 * time.Second)
	for {
		diff := map[string]float64{}
		for label, n := range want {
			if got := testutil.ToFloat64(m.OwnershipCommits.WithLabelValues(label)); got != n {
				diff[label] = got
			}
		}
		if len(diff) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts that differ from %v: %v", want, diff)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := testutil.CollectAndCount(m.OwnershipCommits); n != len(want) {
		t.Errorf("%d reason series, want one per reason (none for unspecified)", n)
	}
}
