// Package node runs one member of edgelb's raft cluster: hashicorp/raft with a
// raft-boltdb (v2) log and stable store, file snapshots and a TCP transport,
// around the FSM in package fsm. It knows nothing of gRPC; the API layer calls it.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	"github.com/edgelb/edgelb/raft/fsm"
)

// Timing holds raft's timers. The defaults are tuned for edge hosts on one LAN
// (sub-millisecond RTT): a dead leader is noticed after HeartbeatTimeout and a
// new one elected within about ElectionTimeout more, so the control plane is back
// in ~1 s while the data plane keeps forwarding. hashicorp/raft's own defaults
// (1 s / 1 s / 500 ms) assume a WAN.
type Timing struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
}

// CommitTimeoutFor is the commit timeout that goes with a heartbeat timeout:
// how long the leader lets pass without new entries before it sends each
// follower an AppendEntries anyway, so that followers learn the commit index
// (hashicorp/raft's heartbeats do not carry it). A committed move reaches its
// new owner within one to two of these. It is also the idle cost of a
// cluster: every follower gets an RPC each time. At 10 ms that was about 130
// RPCs a second on a three-member leader, the largest part (38 %) of an idle
// leader's CPU, and in the guest, one emulated CPU for three members, it kept
// lbd's probes off the CPU. A twentieth of the heartbeat timeout (25 ms at
// the LAN default) scales it with the other timers. The cost: a write through
// a follower, which waits for its own replica to apply it, waits one to two
// of these instead of 10 to 20 ms.
func CommitTimeoutFor(heartbeat time.Duration) time.Duration {
	return max(heartbeat/20, 5*time.Millisecond)
}

// DefaultTiming is Timing for a LAN.
func DefaultTiming() Timing {
	return Timing{
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      CommitTimeoutFor(500 * time.Millisecond),
	}
}

// transportTimeout bounds one raft RPC. It is also how long a leader takes to
// notice a partitioned follower (a heartbeat to it hangs this long). VIPs move
// only once the ownership grace has passed since the follower's last answer,
// so the timeout must stay below that grace; twice the heartbeat timeout does,
// and still tolerates a follower's slow fsync. Large snapshots get longer
// deadlines from raft itself (scaled by size).
func (t Timing) transportTimeout() time.Duration {
	return min(max(2*t.HeartbeatTimeout, 200*time.Millisecond), 2*time.Second)
}

// Config describes one member.
type Config struct {
	ID string
	// RaftAddr is the address raft listens on and that peers dial.
	RaftAddr string
	// DataDir holds raft.db (log and stable store) and snapshots/.
	DataDir string
	// Bootstrap starts a new single-member cluster when DataDir holds no state.
	Bootstrap bool
	Timing    Timing
	// SnapshotThreshold is the number of log entries between snapshots (0: raft's default).
	SnapshotThreshold uint64
	// SnapshotInterval is how often raft checks the threshold (0: raft's default, 2m).
	SnapshotInterval time.Duration
	Logger           *slog.Logger
	// LogOutput receives raft's own log lines (default: Logger).
	LogOutput io.Writer
	LogJSON   bool
	// TLS, when set, makes the raft transport mutual TLS; nil is plaintext.
	TLS *TLS

	logViaSlog bool // raft's lines go through Logger (set by withDefaults)
}

func (cfg Config) withDefaults() Config {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogOutput == nil {
		cfg.LogOutput = slogWriter{cfg.Logger}
		cfg.logViaSlog = true
	}
	if cfg.Timing == (Timing{}) {
		cfg.Timing = DefaultTiming()
	}
	return cfg
}

// Node is a running raft member.
type Node struct {
	cfg       Config
	FSM       *fsm.FSM
	raft      *raft.Raft
	store     *raftboltdb.BoltStore
	transport *raft.NetworkTransport
	peerLis   net.Listener
	leaderCh  chan bool
	peers     *peerWatch
	done      chan struct{}
	stable    *stableStore
	cfgIndex  *configIndex
}

// ErrNotLeader is returned by writes on a member that is not the leader.
var ErrNotLeader = raft.ErrNotLeader

// Open starts the member. The FSM is restored from the latest snapshot and the
// log before Open returns.
func Open(cfg Config, f *fsm.FSM) (*Node, error) {
	if cfg.ID == "" {
		return nil, errors.New("raft: member id is empty")
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft data dir %s: %w", cfg.DataDir, err)
	}
	rc := raftConfig(cfg)
	leaderCh := make(chan bool, 16)
	rc.NotifyCh = leaderCh

	dsk := &disk{dir: cfg.DataDir}
	store, logs, snaps, err := openStores(cfg, rc, dsk)
	if err != nil {
		return nil, err
	}
	adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("raft address %q: %w", cfg.RaftAddr, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		store.Close()
		return nil, fmt.Errorf("raft address %q must name the host's own IP, since peers dial it", cfg.RaftAddr)
	}
	l, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("listen for raft on %s: %w", cfg.RaftAddr, err)
	}
	if cfg.TLS != nil {
		l = tls.NewListener(l, cfg.TLS.Server)
	}
	mx := newMux(l)
	var stream raft.StreamLayer = &plainStream{Listener: mx.raft, adv: adv}
	if cfg.TLS != nil {
		stream = newTLSStream(mx.raft, adv, cfg.TLS)
	}
	trans := newTransport(stream, cfg.Timing.transportTimeout(), rc.Logger.Named("transport"))
	existing, err := raft.HasExistingState(logs, store, snaps)
	if err != nil {
		trans.Close()
		store.Close()
		return nil, fmt.Errorf("inspect raft state in %s: %w", cfg.DataDir, err)
	}
	done := make(chan struct{})
	stable := &stableStore{StableStore: store, disk: dsk, log: cfg.Logger, done: done}
	r, err := raft.NewRaft(rc, f, logs, stable, snaps, trans)
	if err != nil {
		trans.Close()
		store.Close()
		return nil, fmt.Errorf("start raft from %s: %w", cfg.DataDir, err)
	}
	n := &Node{cfg: cfg, FSM: f, raft: r, store: store, transport: trans, peerLis: mx.grpc, leaderCh: leaderCh,
		peers: newPeerWatch(), done: done, stable: stable, cfgIndex: &configIndex{logs: logs, snaps: snaps}}
	obs := make(chan raft.Observation, 64)
	r.RegisterObserver(raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation:
			return true
		}
		return false
	}))
	go n.peers.run(obs, n.done)
	if !existing && cfg.Bootstrap {
		cfg.Logger.Info("bootstrapping a new single-member cluster", "id", cfg.ID, "raft_addr", cfg.RaftAddr)
		fut := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: raft.ServerID(cfg.ID), Address: trans.LocalAddr(),
		}}})
		if err := fut.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.Shutdown()
			return nil, fmt.Errorf("bootstrap cluster: %w", err)
		}
	}
	return n, nil
}

// newTransport is raft's network transport over stream, with pipelined
// replication off (MaxRPCsInFlight 1: every AppendEntries waits for its
// answer). Pipelined, a follower's refusal (Success=false) ends the
// pipeline's decoder while the sender may already be parked handing it one
// more request: the replication goroutine never returns, that follower gets
// no entry again until the leader restarts, and raft.Shutdown waits for it
// forever. A clean stop of lbd hung exactly so in the guest (2026-12-05, the
// stack taken with SIGQUIT: Node.Shutdown → waitShutdown, two replicate
// goroutines in netPipeline.AppendEntries for minutes; grafana/pyroscope
// #5518 describes the same deadlock). HashiCorp measured that pipelining
// gains little once applies are batched, which lbd does (BatchApplyCh).
func newTransport(stream raft.StreamLayer, timeout time.Duration, log hclog.Logger) *raft.NetworkTransport {
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 3, Timeout: timeout, Logger: log,
		MaxRPCsInFlight: 1,
	})
}

// PeerListener is the gRPC side of the raft port: the daemon serves
// PeerService on it, to members only (see mux.go). Connections are *PeerConn.
func (n *Node) PeerListener() net.Listener { return n.peerLis }

// raftConfig is hashicorp/raft's configuration for cfg.
func raftConfig(cfg Config) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.Timing.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Timing.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Timing.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.Timing.CommitTimeout
	// Concurrent writers hand their entries to the leader's loop through a
	// buffer rather than one by one: while the loop writes and fsyncs one
	// batch, the next collects (up to MaxAppendEntries) without each writer
	// blocking on the loop. Durability is the same: an entry is still
	// acknowledged only once a quorum has it fsynced.
	rc.BatchApplyCh = true
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	rc.Logger = hclog.New(&hclog.LoggerOptions{
		Name: "raft", Level: hclog.Info, Output: cfg.LogOutput, JSONFormat: cfg.LogJSON && !cfg.logViaSlog, DisableTime: cfg.logViaSlog,
	})
	return rc
}

// ErrDataDirInUse is returned when another process (a running lbd) holds
// the raft store open.
var ErrDataDirInUse = errors.New("raft data dir is in use by another process (is lbd running on it?)")

// storeLockTimeout bounds the wait for the raft store's file lock. A store
// is held by one process only; waiting longer would not help.
const storeLockTimeout = 3 * time.Second

// openStores opens the log and stable store (raft.db behind a 512-entry
// cache) and the snapshot store (3 kept) in cfg.DataDir.
func openStores(cfg Config, rc *raft.Config, dsk *disk) (*raftboltdb.BoltStore, raft.LogStore, *raft.FileSnapshotStore, error) {
	path := filepath.Join(cfg.DataDir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: storeLockTimeout}})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, nil, nil, fmt.Errorf("open raft store %s: %w", path, ErrDataDirInUse)
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open raft store %s: %w", path, err)
	}
	logs, err := raft.NewLogCache(512, &logStore{LogStore: store, disk: dsk})
	if err != nil {
		store.Close()
		return nil, nil, nil, fmt.Errorf("raft log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 3, rc.Logger.Named("snapshot"))
	if err != nil {
		store.Close()
		return nil, nil, nil, fmt.Errorf("open snapshot store in %s: %w", cfg.DataDir, err)
	}
	return store, logs, snaps, nil
}

// HadState reports whether the member found a cluster configuration on disk,
// i.e. whether it is (or was) already part of a cluster.
func (n *Node) HadState() bool {
	fut := n.raft.GetConfiguration()
	return fut.Error() == nil && len(fut.Configuration().Servers) > 0
}

// StorageError is the failure to write raft's state (term, vote) in the data
// directory that keeps this member out of the cluster, or nil.
func (n *Node) StorageError() error { return n.stable.err() }

// ID is this member's id.
func (n *Node) ID() string { return n.cfg.ID }

// RaftAddr is the address peers reach this member's raft at.
func (n *Node) RaftAddr() string { return string(n.transport.LocalAddr()) }

// LeaderChanges delivers true when this member becomes leader and false when it
// stops being leader. Only one consumer may read it.
func (n *Node) LeaderChanges() <-chan bool { return n.leaderCh }

// IsLeader reports whether this member believes it is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's id and raft address, empty if unknown.
func (n *Node) Leader() (id, raftAddr string) {
	addr, sid := n.raft.LeaderWithID()
	return string(sid), string(addr)
}

// timeout turns ctx's deadline into raft's timeout argument.
func timeout(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return def
}

// Apply commits cmd through the log and returns the FSM's result. It fails with
// ErrNotLeader on a follower.
func (n *Node) Apply(ctx context.Context, cmd *raftv1.Command) (*fsm.Result, error) {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	fut := n.raft.Apply(data, timeout(ctx, 10*time.Second))
	if err := fut.Error(); err != nil {
		return nil, err
	}
	res, ok := fut.Response().(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("unexpected FSM response %T", fut.Response())
	}
	return res, nil
}

// Barrier waits until every entry committed before the call is applied locally.
// A new leader calls it before acting on the FSM's state.
func (n *Node) Barrier(ctx context.Context) error {
	return n.raft.Barrier(timeout(ctx, 10*time.Second)).Error()
}

// AddVoter adds (or, with nonvoter, adds as learner) a member to the raft
// configuration. Adding a member already present at the same address is a no-op.
func (n *Node) AddVoter(ctx context.Context, id, addr string, nonvoter bool) error {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("read raft configuration: %w", err)
	}
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == id && string(s.Address) == addr && (s.Suffrage == raft.Voter) == !nonvoter {
			return nil
		}
	}
	var fut raft.IndexFuture
	if nonvoter {
		fut = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout(ctx, 10*time.Second))
	} else {
		fut = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout(ctx, 10*time.Second))
	}
	return fut.Error()
}

// RemoveServer removes a member from the raft configuration.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	return n.raft.RemoveServer(raft.ServerID(id), 0, timeout(ctx, 10*time.Second)).Error()
}

// Server is one entry of the raft configuration.
type Server struct {
	ID, Address string
	Voter       bool
}

// Servers returns the raft configuration.
func (n *Node) Servers() ([]Server, error) {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, fmt.Errorf("read raft configuration: %w", err)
	}
	return servers(cf.Configuration().Servers), nil
}

func servers(in []raft.Server) []Server {
	var out []Server
	for _, s := range in {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out
}

// ServersAt is Servers with the log index of that configuration (member
// liveness carries it, so a member that has not applied a promotion yet
// learns that its idea of a majority is out of date).
func (n *Node) ServersAt() ([]Server, uint64, error) {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, 0, fmt.Errorf("read raft configuration: %w", err)
	}
	// The servers the index belongs to: for a moment they may lag the
	// current configuration (configindex.go), never mismatch it.
	of, index := n.cfgIndex.at(cf.Configuration())
	if of == nil {
		return servers(cf.Configuration().Servers), 0, nil
	}
	return servers(of), index, nil
}

// TransferLeadership hands leadership to target (any up-to-date follower when
// target is empty) and returns when done.
func (n *Node) TransferLeadership(target string) error {
	if target == "" {
		return n.raft.LeadershipTransfer().Error()
	}
	servers, err := n.Servers()
	if err != nil {
		return err
	}
	for _, s := range servers {
		if s.ID == target {
			return n.raft.LeadershipTransferToServer(raft.ServerID(s.ID), raft.ServerAddress(s.Address)).Error()
		}
	}
	return fmt.Errorf("member %s is not in the raft configuration", target)
}

// Status is raft's view of this member.
type Status struct {
	State                                        string
	Term, LastApplied, CommitIndex, LastLogIndex uint64
	LastContact                                  time.Time
}

// Status returns raft's counters.
func (n *Node) Status() Status {
	return Status{
		State:        n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		LastApplied:  n.raft.AppliedIndex(),
		CommitIndex:  n.raft.CommitIndex(),
		LastLogIndex: n.raft.LastIndex(),
		LastContact:  n.raft.LastContact(),
	}
}

// Snapshot forces a snapshot now (tests, operators before upgrades).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Shutdown stops raft and closes the stores.
func (n *Node) Shutdown() error {
	select {
	case <-n.done:
	default:
		close(n.done)
	}
	fut := n.raft.Shutdown()
	var err error
	if serr := n.stable.err(); serr != nil {
		// raft is held in a write of its term or vote that cannot succeed
		// (stable.go): it cannot finish, and the process is about to end.
		stopped := make(chan error, 1)
		go func() { stopped <- fut.Error() }()
		select {
		case err = <-stopped:
		case <-time.After(5 * time.Second):
			err = fmt.Errorf("raft did not stop: %w", serr)
		}
	} else {
		err = fut.Error()
	}
	if cerr := n.transport.Close(); err == nil {
		err = cerr
	}
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	return err
}
