package node

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"

	"github.com/edgelb/edgelb/raft/fsm"
)

// Recovered is what Recover found and kept.
type Recovered struct {
	// SnapshotIndex is the newest snapshot's last index (0: none), LastIndex
	// the last log entry replayed on top of it.
	SnapshotIndex, LastIndex uint64
	// The state that the new one-member cluster starts from.
	Revision        uint64
	VirtualServices int
	AddressPools    int
	// Previous is the configuration the data dir held before.
	Previous []Server
}

// Recover turns the stopped member's raft data in cfg.DataDir into a
// one-member cluster of itself (cfg.ID at cfg.RaftAddr), keeping every entry
// it holds: hashicorp/raft's RecoverCluster restores the newest snapshot
// into f, applies every log entry after it, writes the result as a new
// snapshot with the new configuration and compacts the log. Entries the
// lost majority committed but this member never received are gone; entries
// it received but that were never committed become committed.
//
// The stores are opened as Open opens them; the raft store's file lock
// refuses (ErrDataDirInUse) while an lbd runs on the data dir. No transport
// is opened: RecoverCluster only uses it to encode peer addresses, which an
// in-memory transport encodes as the network one does, and binding the raft
// port (with its TLS material) would gain nothing.
func Recover(cfg Config, f *fsm.FSM) (*Recovered, error) {
	if cfg.ID == "" {
		return nil, errors.New("raft: member id is empty")
	}
	cfg = cfg.withDefaults()
	// Opening the store would create an empty one: refuse a wrong path first.
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "raft.db")); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no raft state in %s (no raft.db): nothing to recover from; is --data-dir the member's data dir?", cfg.DataDir)
	} else if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", cfg.DataDir, err)
	}
	adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("raft address %q: %w", cfg.RaftAddr, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return nil, fmt.Errorf("raft address %q must name the host's own IP, since peers dial it", cfg.RaftAddr)
	}
	rc := raftConfig(cfg)
	store, logs, snaps, err := openStores(cfg, rc)
	if err != nil {
		return nil, err
	}
	defer store.Close()

	out := &Recovered{}
	if metas, err := snaps.List(); err == nil && len(metas) > 0 {
		out.SnapshotIndex = metas[0].Index
	}
	if out.LastIndex, err = logs.LastIndex(); err != nil {
		return nil, fmt.Errorf("read the last raft log index: %w", err)
	}
	out.LastIndex = max(out.LastIndex, out.SnapshotIndex)
	addr, trans := raft.NewInmemTransport(raft.ServerAddress(adv.String()))
	defer trans.Close()
	// For the report only; on a throwaway FSM and its own copy of the
	// configuration, which GetConfiguration modifies.
	if prev, err := raft.GetConfiguration(raftConfig(cfg), fsm.New(cfg.Logger), logs, store, snaps, trans); err == nil {
		for _, s := range prev.Servers {
			out.Previous = append(out.Previous, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
		}
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(cfg.ID), Address: addr}}}
	if err := raft.RecoverCluster(rc, f, logs, store, snaps, trans, conf); err != nil {
		return nil, fmt.Errorf("recover the cluster from %s: %w", cfg.DataDir, err)
	}
	out.Revision = f.Revision()
	vss, _ := f.Shared(fsm.Filter{})
	out.VirtualServices = len(vss)
	out.AddressPools = len(f.Pools())
	return out, nil
}
