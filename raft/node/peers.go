package node

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// peerWatch records, on the leader, which followers stopped answering
// heartbeats and since when. The ownership assigner reads it to move VIPs
// away from members that are gone.
type peerWatch struct {
	mu      sync.Mutex
	failing map[string]time.Time // id → last successful contact
	changed chan struct{}
}

func newPeerWatch() *peerWatch {
	return &peerWatch{failing: map[string]time.Time{}, changed: make(chan struct{}, 1)}
}

func (p *peerWatch) run(ch <-chan raft.Observation, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case o := <-ch:
			p.mu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				// Keep the latest last contact, not the first: a resumption
				// can go unobserved (replication restarted for the peer, or
				// the observation dropped), and an old entry would make a
				// member that answered a moment ago look silent for long —
				// its VIPs would move while it still serves them.
				if t, ok := p.failing[string(d.PeerID)]; !ok || d.LastContact.After(t) {
					p.failing[string(d.PeerID)] = d.LastContact
				}
			case raft.ResumedHeartbeatObservation:
				delete(p.failing, string(d.PeerID))
			case raft.LeaderObservation:
				// A new term starts with fresh replication state.
				clear(p.failing)
			}
			p.mu.Unlock()
			select {
			case p.changed <- struct{}{}:
			default:
			}
		}
	}
}

// PeerSilence returns, for each follower whose heartbeats are failing, how
// long ago the leader last heard from it. Meaningful on the leader only.
func (n *Node) PeerSilence() map[string]time.Duration {
	n.peers.mu.Lock()
	defer n.peers.mu.Unlock()
	out := make(map[string]time.Duration, len(n.peers.failing))
	for id, t := range n.peers.failing {
		if t.IsZero() {
			out[id] = time.Duration(1<<63 - 1)
			continue
		}
		out[id] = time.Since(t)
	}
	return out
}

// PeerChanges is signalled when a follower stops or resumes answering.
func (n *Node) PeerChanges() <-chan struct{} { return n.peers.changed }
