// Package server is lbd's gRPC API: it validates requests, turns writes into
// raft commands (forwarding them to the leader when this member is a follower),
// and answers reads and watches from the local replica of the state.
package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/edgelb/edgelb/lbd/lease"
	"github.com/edgelb/edgelb/lbd/validate"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node"
)

// Options configure a Server.
type Options struct {
	// Self is this member as it registers itself in the member table.
	Self *edgelbv1.Member
	// DataPlane names the data plane for status ("ipvs", "control-plane-only").
	DataPlane string
	Version   string
	Limits    validate.Limits
	Logger    *slog.Logger
	// PeerCreds secure the connections this member opens to other members'
	// APIs (forwarded writes); nil means plaintext.
	PeerCreds credentials.TransportCredentials
	// MaxServicesPerTenant bounds one tenant's virtual services (0: unlimited).
	MaxServicesPerTenant int
	// OwnedVIPs reports the VIPs the local data plane currently programs.
	OwnedVIPs func() []string
	// BGPStatus reports this member's BGP speaker (nil: no BGP configured).
	BGPStatus func(ctx context.Context) (*edgelbv1.BgpStatus, error)
	// Isolated reports the services the local data plane cannot program
	// ("tenant/name: why"); nil: none can be (no data plane).
	Isolated func() []string
	// Ready reports whether this member is ready (what /readyz answers) and
	// if not, why; nil: ready whenever a leader is known.
	Ready func() (bool, string)
	// CatchUpTimeout bounds how long a new member may take to catch up with
	// the leader before it is promoted to voter; past it, it is removed again
	// (default DefaultCatchUpTimeout).
	CatchUpTimeout time.Duration
	// ServiceStats reads the local kernel's counters of a service (nil: this
	// member has no data plane to read).
	ServiceStats func(ctx context.Context, vs *edgelbv1.VirtualService) ([]*edgelbv1.PortStats, error)
	// CaughtUp reports whether the local replica has reached the leader's
	// revision since it started (nil: always). Reads wait for it (gate.go).
	CaughtUp func() bool
	// LastLeaderContact is the last leader contact the daemon persisted,
	// which survives a restart (raft's own starts at zero); for messages.
	LastLeaderContact func() time.Time
	// Removed reports a member whose newer raft configuration leaves this
	// member out, while its own still holds it: it was removed and never
	// learnt it (nil: never). Such a member refuses as removed.
	Removed func() (lease.Removal, bool)
	// LeaderWait bounds how long a write waits for a leader to appear
	// before it fails with Unavailable (0: defaultLeaderWait).
	LeaderWait time.Duration
}

// Server implements the edgelb.v1 services and the internal PeerService.
type Server struct {
	edgelbv1.UnimplementedVirtualServiceServiceServer
	edgelbv1.UnimplementedAddressPoolServiceServer
	edgelbv1.UnimplementedClusterServiceServer
	edgelbv1.UnimplementedWatchServiceServer
	edgelbv1.UnimplementedTenantServiceServer
	raftv1.UnimplementedPeerServiceServer

	node *node.Node
	fsm  *fsm.FSM
	opts Options
	log  *slog.Logger

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by API address

	// membership is held (one token) by the membership change in progress on
	// this leader: a join's retry and an operator's add of the same member
	// must not interleave (one could remove what the other is promoting).
	membership chan struct{}
}

// New returns a Server over a running raft member.
func New(n *node.Node, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Limits == (validate.Limits{}) {
		opts.Limits = validate.DefaultLimits
	}
	if opts.LeaderWait <= 0 {
		opts.LeaderWait = defaultLeaderWait
	}
	if opts.PeerCreds == nil {
		opts.PeerCreds = insecure.NewCredentials()
	}
	if opts.CatchUpTimeout <= 0 {
		opts.CatchUpTimeout = DefaultCatchUpTimeout
	}
	return &Server{node: n, fsm: n.FSM, opts: opts, log: opts.Logger, conns: map[string]*grpc.ClientConn{},
		membership: make(chan struct{}, 1)}
}

// Register adds every service to g.
func (s *Server) Register(g *grpc.Server) {
	edgelbv1.RegisterVirtualServiceServiceServer(g, s)
	edgelbv1.RegisterAddressPoolServiceServer(g, s)
	edgelbv1.RegisterClusterServiceServer(g, s)
	edgelbv1.RegisterWatchServiceServer(g, s)
	edgelbv1.RegisterTenantServiceServer(g, s)
}

// RegisterPeer adds PeerService to g: a server on the raft port (members
// only), and in TLS mode the API server too, where only member certificates
// may call it, so members of the previous release can still forward to this one.
func (s *Server) RegisterPeer(g *grpc.Server) {
	raftv1.RegisterPeerServiceServer(g, s)
}

// peer returns a (cached) client connection to another member's API.
func (s *Server) peer(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(s.opts.PeerCreds))
	if err != nil {
		return nil, err
	}
	s.conns[addr] = c
	return c, nil
}

// Close closes connections to peers.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for a, c := range s.conns {
		c.Close()
		delete(s.conns, a)
	}
}

// leaderPeer returns the leader's id and raft address (where PeerService is
// served), if known.
func (s *Server) leaderPeer() (id, addr string) {
	return s.node.Leader()
}

// leaderAPI returns the leader's id and API address, if known.
func (s *Server) leaderAPI() (id, addr string) {
	id, _ = s.node.Leader()
	if id == "" {
		return "", ""
	}
	if id == s.opts.Self.Id {
		return id, s.opts.Self.ApiAddress
	}
	if m, ok := s.fsm.Member(id); ok {
		return id, m.ApiAddress
	}
	return id, ""
}

// ErrSelfLeads is LeaderRevision's answer on the leader itself.
var ErrSelfLeads = errors.New("this member leads: its barrier tells when its FSM is current")

// LeaderRevision asks the leader for its FSM's revision: a member whose own
// FSM has reached it holds everything the leader's state held when it asked.
// raft's applied index would not do: raft counts entries as applied when it
// hands them to the FSM's goroutine, before the FSM has applied them. A member
// that leads gets ErrSelfLeads: its own FSM may still be applying what the
// previous leader committed, and only its barrier says when that is done.
func (s *Server) LeaderRevision(ctx context.Context) (uint64, error) {
	id, addr := s.leaderAPI()
	if id == "" || addr == "" {
		return 0, errors.New("no leader known yet")
	}
	if id == s.opts.Self.Id {
		return 0, ErrSelfLeads
	}
	conn, err := s.peer(addr)
	if err != nil {
		return 0, err
	}
	resp, err := edgelbv1.NewClusterServiceClient(conn).GetMemberStatus(ctx, &edgelbv1.GetMemberStatusRequest{Id: id})
	if err != nil {
		return 0, err
	}
	return resp.Status.Revision, nil
}

// Ready reports whether the member knows a leader (its API can serve writes).
func (s *Server) Ready() bool {
	id, _ := s.node.Leader()
	return id != ""
}
