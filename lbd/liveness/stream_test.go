package liveness

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/lease"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
)

// counting serves a Prober's LivenessService and counts how its probes
// came: Ping calls, and pings on Probe streams.
type counting struct {
	raftv1.UnimplementedLivenessServiceServer
	p                *Prober
	pings, onStreams atomic.Int64
	delay            time.Duration // before each answer
}

func (s *counting) Ping(ctx context.Context, req *raftv1.PingRequest) (*raftv1.PingResponse, error) {
	s.pings.Add(1)
	time.Sleep(s.delay)
	return s.p.Ping(ctx, req)
}

func (s *counting) Probe(st raftv1.LivenessService_ProbeServer) error {
	return s.p.Probe(countingStream{st, &s.onStreams, s.delay})
}

type countingStream struct {
	raftv1.LivenessService_ProbeServer
	n     *atomic.Int64
	delay time.Duration
}

func (c countingStream) Send(r *raftv1.ProbeResponse) error {
	time.Sleep(c.delay)
	return c.LivenessService_ProbeServer.Send(r)
}

func (c countingStream) Recv() (*raftv1.ProbeRequest, error) {
	r, err := c.LivenessService_ProbeServer.Recv()
	if err == nil {
		c.n.Add(1)
	}
	return r, err
}

// pair runs probers a and b on loopback; b's server is of a release before
// Probe when old is set (its service has no such method).
func pair(t *testing.T, old bool) (a *Prober, servers map[string]*counting) {
	return pairDelayed(t, old, 0)
}

// pairDelayed is pair with b answering each ping delay late.
func pairDelayed(t *testing.T, old bool, delay time.Duration) (a *Prober, servers map[string]*counting) {
	t.Helper()
	ids := []string{"a", "b"}
	lis, peers := loopbackPeers(t, ids)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	servers = map[string]*counting{}
	for _, id := range ids {
		p := New(Config{Self: id, Interval: 20 * ms, Grace: 300 * ms, Lease: lease.New(id, 200*ms, nil),
			Peers: func() ([]Peer, uint64) { return peers, 1 }, Creds: insecure.NewCredentials(), Serving: func() bool { return true },
			Log: slog.Default()})
		srv := &counting{p: p}
		if id == "b" {
			srv.delay = delay
		}
		servers[id] = srv
		g := grpc.NewServer()
		desc := raftv1.LivenessService_ServiceDesc
		if old && id == "b" {
			desc.Streams = nil
		}
		g.RegisterService(&desc, srv)
		go g.Serve(lis[id])
		t.Cleanup(g.Stop)
		go p.Run(ctx)
		if id == "a" {
			a = p
		}
	}
	return a, servers
}

// conn returns what f reads of a's connection to b, under a's lock.
func conn[T any](a *Prober, f func(c *peerConn) T) T {
	a.mu.Lock()
	defer a.mu.Unlock()
	var zero T
	if c := a.conns["b"]; c != nil {
		return f(c)
	}
	return zero
}

// Between members of this release the probes go on one stream per peer, no
// call per probe, and they renew the lease.
func TestProbesGoOnAStream(t *testing.T) {
	a, srv := pair(t, false)
	waitFor(t, "a's stream to b open and answered", func() bool {
		return conn(a, func(c *peerConn) bool { return c.queue != nil }) && srv["b"].onStreams.Load() >= 2
	})
	pings, streamed := srv["b"].pings.Load(), srv["b"].onStreams.Load()
	time.Sleep(300 * ms) // 15 probe intervals
	if n := srv["b"].onStreams.Load() - streamed; n < 5 {
		t.Errorf("%d pings on a's stream in 15 intervals; want one an interval", n)
	}
	if n := srv["b"].pings.Load() - pings; n > 1 {
		t.Errorf("%d Ping calls once the stream was open; want none", n)
	}
	if !a.cfg.Lease.Valid() {
		t.Error("a's lease is not valid though b answers on the stream")
	}
	if ps := a.Probes()["b"]; ps.Answered < 0 || ps.Answered > 200*ms || ps.InFlight > 5 {
		t.Errorf("a's probes of b: %v; want one answered within the lease, and the answered ones no longer in flight", ps)
	}
}

// Answers pair with their pings by position: with every answer 60 ms late,
// each round trip a sees is at least that (paired with a later ping, it
// would look shorter, and renew the lease from a later time than it may).
// A stream ended with probes on it frees them, and a new one opens.
func TestStreamAnswersPairInOrder(t *testing.T) {
	const late = 60 * ms
	a, srv := pairDelayed(t, false, late)
	waitFor(t, "answers on a's stream to b", func() bool {
		return conn(a, func(c *peerConn) bool { return c.queue != nil }) && a.Probes()["b"].Answered >= 0
	})
	for range 10 {
		if ps := a.Probes()["b"]; ps.RTT < late {
			t.Fatalf("a's probes of b: %v; want every round trip ≥ %s", ps, late)
		}
		time.Sleep(20 * ms)
	}
	if !a.cfg.Lease.Valid() {
		t.Error("a's lease is not valid though b answers within the lease")
	}
	// End the stream with probes on it.
	first := conn(a, func(c *peerConn) chan queuedProbe { return c.queue })
	waitFor(t, "probes on the stream", func() bool { return conn(a, func(c *peerConn) int { return len(c.onStream) }) >= 2 })
	conn(a, func(c *peerConn) bool { c.endStream(); return true })
	waitFor(t, "a new stream, answered", func() bool {
		q := conn(a, func(c *peerConn) chan queuedProbe { return c.queue })
		return q != nil && q != first && srv["b"].onStreams.Load() > 0 && a.Probes()["b"].Answered < late+40*ms
	})
	if ps := a.Probes()["b"]; ps.InFlight > 5 {
		t.Errorf("a's probes of b after the stream ended: %v; the ones it carried still count as in flight", ps)
	}
}

// A peer of a release before Probe answers Unimplemented: its probes go by
// Ping calls, and renew the lease as before (a rolling upgrade).
func TestProbesFallBackToCalls(t *testing.T) {
	a, srv := pair(t, true)
	waitFor(t, "a finds that b has no Probe", func() bool {
		return conn(a, func(c *peerConn) bool { return c.unaryAt != 0 })
	})
	pings := srv["b"].pings.Load()
	time.Sleep(300 * ms)
	if n := srv["b"].pings.Load() - pings; n < 5 {
		t.Errorf("%d Ping calls in 15 intervals; want one an interval", n)
	}
	if srv["b"].onStreams.Load() != 0 {
		t.Error("b counted pings on a stream it does not serve")
	}
	if conn(a, func(c *peerConn) bool { return c.queue != nil || c.unaryAt == 0 }) {
		t.Error("a tried the stream again within the retry period")
	}
	if !a.cfg.Lease.Valid() {
		t.Error("a's lease is not valid though b answers its calls")
	}
}

// A claim on the sender's VIPs refuses its pings on the stream as Ping
// refuses them: an answer that names the claimant and carries no view, and
// the stream goes on. A ping without a sender ends the stream as Ping
// refuses it.
func TestStreamRefusesAClaimedSender(t *testing.T) {
	l, peers := loopbackPeers(t, []string{"a"})
	p := New(Config{Self: "a", Interval: 20 * ms, Grace: 300 * ms, Lease: lease.New("a", 200*ms, nil),
		Peers: func() ([]Peer, uint64) { return peers, 1 }, Log: slog.Default()})
	g := grpc.NewServer()
	p.Register(g)
	go g.Serve(l["a"])
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(l["a"].Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	s, err := raftv1.NewLivenessServiceClient(cc).Probe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ask := func() *raftv1.ProbeResponse {
		t.Helper()
		if err := s.Send(&raftv1.ProbeRequest{Ping: &raftv1.PingRequest{From: "b", View: view(nil, true)}}); err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := ask(); r.ClaimedBy != "" || r.Pong.GetView() == nil || r.Pong.GetFrom() != "a" {
		t.Fatalf("answer before any claim: %v; want a's view", r)
	}
	p.SetClaims([]string{"b"})
	if r := ask(); r.ClaimedBy != "a" || r.Pong != nil {
		t.Fatalf("answer while a claims b: %v; want claimed_by a, no answer", r)
	}
	p.SetClaims(nil)
	if r := ask(); r.ClaimedBy != "" || r.Pong.GetView() == nil {
		t.Fatalf("answer after the claim was dropped: %v; want a's view", r)
	}
	if err := s.Send(&raftv1.ProbeRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a ping without a sender: %v; want the stream ended with InvalidArgument", err)
	}
}

// A refusal renews nothing at the sender, nor does an answer from another
// member at the peer's address.
func TestRefusalRenewsNothing(t *testing.T) {
	clock := &fakeClock{t: time.Second}
	peers := []Peer{{ID: "a", Voter: true}, {ID: "b", Voter: true}}
	var oks, fails int
	p := New(Config{Self: "b", Interval: 50 * ms, Grace: 350 * ms, Lease: lease.New("b", 250*ms, clock),
		Peers: func() ([]Peer, uint64) { return peers, 1 }, Log: slog.Default(),
		Observe: func(_ string, _ time.Duration, ok bool) {
			if ok {
				oks++
			} else {
				fails++
			}
		}})
	p.peers = peers
	p.cfg.Lease.SetConfig(1, []string{"a", "b"})
	p.settle("a", (&raftv1.ProbeResponse{ClaimedBy: "a"}).GetPong(), clock.t, ms)
	p.settle("a", &raftv1.PingResponse{From: "c", View: view(nil, true)}, clock.t, ms)
	if p.cfg.Lease.Valid() {
		t.Fatal("a refusal or a stranger's answer renewed the lease")
	}
	if fails != 1 || oks != 1 {
		t.Errorf("observed %d answered, %d failed; want the refusal failed, the stranger's answer answered", oks, fails)
	}
	p.settle("a", &raftv1.PingResponse{From: "a", View: view(nil, true)}, clock.t, ms)
	if !p.cfg.Lease.Valid() {
		t.Fatal("a's answer did not renew the lease: the test shows nothing")
	}
}
