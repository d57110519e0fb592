// Package fsm is edgelb's replicated state machine: virtual services, address
// pools and members, changed only by commands committed through the raft log.
//
// Apply is deterministic — given the same state and command every member makes the
// same decision, including VIP allocation and refusals — so stateful checks
// (duplicates, pools, generations) live here rather than in the API layer, where
// they would race with concurrent writes.
package fsm

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/rules"
)

// CommandVersion is the command format this binary proposes and understands.
//
// Version 3: tenant heartbeats and DeleteTenantServices; a member of an
// older binary refuses them (and says to upgrade) rather than not knowing them.
//
// Version 2: allocation skips the IPv6 subnet-router anycast address and a
// VIP may not be requested there; a new pool starts at generation 1.
// Entries of version 1 keep the old rules, so a log written before still
// replays to the same state on every member.
const CommandVersion = 3

// versionTenants is the first command version with tenant heartbeats.
const versionTenants = 3

// versionAnycast is the first command version whose allocation skips the
// subnet-router anycast address and whose pools carry generations.
const versionAnycast = 2

// VersionFor is the version a proposer stamps on cmd: the oldest whose rules
// give it its meaning. Only commands that allocate addresses or change pools
// need version 2; every other command keeps version 1, so a member still on
// an older binary during a rolling upgrade goes on applying ownership moves,
// backends and health rather than refusing every entry (and keeping VIPs the
// leader has moved elsewhere).
func VersionFor(cmd *raftv1.Command) uint32 {
	switch cmd.Op.(type) {
	case *raftv1.Command_CreateVirtualService, *raftv1.Command_UpdateVirtualService,
		*raftv1.Command_CreateAddressPool, *raftv1.Command_UpdateAddressPool:
		return versionAnycast
	case *raftv1.Command_RenewTenantHeartbeat, *raftv1.Command_DeleteTenantServices:
		// A heartbeat's orphaned_services stays version 3: a member of an
		// older binary ignores the field (it only misses a report shown to
		// people) but still renews the heartbeat, which tenant gc must see
		// alike on every member; refusing the entry would not.
		return versionTenants
	}
	return 1
}

// snapshotVersion is the format of snapshots this binary writes.
const snapshotVersion = 1

// maxHistory is the number of events at least kept for Watch resumption (up to
// twice as many are). A watcher further behind gets a full snapshot instead.
//
// Each event holds a whole service (with 50 backends and their health, ~10 KB),
// so the history costs up to 2 × maxHistory of them: at 16384 that was most of
// lbd's memory at 10k VIPs. 4096 still lets a watcher that lost a few seconds
// of a mass change resume without a snapshot.
const maxHistory = 4096

// Result is what Apply returns for one command: a gRPC code and message, the
// revision the change was recorded at, and the object it produced.
type Result struct {
	Code    codes.Code
	Message string
	// Reason and Meta become a google.rpc.ErrorInfo (errinfo) on the error.
	Reason   string
	Meta     map[string]string
	Revision uint64
	Service  *edgelbv1.VirtualService
	Pool     *edgelbv1.AddressPool
	Member   *edgelbv1.Member
	// Services are those a command deleted (DeleteTenantServices).
	Services []*edgelbv1.VirtualService
	// LastSeen is a tenant's heartbeat (RenewTenantHeartbeat, DeleteTenantServices).
	LastSeen *timestamppb.Timestamp
}

// Err returns the result as a gRPC status error, or nil.
func (r *Result) Err() error {
	if r.Code == codes.OK {
		return nil
	}
	return errinfo.New(r.Code, r.Reason, r.Meta, r.Message)
}

func fail(c codes.Code, format string, args ...any) *Result {
	return &Result{Code: c, Message: fmt.Sprintf(format, args...)}
}

// failInfo is fail with an ErrorInfo reason and metadata for clients that
// decide by it.
func failInfo(c codes.Code, reason string, meta map[string]string, format string, args ...any) *Result {
	return &Result{Code: c, Message: fmt.Sprintf(format, args...), Reason: reason, Meta: meta}
}

// failR is failInfo (the name the rule checks use).
func failR(c codes.Code, reason string, meta map[string]string, format string, args ...any) *Result {
	return failInfo(c, reason, meta, format, args...)
}

// refused turns a rules error about the object what into a result, keeping
// its code and ErrorInfo.
func refused(what string, err error) *Result {
	st := status.Convert(err)
	r := &Result{Code: st.Code(), Message: what + ": " + st.Message()}
	if ei, ok := errinfo.Of(err); ok {
		r.Reason, r.Meta = ei.Reason, ei.Metadata
	}
	return r
}

// FSM implements raft.FSM.
type FSM struct {
	log *slog.Logger

	mu       sync.RWMutex
	st       *state
	revision uint64
	// rev mirrors revision for Revision, which the liveness probes read
	// on every round: they must not queue behind a writer waiting for mu.
	rev     atomic.Uint64
	history []*edgelbv1.Event // oldest first, at most maxHistory
	floor   uint64            // history holds every event after this revision
	changed chan struct{}     // closed and replaced on every change
	// vipLog names, per revision with events, the VIPs whose services
	// changed (before and after the change), over the same window as history.
	vipLog []vipChange
	// restores counts raft snapshot restores: a consumer of the change feed
	// from before one must resynchronise (ChangesSince).
	restores uint64
	// clusterID is set once by the first SetClusterID; it lives outside st
	// because a restore from a backup replaces st but not the cluster.
	clusterID string
}

// New returns an empty FSM.
func New(log *slog.Logger) *FSM {
	if log == nil {
		log = slog.Default()
	}
	return &FSM{log: log, st: newState(), changed: make(chan struct{})}
}

// Encode marshals a command for raft.Apply.
func Encode(cmd *raftv1.Command) ([]byte, error) {
	if cmd.Version == 0 {
		cmd.Version = VersionFor(cmd)
		if cmd.Rules == 0 {
			// Made by this binary (not forwarded): checked by its rules.
			cmd.Rules = uint32(rules.Current)
		}
	}
	// The proposer's clock, recorded once, so every member stores the same
	// times (commands from the leader's own loops have none yet).
	if cmd.Time == nil {
		cmd.Time = timestamppb.Now()
	}
	return proto.Marshal(cmd)
}

// Apply applies one committed log entry. It implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	var cmd raftv1.Command
	if err := proto.Unmarshal(l.Data, &cmd); err != nil {
		// A corrupt entry would be corrupt on every member: refusing it keeps them equal.
		f.log.Error("undecodable raft log entry", "index", l.Index, "err", err)
		return fail(codes.Internal, "undecodable command at index %d: %v", l.Index, err)
	}
	return f.ApplyCommand(l.Index, &cmd)
}

// ApplyBatch implements raft.BatchingFSM: the entries raft hands over
// together are applied in order under one lock, and wake the FSM's watchers
// (reconcilers, the assigner, Watch streams, writers waiting for their
// revision) once rather than once per entry. Each entry is decided exactly as
// Apply decides it alone.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	cmds := make([]*raftv1.Command, len(logs))
	lvls := make([]rules.Level, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue // configuration entries: raft's, nothing for the FSM
		}
		var cmd raftv1.Command
		if err := proto.Unmarshal(l.Data, &cmd); err != nil {
			f.log.Error("undecodable raft log entry", "index", l.Index, "err", err)
			out[i] = fail(codes.Internal, "undecodable command at index %d: %v", l.Index, err)
			continue
		}
		lvl, r := f.precheck(l.Index, &cmd)
		if r != nil {
			out[i] = r
			continue
		}
		cmds[i], lvls[i] = &cmd, lvl
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	changed := false
	for i, cmd := range cmds {
		if cmd == nil {
			continue
		}
		r, c := f.applyLocked(logs[i].Index, cmd, lvls[i])
		out[i], changed = r, changed || c
	}
	if changed {
		close(f.changed)
		f.changed = make(chan struct{})
	}
	return out
}

// ApplyCommand applies a decoded command at log index idx. Exposed for tests
// and benchmarks that drive the FSM without raft.
func (f *FSM) ApplyCommand(idx uint64, cmd *raftv1.Command) *Result {
	lvl, r := f.precheck(idx, cmd)
	if r != nil {
		return r
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, changed := f.applyLocked(idx, cmd, lvl)
	if changed {
		close(f.changed)
		f.changed = make(chan struct{})
	}
	return r
}

// precheck refuses a command this member cannot apply (newer than it) or
// that is malformed, before the lock; else it returns the rule level to
// apply it by.
func (f *FSM) precheck(idx uint64, cmd *raftv1.Command) (rules.Level, *Result) {
	if cmd.Version > CommandVersion {
		f.log.Error("raft log entry is newer than this binary; upgrade lbd on this member", "index", idx, "version", cmd.Version)
		return 0, fail(codes.Unimplemented, "command version %d is newer than this member understands (%d)", cmd.Version, CommandVersion)
	}
	// A level above this binary's is applied by the rules this binary knows:
	// they are a subset, and the proposer already checked the rest. Refusing
	// would make this member diverge from newer ones during an upgrade.
	lvl := min(rules.Level(cmd.Rules), rules.Current)
	if r := wellFormed(cmd, lvl); r != nil {
		// Not an error of this member: it refuses what every member refuses.
		f.log.Warn("refusing malformed raft log entry", "index", idx, "err", r.Message)
		return 0, r
	}
	return lvl, nil
}

// applyLocked applies a checked command and reports whether it changed
// anything (the caller then wakes the watchers). The caller holds f.mu.
func (f *FSM) applyLocked(idx uint64, cmd *raftv1.Command, lvl rules.Level) (*Result, bool) {
	f.st.touched = f.st.touched[:0]
	a := applier{f: f, idx: idx, time: cmd.Time, version: cmd.Version, lvl: lvl}
	var r *Result
	switch op := cmd.Op.(type) {
	case *raftv1.Command_CreateVirtualService:
		r = a.createService(op.CreateVirtualService)
	case *raftv1.Command_UpdateVirtualService:
		r = a.updateService(op.UpdateVirtualService)
	case *raftv1.Command_DeleteVirtualService:
		r = a.deleteService(op.DeleteVirtualService)
	case *raftv1.Command_SetBackends:
		r = a.setBackends(op.SetBackends)
	case *raftv1.Command_AddBackend:
		r = a.addBackend(op.AddBackend)
	case *raftv1.Command_RemoveBackend:
		r = a.removeBackend(op.RemoveBackend)
	case *raftv1.Command_DrainBackend:
		r = a.drainBackend(op.DrainBackend)
	case *raftv1.Command_CreateAddressPool:
		r = a.createPool(op.CreateAddressPool)
	case *raftv1.Command_DeleteAddressPool:
		r = a.deletePool(op.DeleteAddressPool)
	case *raftv1.Command_UpdateAddressPool:
		r = a.updatePool(op.UpdateAddressPool)
	case *raftv1.Command_PutMember:
		r = a.putMember(op.PutMember)
	case *raftv1.Command_RemoveMember:
		r = a.removeMember(op.RemoveMember)
	case *raftv1.Command_SetOwners:
		r = a.setOwners(op.SetOwners)
	case *raftv1.Command_SetBackendHealth:
		r = a.setBackendHealth(op.SetBackendHealth)
	case *raftv1.Command_RestoreState: // lbctl snapshot restore (restore.go)
		r = a.restoreState(op.RestoreState)
	case *raftv1.Command_RenewTenantHeartbeat:
		r = a.renewHeartbeat(op.RenewTenantHeartbeat)
	case *raftv1.Command_DeleteTenantServices:
		r = a.deleteTenantServices(op.DeleteTenantServices)
	case *raftv1.Command_SetClusterId:
		// First one wins: two leaders of one term cannot both propose, but a
		// new leader may propose before it applied its predecessor's.
		if f.clusterID == "" {
			f.clusterID = op.SetClusterId.ClusterId
		}
		r = &Result{}
	default:
		r = fail(codes.InvalidArgument, "empty or unknown command")
	}
	if len(a.events) > 0 {
		f.revision = idx
		f.rev.Store(idx)
		for _, e := range a.events {
			e.Revision = idx
		}
		f.history = append(f.history, a.events...)
		_, restore := cmd.Op.(*raftv1.Command_RestoreState)
		f.vipLog = append(f.vipLog, vipChange{rev: idx, vips: slices.Clone(f.st.touched), all: restore})
		// Trim in batches so the copy is amortised over many applies.
		if len(f.history) > 2*maxHistory {
			over := len(f.history) - maxHistory
			f.floor = f.history[over-1].Revision
			f.history = append(f.history[:0:0], f.history[over:]...)
			i := sort.Search(len(f.vipLog), func(i int) bool { return f.vipLog[i].rev > f.floor })
			f.vipLog = append(f.vipLog[:0:0], f.vipLog[i:]...)
		}
	}
	if r.Code == codes.OK {
		r.Revision = f.revision
	}
	return r, len(a.events) > 0
}

// ClusterID is the cluster's id, empty until its first leader has set it.
func (f *FSM) ClusterID() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.clusterID
}

// Revision is the log index of the last change.
func (f *FSM) Revision() uint64 { return f.rev.Load() }

// Changed returns a channel that is closed at the next change. Take it before
// reading, so that a change between the read and the wait is not missed.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// EventsSince returns the events after revision rev. ok is false when some of
// them are no longer in the history (the caller must resynchronise from a snapshot).
func (f *FSM) EventsSince(rev uint64) (events []*edgelbv1.Event, current uint64, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if rev >= f.revision {
		return nil, f.revision, true
	}
	if rev < f.floor {
		return nil, f.revision, false
	}
	i := sort.Search(len(f.history), func(i int) bool { return f.history[i].Revision > rev })
	out := make([]*edgelbv1.Event, len(f.history)-i)
	copy(out, f.history[i:])
	return out, f.revision, true
}

// SnapshotEvents returns the whole current state as PUT events and its revision.
func (f *FSM) SnapshotEvents() ([]*edgelbv1.Event, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	vss, pools, members := f.st.snapshot()
	evs := make([]*edgelbv1.Event, 0, len(vss)+len(pools)+len(members))
	put := edgelbv1.EventType_EVENT_TYPE_PUT
	for _, m := range members {
		evs = append(evs, &edgelbv1.Event{Type: put, Revision: f.revision, Object: &edgelbv1.Event_Member{Member: m}})
	}
	for _, p := range pools {
		evs = append(evs, &edgelbv1.Event{Type: put, Revision: f.revision, Object: &edgelbv1.Event_AddressPool{AddressPool: p}})
	}
	for _, vs := range vss {
		evs = append(evs, &edgelbv1.Event{Type: put, Revision: f.revision, Object: &edgelbv1.Event_VirtualService{VirtualService: vs}})
	}
	return evs, f.revision
}

// Snapshot implements raft.FSM. The objects are immutable once stored, so
// holding the slices is enough; marshalling happens in Persist, off the apply path.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	vss, pools, members := f.st.snapshot()
	msg := &raftv1.Snapshot{
		Version:         snapshotVersion,
		Revision:        f.revision,
		VirtualServices: vss,
		AddressPools:    pools,
		Members:         members,
		ClusterId:       f.clusterID,
	}
	msg.TenantHeartbeats = cloneHeartbeats(f.st.heartbeats, f.st.orphans)
	return &snapshot{msg: msg}, nil
}

// Restore implements raft.FSM: it replaces the state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	var msg raftv1.Snapshot
	if err := proto.Unmarshal(b, &msg); err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	if msg.Version > snapshotVersion {
		return fmt.Errorf("snapshot version %d is newer than this binary understands (%d)", msg.Version, snapshotVersion)
	}
	st := newState()
	for _, p := range msg.AddressPools {
		if err := st.putPool(p); err != nil {
			return fmt.Errorf("restore pool %s: %w", p.Name, err)
		}
	}
	for _, vs := range msg.VirtualServices {
		if vs == nil {
			return fmt.Errorf("restore: snapshot holds an empty virtual service")
		}
		if _, err := netip.ParseAddr(vs.Vip); err != nil {
			return fmt.Errorf("restore: virtual service %s/%s has VIP %q: %w", vs.Tenant, vs.Name, vs.Vip, err)
		}
		st.putService(vs)
	}
	for _, m := range msg.Members {
		st.members[m.Id] = m
	}
	for _, h := range msg.TenantHeartbeats {
		if h.GetTenant() == "" || h.GetLastSeen() == nil {
			return fmt.Errorf("restore: snapshot holds a tenant heartbeat without a tenant or time")
		}
		st.heartbeats[h.Tenant] = h.LastSeen
		if len(h.OrphanedServices) > 0 {
			st.orphans[h.Tenant] = h.OrphanedServices
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
	f.revision = msg.Revision
	f.rev.Store(msg.Revision)
	f.clusterID = msg.ClusterId
	// History before a restore no longer describes how to reach this state.
	f.history, f.vipLog = nil, nil
	f.floor = msg.Revision
	f.restores++
	close(f.changed)
	f.changed = make(chan struct{})
	return nil
}

type snapshot struct{ msg *raftv1.Snapshot }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	b, err := proto.Marshal(s.msg)
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("encode snapshot: %w", err)
	}
	if _, err := sink.Write(b); err != nil {
		sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
