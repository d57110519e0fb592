package node

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A failure after an unobserved resumption must not keep the old contact
// time: the member answered since, and its VIPs must not move early.
func TestPeerWatchKeepsLatestContact(t *testing.T) {
	p := newPeerWatch()
	ch := make(chan raft.Observation)
	done := make(chan struct{})
	go p.run(ch, done)
	defer close(done)
	n := &Node{peers: p}
	old := time.Now().Add(-time.Hour)
	ch <- raft.Observation{Data: raft.FailedHeartbeatObservation{PeerID: "edge2", LastContact: old}}
	// The peer answered again (ResumedHeartbeat lost), then failed again.
	recent := time.Now().Add(-100 * time.Millisecond)
	ch <- raft.Observation{Data: raft.FailedHeartbeatObservation{PeerID: "edge2", LastContact: recent}}
	ch <- raft.Observation{Data: raft.FailedHeartbeatObservation{PeerID: "edge2", LastContact: old}} // stale, late
	ch <- raft.Observation{Data: raft.LeaderObservation{}}                                           // a barrier: run has handled the above
	ch <- raft.Observation{Data: raft.FailedHeartbeatObservation{PeerID: "edge3", LastContact: recent}}
	ch <- raft.Observation{Data: raft.FailedHeartbeatObservation{PeerID: "edge2", LastContact: recent}}
	ch <- raft.Observation{Data: raft.ResumedHeartbeatObservation{PeerID: "edge3"}}
	ch <- raft.Observation{Data: raft.FailedHeartbeatObservation{PeerID: "edge4", LastContact: old}}
	ch <- raft.Observation{Data: raft.FailedHeartbeatObservation{PeerID: "edge4", LastContact: recent}}
	ch <- raft.Observation{Data: raft.FailedHeartbeatObservation{PeerID: "edge4", LastContact: old}}
	ch <- raft.Observation{} // unbuffered: the previous one has been handled once this is taken
	s := n.PeerSilence()
	if d := s["edge4"]; d > time.Minute {
		t.Errorf("edge4 silent for %s: the later contact was lost", d)
	}
	if d, ok := s["edge2"]; !ok || d > time.Minute {
		t.Errorf("edge2: %s %v", d, ok)
	}
	if _, ok := s["edge3"]; ok {
		t.Error("edge3 resumed but still counted silent")
	}
}
