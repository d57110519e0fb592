package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/guesttest"
	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/probe"
	"github.com/edgelb/edgelb/integration/topo"
)

// Addresses the router routes to all three edges from its own configuration
// (a BIRD static multipath route): the lab's check of its own forwarding,
// independent of lbd.
var (
	ecmpV4 = netip.MustParseAddr("10.3.0.250")
	ecmpV6 = netip.MustParseAddr("fd03::250")
	// natVIP and drVIP are the rehash scenario's VIPs (nat and dr forwarding),
	// routed to every edge by the router's static multipath routes.
	natVIP = netip.MustParseAddr("10.3.0.10")
	drVIP  = netip.MustParseAddr("10.3.0.11")
)

// TestGuest runs inside the guest (started by TestUML): one lab with a router,
// then the scenarios in order.
func TestGuest(t *testing.T) {
	if !guesttest.InGuest() {
		t.Skip("runs inside the User-Mode Linux guest only; see TestUML")
	}
	router := &lab.RouterConfig{
		// 1 s × 5: the guest's one emulated CPU, shared with three lbd,
		// three nodes, BIRD and the traffic on a host shared with other
		// work, stalls for seconds; at 100 ms × 3 and 300 ms × 5 BFD
		// expired on lbd's side and reset sessions now and then.
		BFDInterval: time.Second, BFDMultiplier: 5,
		LBDDrainWait: guestDrainWait,
		StaticECMP:   []netip.Prefix{netip.PrefixFrom(ecmpV4, 32), netip.PrefixFrom(ecmpV6, 128), netip.PrefixFrom(natVIP, 32), netip.PrefixFrom(drVIP, 32)},
	}
	l, err := lab.Start(lab.Config{
		Bin:       os.Getenv("EDGELB_E2E_BIN"),
		Work:      os.Getenv("EDGELB_E2E_WORK"),
		Router:    router,
		LBDConfig: guestLBDConfig + router.LBDConfig(),
		Logf:      t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(l.Router.LogPath)
			t.Logf("---- bird.log ----\n%s", b)
		}
	}()
	s := &scenarios{l: l}
	t.Run("router_sessions_configured", s.sessions)
	t.Run("router_ecmp_spreads_flows_over_edges", s.ecmp)
	t.Run("rehashed_flows_on_every_edge", s.rehash)
	t.Run("bgp_vip_on_every_edge_and_edge_loss", s.bgpMode)
}

// guestLBDConfig is the guest's bgp-mode timing: a long lease, since a
// member advertises only while its lease holds (see lab.GuestBGPTiming).
const guestLBDConfig = lab.GuestBGPTiming

type scenarios struct{ l *lab.Lab }

// The router runs a BGP protocol for every edge and family, BFD, and
// kernel protocols that export into its kernel.
func (s *scenarios) sessions(t *testing.T) {
	r := s.l.Router
	protos, err := r.Protocols()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("birdc show protocols: %v", protos)
	for _, e := range s.l.Topo.Edges {
		for _, v6 := range []bool{false, true} {
			name := lab.BGPProtocol(e.Name, v6)
			if _, ok := protos[name]; !ok {
				t.Errorf("no BGP protocol %s in %v", name, protos)
			}
		}
	}
	for _, name := range []string{"kernel4", "kernel6", "bfd1", "static_ecmp0", "static_ecmp1"} {
		if st, ok := protos[name]; !ok || !strings.HasPrefix(st, "up") {
			t.Errorf("protocol %s: %q, want up", name, st)
		}
	}
	bfd, err := r.BFDSessions()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("birdc show bfd sessions: %v", bfd)
}

// The router's kernel holds one route with a nexthop per edge for the
// static prefixes, and hashes the client's connections (new source port
// each) over all three: each edge answers at least 20% of them. Every edge
// holds the address and runs a nodeserver answering with its own name.
func (s *scenarios) ecmp(t *testing.T) {
	r := s.l.Router
	for _, e := range s.l.Topo.Edges {
		if _, err := topo.IP(e.Name, "addr", "add", netip.PrefixFrom(ecmpV4, 32).String(), "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		if _, err := topo.IP(e.Name, "addr", "add", netip.PrefixFrom(ecmpV6, 128).String(), "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		cmd, err := topo.StartLogged(e.Name, filepath.Join(s.l.Cfg.Work, "ecmp-"+e.Name+".log"), filepath.Join(s.l.Cfg.Bin, "nodeserver"),
			"--name", e.Name, "--port", "31080", "--health-port", "0")
		if err != nil {
			t.Fatal(err)
		}
		// Listening before any connection is counted: a flow hashed to an
		// edge whose server is still starting would be refused.
		if _, err := topo.WaitAnswer(probe.Options{Addr: "127.0.0.1:31080", NetNS: e.Name}, guestWaitAnswer); err != nil {
			t.Fatal(err)
		}
		defer func(cmd *exec.Cmd, name string) {
			cmd.Process.Kill()
			cmd.Wait()
			topo.IP(name, "addr", "del", netip.PrefixFrom(ecmpV4, 32).String(), "dev", "lo")
			topo.IP(name, "addr", "del", netip.PrefixFrom(ecmpV6, 128).String(), "dev", "lo")
		}(cmd, e.Name)
	}
	for _, a := range []netip.Addr{ecmpV4, ecmpV6} {
		hops, err := r.Nexthops(a)
		if err != nil {
			t.Fatal(err)
		}
		var edges []string
		for _, h := range hops {
			edges = append(edges, r.EdgeOf(h))
		}
		slices.Sort(edges)
		if want := []string{"edge1", "edge2", "edge3"}; !slices.Equal(edges, want) {
			t.Errorf("router's kernel route to %s leads to %v (nexthops %v), want %v", a, edges, hops, want)
		}
		all, err := r.RouteAll(netip.PrefixFrom(a, a.BitLen()).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("birdc show route all for %s:\n%s", a, all)

		const n = 300
		if _, err := topo.WaitAnswer(probe.Options{Addr: netip.AddrPortFrom(a, 31080).String(), NetNS: s.l.Topo.Client.Name}, guestWaitAnswer); err != nil {
			t.Fatal(err)
		}
		res, err := probe.Count(context.Background(), probe.Options{Addr: netip.AddrPortFrom(a, 31080).String(), NetNS: s.l.Topo.Client.Name, Timeout: countTimeout}, n, 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s", res)
		if res.OK != n {
			t.Errorf("%d of %d connections answered", res.OK, n)
		}
		for _, e := range s.l.Topo.Edges {
			if got := res.Counts[e.Name]; got*5 < n {
				t.Errorf("%s answered %d of %d connections to %s, want at least 20%%", e.Name, got, n, a)
			}
		}
	}
}

// countTimeout bounds one counted connection and holdTimeout one ping of a
// held connection: the guest, on a host shared with other work, stalls for
// seconds now and then (a SYN or a ping waits for a retransmission). What
// the scenarios assert is that the answer comes: a connection reset by a
// member that does not know it fails at once, and a black-holed one for
// longer than these.
const (
	countTimeout = 4 * time.Second
	holdTimeout  = 10 * time.Second
)

// statsSettle is how long IPVS counters take to show traffic: the kernel
// sums its per-CPU counters for ipvsadm every 2 s.
const statsSettle = 3 * time.Second

// guestWaitAnswer bounds the wait for the first answer through the router.
const guestWaitAnswer = 30 * time.Second

func mustLBCTL(t *testing.T, l *lab.Lab, args ...string) string {
	t.Helper()
	out, err := l.LBCTL(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ipvsConns is the Conns counter of one IPVS service on a member (ipvsadm
// -Ln --stats), 0 when it has none.
func ipvsConns(t *testing.T, m *lab.Member, svc string) int {
	t.Helper()
	out, err := m.IPVSList("--stats", "-t", svc)
	if err != nil {
		t.Logf("%s: %v", m.ID, err)
		return 0
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "TCP" && f[1] == svc {
			n, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatalf("ipvsadm --stats: %q: %v", l, err)
			}
			return n
		}
	}
	t.Logf("%s: no counters for %s in:\n%s", m.ID, svc, out)
	return 0
}

// What the data plane does with a flow that reaches another edge — the
// router spreading new flows, or moving established ones when a path goes —
// without lbd's BGP speaker: lbd programs every VIP's IPVS service on every
// member (its hot standby), every edge holds the VIPs (the owner on eth0 as
// lbd puts it, the others on lo, as an advertising member will), and the
// router's own static multipath routes send the VIPs to all three edges.
//
// dr: new connections reach all three edges (≥ 20% each) and every one is
// answered; established connections survive losing an edge (its link cut and
// its path taken out of the route): the router moves their packets to the
// other edges, whose identical mh tables pick the same node, and sloppy_tcp
// lets them take the flow mid-stream. The node answers the client directly.
//
// nat: logged, not asserted (docs/DATAPLANE.md, "Active-active"): a node
// answers the VIP (SNAT) through its router, which hashes the answer — a
// different 5-tuple — to any edge, and only the edge that forwarded the flow
// has the conntrack entry that undoes the SNAT.
func (s *scenarios) rehash(t *testing.T) {
	l := s.l
	mustLBCTL(t, l, "pool", "create", "bgpsim", "--range", "10.3.0.10-10.3.0.20")
	defer l.LBCTL("pool", "delete", "bgpsim")
	for i := 1; i <= 3; i++ {
		ns := topo.NodeHost(i).Name
		for _, kv := range [][2]string{{"net.ipv4.conf.all.arp_ignore", "1"}, {"net.ipv4.conf.all.arp_announce", "2"}} {
			if err := netns.WriteSysctl(ns, kv[0], kv[1]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := topo.IP(ns, "addr", "add", drVIP.String()+"/32", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		defer topo.IP(ns, "addr", "del", drVIP.String()+"/32", "dev", "lo")
	}
	nat := []string{"vip", "create", "rehash-nat", "--wait", "--vip", natVIP.String(), "--port", "tcp/80:30080", "--scheduler", "mh"}
	dr := []string{"vip", "create", "rehash-dr", "--wait", "--vip", drVIP.String(), "--mode", "dr", "--port", "tcp/30080", "--scheduler", "mh"}
	for i := 1; i <= 3; i++ {
		nat = append(nat, "--backend", fmt.Sprintf("%s:%d", topo.NodeHost(i).V4, topo.NodePort))
		dr = append(dr, "--backend", topo.NodeHost(i).V4.String())
	}
	mustLBCTL(t, l, nat...)
	defer l.LBCTL("vip", "delete", "rehash-nat")
	mustLBCTL(t, l, dr...)
	defer l.LBCTL("vip", "delete", "rehash-dr")
	owners := map[string]bool{}
	for _, name := range []string{"rehash-nat", "rehash-dr"} {
		o, _, err := l.WaitOwner(name, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		owners[o.ID] = true
	}
	natSvc, drSvc := netip.AddrPortFrom(natVIP, 80).String(), netip.AddrPortFrom(drVIP, 30080).String()
	for _, m := range l.Members {
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, _ := m.IPVSList()
			if strings.Contains(out, natSvc) && strings.Contains(out, drSvc) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s has not programmed both VIPs:\n%s", m.ID, out)
			}
			time.Sleep(500 * time.Millisecond)
		}
		// On lo on every edge, the owner too: lbd's l2 ownership may move
		// the eth0 address during the scenario (the guest is slow), and an
		// edge without the address sends the VIP's packets back to the
		// router (seen: "no route to host", ICMP time exceeded from it).
		for _, a := range []netip.Addr{natVIP, drVIP} {
			if _, err := topo.IP(m.Host.Name, "addr", "add", a.String()+"/32", "dev", "lo"); err != nil {
				t.Fatal(err)
			}
			defer topo.IP(m.Host.Name, "addr", "del", a.String()+"/32", "dev", "lo")
		}
	}
	client := l.Topo.Client.Name
	ctx := context.Background()

	// The first connections through the router also resolve its neighbours
	// (and the edges' of the nodes).
	if _, err := topo.WaitAnswer(probe.Options{Addr: drSvc, NetNS: client}, guestWaitAnswer); err != nil {
		t.Fatal(err)
	}
	// Which host answers a connection with ICMP (seen as "no route to
	// host" now and then): the client's capture says.
	icmpLog := filepath.Join(l.Cfg.Work, "client-icmp.txt")
	dump, err := topo.StartLogged(client, icmpLog, "tcpdump", "-nli", topo.Interface, "-c", "50", "icmp or icmp6")
	if err == nil {
		defer func() {
			dump.Process.Kill()
			dump.Wait()
			b, _ := os.ReadFile(icmpLog)
			t.Logf("ICMP the client received:\n%s", b)
		}()
	}
	const n = 150
	before := map[string]int{}
	for _, m := range l.Members {
		before[m.ID] = ipvsConns(t, m, drSvc)
	}
	res, err := probe.Count(ctx, probe.Options{Addr: drSvc, NetNS: client, Timeout: countTimeout}, n, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dr, new connections: %s", res)
	if res.OK != n {
		t.Errorf("dr: %d of %d new connections answered", res.OK, n)
		s.dumpNeighbours(t)
	}
	// Shares of what the edges scheduled. The kernel folds its per-CPU
	// counters into what ipvsadm reads every 2 s (the rate estimator).
	time.Sleep(statsSettle)
	fwd, total := map[string]int{}, 0
	for _, m := range l.Members {
		fwd[m.ID] = ipvsConns(t, m, drSvc) - before[m.ID]
		total += fwd[m.ID]
	}
	for _, m := range l.Members {
		t.Logf("dr: %s scheduled %d of %d connections (%.0f%%)", m.ID, fwd[m.ID], total, 100*float64(fwd[m.ID])/float64(max(total, 1)))
		if fwd[m.ID]*5 < total || total == 0 {
			t.Errorf("dr: %s scheduled %d of %d connections, want at least 20%%", m.ID, fwd[m.ID], total)
		}
	}

	natRes, err := probe.Count(ctx, probe.Options{Addr: natSvc, NetNS: client, Timeout: time.Second}, 60, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nat, new connections (control; the answer comes back through any edge): %s", natRes)

	// The lost edge: one that owns neither VIP, so lbd's L2 ownership has
	// nothing to move.
	var lost *lab.Member
	for _, m := range l.Members {
		if !owners[m.ID] {
			lost = m
		}
	}
	const held = 60
	time.Sleep(statsSettle)
	lostBefore := ipvsConns(t, lost, drSvc)
	h, err := probe.StartHold(probe.Options{Addr: drSvc, NetNS: client, Timeout: holdTimeout}, held, 200*time.Millisecond)
	if err != nil {
		s.dumpNeighbours(t)
		t.Fatal(err)
	}
	time.Sleep(statsSettle)
	// Scheduled there, not only known there: sync copies every
	// connection to every member.
	through := ipvsConns(t, lost, drSvc) - lostBefore
	t.Logf("dr: %d of %d held connections were scheduled by %s, the edge about to be lost", through, held, lost.ID)
	holdStart := time.Now().Add(-statsSettle)
	if err := lost.Cut(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s cut %s after the hold started", lost.ID, time.Since(holdStart).Round(time.Millisecond))
	defer lost.Heal()
	var rest []string
	for _, m := range l.Members {
		if m != lost {
			rest = append(rest, m.ID)
		}
	}
	if err := l.Router.SetStaticEdges(rest...); err != nil {
		t.Fatal(err)
	}
	defer l.Router.SetStaticEdges("edge1", "edge2", "edge3")
	hops, _ := l.Router.Nexthops(drVIP)
	t.Logf("router's route to %s after the loss: %v", drVIP, hops)
	time.Sleep(5 * time.Second)
	t.Logf("stopping the hold %s after it started", time.Since(holdStart).Round(time.Millisecond))
	hr := h.Stop()
	t.Logf("dr, held connections across the loss of %s: %d of %d kept (longest wait %s), broken %v", lost.ID, hr.Kept, hr.Opened, hr.LongestWait, hr.Broken)
	if hr.Kept*100 < hr.Opened*99 {
		t.Errorf("dr: %d of %d held connections kept, want at least 99%%", hr.Kept, hr.Opened)
		for _, m := range l.Members {
			if m != lost {
				out, _ := topo.Run(m.Host.Name, "ipvsadm", "-Lnc")
				g, _ := m.GuardDrops()
				t.Logf("%s: guard drops %d; ipvsadm -Lnc:\n%s", m.ID, g, out)
			}
		}
	}
	if through == 0 {
		t.Errorf("no held connection went through %s: the loss tested nothing", lost.ID)
	}
}

// dumpNeighbours logs every namespace's neighbour table: a connection that
// fails with "no route to host" met a neighbour that did not resolve.
func (s *scenarios) dumpNeighbours(t *testing.T) {
	t.Helper()
	hosts := append(s.l.Topo.All(), *s.l.Topo.Router)
	for _, h := range hosts {
		out, _ := topo.IP(h.Name, "neigh", "show")
		t.Logf("%s: ip neigh:\n%s", h.Name, out)
	}
}

// guestDrainWait is lbd's bgp.drainWait in the lab: how long a draining
// edge advertises with GRACEFUL_SHUTDOWN before it withdraws.
const guestDrainWait = 10 * time.Second

// guestLease is guestLBDConfig's ownership lease.
const guestLease = lab.GuestBGPLease

// bgpHold is the sessions' hold time (lab.RouterConfig's default): a path
// dropped sooner was dropped by BFD or by the session's end, not by it.
const bgpHold = 9 * time.Second

// waitNexthops polls the router's kernel route to a until its nexthops lead
// to exactly the edges want, and returns how long that took.
func (s *scenarios) waitNexthops(t *testing.T, a netip.Addr, within time.Duration, want ...string) time.Duration {
	t.Helper()
	slices.Sort(want)
	t0 := time.Now()
	var got []string
	for {
		hops, _ := s.l.Router.Nexthops(a)
		got = got[:0]
		for _, h := range hops {
			got = append(got, s.l.Router.EdgeOf(h))
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			return time.Since(t0)
		}
		if time.Since(t0) > within {
			protos, _ := s.l.Router.Protocols()
			bfd, _ := s.l.Router.BFDSessions()
			t.Fatalf("router's route to %s leads to %v, not %v, after %s; protocols %v; bfd %v", a, got, want, within, protos, bfd)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With lbd's speaker: a dr VIP from a bgp pool is advertised by all three
// edges, the router installs one route with three nexthops and its flows
// reach every edge. Then an edge is lost twice — its lbd SIGKILLed (the BGP
// session's TCP connection closes), and after it is back its link cut (only
// BFD can tell) — and each time the router drops that path, new connections
// go on through the others, and established connections, also those that
// went through the lost edge, are kept. Then an edge partitioned from its
// peers but not from the router withdraws once its lease runs out; last, a
// drained edge leaves gracefully and no connection is lost.
//
// Sized for the guest: the lab's BFD runs at 1 s × 5 and lbd's ownership
// lease at 15 s (see TestGuest); with 100 ms BFD and the default lease,
// sessions flapped and leases lapsed on a loaded host.
func (s *scenarios) bgpMode(t *testing.T) {
	l := s.l
	mustLBCTL(t, l, "pool", "create", "bgp4", "--range", "10.3.0.100-10.3.0.120", "--mode", "bgp")
	defer l.LBCTL("pool", "delete", "bgp4")
	// No --wait: it waits for an owner, and a bgp VIP has none.
	args := []string{"vip", "create", "bgpdr", "--pool", "bgp4", "--mode", "dr", "--port", "tcp/30080", "--scheduler", "mh"}
	for i := 1; i <= 3; i++ {
		args = append(args, "--backend", topo.NodeHost(i).V4.String())
	}
	mustLBCTL(t, l, args...)
	defer l.LBCTL("vip", "delete", "bgpdr")
	vs, err := l.VIP("bgpdr")
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr(vs.GetVip())
	for i := 1; i <= 3; i++ {
		ns := topo.NodeHost(i).Name
		for _, kv := range [][2]string{{"net.ipv4.conf.all.arp_ignore", "1"}, {"net.ipv4.conf.all.arp_announce", "2"}} {
			if err := netns.WriteSysctl(ns, kv[0], kv[1]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := topo.IP(ns, "addr", "add", vip.String()+"/32", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		defer topo.IP(ns, "addr", "del", vip.String()+"/32", "dev", "lo")
	}
	took := s.waitNexthops(t, vip, 60*time.Second, "edge1", "edge2", "edge3")
	protos, _ := l.Router.Protocols()
	bfd, _ := l.Router.BFDSessions()
	all, _ := l.Router.RouteAll(netip.PrefixFrom(vip, 32).String())
	t.Logf("bgp vip %s: three nexthops %s after create; protocols %v; bfd %v\n%s", vip, took.Round(time.Millisecond), protos, bfd, all)
	for _, e := range l.Topo.Edges {
		if bfd[e.V4] != "Up" {
			t.Errorf("BFD session with %s (%s): %q, want Up", e.Name, e.V4, bfd[e.V4])
		}
	}
	svc := netip.AddrPortFrom(vip, 30080).String()
	client := l.Topo.Client.Name
	if _, err := topo.WaitAnswer(probe.Options{Addr: svc, NetNS: client}, guestWaitAnswer); err != nil {
		t.Fatal(err)
	}
	time.Sleep(statsSettle)
	before := map[string]int{}
	for _, m := range l.Members {
		before[m.ID] = ipvsConns(t, m, svc)
	}
	const n = 150
	res, err := probe.Count(context.Background(), probe.Options{Addr: svc, NetNS: client, Timeout: countTimeout}, n, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bgp dr, new connections: %s", res)
	if res.OK != n {
		t.Errorf("%d of %d new connections answered", res.OK, n)
	}
	time.Sleep(statsSettle)
	total := 0
	fwd := map[string]int{}
	for _, m := range l.Members {
		fwd[m.ID] = ipvsConns(t, m, svc) - before[m.ID]
		total += fwd[m.ID]
	}
	minShare := 100.0
	for _, m := range l.Members {
		share := 100 * float64(fwd[m.ID]) / float64(max(total, 1))
		minShare = min(minShare, share)
		t.Logf("bgp dr: %s scheduled %d of %d connections (%.0f%%)", m.ID, fwd[m.ID], total, share)
		if fwd[m.ID]*5 < total || total == 0 {
			t.Errorf("%s scheduled %d of %d connections, want at least 20%%", m.ID, fwd[m.ID], total)
		}
	}
	// make bench (integration/cmd/bench) reads these lines.
	fmt.Printf("BENCH-JSON {\"name\":\"bgp-spread-min\",\"value\":%.1f,\"n\":%d}\n", minShare, total)

	lose := func(what, key string, m *lab.Member, loseIt func() error, dropWithin time.Duration) {
		t.Helper()
		const held = 60
		time.Sleep(statsSettle)
		lostBefore := ipvsConns(t, m, svc)
		h, err := probe.StartHold(probe.Options{Addr: svc, NetNS: client, Timeout: holdTimeout}, held, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		st, err := probe.StartSteady(probe.Options{Addr: svc, NetNS: client, Timeout: 2 * time.Second}, 20, 8)
		if err != nil {
			h.Stop()
			t.Fatal(err)
		}
		time.Sleep(statsSettle)
		through := ipvsConns(t, m, svc) - lostBefore
		st.Mark()
		t0 := time.Now()
		if err := loseIt(); err != nil {
			h.Stop()
			st.Stop(false)
			t.Fatal(err)
		}
		var rest []string
		for _, o := range l.Members {
			if o != m {
				rest = append(rest, o.ID)
			}
		}
		dropped := s.waitNexthops(t, vip, 30*time.Second, rest...)
		dropped = time.Since(t0)
		time.Sleep(5 * time.Second)
		sr := st.Stop(false)
		hr := h.Stop()
		t.Logf("%s: router dropped %s's path %s after; new connections: %d failed after the loss, recovered %s after, longest outage %s (%d/%d ok); held: %d of %d kept (%d scheduled by %s), longest wait %s, broken %v",
			what, m.ID, dropped.Round(time.Millisecond), sr.FailedAfterMark, sr.RecoveredAfter.Round(time.Millisecond), sr.LongestOutage.Round(time.Millisecond), sr.OK, sr.Attempts,
			hr.Kept, hr.Opened, through, m.ID, hr.LongestWait.Round(time.Millisecond), hr.Broken)
		fmt.Printf("BENCH-JSON {\"name\":\"bgp-drop-%s\",\"value\":%.1f}\n", key, float64(dropped.Microseconds())/1000)
		fmt.Printf("BENCH-JSON {\"name\":\"bgp-outage-%s\",\"value\":%.1f,\"n\":%d}\n", key, float64(sr.LongestOutage.Microseconds())/1000, sr.Attempts)
		fmt.Printf("BENCH-JSON {\"name\":\"bgp-kept-%s\",\"value\":%.2f,\"n\":%d}\n", key, 100*float64(hr.Kept)/float64(max(hr.Opened, 1)), hr.Opened)
		if dropped > dropWithin {
			t.Errorf("%s: the router dropped the path after %s, later than %s", what, dropped, dropWithin)
		}
		if hr.Kept*100 < hr.Opened*99 {
			t.Errorf("%s: %d of %d held connections kept, want at least 99%%", what, hr.Kept, hr.Opened)
		}
		if through == 0 {
			t.Errorf("%s: no held connection went through %s: the loss tested nothing", what, m.ID)
		}
		if sr.RecoveredAfter < 0 {
			t.Errorf("%s: no new connection succeeded after the loss", what)
		}
	}
	e3 := l.Member("edge3")
	// lbd gone: its session's TCP connection is reset; BFD would tell within
	// its detection time anyway. Either way before the BGP hold time (the
	// detection time is a figure, logged, not a pass/fail threshold).
	lose("lbd SIGKILL", "sigkill", e3, func() error { e3.Kill(); return nil }, bgpHold)
	if err := e3.Start(); err != nil {
		t.Fatal(err)
	}
	if err := e3.WaitServing(l.Cfg.Ready); err != nil {
		t.Fatal(err)
	}
	took = s.waitNexthops(t, vip, 60*time.Second, "edge1", "edge2", "edge3")
	t.Logf("edge3 back in the route %s after it served", took.Round(time.Millisecond))
	e2 := l.Member("edge2")
	// The link cut: no packet says goodbye; only BFD (5 s here) tells the
	// router before the hold time runs out.
	lose("link cut", "linkcut", e2, e2.Cut, bgpHold)
	if err := e2.Heal(); err != nil {
		t.Fatal(err)
	}
	took = s.waitNexthops(t, vip, 60*time.Second, "edge1", "edge2", "edge3")
	t.Logf("edge2 back in the route %s after its link was healed", took.Round(time.Millisecond))

	// Partitioned from its peers but not from the router: its lease
	// (15 s here) runs out without quorum contact, and it withdraws; the
	// others keep the VIP. Then it comes back.
	e1 := l.Member("edge1")
	if err := e1.MutePeers(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	took = s.waitNexthops(t, vip, guestLease+bgpHold+10*time.Second, "edge2", "edge3")
	t.Logf("partition: edge1, cut off from its peers (not from the router), withdrew after %s (lease %s)", took.Round(time.Millisecond), guestLease)
	fmt.Printf("BENCH-JSON {\"name\":\"bgp-partition-withdraw\",\"value\":%.1f}\n", float64(time.Since(t0).Microseconds())/1000)
	if err := e1.UnmutePeers(); err != nil {
		t.Fatal(err)
	}
	took = s.waitNexthops(t, vip, 60*time.Second, "edge1", "edge2", "edge3")
	t.Logf("edge1 back in the route %s after the partition healed", took.Round(time.Millisecond))

	// Drain: the edge first advertises with GRACEFUL_SHUTDOWN, which the
	// router's import filter turns into the least preference (RFC 8326): its
	// path leaves the multipath route at once while it still forwards what
	// arrives; after bgp.drainWait it withdraws. No connection is lost.
	const held = 60
	h, err := probe.StartHold(probe.Options{Addr: svc, NetNS: client, Timeout: holdTimeout}, held, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	mustLBCTL(t, l, "member", "drain", "edge3")
	defer l.LBCTL("member", "drain", "edge3", "--undo")
	t0 = time.Now()
	took = s.waitNexthops(t, vip, guestDrainWait+30*time.Second, "edge1", "edge2")
	all, _ = l.Router.RouteAll(netip.PrefixFrom(vip, 32).String())
	t.Logf("drain: edge3's path left the multipath route %s after the drain; BIRD:\n%s", took.Round(time.Millisecond), all)
	if took < guestDrainWait && !strings.Contains(all, "(65535,0)") {
		t.Errorf("drain: edge3's path left before bgp.drainWait but BIRD shows no GRACEFUL_SHUTDOWN community")
	}
	deadline := time.Now().Add(guestDrainWait + 30*time.Second)
	for {
		all, _ = l.Router.RouteAll(netip.PrefixFrom(vip, 32).String())
		if !strings.Contains(all, l.Member("edge3").Host.V4.String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drain: edge3 still advertises %s %s after the drain:\n%s", vip, time.Since(t0), all)
		}
		time.Sleep(500 * time.Millisecond)
	}
	withdrawn := time.Since(t0)
	time.Sleep(2 * time.Second)
	hr := h.Stop()
	t.Logf("drain: edge3 withdrew %s after the drain (drainWait %s); held: %d of %d kept, broken %v", withdrawn.Round(time.Millisecond), guestDrainWait, hr.Kept, hr.Opened, hr.Broken)
	fmt.Printf("BENCH-JSON {\"name\":\"bgp-drain-lost\",\"value\":%d,\"n\":%d}\n", hr.Opened-hr.Kept, hr.Opened)
	if hr.Kept != hr.Opened {
		t.Errorf("drain: %d of %d held connections lost", hr.Opened-hr.Kept, hr.Opened)
	}
	mustLBCTL(t, l, "member", "drain", "edge3", "--undo")
	took = s.waitNexthops(t, vip, 60*time.Second, "edge1", "edge2", "edge3")
	t.Logf("edge3 back in the route %s after the drain was undone", took.Round(time.Millisecond))
}
