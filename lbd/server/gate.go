package server

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/internal/apimd"
	"github.com/edgelb/edgelb/lbd/lease"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/node"
)

// A replica without a leader must never pose as the cluster: a member cut
// off from its quorum, removed from the configuration or still replaying its
// log would answer an empty or old state as if it were current (seen: a
// member restarted alone listed no services and saved an empty backup).
// Every read of the replicated state passes the gate below, in one place:
// the interceptors, keyed by method. Status reads (member status, member
// list, leader) stay open: they are how an operator finds out what is wrong.

// gatedReads are the methods that answer from the local replica's state.
var gatedReads = apimd.ReplicaReads

// reachProbeTimeout bounds the check of one peer's reachability for an error
// message: short, since it only runs on the way to refusing a call.
const reachProbeTimeout = 300 * time.Millisecond

// staleKey carries, in a gated call's context, why the replica could not be
// vouched for when the caller asked for a stale read anyway.
type staleKey struct{}

// StaleReason is the reason a stale read was served ("" when the replica was
// current, or no stale read was asked for).
func StaleReason(ctx context.Context) string {
	r, _ := ctx.Value(staleKey{}).(string)
	return r
}

// UnaryReadGate refuses gated unary reads on a replica that cannot vouch for
// its state, unless the caller asked for a stale read.
func (s *Server) UnaryReadGate(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !gatedReads[info.FullMethod] {
		return handler(ctx, req)
	}
	ctx, hdr, err := s.gate(ctx)
	if err != nil {
		return nil, err
	}
	if hdr != nil {
		if err := grpc.SetHeader(ctx, hdr); err != nil {
			return nil, status.Errorf(codes.Internal, "set stale-read header: %v", err)
		}
	}
	return handler(ctx, req)
}

// StreamReadGate is UnaryReadGate for streams (Watch, SaveSnapshot): it
// decides once, when the stream starts.
func (s *Server) StreamReadGate(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !gatedReads[info.FullMethod] {
		return handler(srv, ss)
	}
	ctx, hdr, err := s.gate(ss.Context())
	if err != nil {
		return err
	}
	if hdr != nil {
		if err := ss.SetHeader(hdr); err != nil {
			return status.Errorf(codes.Internal, "set stale-read header: %v", err)
		}
	}
	return handler(srv, ctxStream{ss, ctx})
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c ctxStream) Context() context.Context { return c.ctx }

// gate returns nil when the replica may answer. With a stale read asked for
// it always answers, and returns the headers that tell the caller so.
func (s *Server) gate(ctx context.Context) (context.Context, metadata.MD, error) {
	verdict := s.replicaVerdict(ctx)
	if !staleAsked(ctx) {
		if verdict != nil {
			return ctx, nil, verdict.Err()
		}
		return ctx, nil, nil
	}
	reason := ""
	if verdict != nil {
		reason = verdict.Message()
		ctx = context.WithValue(ctx, staleKey{}, reason)
	}
	return ctx, metadata.Pairs(
		apimd.Member, s.opts.Self.Id,
		apimd.Revision, strconv.FormatUint(s.fsm.Revision(), 10),
		apimd.StaleReason, url.QueryEscape(reason), // metadata values must be printable ASCII
	), nil
}

func staleAsked(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(apimd.Stale)
	return len(v) > 0 && v[0] == "1"
}

// ReadVerdict is nil when this member's replica may answer reads as the
// cluster's state: it is in the configuration, knows a leader and has caught
// up with it. Otherwise it is the status to answer with.
func (s *Server) ReadVerdict(ctx context.Context) *status.Status { return s.replicaVerdict(ctx) }

func (s *Server) replicaVerdict(ctx context.Context) *status.Status {
	if st := s.leaderless(ctx, "lbctl --stale … reads this replica anyway"); st != nil {
		return st
	}
	if s.opts.CaughtUp != nil && !s.opts.CaughtUp() {
		leader, _ := s.node.Leader()
		rev := s.fsm.Revision()
		return withInfo(codes.Unavailable, errinfo.NotCaughtUp, map[string]string{
			errinfo.MetaMember: s.opts.Self.Id, errinfo.MetaRevision: strconv.FormatUint(rev, 10), errinfo.MetaLeader: leader,
		}, "not caught up: member %s is at revision %d and still applying what leader %s has committed; retry shortly, or read through another member",
			s.opts.Self.Id, rev, leader)
	}
	return nil
}

// leaderless is nil when this member is in the configuration and knows a
// leader; otherwise it says which of the two is missing, with what the
// member can see: its revision, when it last heard from a leader, and which
// members answer. hint ends the message: what the caller can do.
func (s *Server) leaderless(ctx context.Context, hint string) *status.Status {
	servers, err := s.node.Servers()
	if err != nil {
		return status.Newf(codes.Unavailable, "read raft configuration: %v", err)
	}
	rev := s.fsm.Revision()
	contact := s.lastLeaderContact()
	meta := map[string]string{
		errinfo.MetaMember: s.opts.Self.Id, errinfo.MetaRevision: strconv.FormatUint(rev, 10), errinfo.MetaLastContact: "",
	}
	if !contact.IsZero() {
		meta[errinfo.MetaLastContact] = contact.UTC().Format(time.RFC3339)
	}
	inConfig := false
	for _, sv := range servers {
		inConfig = inConfig || sv.ID == s.opts.Self.Id
	}
	// An empty configuration is a member still waiting to join: it has no
	// leader, which the check below reports.
	if len(servers) > 0 && !inConfig {
		return withInfo(codes.FailedPrecondition, errinfo.RemovedMember, meta,
			"removed member: %s is not in the cluster's configuration (its members: %s); this replica stopped at revision %d, last leader contact %s. Use a current member, or rejoin this one with an empty data dir; %s",
			s.opts.Self.Id, serverIDs(servers), rev, ago(contact), hint)
	}
	if id, _ := s.node.Leader(); id != "" {
		return nil
	}
	if r, ok := s.removedBy(); ok {
		return withInfo(codes.FailedPrecondition, errinfo.RemovedMember, meta,
			"removed member: %s is not in the cluster's configuration as member %s has it (log index %d, voters: %s); this member never learnt of its removal (raft sends it once, best effort, and not to a member that is down), and its replica stopped at revision %d, last leader contact %s. Use a current member, or rejoin this one with an empty data dir; %s",
			s.opts.Self.Id, r.By, r.Index, strings.Join(r.Voters, ", "), rev, ago(contact), hint)
	}
	up, n := s.reachable(ctx, servers)
	meta[errinfo.MetaReachable] = fmt.Sprintf("%d/%d", len(up), n)
	return withInfo(codes.Unavailable, errinfo.NoLeader, meta,
		"no leader: %d of %d members reachable (%s); this replica is at revision %d, last leader contact %s. A majority must be up (docs/OPERATIONS.md §8); %s",
		len(up), n, strings.Join(up, ", "), rev, ago(contact), hint)
}

// removedBy is a peer's word that this member was removed (Options.Removed).
func (s *Server) removedBy() (lease.Removal, bool) {
	if s.opts.Removed == nil {
		return lease.Removal{}, false
	}
	return s.opts.Removed()
}

// removed reports whether this member's configuration, or a peer's newer
// one, no longer holds it: such a member will not see a leader again.
func (s *Server) removed() bool {
	if _, ok := s.removedBy(); ok {
		return true
	}
	servers, err := s.node.Servers()
	if err != nil || len(servers) == 0 {
		return false
	}
	for _, sv := range servers {
		if sv.ID == s.opts.Self.Id {
			return false
		}
	}
	return true
}

// noLeaderFor is nil while a call may go on waiting for a leader. It fails
// the call once no leader was seen for LeaderWait (*since is when this call
// first saw none), or at once on a removed member, instead of letting it run
// into the client's deadline with nothing to say.
func (s *Server) noLeaderFor(ctx context.Context, since *time.Time, hint string) *status.Status {
	if id, _ := s.node.Leader(); id != "" {
		*since = time.Time{}
		return nil
	}
	if since.IsZero() {
		*since = time.Now()
	}
	if time.Since(*since) < s.opts.LeaderWait && !s.removed() {
		return nil
	}
	return s.leaderless(ctx, hint)
}

// lastLeaderContact is the last time this member heard from a leader, as far
// as it knows: raft's own clock, or what the daemon persisted before a restart.
func (s *Server) lastLeaderContact() time.Time {
	t := s.node.Status().LastContact
	if s.opts.LastLeaderContact != nil {
		if p := s.opts.LastLeaderContact(); p.After(t) {
			t = p
		}
	}
	return t
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never since this member started"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func serverIDs(servers []node.Server) string {
	ids := make([]string, 0, len(servers))
	for _, sv := range servers {
		ids = append(ids, sv.ID)
	}
	sort.Strings(ids)
	return strings.Join(ids, ", ")
}

// reachable names the members of the configuration that accept a connection
// now (this member always), and how many members the configuration has.
func (s *Server) reachable(ctx context.Context, servers []node.Server) ([]string, int) {
	var mu sync.Mutex
	up := []string{s.opts.Self.Id + " (this member)"}
	n := max(len(servers), 1)
	var wg sync.WaitGroup
	for _, sv := range servers {
		if sv.ID == s.opts.Self.Id {
			continue
		}
		// The API port where the member table knows it: dialing raft's port
		// would make a TLS transport log a failed handshake on the peer.
		addr := sv.Address
		if m, ok := s.fsm.Member(sv.ID); ok && m.ApiAddress != "" {
			addr = m.ApiAddress
		}
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, reachProbeTimeout)
			defer cancel()
			c, err := (&net.Dialer{}).DialContext(pctx, "tcp", addr)
			if err != nil {
				return
			}
			c.Close()
			mu.Lock()
			up = append(up, sv.ID)
			mu.Unlock()
		})
	}
	wg.Wait()
	sort.Strings(up[1:])
	return up, n
}

// withInfo is a status with a google.rpc.ErrorInfo detail, so clients decide
// by its reason rather than by the message.
func withInfo(code codes.Code, reason string, meta map[string]string, format string, args ...any) *status.Status {
	return errinfo.Status(code, reason, meta, fmt.Sprintf(format, args...))
}
