package fsm

import (
	"testing"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
)

// The cluster id is set once and then kept: through later SetClusterID
// entries (a second leader's proposal), raft snapshots, and a restore from a
// backup taken of another cluster.
func TestClusterIDIsSetOnceAndKept(t *testing.T) {
	h := newHarness(t)
	if id := h.f.ClusterID(); id != "" {
		t.Fatalf("new FSM has cluster id %q", id)
	}
	if r := h.apply(&raftv1.SetClusterID{}); r.Err() == nil {
		t.Fatalf("an empty cluster id was accepted")
	}
	h.ok(&raftv1.SetClusterID{ClusterId: "first"})
	h.ok(&raftv1.SetClusterID{ClusterId: "second"})
	if id := h.f.ClusterID(); id != "first" {
		t.Fatalf("cluster id %q after two proposals; want the first", id)
	}
	if id := restored(t, persist(t, h.f)).ClusterID(); id != "first" {
		t.Fatalf("cluster id %q after a snapshot round trip; want first", id)
	}
	h.ok(&raftv1.RestoreState{Snapshot: &raftv1.Snapshot{Version: 1, ClusterId: "other"}})
	if id := h.f.ClusterID(); id != "first" {
		t.Fatalf("a restore from another cluster's backup changed the id to %q", id)
	}
}
