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

// at returns the log index of configuration cf (0 when not found).
func (c *configIndex) at(cf raft.Configuration) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.of != nil && slices.Equal(c.of, cf.Servers) {
		return c.index
	}
	if i, ok := c.lookup(cf); ok {
		c.of, c.index = slices.Clone(cf.Servers), i
		return i
	}
	// A leader makes a new configuration current before its entry is in
	// the log: the previous index until it is, looked up again next time.
	return c.index
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
				break
			}
			if e.Type != raft.LogConfiguration {
				continue
			}
			if slices.Equal(raft.DecodeConfiguration(e.Data).Servers, cf.Servers) {
				return i, true
			}
			// The newest entry is another configuration: a leader's new one
			// is current before it is stored.
			return 0, false
		}
	}
	if snap != nil && slices.Equal(snap.Configuration.Servers, cf.Servers) {
		return snap.ConfigurationIndex, true
	}
	return 0, false
}
