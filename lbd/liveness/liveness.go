// Package liveness is member liveness of its own, apart from raft: every
// member pings every other member of the raft configuration every Interval
// over LivenessService on the raft port (mutual TLS with member certificates,
// a dedicated connection per peer so raft's traffic never queues a probe).
//
// The answers renew this member's quorum lease (lbd/lease). Every ping and
// answer also carries the sender's view — how long since it heard from each
// member, whether it may hold VIP addresses, its FSM revision — so any member
// (the raft leader's assigner in particular) can decide from a majority's
// views that a member cannot hold a lease any more: see Gone.
package liveness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/lease"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// PeerWindow is the fixed HTTP/2 flow-control window, per stream and per
// connection, of the gRPC connections on the raft port, both ends. A fixed
// window turns off gRPC's bandwidth-delay estimate, which sends a PING each
// time data arrives: for a probe, a second round trip. Messages on the raft
// port are small (probes, forwarded writes, connection pushes); 1 MiB is a
// LAN's bandwidth-delay product many times over.
const PeerWindow = 1 << 20

// Peer is a member of the raft configuration.
type Peer struct {
	ID, Addr string
	Voter    bool
}

// Config configures a Prober.
type Config struct {
	Self string
	// Interval between two pings to the same peer.
	Interval time.Duration
	// Grace: a member none of a majority has heard from for this long cannot
	// hold a lease (Grace > the lease's length with a margin; lbd/config
	// checks it).
	Grace time.Duration
	// Peers returns the raft configuration, this member included, and the
	// log index of that configuration. It is asked on a goroutine of its own
	// (raft answers from its main loop, which may be busy): a probe never
	// waits for it.
	Peers func() ([]Peer, uint64)
	// Creds secure the connections to peers' raft ports.
	Creds credentials.TransportCredentials
	// Lease is renewed by the answers.
	Lease *lease.Lease
	// Serving reports whether this member may hold VIP addresses now.
	Serving func() bool
	// Revision is the FSM's applied revision.
	Revision func() uint64
	// Push, if set, sends the established connections of vips to every
	// member's kernel sync daemon now and returns how many it sent per VIP;
	// it answers a new owner (from) that takes the VIPs over in a planned
	// move (PushConnections). Unset: nothing is sent, every count is 0.
	Push func(ctx context.Context, from string, vips []netip.Addr) (map[netip.Addr]int, error)
	// Observe, if set, is told each probe's outcome (metrics).
	Observe func(peer string, rtt time.Duration, ok bool)
	Log     *slog.Logger
}

// report is the latest view a member sent, and when it arrived.
type report struct {
	at          time.Duration
	incarnation uint64
	seq         uint64
	heard       map[string]int64
	serving     bool
	revision    uint64
	gone        []string
	claims      []*raftv1.Claim
}

// claimKey names a provisional claim: claimant serves owner's VIPs.
type claimKey struct{ owner, claimant string }

// Prober probes the peers and answers their probes.
type Prober struct {
	raftv1.UnimplementedLivenessServiceServer
	cfg     Config
	clock   lease.Clock
	started time.Duration

	mu    sync.Mutex
	heard map[string]time.Duration // last time anything came from a member
	// seen is when each member first showed in the raft configuration
	// here: a member that just joined is not silent since before it existed.
	seen  map[string]time.Duration
	views map[string]report
	// answered: per peer, the newest probe it answered (for Probes).
	answered map[string]answer
	// notServing is when a member's reports began to say it holds no VIP
	// address (reset by one saying it may).
	notServing map[string]time.Duration
	peers      []Peer
	config     []Peer // the latest Peers answer, for the next round
	index      uint64 // its log index
	peersIndex uint64 // the index of peers
	conns      map[string]*peerConn
	gone       map[string]bool
	changed    chan struct{}

	// incarnation tells this process's views from an earlier one's; seq
	// orders its views.
	incarnation, seq uint64
	// claims: the owners whose VIPs this member claims (provisional
	// takeover), with each claim's epoch; relayed: the claims other members
	// made, as their latest views said, repeated in this member's views.
	claims    map[string]uint64
	nextEpoch uint64
	relayed   map[claimKey]uint64
	// kick asks Run for a round now: the gone set changed or a claim was
	// made, and the peers' views must carry it before a takeover can go on
	// (waiting for the next tick cost up to an interval at each step).
	kick chan struct{}
}

type peerConn struct {
	addr   string
	cc     *grpc.ClientConn
	dialed time.Duration // on the prober's clock
	// pending holds, per probe in flight, the time of the round that sent it.
	pending []time.Duration
	// queue feeds the open Probe stream's sender (nil: none open, or it
	// ended); while it opens, or after it ended, probes go by Ping.
	// endStream ends it. unaryAt: when the peer answered that it has no
	// Probe (a release before it), zero if not; probes go by Ping until the
	// stream is tried again (the peer may be upgraded in place).
	queue     chan queuedProbe
	endStream context.CancelFunc
	opening   bool
	unaryAt   time.Duration
	// onStream: the probes sent on the stream, oldest first; the peer
	// answers them in that order.
	onStream []sentProbe
}

// queuedProbe is a probe for the stream's sender: the ping, and the round
// that counted it in pending.
type queuedProbe struct {
	req    *raftv1.ProbeRequest
	queued time.Duration
}

// sentProbe is a probe on a stream: its round, and when it was sent.
type sentProbe struct{ queued, sent time.Duration }

// retryStreamAfter is how long a peer that had no Probe gets Ping calls
// before the stream is tried again: each try costs one probe.
const retryStreamAfter = 30 * time.Second

// done drops the pending probe of the round at queued (p.mu held).
func (c *peerConn) done(queued time.Duration) {
	if i := slices.Index(c.pending, queued); i >= 0 {
		c.pending = slices.Delete(c.pending, i, i+1)
	}
}

// answer is the newest probe a peer answered: when it was sent, and its
// round trip.
type answer struct{ sent, rtt time.Duration }

// New returns a Prober; Run starts probing.
func New(cfg Config) *Prober {
	clock := cfg.Lease.Clock()
	// Random, so that no claim epoch of a restarted process repeats one of
	// the process before (a relayed copy of an old claim must not
	// acknowledge a new one).
	inc := rand.Uint64()
	return &Prober{cfg: cfg, clock: clock, started: clock.Now(),
		heard: map[string]time.Duration{}, seen: map[string]time.Duration{}, views: map[string]report{}, notServing: map[string]time.Duration{},
		answered: map[string]answer{},
		conns:    map[string]*peerConn{}, gone: map[string]bool{}, changed: make(chan struct{}),
		incarnation: inc, nextEpoch: inc, claims: map[string]uint64{}, relayed: map[claimKey]uint64{},
		kick: make(chan struct{}, 1)}
}

// Register adds LivenessService to a gRPC server on the raft port.
func (p *Prober) Register(g *grpc.Server) { raftv1.RegisterLivenessServiceServer(g, p) }

// Ping answers a peer's probe with this member's view.
func (p *Prober) Ping(ctx context.Context, req *raftv1.PingRequest) (*raftv1.PingResponse, error) {
	by, err := p.take(ctx, req)
	if err != nil {
		return nil, err
	}
	if by != "" {
		return nil, errinfo.New(codes.FailedPrecondition, errinfo.LeaseClaimed, map[string]string{errinfo.MetaClaimant: by},
			fmt.Sprintf("ping from %s: member %s has claimed its VIPs (a provisional takeover); its lease is not renewed until the claim is dropped", req.From, by))
	}
	return &raftv1.PingResponse{From: p.cfg.Self, View: p.view()}, nil
}

// Probe answers a peer's pings on one stream, each in turn.
func (p *Prober) Probe(s raftv1.LivenessService_ProbeServer) error {
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil // the peer closed it
		}
		if err != nil {
			return err
		}
		by, err := p.take(s.Context(), req.GetPing())
		if err != nil {
			return err
		}
		resp := &raftv1.ProbeResponse{ClaimedBy: by}
		if by == "" {
			resp.Pong = &raftv1.PingResponse{From: p.cfg.Self, View: p.view()}
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

// take checks a peer's ping and takes its view. It returns the member that
// claims the sender's VIPs, if one does: while a claim on them stands, the
// ping gets no answer that renews (an answer would renew its lease; it
// ignores answers that name it as claimed, but a member of a release before
// claims would not). Its pings still count as hearing from it.
func (p *Prober) take(ctx context.Context, req *raftv1.PingRequest) (claimedBy string, err error) {
	if req.GetFrom() == "" {
		return "", status.Error(codes.InvalidArgument, "ping: from (the sender's member id) is required")
	}
	// With TLS the authorizer has admitted a member certificate; it must be
	// the member the ping claims to come from, or one member could speak
	// for another and keep its lease alive.
	if id, ok := auth.FromContext(ctx); ok && id.Role == auth.RoleMember && id.Name != req.From {
		return "", status.Errorf(codes.PermissionDenied, "ping from %q on the certificate of member %q", req.From, id.Name)
	}
	p.receive(req.From, req.View)
	p.evaluate()
	by, _ := p.claimedBy(req.From)
	return by, nil
}

// claimedBy returns a member that claims x's VIPs, as this member knows.
func (p *Prober) claimedBy(x string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.claims[x]; ok {
		return p.cfg.Self, true
	}
	for k := range p.relayed {
		if k.owner == x {
			return k.claimant, true
		}
	}
	return "", false
}

// receive takes a view from member from, and reports whether it names this
// member as the owner in a provisional claim: then this member's lease is
// revoked, and an answer carrying the view renews nothing (its successor
// serves its VIPs; see Acked).
func (p *Prober) receive(from string, v *raftv1.View) bool {
	now := p.clock.Now()
	claimed := false
	for _, c := range v.GetClaims() {
		if c.Owner == p.cfg.Self {
			claimed = true
		}
	}
	if claimed {
		p.cfg.Lease.Revoke()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// Only a member of this member's own configuration speaks for the
	// cluster's: an old member started again after a recovery (lbd
	// recover leaves the survivor's configuration at index 1) would
	// otherwise end the survivor's lease with its own, older cluster.
	if v != nil && p.member(from) {
		p.cfg.Lease.Reported(from, v.ConfigIndex, v.Voters)
	}
	p.heard[from] = now
	if v == nil {
		return claimed
	}
	// A member's views come by two paths (its pings and its answers to
	// ours) and can arrive out of order: an older one must not overwrite a
	// newer one. A new incarnation (the member restarted) starts afresh.
	// (A view without a sequence number, from a release before it, is
	// taken as it comes, as it always was.)
	if old, ok := p.views[from]; ok && v.Seq != 0 && old.incarnation == v.Incarnation && v.Seq <= old.seq {
		return claimed
	}
	p.views[from] = report{at: now, incarnation: v.Incarnation, seq: v.Seq, heard: v.HeardMs, serving: v.Serving,
		revision: v.Revision, gone: v.Gone, claims: v.Claims}
	// Relay exactly the claims from made itself, as of this view: a claimant
	// drops a claim only once its kernel no longer holds the VIPs.
	for k := range p.relayed {
		if k.claimant == from {
			delete(p.relayed, k)
		}
	}
	for _, c := range v.Claims {
		if c.Claimant == from && from != p.cfg.Self {
			p.relayed[claimKey{c.Owner, c.Claimant}] = c.Epoch
		}
	}
	if v.Serving {
		delete(p.notServing, from)
	} else if _, ok := p.notServing[from]; !ok {
		p.notServing[from] = now
	}
	return claimed
}

// member reports whether id is in this member's configuration (p.mu held).
func (p *Prober) member(id string) bool {
	return slices.ContainsFunc(p.peers, func(m Peer) bool { return m.ID == id })
}

// silence is how long since this member heard from id; a member never heard
// from counts from when probing started or from when it first showed in the
// configuration, whichever is later (nothing is known from before).
func (p *Prober) silence(id string, now time.Duration) time.Duration {
	return now - max(p.heard[id], p.started, p.seen[id])
}

func (p *Prober) view() *raftv1.View {
	now := p.clock.Now()
	v := &raftv1.View{HeardMs: map[string]int64{}}
	p.mu.Lock()
	for _, m := range p.peers {
		if m.ID != p.cfg.Self {
			v.HeardMs[m.ID] = p.silence(m.ID, now).Milliseconds()
		}
	}
	v.Gone = slices.Sorted(maps.Keys(p.gone))
	p.seq++
	v.Incarnation, v.Seq = p.incarnation, p.seq
	for _, o := range slices.Sorted(maps.Keys(p.claims)) {
		v.Claims = append(v.Claims, &raftv1.Claim{Owner: o, Claimant: p.cfg.Self, Epoch: p.claims[o]})
	}
	for k, e := range p.relayed {
		v.Claims = append(v.Claims, &raftv1.Claim{Owner: k.owner, Claimant: k.claimant, Epoch: e})
	}
	v.ConfigIndex = p.peersIndex
	for _, m := range p.peers {
		if m.Voter {
			v.Voters = append(v.Voters, m.ID)
		}
	}
	p.mu.Unlock()
	if p.cfg.Serving != nil {
		v.Serving = p.cfg.Serving()
	}
	if p.cfg.Revision != nil {
		v.Revision = p.cfg.Revision()
	}
	return v
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	defer p.closeAll()
	// The gone set is re-evaluated at each round and at each view that
	// arrives (a live peer sends two an interval), so a member's grace is
	// acted on within about half an interval of running out without a timer
	// of its own: in the guest every wake-up costs emulated clock reads,
	// and a ticker at twice the probe rate was a fifth of the wake-ups.
	p.refresh()
	go func() {
		// Membership changes are rare and slow (a catch-up, a promotion):
		// a few looks per second follow them.
		t := time.NewTicker(max(5*p.cfg.Interval, 100*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				p.refresh()
			}
		}
	}()
	p.round(ctx)
	last := p.clock.Now()
	var warned time.Duration // when the last late round was logged
	late := 0                // late rounds since, not logged
	timed := func() {
		// A round later than a few intervals (this process kept off the
		// CPU, or the round held up) shortens every lease it renews:
		// say so, with what the round itself took. At most once a second:
		// a starved process should not be made busier by its own log.
		began := p.clock.Now()
		p.round(ctx)
		if gap := began - last; gap > 3*p.cfg.Interval {
			if late++; warned == 0 || began-warned >= time.Second {
				p.cfg.Log.Warn("liveness: probes sent late; the lease they renew is shorter by as much",
					"since_last_round", gap.Round(time.Millisecond), "interval", p.cfg.Interval, "round_took", (p.clock.Now() - began).Round(time.Millisecond),
					"late_rounds", late)
				warned, late = began, 0
			}
		}
		last = began
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			timed()
			p.evaluate()
		case <-p.kick:
			timed()
		}
	}
}

// refresh takes the raft configuration for the next round.
func (p *Prober) refresh() {
	peers, index := p.cfg.Peers()
	if len(peers) == 0 {
		return // not known (raft shutting down): keep the last one
	}
	p.mu.Lock()
	p.config, p.index = peers, index
	p.mu.Unlock()
}

// round sends one ping to each peer of the latest configuration.
func (p *Prober) round(ctx context.Context) {
	p.mu.Lock()
	peers, index := p.config, p.index
	p.mu.Unlock()
	voters := make([]string, 0, len(peers))
	for _, m := range peers {
		if m.Voter {
			voters = append(voters, m.ID)
		}
	}
	if len(peers) > 0 {
		p.cfg.Lease.SetConfig(index, voters)
	}
	now := p.clock.Now()
	p.mu.Lock()
	p.peers, p.peersIndex = peers, index
	p.prune()
	for _, m := range peers {
		if _, ok := p.seen[m.ID]; !ok {
			p.seen[m.ID] = now
		}
	}
	keep := map[string]bool{}
	var send, open []*peerConn
	var ids, openIDs []string
	for _, m := range peers {
		if m.ID == p.cfg.Self || m.Addr == "" {
			continue
		}
		keep[m.ID] = true
		c := p.conns[m.ID]
		// A new address, or a peer silent for longer than the grace: dial
		// afresh. A half-open TCP connection (the peer's host rebooted, a
		// link cut without a reset) would otherwise hold every probe.
		// Probes in flight do not keep it: on a black-holed connection one
		// starts every interval and each lives a lease, so some are always
		// in flight. Dialled at most once a grace.
		if c != nil && (c.addr != m.Addr || p.silence(m.ID, now) > p.cfg.Grace && now-c.dialed > p.cfg.Grace) {
			c.cc.Close()
			delete(p.conns, m.ID)
			c = nil
		}
		if c == nil {
			cc, err := p.dial(m.Addr)
			if err != nil {
				p.cfg.Log.Warn("liveness: connect to peer", "peer", m.ID, "addr", m.Addr, "err", err)
				continue
			}
			c = &peerConn{addr: m.Addr, cc: cc, dialed: now}
			p.conns[m.ID] = c
		}
		if c.unaryAt != 0 && now-c.unaryAt > retryStreamAfter {
			c.unaryAt = 0
		}
		if c.queue == nil && !c.opening && c.unaryAt == 0 {
			c.opening = true
			open, openIDs = append(open, c), append(openIDs, m.ID)
		}
		// A stream whose oldest probe waits longer than a lease is stuck
		// (Ping's deadline is the lease): end it, which frees its probes;
		// the next round opens another.
		if len(c.onStream) > 0 && now-c.onStream[0].sent > p.cfg.Lease.Length() && c.endStream != nil {
			c.endStream()
		}
		if len(c.pending) < p.maxInFlight() {
			c.pending = append(c.pending, now)
			send = append(send, c)
			ids = append(ids, m.ID)
		}
	}
	for id, c := range p.conns {
		if !keep[id] {
			c.cc.Close()
			delete(p.conns, id)
		}
	}
	p.mu.Unlock()
	for i, c := range open {
		go p.stream(ctx, openIDs[i], c)
	}
	if len(send) == 0 {
		return
	}
	req := &raftv1.PingRequest{From: p.cfg.Self, View: p.view()}
	onStream := &raftv1.ProbeRequest{Ping: req}
	for i, c := range send {
		if !p.enqueue(c, queuedProbe{onStream, now}) {
			go p.probe(ctx, ids[i], c, req, now)
		}
	}
}

// maxInFlight bounds the probes in flight to one peer: they overlap when
// answers are slow, up to a lease's worth (an answer later than that cannot
// renew anything).
func (p *Prober) maxInFlight() int { return int(p.cfg.Lease.Length()/p.cfg.Interval) + 1 }

func (p *Prober) dial(addr string) (*grpc.ClientConn, error) {
	// Reconnect at the probe's pace: gRPC's default backoff (1s doubling to
	// 2 minutes) would keep a restarted peer unheard long after it is back.
	bc := backoff.DefaultConfig
	bc.BaseDelay = p.cfg.Interval
	bc.MaxDelay = max(p.cfg.Grace, time.Second)
	// Fixed flow-control windows: with the default dynamic ones gRPC
	// measures the bandwidth-delay product by a PING each time data arrives,
	// a second round trip per probe. Probes are a few hundred bytes; the
	// window never limits them.
	return grpc.NewClient(addr, grpc.WithTransportCredentials(p.cfg.Creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: max(p.cfg.Grace, time.Second)}),
		grpc.WithInitialWindowSize(PeerWindow), grpc.WithInitialConnWindowSize(PeerWindow))
}

// probe sends one ping, by a call of its own, that the round at queued
// counted in c.pending.
func (p *Prober) probe(ctx context.Context, id string, c *peerConn, req *raftv1.PingRequest, queued time.Duration) {
	// The lease counts from here, not from the round: no later than the
	// ping leaves, and as late as that can be.
	sent := p.clock.Now()
	cctx, cancel := context.WithTimeout(ctx, p.cfg.Lease.Length())
	resp, _ := raftv1.NewLivenessServiceClient(c.cc).Ping(cctx, req) // nil on an error
	cancel()
	rtt := p.clock.Now() - sent
	p.mu.Lock()
	c.done(queued)
	p.mu.Unlock()
	p.settle(id, resp, sent, rtt)
}

// enqueue hands a probe to c's stream sender, and reports whether it took
// it; if not (no stream, or its queue full), the probe goes by a call.
// Never blocks: the round probes every peer.
func (p *Prober) enqueue(c *peerConn, q queuedProbe) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.queue == nil {
		return false
	}
	select {
	case c.queue <- q:
		return true
	default:
		return false
	}
}

// stream opens c's probe stream, sends what the rounds queue for it and
// reads the peer's answers, until it ends.
func (p *Prober) stream(ctx context.Context, id string, c *peerConn) {
	sctx, end := context.WithCancel(ctx)
	defer end()
	s, err := raftv1.NewLivenessServiceClient(c.cc).Probe(sctx)
	// Sends run on a goroutine of their own: a Send can wait (for a
	// connection, before the stream is committed), and the rounds must not.
	// The queue holds what may be in flight at most.
	queue := make(chan queuedProbe, p.maxInFlight())
	p.mu.Lock()
	c.opening = false
	if err == nil {
		c.queue, c.endStream = queue, end
	}
	p.mu.Unlock()
	if err != nil {
		return // the next round tries again; probes go by calls meanwhile
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		p.sendLoop(sctx, c, s, queue)
	}()
	for {
		resp, err := s.Recv()
		now := p.clock.Now()
		p.mu.Lock()
		if err != nil {
			// No more enqueued from here (under p.mu), so once the sender
			// has stopped, the queue holds all that was never sent.
			c.queue, c.endStream = nil, nil
			if status.Code(err) == codes.Unimplemented {
				c.unaryAt = max(now, 1) // a release before Probe
			}
			p.mu.Unlock()
			end()
			<-sent
			p.mu.Lock()
			lost := c.onStream
			c.onStream = nil
			for _, f := range lost {
				c.done(f.queued)
			}
			for len(queue) > 0 {
				c.done((<-queue).queued)
			}
			p.mu.Unlock()
			for _, f := range lost {
				p.settle(id, nil, f.sent, now-f.sent)
			}
			return
		}
		if len(c.onStream) == 0 {
			p.mu.Unlock()
			continue // an answer to nothing sent: not a peer of this release
		}
		f := c.onStream[0]
		c.onStream = c.onStream[1:]
		c.done(f.queued)
		p.mu.Unlock()
		p.settle(id, resp.GetPong(), f.sent, now-f.sent)
	}
}

// sendLoop sends the queued probes on s, in order, until ctx ends or a Send
// fails (which ends the stream: its reader drops what was on it).
func (p *Prober) sendLoop(ctx context.Context, c *peerConn, s raftv1.LivenessService_ProbeClient, queue <-chan queuedProbe) {
	for {
		select {
		case <-ctx.Done():
			return
		case q := <-queue:
			p.mu.Lock()
			// The lease counts from here, as for a call: no later than the
			// ping leaves.
			c.onStream = append(c.onStream, sentProbe{q.queued, p.clock.Now()})
			p.mu.Unlock()
			if err := s.Send(q.req); err != nil {
				return
			}
		}
	}
}

// settle takes a peer's answer to the probe sent at sent (resp nil: none
// came, or the peer refused it). An answer from another member renews
// nothing.
func (p *Prober) settle(id string, resp *raftv1.PingResponse, sent, rtt time.Duration) {
	if p.cfg.Observe != nil {
		p.cfg.Observe(id, rtt, resp != nil)
	}
	if resp == nil || resp.From != id {
		// From differs: another member now listens at that address, and
		// its answer says nothing about id.
		return
	}
	p.mu.Lock()
	if a, seen := p.answered[id]; !seen || sent > a.sent {
		p.answered[id] = answer{sent, rtt}
	}
	p.mu.Unlock()
	if claimed := p.receive(id, resp.View); !claimed {
		p.cfg.Lease.Answered(id, sent)
	}
	p.evaluate()
}

// prune forgets what it knew of members that left the configuration
// (p.mu held): a member removed and added again is new, and the maps would
// otherwise grow with every member ever seen.
func (p *Prober) prune() {
	if len(p.peers) == 0 {
		return
	}
	in := map[string]bool{}
	for _, m := range p.peers {
		in[m.ID] = true
	}
	for _, m := range []map[string]time.Duration{p.heard, p.seen, p.notServing} {
		maps.DeleteFunc(m, func(id string, _ time.Duration) bool { return !in[id] })
	}
	maps.DeleteFunc(p.views, func(id string, _ report) bool { return !in[id] })
	maps.DeleteFunc(p.answered, func(id string, _ answer) bool { return !in[id] })
	maps.DeleteFunc(p.relayed, func(k claimKey, _ uint64) bool { return !in[k.claimant] })
	maps.DeleteFunc(p.claims, func(id string, _ uint64) bool { return !in[id] })
}

func (p *Prober) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, c := range p.conns {
		c.cc.Close()
		delete(p.conns, id)
	}
}

// freshFor is how old a member's view may be (since it arrived) and still
// justify a move: grace − lease. A view says what its sender had heard as of
// when it was made, not since; x's lease could only be valid through a peer
// whose silence about x was ≥ grace at most grace − lease before our own
// silence evidence, if that peer heard x again right after its report. So a
// move on fresh views means x's lease lapsed at some instant, and a member
// whose lease lapsed catches up with the log (and sees the move) before it
// serves again. An older view counts as "heard from everyone". (The time
// between the view's making and its arrival is not measured: on a LAN it is
// the transit of one message; lbd/config keeps grace − lease ≥ 2 probes.)
func (p *Prober) freshFor() time.Duration { return p.cfg.Grace - p.cfg.Lease.Length() }

// Gone reports whether member x cannot hold a valid lease now, as this
// member sees it: fewer of the voters other than x than x needs for its lease
// have heard from x within the grace (by this member's own silence and the
// fresh views of the others), or x has said for longer than the grace that it
// holds no VIP address. A voter whose view is missing or stale counts as
// having heard from x: only evidence moves a VIP.
func (p *Prober) Gone(x string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.goneLocked(x, p.clock.Now())
}

func (p *Prober) goneLocked(x string, now time.Duration) bool {
	return p.goneWhy(x, now) != notGone
}

// Why a member is gone (goneWhy), for the log.
const (
	notGone    = ""
	silent     = "no majority has heard from it within the grace"
	notServing = "it has said for longer than the grace that it serves no VIP"
)

func (p *Prober) goneWhy(x string, now time.Duration) string {
	if x == p.cfg.Self {
		return notGone
	}
	if since, ok := p.notServing[x]; ok && now-since > p.cfg.Grace && p.silence(x, now) < p.cfg.Grace {
		return notServing
	}
	var voters []string
	xVotes := false
	for _, m := range p.peers {
		if m.Voter {
			voters = append(voters, m.ID)
			if m.ID == x {
				xVotes = true
			}
		}
	}
	if len(voters) == 0 {
		return notGone
	}
	need := len(voters)/2 + 1
	if xVotes {
		need--
	}
	if need == 0 {
		return notGone
	}
	heard := 0
	for _, y := range voters {
		if y == x {
			continue
		}
		if y == p.cfg.Self {
			if p.silence(x, now) < p.cfg.Grace {
				heard++
			}
			continue
		}
		r, ok := p.views[y]
		if !ok || now-r.at > p.freshFor() {
			heard++
			continue
		}
		ms, ok := r.heard[x]
		// y's silence as of its report, with nothing added for the time since:
		// y may have heard x since then (see freshFor).
		if !ok || time.Duration(ms)*time.Millisecond < p.cfg.Grace {
			heard++
		}
	}
	if heard < need {
		return silent
	}
	return notGone
}

// Changes is closed when the set of gone members changes; take a new one
// after each.
func (p *Prober) Changes() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

func (p *Prober) evaluate() {
	now := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	gone := map[string]bool{}
	why := map[string]string{}
	for _, m := range p.peers {
		if w := p.goneWhy(m.ID, now); w != notGone {
			gone[m.ID], why[m.ID] = true, w
		}
	}
	if !maps.Equal(gone, p.gone) {
		for id := range gone {
			if !p.gone[id] {
				p.cfg.Log.Info("member cannot hold a lease", "member", id, "why", why[id], "grace", p.cfg.Grace)
			}
		}
		p.gone = gone
		close(p.changed)
		p.changed = make(chan struct{})
		p.kickLocked()
	}
	// A claimant that cannot hold a lease has withdrawn (its fence ends at
	// its lease's end, before the grace): its claims stop holding off their
	// owners. It claims again, under a new epoch, only after a pass that
	// withdrew them (lbd/daemon), and needs fresh acknowledgements. So do
	// the claims of a claimant this member has had no view from for the
	// grace: a claim must never outlive its claimant's contact, or its owner
	// could stay held off for good. (A liveness fallback: with three members
	// such a claimant can keep its lease only through the owner it claims,
	// which it then hears again, so it stops serving its VIPs by itself.)
	maps.DeleteFunc(p.relayed, func(k claimKey, _ uint64) bool {
		r, ok := p.views[k.claimant]
		return gone[k.claimant] || !ok || now-r.at > p.cfg.Grace
	})
}

// Reachable returns, per peer, how long since this member heard from it.
func (p *Prober) Reachable() map[string]time.Duration {
	now := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]time.Duration{}
	for _, m := range p.peers {
		if m.ID != p.cfg.Self {
			out[m.ID] = p.silence(m.ID, now)
		}
	}
	return out
}

// ProbeState is what this member's probes to one peer show: for the log
// line that says why its lease lapsed (answers late, or none sent).
type ProbeState struct {
	Heard time.Duration // since anything came from the peer
	// Answered: since the newest probe it answered was sent, and that
	// probe's round trip; Answered < 0 when none was answered yet.
	Answered, RTT time.Duration
	// InFlight probes await an answer, the oldest from a round Oldest ago.
	InFlight int
	Oldest   time.Duration
}

// MarshalText is String, for JSON logs (durations would print as
// nanoseconds).
func (s ProbeState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s ProbeState) String() string {
	b := fmt.Sprintf("heard %s ago", s.Heard.Round(time.Millisecond))
	if s.Answered >= 0 {
		b += fmt.Sprintf(", newest answer to a probe sent %s ago (round trip %s)", s.Answered.Round(time.Millisecond), s.RTT.Round(time.Millisecond))
	} else {
		b += ", no probe answered"
	}
	if s.InFlight > 0 {
		b += fmt.Sprintf(", %d in flight (oldest %s)", s.InFlight, s.Oldest.Round(time.Millisecond))
	}
	return b
}

// Probes returns, per peer, what this member's probes to it show.
func (p *Prober) Probes() map[string]ProbeState {
	now := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]ProbeState{}
	for _, m := range p.peers {
		if m.ID == p.cfg.Self {
			continue
		}
		s := ProbeState{Heard: p.silence(m.ID, now), Answered: -1}
		if a, ok := p.answered[m.ID]; ok {
			s.Answered, s.RTT = now-a.sent, a.rtt
		}
		if c := p.conns[m.ID]; c != nil {
			s.InFlight = len(c.pending)
			if len(c.pending) > 0 {
				s.Oldest = now - slices.Min(c.pending)
			}
		}
		out[m.ID] = s
	}
	return out
}

// Agreement returns the members this member counts as gone, and whether every
// other member it does not count as gone agrees: each has sent, within a few
// probe intervals, a view naming the same gone members at FSM revision rev.
// The members not gone must also be a majority of the voters. Members that
// agree on the state and on who is gone compute the same ownership plan.
func (p *Prober) Agreement(rev uint64) (map[string]bool, bool) {
	now := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	gone := maps.Clone(p.gone)
	mine := slices.Sorted(maps.Keys(gone))
	voters, alive := 0, 0
	for _, m := range p.peers {
		if m.Voter {
			voters++
			if !gone[m.ID] {
				alive++
			}
		}
		if m.ID == p.cfg.Self || gone[m.ID] {
			continue
		}
		r, ok := p.views[m.ID]
		if !ok || now-r.at > p.freshFor() || r.revision != rev || !slices.Equal(r.gone, mine) {
			return gone, false
		}
	}
	return gone, alive > voters/2
}

// SetClaims sets the owners whose VIPs this member claims, provisionally,
// before a raft leader commits the move: its views carry the claims from
// now on, and members that have seen one repeat it in theirs. A claim that
// goes on keeps its epoch; one made again after it was dropped gets a new
// one, so acknowledgements of the old one do not count. The caller drops a
// claim only after a pass withdrew the VIPs it covered.
func (p *Prober) SetClaims(owners []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := map[string]bool{}
	for _, o := range owners {
		keep[o] = true
		if _, ok := p.claims[o]; !ok {
			p.nextEpoch++
			p.claims[o] = p.nextEpoch
			p.kickLocked()
		}
	}
	maps.DeleteFunc(p.claims, func(o string, _ uint64) bool { return !keep[o] })
}

// kickLocked asks for a round now, unless one is asked for already.
func (p *Prober) kickLocked() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Silent reports whether this member has not heard from x for the grace.
func (p *Prober) Silent(x string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return x != p.cfg.Self && p.silence(x, p.clock.Now()) >= p.cfg.Grace
}

// Acked reports whether this member's claim on owner x's VIPs holds x off:
// so many voters other than x refuse to renew x's lease that x cannot find
// the voters its lease needs among the rest. A voter y refuses when it has
// not heard from x for the grace (this member: now; another: in its fresh
// view) and, in the same view, repeats this claim with its epoch: from then
// on y's answers name x as claimed, which x does not count (and revokes its
// lease on). x's answers from before lie more than the grace ago, so any
// lease they gave x ran out at least grace − lease before now.
func (p *Prober) Acked(x string) bool {
	now := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	epoch, ok := p.claims[x]
	if !ok {
		return false
	}
	voters := 0
	xVotes := false
	for _, m := range p.peers {
		if m.Voter {
			voters++
			xVotes = xVotes || m.ID == x
		}
	}
	others := voters
	need := voters/2 + 1 // the answers x's lease needs from voters other than x
	if xVotes {
		others--
		need--
	}
	refusing := 0
	for _, m := range p.peers {
		if !m.Voter || m.ID == x {
			continue
		}
		if m.ID == p.cfg.Self {
			if p.silence(x, now) >= p.cfg.Grace {
				refusing++
			}
			continue
		}
		r, ok := p.views[m.ID]
		if !ok || now-r.at > p.freshFor() {
			continue
		}
		ms, heard := r.heard[x]
		if !heard || time.Duration(ms)*time.Millisecond < p.cfg.Grace {
			continue
		}
		if slices.ContainsFunc(r.claims, func(c *raftv1.Claim) bool {
			return c.Owner == x && c.Claimant == p.cfg.Self && c.Epoch == epoch
		}) {
			refusing++
		}
	}
	return need > 0 && refusing > others-need
}
