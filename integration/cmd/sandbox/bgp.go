package main

// SANDBOX_MODE=bgp: the sandbox with a router. The client sits behind a BIRD
// router (integration/lab, Config.Router), every lbd peers with it, and a dr
// VIP from a bgp pool is advertised by all three edges; each round shows the
// router's ECMP route and how many connections each edge scheduled.

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/probe"
	"github.com/edgelb/edgelb/integration/topo"
)

// sandboxRouter is the router of the bgp sandbox, BFD at lbd's defaults.
func sandboxRouter() *lab.RouterConfig {
	return &lab.RouterConfig{}
}

// sandboxL2LBDConfig is the guest timing of the failover scenarios
// (integration/ha, profile "guest"), where lbd's LAN defaults (lease 250 ms)
// saw the fence withdraw the VIP and a round lose connections (a CI
// rehearsal, 2 of 540).
const sandboxL2LBDConfig = lab.GuestTiming

// sandboxBGPLBDConfig is the same guest timing: a member advertises a bgp
// VIP only while its lease holds.
const sandboxBGPLBDConfig = lab.GuestTiming

// schedConns is the Conns counter of a TCP IPVS service on a member.
func schedConns(m *lab.Member, svc string) int {
	out, err := m.IPVSList("--stats", "-t", svc)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "TCP" && f[1] == svc {
			n, _ := strconv.Atoi(f[2])
			return n
		}
	}
	return 0
}

func runBGP(ctx context.Context, l *lab.Lab, dir string, dur time.Duration) int {
	run := func(args ...string) bool {
		fmt.Printf("\n$ lbctl %s\n", strings.Join(args, " "))
		out, err := l.LBCTL(args...)
		fmt.Print(out)
		if err != nil {
			fmt.Println("sandbox:", err)
			return false
		}
		return true
	}
	args := []string{"vip", "create", vipName, "--pool", "bgp", "--mode", "dr", "--port", "tcp/30080", "--scheduler", "mh"}
	for _, n := range l.Topo.Nodes {
		args = append(args, "--backend", n.V4.String())
	}
	if !run("pool", "create", "bgp", "--range", "10.3.0.100-10.3.0.120", "--mode", "bgp") || !run(args...) {
		return 1
	}
	vs, err := l.VIP(vipName)
	if err != nil {
		fmt.Println("sandbox:", err)
		return 1
	}
	addr := netip.MustParseAddr(vs.GetVip())
	// dr: the nodes accept the VIP as a real server does.
	for _, n := range l.Topo.Nodes {
		for _, kv := range [][2]string{{"net.ipv4.conf.all.arp_ignore", "1"}, {"net.ipv4.conf.all.arp_announce", "2"}} {
			netns.WriteSysctl(n.Name, kv[0], kv[1])
		}
		if _, err := topo.IP(n.Name, "addr", "add", addr.String()+"/32", "dev", "lo"); err != nil {
			fmt.Println("sandbox:", err)
			return 1
		}
	}
	svc := netip.AddrPortFrom(addr, 30080).String()
	t0 := time.Now()
	for {
		hops, _ := l.Router.Nexthops(addr)
		if len(hops) == len(l.Members) {
			break
		}
		if time.Since(t0) > time.Minute {
			protos, _ := l.Router.Protocols()
			fmt.Printf("sandbox: the router's route to %s has nexthops %v after a minute; BIRD: %v\n", addr, hops, protos)
			return 1
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := topo.WaitAnswer(probe.Options{Addr: svc, NetNS: "client"}, time.Minute); err != nil {
		fmt.Printf("sandbox: %s does not answer: %v\n", svc, err)
		return 1
	}
	go serveExec(ctx, dir)
	fmt.Printf(`
────────────────────────────────────────────────────────────────────────────
 edgelb sandbox, BGP mode: client 10.2.0.100 (+10.1.0.0/16) -> router (BIRD, 10.0.0.254)
 -> edge1-3 (ECMP) -> nodes (dr). VIP %s from bgp pool "bgp", advertised by every edge.
 From another terminal on this machine:
   scripts/sandbox.sh ip netns exec router birdc -s %s/bird.ctl show protocols
   scripts/sandbox.sh ip netns exec router birdc -s %s/bird.ctl show route all for %s/32
   scripts/sandbox.sh ip netns exec router ip route show %s
   scripts/sandbox.sh lbctl bgp status
 Logs: %s
────────────────────────────────────────────────────────────────────────────
`, svc, dir, dir, addr, addr, dir)
	if dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dur)
		defer cancel()
	}
	o := probe.Options{Addr: svc, NetNS: "client", Timeout: 3 * time.Second}.WithSources(l.Topo.ClientSources)
	edges := map[string]int{}
	var sent, failed int
	for round := 1; ctx.Err() == nil; round++ {
		before := map[string]int{}
		for _, m := range l.Members {
			before[m.ID] = schedConns(m, svc)
		}
		r, _ := probe.Count(ctx, o, 60, 2)
		if ctx.Err() != nil && r.Sent < 60 {
			break
		}
		sent += r.Sent
		failed += r.Errors
		// The kernel sums IPVS's per-CPU counters every 2 s.
		select {
		case <-ctx.Done():
		case <-time.After(2500 * time.Millisecond):
		}
		hops, _ := l.Router.Nexthops(addr)
		var via []string
		for _, h := range hops {
			via = append(via, l.Router.EdgeOf(h))
		}
		fmt.Printf("\n[%s] round %d: 60 connections from %d client addresses -> %s; router: %s via %v\n  nodes: %v\n", time.Now().Format("15:04:05"), round, len(o.Sources), svc, addr, via, r.Counts)
		for _, m := range l.Members {
			n := schedConns(m, svc) - before[m.ID]
			edges[m.ID] += n
			fmt.Printf("  %-6s scheduled %3d  %s\n", m.ID, n, strings.Repeat("█", n/2))
		}
		if r.Errors > 0 {
			fmt.Printf("  errors: %d %v\n", r.Errors, r.Samples)
		}
	}
	fmt.Printf("\nsandbox: %d sent, %d failed; scheduled per edge: %v\n", sent, failed, edges)
	if dur == 0 {
		return 0
	}
	total := 0
	for _, n := range edges {
		total += n
	}
	ok := sent > 0 && failed == 0 && total > 0
	for _, m := range l.Members {
		if edges[m.ID]*5 < total {
			ok = false
			fmt.Printf("sandbox: %s scheduled %d of %d connections, less than 20%%\n", m.ID, edges[m.ID], total)
		}
	}
	if !ok {
		fmt.Println("sandbox: BGP mode NOT spread over every edge without failures")
		return 1
	}
	fmt.Println("sandbox: BGP mode: traffic spread over every edge by the router's ECMP route: OK")
	return 0
}
