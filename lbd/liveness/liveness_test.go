package liveness

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/lease"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

type fakeClock struct{ t time.Duration }

func (c *fakeClock) Now() time.Duration { return c.t }

const ms = time.Millisecond

// leader is member a of a, b, c with a fake clock, probing nobody: the test
// feeds it what it hears.
func leader(clock *fakeClock) *Prober {
	peers := []Peer{{ID: "a", Voter: true}, {ID: "b", Voter: true}, {ID: "c", Voter: true}}
	p := New(Config{Self: "a", Interval: 50 * ms, Grace: 350 * ms, Lease: lease.New("a", 250*ms, clock),
		Peers: func() ([]Peer, uint64) { return peers, 1 }, Log: slog.Default()})
	p.peers = peers
	return p
}

func view(heard map[string]int64, serving bool) *raftv1.View {
	return &raftv1.View{HeardMs: heard, Serving: serving}
}

// A crashed owner: neither the leader nor c (by its fresh view) has heard
// from b within the grace.
func TestGoneWhenMajorityCannotHear(t *testing.T) {
	c := &fakeClock{t: time.Second}
	p := leader(c)
	p.receive("b", view(nil, true))
	for c.t < time.Second+400*ms {
		c.t += 50 * ms
		silent := (c.t - time.Second).Milliseconds()
		p.receive("c", view(map[string]int64{"a": 0, "b": silent}, true))
		gone := p.Gone("b")
		if want := c.t-time.Second >= 350*ms; gone != want {
			t.Fatalf("after %v of silence: gone=%v, want %v", c.t-time.Second, gone, want)
		}
	}
	if p.Gone("a") {
		t.Error("the member itself is never gone")
	}
}

// One-way loss: the leader cannot hear b, but c can, so b may still hold
// its lease (a and c make no majority against it): b is not gone.
func TestNotGoneWhenAnotherHears(t *testing.T) {
	c := &fakeClock{t: time.Second}
	p := leader(c)
	p.receive("b", view(nil, true))
	for i := 0; i < 20; i++ {
		c.t += 50 * ms
		p.receive("c", view(map[string]int64{"a": 0, "b": 10}, true))
	}
	if p.Gone("b") {
		t.Error("b gone while c hears it")
	}
}

// A stale view cannot justify a move: c's last view (which said b is
// silent) is older than grace − lease.
func TestStaleViewCountsAsHeard(t *testing.T) {
	c := &fakeClock{t: time.Second}
	p := leader(c)
	p.receive("b", view(nil, true))
	c.t += 500 * ms
	p.receive("c", view(map[string]int64{"b": 500}, true))
	if !p.Gone("b") {
		t.Fatal("b not gone on a fresh view")
	}
	c.t += 100*ms + ms
	if p.Gone("b") {
		t.Error("b gone on a stale view of c")
	}
}

// A view's silence is what its sender had heard when it made it: nothing is
// added for the time since, since c may have heard b again meanwhile and
// renewed b's lease. c said 190 ms, 90 ms ago: b is not gone, though 190 +
// 90 would pass the grace.
func TestViewSilenceNotAged(t *testing.T) {
	c := &fakeClock{t: time.Second}
	p := leader(c)
	p.receive("b", view(nil, true))
	c.t += 500 * ms
	p.receive("c", view(map[string]int64{"b": 190}, true))
	c.t += 90 * ms
	if p.Gone("b") {
		t.Error("b gone on c's 190 ms of silence aged by the view's wait")
	}
}

// A member that says it holds no VIP address for longer than the grace is
// gone though it answers (its reconcile loop is stuck, or it cannot catch up).
func TestGoneWhenNotServing(t *testing.T) {
	c := &fakeClock{t: time.Second}
	p := leader(c)
	for i := 0; i < 10; i++ {
		c.t += 50 * ms
		p.receive("b", view(nil, false))
		p.receive("c", view(map[string]int64{"b": 0}, true))
	}
	if !p.Gone("b") {
		t.Error("b not gone after saying for 500ms it serves nothing")
	}
	p.receive("b", view(nil, true))
	if p.Gone("b") {
		t.Error("b still gone once it serves again")
	}
}

// A member that just started knows nothing from before: silence counts from
// its start, so a new leader does not move VIPs on an empty memory.
func TestSilenceCountsFromStart(t *testing.T) {
	c := &fakeClock{t: time.Second}
	p := leader(c)
	c.t += 100 * ms
	p.receive("c", view(map[string]int64{"b": 10_000}, true))
	if p.Gone("b") {
		t.Error("b gone 100ms after the start: this member may simply not have heard it yet")
	}
}

// Non-voters do not count against a voter, and a non-voter needs a full
// majority of voters to hear it.
func TestNonVoters(t *testing.T) {
	c := &fakeClock{t: time.Second}
	peers := []Peer{{ID: "a", Voter: true}, {ID: "b", Voter: true}, {ID: "c", Voter: true}, {ID: "n"}}
	p := New(Config{Self: "a", Interval: 50 * ms, Grace: 350 * ms, Lease: lease.New("a", 250*ms, c),
		Peers: func() ([]Peer, uint64) { return peers, 1 }, Log: slog.Default()})
	p.peers = peers
	c.t += time.Second
	p.receive("b", view(map[string]int64{"n": 0}, true))
	p.receive("c", view(map[string]int64{"n": 5000}, true))
	p.receive("n", view(nil, true)) // a hears n directly
	// a and b hear n: 2 of 3 voters, a majority: n may hold a lease.
	if p.Gone("n") {
		t.Error("non-voter n gone while a majority of voters hears it")
	}
	p.receive("b", view(map[string]int64{"n": 5000}, true))
	if !p.Gone("n") {
		t.Error("non-voter n not gone with only a (1 of 3 voters) hearing it")
	}
}

// Three real probers on loopback: each gets its quorum lease, and once one
// stops answering the other two see it gone within the grace and keep their
// own leases.
func TestProbersOnLoopback(t *testing.T) {
	ids := []string{"a", "b", "c"}
	addrs := map[string]string{}
	servers := map[string]*grpc.Server{}
	probers := map[string]*Prober{}
	lis, peers := loopbackPeers(t, ids)
	for _, p := range peers {
		addrs[p.ID] = p.Addr
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := map[string]context.CancelFunc{}
	for _, id := range ids {
		p := New(Config{Self: id, Interval: 20 * ms, Grace: 300 * ms, Lease: lease.New(id, 200*ms, nil),
			Peers: func() ([]Peer, uint64) { return peers, 1 }, Creds: insecure.NewCredentials(), Serving: func() bool { return true },
			Log: slog.Default()})
		probers[id] = p
		g := grpc.NewServer()
		p.Register(g)
		servers[id] = g
		go g.Serve(lis[id])
		pctx, pcancel := context.WithCancel(ctx)
		stop[id] = pcancel
		go p.Run(pctx)
	}
	defer func() {
		for _, g := range servers {
			g.Stop()
		}
	}()
	waitFor(t, "every lease valid", func() bool {
		return probers["a"].cfg.Lease.Valid() && probers["b"].cfg.Lease.Valid() && probers["c"].cfg.Lease.Valid()
	})
	for _, id := range ids {
		for _, x := range ids {
			if probers[id].Gone(x) {
				t.Errorf("%s sees %s gone while all answer", id, x)
			}
		}
	}
	changes := probers["a"].Changes()
	// c dies: no answers, no probes.
	stop["c"]()
	servers["c"].Stop()
	waitFor(t, "a sees c gone", func() bool { return probers["a"].Gone("c") })
	select { // evaluated at each round and each view that arrives
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Error("a's Changes not signalled when c went")
	}
	if !probers["b"].Gone("c") {
		waitFor(t, "b sees c gone", func() bool { return probers["b"].Gone("c") })
	}
	if !probers["a"].cfg.Lease.Valid() || !probers["b"].cfg.Lease.Valid() {
		t.Error("a or b lost its lease though the two make a majority")
	}
	// What a's probes show, for the log line of a lapsed lease: b answers,
	// c's newest answer is older than the grace a waited to see it gone.
	ps := probers["a"].Probes()
	if b := ps["b"]; b.Answered < 0 || b.Answered > 200*ms || b.RTT <= 0 || b.RTT > b.Answered {
		t.Errorf("a's probes of b: %v; want a probe answered within the lease, its round trip no longer than its age", b)
	}
	if c := ps["c"]; c.Answered >= 0 && c.Answered < 300*ms || c.Heard < 300*ms {
		t.Errorf("a's probes of c: %v; want no answer nor anything heard within the grace", c)
	}
	if _, ok := ps["a"]; ok {
		t.Error("a's Probes lists a itself")
	}
	if probers["c"].cfg.Lease.Valid() {
		time.Sleep(250 * ms)
		if probers["c"].cfg.Lease.Valid() {
			t.Error("c's lease still valid with no answers for longer than the lease")
		}
	}
}

func TestProbeStateString(t *testing.T) {
	for _, c := range []struct {
		s    ProbeState
		want string
	}{
		{ProbeState{Heard: 2 * ms, Answered: -1}, "heard 2ms ago, no probe answered"},
		{ProbeState{Heard: 1600 * time.Microsecond, Answered: 612 * ms, RTT: 580 * ms, InFlight: 5, Oldest: 498 * ms},
			"heard 2ms ago, newest answer to a probe sent 612ms ago (round trip 580ms), 5 in flight (oldest 498ms)"},
	} {
		if got := c.s.String(); got != c.want {
			t.Errorf("%#v: %q, want %q", c.s, got, c.want)
		}
		// JSON logs print the same text, not nanoseconds.
		if b, err := json.Marshal(map[string]ProbeState{"b": c.s}); err != nil || string(b) != `{"b":"`+c.want+`"}` {
			t.Errorf("%#v as JSON: %s (%v)", c.s, b, err)
		}
	}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !f(); time.Sleep(5 * ms) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

// One member cannot ping on behalf of another (and so keep its lease or its
// silence looking alive): the claimed sender must be the certificate's.
func TestPingFromAnotherMembersCertificate(t *testing.T) {
	p := leader(&fakeClock{t: time.Second})
	ctx := auth.WithIdentity(context.Background(), auth.Identity{Role: auth.RoleMember, Name: "b"})
	_, err := p.Ping(ctx, &raftv1.PingRequest{From: "c", View: view(nil, true)})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ping from c on b's certificate: %v, want PermissionDenied", err)
	}
	if _, ok := p.heard["c"]; ok {
		t.Error("the refused ping counted as hearing from c")
	}
	if _, err := p.Ping(ctx, &raftv1.PingRequest{From: "b"}); err != nil {
		t.Errorf("ping from b on b's certificate: %v", err)
	}
	if _, err := p.Ping(ctx, &raftv1.PingRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("ping without from: %v, want InvalidArgument", err)
	}
}

// Survivors take over a lost owner's VIPs before a leader commits only when
// every member they count as alive reports, freshly, the same gone set at the
// same revision: then they all plan alike.
func TestAgreement(t *testing.T) {
	c := &fakeClock{t: time.Second}
	p := leader(c)
	p.receive("b", view(nil, true))
	c.t += 500 * ms
	p.receive("c", &raftv1.View{HeardMs: map[string]int64{"b": 500}, Serving: true, Revision: 7})
	p.evaluate()
	if !p.gone["b"] {
		t.Fatal("b not gone")
	}
	if _, ok := p.Agreement(7); ok {
		t.Error("agreed before c reported b gone")
	}
	p.receive("c", &raftv1.View{HeardMs: map[string]int64{"b": 500}, Serving: true, Revision: 7, Gone: []string{"b"}})
	gone, ok := p.Agreement(7)
	if !ok || !gone["b"] || len(gone) != 1 {
		t.Errorf("agreement %v %v, want {b} true", gone, ok)
	}
	if _, ok := p.Agreement(8); ok {
		t.Error("agreed at another revision")
	}
	c.t += 4*50*ms + ms
	if _, ok := p.Agreement(7); ok {
		t.Error("agreed on a stale view")
	}
	// Without a majority alive there is nothing to agree with.
	p.receive("c", &raftv1.View{HeardMs: map[string]int64{"b": 900}, Serving: true, Revision: 7, Gone: []string{"b", "c"}})
	p.gone = map[string]bool{"b": true, "c": true}
	if _, ok := p.Agreement(7); ok {
		t.Error("agreed with one of three voters alive")
	}
}

// The scenario a provisional takeover must survive, on injected clocks: the
// raft leader a owns a VIP and is SIGSTOPped; b and c hear nothing from it
// for the grace; b claims a's VIPs. b may serve them only once c repeats the
// claim in a fresh view that also says c has not heard a for the grace.
// When a resumes, every answer it gets names it as claimed: its lease is
// revoked and not renewed, so it cannot serve beside b. Once b drops the
// claim (after withdrawing) and c has seen that, a's lease renews again.
func TestClaimHoldsOffTheResumedOwner(t *testing.T) {
	clk := &fakeClock{t: time.Second}
	peers := []Peer{{ID: "a", Voter: true}, {ID: "b", Voter: true}, {ID: "c", Voter: true}}
	mk := func(id string) *Prober {
		p := New(Config{Self: id, Interval: 50 * ms, Grace: 350 * ms, Lease: lease.New(id, 250*ms, clk),
			Peers: func() ([]Peer, uint64) { return peers, 1 }, Serving: func() bool { return true }, Log: slog.Default()})
		p.peers = peers
		p.cfg.Lease.SetVoters([]string{"a", "b", "c"})
		return p
	}
	a, b, c := mk("a"), mk("b"), mk("c")
	refused := 0 // pings refused because the sender is claimed
	// exchange delivers from's ping to to and the answer back, as the
	// probers do: the answer renews from's lease unless it names from as
	// claimed.
	exchange := func(from, to *Prober) {
		sent := clk.Now()
		resp, err := to.Ping(context.Background(), &raftv1.PingRequest{From: from.cfg.Self, View: from.view()})
		if err != nil {
			if !errinfo.Is(err, errinfo.LeaseClaimed) || status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("ping %s → %s: %v", from.cfg.Self, to.cfg.Self, err)
			}
			refused++
			return
		}
		if !from.receive(to.cfg.Self, resp.View) {
			from.cfg.Lease.Answered(to.cfg.Self, sent)
		}
	}
	all := []*Prober{a, b, c}
	step := func(running ...*Prober) {
		clk.t += 50 * ms
		for _, x := range running {
			for _, y := range running {
				if x != y {
					exchange(x, y)
				}
			}
		}
		for _, x := range running {
			x.evaluate()
		}
	}
	for range 4 {
		step(all...)
	}
	if !a.cfg.Lease.Valid() {
		t.Fatal("a's lease not valid with everyone answering")
	}
	b.SetClaims([]string{"a"}) // too early: a is not silent
	if b.Acked("a") {
		t.Fatal("claim acknowledged while everyone hears a")
	}
	b.SetClaims(nil)
	// a stops.
	for range 8 {
		step(b, c)
	}
	if a.cfg.Lease.Valid() {
		t.Fatal("a's lease valid after 400ms without answers")
	}
	if !b.Silent("a") {
		t.Fatal("b does not find a silent")
	}
	b.SetClaims([]string{"a"})
	if b.Acked("a") {
		t.Fatal("acknowledged before c repeated the claim")
	}
	step(b, c)
	if !b.Acked("a") {
		t.Fatal("not acknowledged after c repeated the claim in a view that says it has not heard a")
	}
	// a resumes: it pings b and c, who refuse to answer while they hold
	// the claim (and their own pings name a as claimed).
	for range 4 {
		step(all...)
		if a.cfg.Lease.Valid() {
			t.Fatal("the resumed owner's lease renewed while b claims its VIPs")
		}
	}
	if refused < 8 {
		t.Errorf("%d of a's pings refused, want every one of them (8) while the claim stands", refused)
	}
	if b.Acked("a") {
		t.Error("still acknowledged though b and c hear a again (b must stop serving a's VIPs)")
	}
	// b has withdrawn and drops the claim; once c has seen that, a's
	// lease renews.
	b.SetClaims(nil)
	step(all...)
	step(all...)
	if !a.cfg.Lease.Valid() {
		t.Error("a's lease not renewed after the claim was dropped")
	}
	// A claim made again is a new epoch: the old acknowledgements are void.
	b.SetClaims([]string{"a"})
	if e := b.claims["a"]; c.relayed[claimKey{"a", "b"}] == e {
		t.Error("a claim made again kept its old epoch")
	}
}

// A claimant that cannot hold a lease itself has withdrawn: the others stop
// repeating its claim.
func TestClaimOfAGoneClaimantDropped(t *testing.T) {
	clk := &fakeClock{t: time.Second}
	p := leader(clk)
	p.receive("b", &raftv1.View{Serving: true, Claims: []*raftv1.Claim{{Owner: "c", Claimant: "b", Epoch: 9}}})
	if p.relayed[claimKey{"c", "b"}] != 9 {
		t.Fatal("b's claim not relayed")
	}
	clk.t += 500 * ms
	p.receive("c", view(map[string]int64{"b": 500}, true))
	p.evaluate()
	if !p.gone["b"] {
		t.Fatal("b not gone")
	}
	if _, ok := p.relayed[claimKey{"c", "b"}]; ok {
		t.Error("the claim of a gone claimant is still relayed")
	}
	// Only a claimant's own claims are taken from its views.
	p.receive("c", &raftv1.View{Serving: true, Claims: []*raftv1.Claim{{Owner: "a", Claimant: "b", Epoch: 3}}})
	if _, ok := p.relayed[claimKey{"a", "b"}]; ok {
		t.Error("a claim relayed on the word of a member that is not its claimant")
	}
}

// A view that arrives after a newer one of the same sender (its ping and
// its answer cross) does not overwrite it; a restarted sender's does.
func TestOlderViewDoesNotOverwrite(t *testing.T) {
	clk := &fakeClock{t: time.Second}
	p := leader(clk)
	p.receive("c", &raftv1.View{Incarnation: 1, Seq: 5, HeardMs: map[string]int64{"b": 400}, Serving: true})
	p.receive("c", &raftv1.View{Incarnation: 1, Seq: 4, HeardMs: map[string]int64{"b": 0}, Serving: true})
	if got := p.views["c"].heard["b"]; got != 400 {
		t.Errorf("c's view says %dms, want the newer view's 400", got)
	}
	p.receive("c", &raftv1.View{Incarnation: 2, Seq: 1, HeardMs: map[string]int64{"b": 7}, Serving: true})
	if got := p.views["c"].heard["b"]; got != 7 {
		t.Errorf("a restarted sender's view was not taken: %dms", got)
	}
}

// Members that left the configuration are forgotten.
func TestPruneMembersThatLeft(t *testing.T) {
	clk := &fakeClock{t: time.Second}
	peers := []Peer{{ID: "a", Voter: true}, {ID: "b", Voter: true}, {ID: "c", Voter: true}}
	p := New(Config{Self: "a", Interval: 50 * ms, Grace: 350 * ms, Lease: lease.New("a", 250*ms, clk),
		Peers: func() ([]Peer, uint64) { return peers, 1 }, Log: slog.Default()})
	p.refresh()
	p.round(context.Background())
	p.receive("c", &raftv1.View{Serving: false, Claims: []*raftv1.Claim{{Owner: "b", Claimant: "c", Epoch: 1}}})
	peers = peers[:2]
	p.refresh()
	p.round(context.Background())
	for what, has := range map[string]bool{
		"seen": hasKey(p.seen, "c"), "heard": hasKey(p.heard, "c"), "notServing": hasKey(p.notServing, "c"),
		"views": hasKey(p.views, "c"), "relayed": hasKey(p.relayed, claimKey{"b", "c"}),
	} {
		if has {
			t.Errorf("%s still holds c after it left the configuration", what)
		}
	}
}

func hasKey[K comparable, V any](m map[K]V, k K) bool { _, ok := m[k]; return ok }

// Pings carry the configuration: a member that has not applied a promotion
// yet learns of it from a peer and counts its lease against the new voters.
func TestConfigCarriedInViews(t *testing.T) {
	clk := &fakeClock{t: time.Second}
	p := leader(clk)
	p.cfg.Lease.SetConfig(1, []string{"a", "b", "c"})
	p.cfg.Lease.Answered("b", clk.t)
	if !p.cfg.Lease.Valid() {
		t.Fatal("not valid")
	}
	p.receive("b", &raftv1.View{Serving: true, ConfigIndex: 9, Voters: []string{"a", "b", "c", "d"}})
	if p.cfg.Lease.Valid() {
		t.Error("lease valid on a and b of four voters after b reported the promotion")
	}
	p.peersIndex = 1
	v := p.view()
	if v.ConfigIndex != 1 || len(v.Voters) != 3 {
		t.Errorf("view carries config %d %v, want 1 and three voters", v.ConfigIndex, v.Voters)
	}
}

// A claim is not repeated once its claimant has sent no view for the grace:
// it must not outlive the claimant's contact.
func TestClaimOfASilentClaimantDropped(t *testing.T) {
	clk := &fakeClock{t: time.Second}
	p := leader(clk)
	p.receive("b", &raftv1.View{Serving: true, Claims: []*raftv1.Claim{{Owner: "c", Claimant: "b", Epoch: 9}}})
	clk.t += 300 * ms
	p.evaluate()
	if _, ok := p.relayed[claimKey{"c", "b"}]; !ok {
		t.Fatal("the claim dropped within the grace")
	}
	clk.t += 100 * ms
	p.evaluate()
	if _, ok := p.relayed[claimKey{"c", "b"}]; ok {
		t.Error("the claim of a claimant silent for longer than the grace is still relayed")
	}
}

// loopbackPeers listens on a loopback port for each of ids and returns the
// listeners and the voters they make.
func loopbackPeers(t *testing.T, ids []string) (map[string]net.Listener, []Peer) {
	t.Helper()
	lis := map[string]net.Listener{}
	var peers []Peer
	for _, id := range ids {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[id] = l
		peers = append(peers, Peer{ID: id, Addr: l.Addr().String(), Voter: true})
	}
	return lis, peers
}

// A member that missed its own removal learns it from a peer's view: a
// newer configuration whose voters leave it out. An older configuration, one
// that still lists it, or a member that is no voter here claims nothing.
func TestRemovedByAPeersNewerConfiguration(t *testing.T) {
	clk := &fakeClock{t: time.Second}
	peers := []Peer{{ID: "a", Voter: true}, {ID: "b", Voter: true}, {ID: "c", Voter: true}}
	index := uint64(5)
	p := New(Config{Self: "c", Interval: 50 * ms, Grace: 350 * ms, Lease: lease.New("c", 250*ms, clk),
		Peers: func() ([]Peer, uint64) { return peers, index }, Log: slog.Default()})
	p.refresh()
	p.round(context.Background())

	// A member outside its configuration (an old member after a recovery)
	// says nothing about it, nor to its lease.
	p.receive("x", &raftv1.View{Seq: 1, ConfigIndex: 50, Voters: []string{"x", "y"}})
	if r, ok := p.cfg.Lease.Removed(); ok {
		t.Errorf("removed by %+v: x is not a member", r)
	}
	p.cfg.Lease.Answered("a", clk.t)
	if !p.cfg.Lease.Valid() {
		t.Error("a non-member's configuration ended the lease")
	}
	p.receive("a", &raftv1.View{Seq: 1, ConfigIndex: 5, Voters: []string{"a", "b"}})
	if r, ok := p.cfg.Lease.Removed(); ok {
		t.Errorf("removed by %+v: a configuration of the same index is not newer", r)
	}
	p.receive("a", &raftv1.View{Seq: 2, ConfigIndex: 7, Voters: []string{"a", "b", "c", "d"}})
	if r, ok := p.cfg.Lease.Removed(); ok {
		t.Errorf("removed by %+v: the newer configuration still lists c", r)
	}
	p.receive("b", &raftv1.View{Seq: 1, ConfigIndex: 8, Voters: []string{"b", "a"}})
	p.receive("a", &raftv1.View{Seq: 3, ConfigIndex: 8, Voters: []string{"a", "b"}})
	r, ok := p.cfg.Lease.Removed()
	if !ok || r.By != "a" || r.Index != 8 || !slices.Equal(r.Voters, []string{"a", "b"}) {
		t.Errorf("Removed = %+v, %v; want a's configuration 8 of voters a, b (of equal ones, the first by name)", r, ok)
	}
	p.receive("b", &raftv1.View{Seq: 2, ConfigIndex: 9, Voters: []string{"a", "b", "d"}})
	if r, _ := p.cfg.Lease.Removed(); r.By != "b" || r.Index != 9 {
		t.Errorf("Removed = %+v; want the newest configuration, b's 9", r)
	}

	// Views older than a lease say nothing any more.
	clk.t += 251 * ms
	if r, ok := p.cfg.Lease.Removed(); ok {
		t.Errorf("removed by %+v, from views older than the grace", r)
	}
	p.receive("b", &raftv1.View{Seq: 3, ConfigIndex: 9, Voters: []string{"a", "b", "d"}})

	// Its own configuration caught up and lists it again (rejoined).
	index = 9
	p.refresh()
	p.round(context.Background())
	if r, ok := p.cfg.Lease.Removed(); ok {
		t.Errorf("removed by %+v, though its own configuration is as new", r)
	}
	// A member that is no voter here (joining as a non-voter) claims nothing.
	peers[2].Voter = false
	index = 4
	p.refresh()
	p.round(context.Background())
	p.receive("a", &raftv1.View{Seq: 4, ConfigIndex: 10, Voters: []string{"a", "b"}})
	if r, ok := p.cfg.Lease.Removed(); ok {
		t.Errorf("removed by %+v, though it is no voter in its own configuration", r)
	}
}
