package bgp

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/bgp/testrouter"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/lease"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/rules"
)

const (
	routerAddr = "127.0.0.3"
	memberAddr = "127.0.0.2"
)

// eventually polls cond until it holds; the deadline only bounds a hung
// test, it is not a timing claim.
func eventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("never: %s", what)
	return 0
}

func startSpeaker(t *testing.T, r *testrouter.Router, asn uint32, events func(SessionEvent)) *Speaker {
	t.Helper()
	off := false
	sp, err := Start(context.Background(), Options{
		ASN: asn, RouterID: netip.MustParseAddr("10.0.0.11"),
		Peers: []config.BGPPeer{{Address: routerAddr, ASN: 65000, Port: r.Port, LocalAddress: memberAddr, Families: []string{"ipv4", "ipv6"},
			// BFD off here: GoBGP's BFD listens on UDP 3784 on every
			// address, so two speakers in one network namespace cannot both
			// run it (bfd_netns_test.go runs BFD across namespaces).
			BFD: config.BFD{Enabled: &off}}},
		OnSession: events,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Stop)
	return sp
}

func waitEstablished(t *testing.T, sp *Speaker) {
	t.Helper()
	eventually(t, "session established", func() bool {
		st, err := sp.Status(context.Background())
		return err == nil && len(st) == 1 && st[0].Established()
	})
}

// The member advertises what Decide says, with the pool's attributes;
// a drain re-advertises with GRACEFUL_SHUTDOWN, then withdraws. iBGP, so
// LOCAL_PREF is sent.
func TestSpeakerAdvertiseDrainWithdraw(t *testing.T) {
	r := testrouter.Start(t, routerAddr, map[string]uint32{memberAddr: 65000})
	var mu sync.Mutex
	var events []SessionEvent
	sp := startSpeaker(t, r, 65000, func(e SessionEvent) { mu.Lock(); events = append(events, e); mu.Unlock() })
	waitEstablished(t, sp)

	lp := uint32(150)
	attrs := &edgelbv1.BgpAttributes{Communities: []string{"65000:100"}, LargeCommunities: []string{"65000:7:8"}, LocalPreference: &lp}
	vips := []VIP{
		{Addr: netip.MustParseAddr("198.51.100.7"), Pool: "rack", Attrs: attrs, Healthy: true},
		{Addr: netip.MustParseAddr("198.51.100.8"), Pool: "rack", Attrs: attrs, Healthy: false},
		{Addr: netip.MustParseAddr("2001:db8::7"), Pool: "rack6", Healthy: true},
	}
	m := Member{LeaseValid: true, DataPlaneHealthy: true, DrainWait: time.Minute}
	if err := sp.Apply(Decide(m, vips).Routes); err != nil {
		t.Fatal(err)
	}
	v4, v6 := netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("2001:db8::7/128")
	c100, _ := rules.ParseCommunity("65000:100")
	eventually(t, "router has 198.51.100.7/32 with the pool's attributes and 2001:db8::7/128", func() bool {
		got, got6 := r.Received(t, memberAddr, false), r.Received(t, memberAddr, true)
		p, ok := got[v4]
		_, ok6 := got6[v6]
		return ok && ok6 && len(got) == 1 && slices.Equal(p.Communities, []uint32{c100}) && p.LocalPref == 150 &&
			len(p.Large) == 1 && p.Large[0] == (rules.LargeCommunity{Global: 65000, Local1: 7, Local2: 8}) && p.NextHop == netip.MustParseAddr(memberAddr)
	})
	st, _ := sp.Status(context.Background())
	if st[0].Advertised != 2 || st[0].BFD != "off" || st[0].Since.IsZero() {
		t.Errorf("status %+v, want 2 advertised, BFD off, an uptime", st[0])
	}

	// Drain: the same routes, tagged 65535:0.
	m.Draining = true
	if err := sp.Apply(Decide(m, vips).Routes); err != nil {
		t.Fatal(err)
	}
	eventually(t, "router sees GRACEFUL_SHUTDOWN on 198.51.100.7/32", func() bool {
		p, ok := r.Received(t, memberAddr, false)[v4]
		return ok && slices.Contains(p.Communities, rules.GracefulShutdown) && slices.Contains(p.Communities, c100)
	})
	// The graceful period over: withdrawn.
	m.DrainElapsed = m.DrainWait
	if err := sp.Apply(Decide(m, vips).Routes); err != nil {
		t.Fatal(err)
	}
	eventually(t, "router has no route from the drained member", func() bool {
		return len(r.Received(t, memberAddr, false)) == 0 && len(r.Received(t, memberAddr, true)) == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(events) == 0 || events[len(events)-1].To != "established" || events[len(events)-1].Peer != netip.MustParseAddr(routerAddr) {
		t.Errorf("session events %+v, want the last to be established with %s", events, routerAddr)
	}
}

// The announcer withdraws when the member's quorum lease runs out, with no
// other input changing: the lease alone drives it.
func TestAnnouncerWithdrawsWhenLeaseLapses(t *testing.T) {
	r := testrouter.Start(t, routerAddr, map[string]uint32{memberAddr: 65001})
	sp := startSpeaker(t, r, 65001, nil)
	waitEstablished(t, sp)

	// Long enough to see the route arrive first; the withdraw is then
	// driven by the lease's expiry alone.
	const length = 3 * time.Second
	l := lease.New("m1", length, nil)
	l.SetVoters([]string{"m1", "m2", "m3"})
	now := l.Clock().Now()
	l.Answered("m2", now)
	l.Answered("m3", now)
	vips := []VIP{{Addr: netip.MustParseAddr("198.51.100.9"), Pool: "rack", Healthy: true}}
	a := NewAnnouncer(sp, func() (Member, []VIP, time.Duration) {
		left := l.Remaining()
		return Member{LeaseValid: left > 0, DataPlaneHealthy: true}, vips, left
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	host := netip.MustParsePrefix("198.51.100.9/32")
	has := func() bool { _, ok := r.Received(t, memberAddr, false)[host]; return ok }
	eventually(t, "router has the VIP while the lease is valid", has)
	if !l.Valid() {
		t.Skip("the lease ran out before the route arrived (a loaded machine); nothing to observe")
	}
	eventually(t, "router loses the VIP once the lease lapsed", func() bool { return !has() })
	if l.Valid() {
		t.Fatal("withdrawn while the lease was still valid")
	}
	t.Logf("withdrawn %s after the lease's end", -l.Remaining())
	// A renewal advertises again once kicked (lbd kicks on every renewal).
	now = l.Clock().Now()
	l.Answered("m2", now)
	l.Answered("m3", now)
	a.Kick()
	eventually(t, "router has the VIP again after the renewal", has)
}
