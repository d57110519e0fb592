package node

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

func voters(ids ...string) raft.Configuration {
	var c raft.Configuration
	for _, id := range ids {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(id + ":7701")})
	}
	return c
}

// The index of the latest configuration is found in the log (its newest
// configuration entry) or, when the log after the snapshot holds none, in
// the snapshot; a configuration not stored yet keeps the previous index.
func TestConfigIndex(t *testing.T) {
	logs := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	_, trans := raft.NewInmemTransport("")
	c := &configIndex{logs: logs, snaps: snaps}
	two, three, four := voters("a", "b"), voters("a", "b", "c"), voters("a", "b", "c", "d")

	// A snapshot at 10 whose configuration came at 4; commands after it.
	sink, err := snaps.Create(raft.SnapshotVersionMax, 10, 1, two, 4, trans)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(sink, "state")
	sink.Close()
	put := func(i uint64, typ raft.LogType, data []byte) {
		t.Helper()
		if err := logs.StoreLog(&raft.Log{Index: i, Term: 1, Type: typ, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	for i := uint64(11); i <= 14; i++ {
		put(i, raft.LogCommand, []byte("cmd"))
	}
	at := func(cf raft.Configuration) uint64 {
		t.Helper()
		of, i := c.at(cf)
		if !slices.Equal(of, cf.Servers) {
			t.Errorf("at(%v) paired index %d with servers %v", cf.Servers, i, of)
		}
		return i
	}
	if got := at(two); got != 4 {
		t.Errorf("index of the snapshot's configuration = %d, want 4", got)
	}
	put(15, raft.LogConfiguration, raft.EncodeConfiguration(three))
	put(16, raft.LogCommand, []byte("cmd"))
	if got := at(three); got != 15 {
		t.Errorf("index after a configuration entry = %d, want 15", got)
	}
	// A configuration the log does not hold (yet): the last pair that
	// agreed, three's servers with 15, never four's servers with 15.
	if of, i := c.at(four); !slices.Equal(of, three.Servers) || i != 15 {
		t.Errorf("at(four) before its entry = %v, %d; want three's servers and 15", of, i)
	}
	put(17, raft.LogConfiguration, raft.EncodeConfiguration(four))
	if got := at(four); got != 17 {
		t.Errorf("index once stored = %d, want 17", got)
	}
	// Truncated (an uncommitted change undone by a new leader): back to 15.
	if err := logs.DeleteRange(17, 17); err != nil {
		t.Fatal(err)
	}
	if got := at(three); got != 15 {
		t.Errorf("index after the truncation = %d, want 15", got)
	}
}

// The lookup reads through raft's log cache over the bolt store, as lbd
// does, and must leave the cached entries as they were: they are what raft
// applies to the FSM.
func TestConfigIndexLeavesCachedEntries(t *testing.T) {
	store, err := raftboltdb.NewBoltStore(filepath.Join(t.TempDir(), "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	logs, err := raft.NewLogCache(16, store)
	if err != nil {
		t.Fatal(err)
	}
	three := voters("a", "b", "c")
	data := func(i uint64) []byte { return fmt.Appendf(nil, "command %04d", i) }
	for i := uint64(1); i <= 40; i++ {
		l := &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: data(i)}
		if i == 5 {
			l.Type, l.Data = raft.LogConfiguration, raft.EncodeConfiguration(three)
		}
		if err := logs.StoreLog(l); err != nil {
			t.Fatal(err)
		}
	}
	c := &configIndex{logs: logs, snaps: raft.NewInmemSnapshotStore()}
	if _, got := c.at(three); got != 5 {
		t.Errorf("index = %d, want 5", got)
	}
	for i := uint64(6); i <= 40; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(l.Data, data(i)) {
			t.Errorf("entry %d holds %q after the lookup, want %q", i, l.Data, data(i))
		}
	}
}
