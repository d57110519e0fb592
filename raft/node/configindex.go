package node

import (
	"slices"
	"sync"

	"github.com/hashicorp/raft"
)

// configIndex finds the raft log index of the latest configuration.
// hashicorp/raft 1.7 no longer reports it: GetConfiguration (and Stats'
// latest_configuration_index) give 0. Member liveness carries the index, so
// that a member can tell a peer's newer configuration from its own (a
// promotion it has not applied, its own removal it never received).
//
// The newest configuration entry is looked up in the log when the
// configuration changes, the way raft finds it at start: the newest
// LogConfiguration entry after the latest snapshot, else that snapshot's
// configuration index. Changes are rare, so the lookup is too.
type configIndex struct {
	logs  raft.LogStore
	snaps raft.SnapshotStore

	mu    sync.Mutex
	of    []raft.Server // the configuration index belongs to
	index uint64
}

// at returns configuration cf's servers and log index, or, when the log
// and cf disagree for a moment, the last pair found that agrees (nil and 0
// before any): a server list is never paired with another list's index.
// Raft makes a configuration current after its entry is stored, but a
// follower's truncation (the entries deleted before the configuration goes
// back), a snapshot being installed (stored before it is current) and a
// leader whose log write failed each leave the two apart.
func (c *configIndex) at(cf raft.Configuration) ([]raft.Server, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.of != nil && slices.Equal(c.of, cf.Servers) {
		return c.of, c.index
	}
	if i, ok := c.lookup(cf); ok {
		c.of, c.index = slices.Clone(cf.Servers), i
	}
	return c.of, c.index
}

// lookup finds the entry or snapshot that holds cf.
func (c *configIndex) lookup(cf raft.Configuration) (uint64, bool) {
	var snap *raft.SnapshotMeta
	if metas, err := c.snaps.List(); err == nil && len(metas) > 0 {
		snap = metas[0]
	}
	first, err1 := c.logs.FirstIndex()
	last, err2 := c.logs.LastIndex()
	if err1 == nil && err2 == nil {
		from := first
		if snap != nil {
			from = max(from, snap.Index+1)
		}
		for i := last; i >= from && i > 0; i-- {
			// A fresh Log each time: one from the log cache shares its Data
			// with the entry raft applies, and decoding the next entry into
			// it would write over that entry (seen: "undecodable raft log
			// entry" in TestRecovery).
			var e raft.Log
			if err := c.logs.GetLog(i, &e); err != nil {
				// Compacted under the scan: an entry not read may be the
				// one; the next call looks again.
				return 0, false
			}
			if e.Type != raft.LogConfiguration {
				continue
			}
			if slices.Equal(raft.DecodeConfiguration(e.Data).Servers, cf.Servers) {
				return i, true
			}
			return 0, false // the newest entry is another configuration
		}
	}
	if snap != nil && slices.Equal(snap.Configuration.Servers, cf.Servers) {
		return snap.ConfigurationIndex, true
	}
	return 0, false
}
