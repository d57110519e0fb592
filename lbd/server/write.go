package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgelb/edgelb/internal/backoff"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/rules"
)

// defaultWriteTimeout bounds a write whose client set no deadline: long enough
// to ride out a leader election, short enough that a client learns of a lost quorum.
const defaultWriteTimeout = 15 * time.Second

// defaultLeaderWait is how long a write waits for a leader to appear: a few
// elections on a LAN (each 0.5–1.2 s with the default timers). Past it the
// quorum is most likely gone, and the client learns so while it still has
// time to act, not from its own deadline.
const defaultLeaderWait = 3 * time.Second

// writeHint ends a write's no-leader message.
const writeHint = "nothing was applied"

// notLeaderMsg is what PeerService.Apply answers on a member that lost
// leadership (reason errinfo.NotLeader); the forwarder retries on the new
// leader, since nothing was applied.
const notLeaderMsg = "not the raft leader"

// peerReadyTimeout bounds the wait for a connection to the leader's raft port
// before falling back to its API port.
const peerReadyTimeout = 2 * time.Second

// Propose commits a command on behalf of this member (health reports). It is
// propose for callers outside the API.
func (s *Server) Propose(ctx context.Context, cmd *raftv1.Command) (*fsm.Result, error) {
	return s.propose(ctx, cmd)
}

// propose commits cmd: on the leader directly, on a follower by forwarding to the
// leader. It returns once the result is visible on this member, so a client that
// writes and then reads through the same member sees its write.
func (s *Server) propose(ctx context.Context, cmd *raftv1.Command) (*fsm.Result, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultWriteTimeout)
		defer cancel()
	}
	if err := s.node.StorageError(); err != nil {
		// Its raft is held until it can write again: no leader would answer.
		return nil, status.Errorf(codes.Unavailable, "this member cannot take writes: %v", err)
	}
	cmd.Version = fsm.VersionFor(cmd)
	// The API checked the command with these rules; the FSM holds it to them.
	cmd.Rules = uint32(rules.Current)
	if cmd.Time == nil {
		cmd.Time = timestamppb.Now()
	}
	var lastErr error
	var noLeader time.Time
	for attempt := 0; ; attempt++ {
		res, retry, err := s.proposeOnce(ctx, cmd)
		if !retry {
			if err != nil {
				return nil, err
			}
			if res.Code == codes.OK {
				s.waitApplied(ctx, res.Revision)
			}
			return res, res.Err()
		}
		lastErr = err
		if st := s.noLeaderFor(ctx, &noLeader, writeHint); st != nil {
			return nil, st.Err()
		}
		if !backoff.Wait(ctx, leaderRetry.Delay(attempt)) {
			return nil, status.Errorf(codes.Unavailable, "no raft leader reachable (%v); check that a majority of members is up (lbctl member list)", lastErr)
		}
	}
}

// leaderRetry paces calls that wait for a leader to appear or to answer
// (here and in cluster.go): an election on a LAN takes 0.5–1.2 s.
var leaderRetry = backoff.Policy{First: 20 * time.Millisecond, Max: 300 * time.Millisecond}

// proposeOnce makes one attempt. retry is true when nothing can have been
// applied (no leader known, leader moved before accepting), so trying again is safe.
func (s *Server) proposeOnce(ctx context.Context, cmd *raftv1.Command) (res *fsm.Result, retry bool, err error) {
	if s.node.IsLeader() {
		res, err := s.commit(ctx, cmd)
		if err != nil {
			return nil, errors.Is(err, raft.ErrNotLeader), commitError(err)
		}
		return res, false, nil
	}
	id, addr := s.leaderPeer()
	if id == "" {
		return nil, true, errors.New("no leader elected yet")
	}
	conn, err := s.peer(addr)
	if err != nil {
		return nil, false, status.Errorf(codes.Unavailable, "connect to leader %s at %s: %v", id, addr, err)
	}
	if !connReady(ctx, conn) {
		// PeerService is on the raft port, which only members reach (on
		// the API port anyone could send raw commands). A leader of the
		// previous release (a rolling upgrade replaces it last) serves it on
		// its API port only; nothing was sent to the raft port, so trying
		// there cannot apply the command twice.
		_, api := s.leaderAPI()
		if api == "" {
			return nil, true, fmt.Errorf("leader %s does not answer on its raft port %s and has not registered its API address", id, addr)
		}
		if conn, err = s.peer(api); err != nil {
			return nil, false, status.Errorf(codes.Unavailable, "connect to leader %s at %s: %v", id, api, err)
		}
		addr = api
	}
	// sent records the leader's address once the call has a transport
	// stream to it: without one, nothing can have reached the leader.
	var sent peer.Peer
	resp, err := raftv1.NewPeerServiceClient(conn).Apply(ctx, &raftv1.ApplyRequest{Command: cmd}, grpc.Peer(&sent))
	if err != nil {
		if forwardRetryable(err, &sent) {
			return nil, true, err
		}
		return nil, false, forwarded(err, id, addr)
	}
	return &fsm.Result{
		Code: codes.Code(resp.Code), Message: resp.Message, Revision: resp.Revision,
		Reason: resp.Reason, Meta: resp.Metadata,
		Service: resp.VirtualService, Pool: resp.AddressPool, Member: resp.Member,
		Services: resp.DeletedServices, LastSeen: resp.LastSeen,
	}, false, nil
}

// connReady waits (briefly) until conn is connected; false means it could not
// connect, so nothing was sent on it.
func connReady(ctx context.Context, conn *grpc.ClientConn) bool {
	ctx, cancel := context.WithTimeout(ctx, peerReadyTimeout)
	defer cancel()
	conn.Connect()
	for {
		st := conn.GetState()
		switch st {
		case connectivity.Ready:
			return true
		case connectivity.TransientFailure:
			// Fall back for this attempt, and let the next one connect
			// afresh instead of after gRPC's reconnect backoff (up to 2 min):
			// a restarted leader's raft port is back within seconds.
			conn.ResetConnectBackoff()
			return false
		case connectivity.Shutdown:
			return false
		}
		if !conn.WaitForStateChange(ctx, st) {
			return false
		}
	}
}

// forwardRetryable reports whether a forwarded Apply that failed with err
// certainly applied nothing, so trying again (on whoever leads then) cannot
// apply the command twice. sent is what grpc.Peer recorded for the call.
//
//   - The peer answered NOT_LEADER: it checked before applying anything. (A
//     leader of the release before the reason existed answers without it;
//     that write then fails with Unavailable instead of being retried here:
//     still nothing applied, and the client's own retry covers it.)
//   - Unavailable and the call never had a transport stream: gRPC fills
//     the peer only once a stream to the server exists, so an empty one
//     means the pick failed (connection refused, no such host, a
//     connection in TRANSIENT_FAILURE) and no byte of the request left this
//     member. gRPC retries a stream the server never processed itself, so
//     a failure after that is as good as unsent. A call that got a stream
//     and then lost the connection may have been applied: not retried.
//   - Unimplemented: the leader's API port does not serve PeerService
//     (plaintext, this release), so it applied nothing; its raft port was
//     only briefly unreachable.
func forwardRetryable(err error, sent *peer.Peer) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return errinfo.Reason(err) == errinfo.NotLeader || sent.Addr == nil
	case codes.Unimplemented:
		return true
	}
	return false
}

// waitApplied waits (bounded by ctx) until the local FSM has applied rev. Only
// the FSM's own revision says so: raft's applied index runs ahead of the FSM.
func (s *Server) waitApplied(ctx context.Context, rev uint64) {
	for {
		ch := s.fsm.Changed()
		if s.fsm.Revision() >= rev {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// commit appends cmd to the raft log on the leader. This member's own writes
// and those its followers forward (Apply) both come through here, so what
// the leader decides for a command is decided in this one place: a new
// service's owner. It is decided afresh on every attempt, since a command
// forwarded after a leadership change must carry the new leader's view.
func (s *Server) commit(ctx context.Context, cmd *raftv1.Command) (*fsm.Result, error) {
	if c := cmd.GetCreateVirtualService(); c != nil && c.Service != nil {
		d := s.decideOwner(c.Service)
		c.Owner, c.OwnerReason = d.Owner, d.Reason
	}
	return s.node.Apply(ctx, cmd)
}

// commitError says what a failed commit on the leader means, for its own
// callers and for the followers that forwarded the write (Apply) alike.
func commitError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		// Nothing was applied: the forwarder tries the new leader.
		return errinfo.Errorf(codes.Unavailable, errinfo.NotLeader, nil, notLeaderMsg)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrEnqueueTimeout):
		// The entry may or may not commit; the client must look before retrying.
		return errinfo.Errorf(codes.Unavailable, errinfo.OutcomeUnknown, nil,
			"leadership changed while committing; the change may or may not have been applied: read it back before retrying (%v)", err)
	default:
		return status.Errorf(codes.Unavailable, "commit through raft: %v", err)
	}
}

// forwarded is the leader's refusal of a forwarded write as the follower
// returns it: the leader named in the message, its code and typed details
// kept, so a client acts on them as if it had asked the leader itself.
func forwarded(err error, id, addr string) error {
	st := status.Convert(err)
	p := st.Proto()
	p.Message = fmt.Sprintf("forward to leader %s at %s: %s", id, addr, st.Message())
	return status.FromProto(p).Err()
}

// Apply is the PeerService call followers use to forward writes to the leader.
func (s *Server) Apply(ctx context.Context, req *raftv1.ApplyRequest) (*raftv1.ApplyResponse, error) {
	if req.Command == nil {
		return nil, status.Error(codes.InvalidArgument, "command is required")
	}
	if !s.node.IsLeader() {
		return nil, errinfo.Errorf(codes.Unavailable, errinfo.NotLeader, nil, notLeaderMsg)
	}
	res, err := s.commit(ctx, req.Command)
	if err != nil {
		return nil, commitError(err)
	}
	return &raftv1.ApplyResponse{
		Code: int32(res.Code), Message: res.Message, Revision: res.Revision,
		Reason: res.Reason, Metadata: res.Meta,
		VirtualService: res.Service, AddressPool: res.Pool, Member: res.Member,
		DeletedServices: res.Services, LastSeen: res.LastSeen,
	}, nil
}
