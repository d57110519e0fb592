package lab

// The BGP lab's router: a namespace between the client and the lan (see
// integration/topo, Config.Router) running BIRD 2 (Debian's bird2, installed
// by scripts/uml-deps.sh) with a BGP session to every edge over IPv4 and one
// over IPv6, BFD on each, and the routes it learns merged into multipath
// routes in its kernel, which hashes flows over them by 5-tuple.

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/topo"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/vishvananda/netlink"
)

// RouterConfig configures the router's BIRD.
type RouterConfig struct {
	ASN     uint32 // the router's AS (default 65000)
	EdgeASN uint32 // the edges' AS (default 65001: eBGP; equal to ASN makes iBGP)
	// BFDInterval is the router's BFD transmit and receive interval,
	// BFDMultiplier the missed packets before a session goes down; both
	// default to lbd's (300 ms × 3), and LBDConfig gives lbd the same.
	BFDInterval   time.Duration
	BFDMultiplier int
	// NoBFD leaves BFD off on the sessions (BGP's hold time alone then
	// detects a lost edge).
	NoBFD bool
	// HoldTime of the BGP sessions in whole seconds (default 9, BIRD keeps
	// keepalive at a third of it).
	HoldTime int
	// LBDDrainWait, when set, is bgp.drainWait in LBDConfig: how long a
	// draining member advertises with the graceful-shutdown community
	// before it withdraws (lbd's default 30 s).
	LBDDrainWait time.Duration
	// StaticECMP are prefixes the router routes to every edge at once from
	// its own configuration (a BIRD static multipath route), without any
	// BGP: the lab's own check of its multipath forwarding.
	StaticECMP []netip.Prefix
}

func (c *RouterConfig) defaults() {
	if c.ASN == 0 {
		c.ASN = 65000
	}
	if c.EdgeASN == 0 {
		c.EdgeASN = 65001
	}
	if c.BFDInterval == 0 {
		c.BFDInterval = config.DefaultBFDInterval
	}
	if c.BFDMultiplier == 0 {
		c.BFDMultiplier = config.DefaultBFDMultiplier
	}
	if c.HoldTime == 0 {
		c.HoldTime = 9
	}
}

// Router is the running BIRD.
type Router struct {
	Host     topo.Host
	Conf     string // bird.conf, in the lab's work directory
	Sock     string // birdc's control socket
	LogPath  string
	cfg      RouterConfig
	cmd      *exec.Cmd
	edges    []topo.Host
	protocol map[string]topo.Host // BGP protocol name → edge
}

// BGPProtocol names the router's BGP protocol with an edge for one family
// ("edge1" for IPv4, "edge1_6" for IPv6).
func BGPProtocol(edge string, v6 bool) string {
	if v6 {
		return edge + "_6"
	}
	return edge
}

// birdConf is the router's configuration: BGP sessions to edges, the static
// multipath routes via staticVia.
func birdConf(c RouterConfig, router topo.Host, edges, staticVia []topo.Host) string {
	var b strings.Builder
	fmt.Fprintf(&b, `log stderr all;
# Milliseconds and state changes: the scenarios time BFD and route changes.
timeformat log iso long ms;
debug protocols { states, events };
router id %s;
protocol device { scan time 2; }
# Every best path with equal attributes goes into the kernel as one multipath
# route (ECMP); the kernel hashes flows over its nexthops.
protocol kernel kernel4 {
	ipv4 { import none; export all; };
	merge paths on;
}
protocol kernel kernel6 {
	ipv6 { import none; export all; };
	merge paths on;
}
`, router.V4)
	ms := c.BFDInterval.Milliseconds()
	if !c.NoBFD {
		fmt.Fprintf(&b, `protocol bfd {
	interface "%s" {
		min rx interval %d ms;
		min tx interval %d ms;
		multiplier %d;
	};
}
`, topo.Interface, ms, ms, c.BFDMultiplier)
	}
	bfd := "on"
	if c.NoBFD {
		bfd = "off"
	}
	// BIRD takes an iBGP neighbour to be several hops away unless told:
	// the edges share the router's segment.
	direct := ""
	if c.ASN == c.EdgeASN {
		direct = "\n\tdirect;"
	}
	for _, fam := range []struct {
		name, local, ch string
		addr            func(topo.Host) netip.Addr
	}{{"edges4", router.V4.String(), "ipv4", func(h topo.Host) netip.Addr { return h.V4 }}, {"edges6", router.V6.String(), "ipv6", func(h topo.Host) netip.Addr { return h.V6 }}} {
		// The edges dial out (lbd's default listenPort 0), so the router
		// listens; connect retry is short so a restarted edge is seen soon.
		fmt.Fprintf(&b, `template bgp %s {
	local %s as %d;
	hold time %d;
	connect retry time 2;
	error wait time 1, 10;
	bfd %s;%s
	%s {
		# RFC 8326: a path tagged GRACEFUL_SHUTDOWN (an edge draining) is
		# least preferred, so it leaves the multipath route while the edge
		# still forwards what arrives.
		import filter { if (65535, 0) ~ bgp_community then bgp_local_pref = 0; accept; };
		export none;
		gateway direct;
	};
}
`, fam.name, fam.local, c.ASN, c.HoldTime, bfd, direct, fam.ch)
		for _, e := range edges {
			fmt.Fprintf(&b, "protocol bgp %s from %s { neighbor %s as %d; }\n", BGPProtocol(e.Name, fam.ch == "ipv6"), fam.name, fam.addr(e), c.EdgeASN)
		}
	}
	for i, p := range c.StaticECMP {
		ch, via := "ipv4", func(h topo.Host) netip.Addr { return h.V4 }
		if p.Addr().Is6() {
			ch, via = "ipv6", func(h topo.Host) netip.Addr { return h.V6 }
		}
		fmt.Fprintf(&b, "protocol static static_ecmp%d { %s; route %s", i, ch, p)
		if len(staticVia) == 0 {
			b.WriteString(" unreachable; }\n")
			continue
		}
		for _, e := range staticVia {
			fmt.Fprintf(&b, " via %s", via(e))
		}
		b.WriteString("; }\n")
	}
	return b.String()
}

// startRouter writes the configuration and starts BIRD in the router's
// namespace, then waits until birdc answers.
func (l *Lab) startRouter(c RouterConfig) error {
	c.defaults()
	r := &Router{
		Host: *l.Topo.Router, cfg: c, edges: l.Topo.Edges,
		Conf:    filepath.Join(l.Cfg.Work, "bird.conf"),
		Sock:    filepath.Join(l.Cfg.Work, "bird.ctl"),
		LogPath: filepath.Join(l.Cfg.Work, "bird.log"),
	}
	if err := writeFile(r.Conf, birdConf(c, r.Host, l.Topo.Edges, l.Topo.Edges)); err != nil {
		return err
	}
	// -f: foreground, a child the lab can kill; logs to stderr, the log file.
	cmd, err := topo.StartLogged(r.Host.Name, r.LogPath, "bird", "-f", "-c", r.Conf, "-s", r.Sock, "-P", filepath.Join(l.Cfg.Work, "bird.pid"))
	if err != nil {
		return fmt.Errorf("start BIRD (is bird2 installed? sudo bash scripts/uml-deps.sh): %w", err)
	}
	r.cmd = cmd
	l.Router = r
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := r.Birdc("show", "status")
		if err == nil && strings.Contains(out, "Daemon is up and running") {
			return nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(r.LogPath)
			return fmt.Errorf("BIRD not up within 30s: %v: %s\n--- bird.log ---\n%s", err, out, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// SetStaticEdges makes the static multipath routes (RouterConfig.StaticECMP)
// lead to the named edges only (none: unreachable) and has BIRD reload its
// configuration: a path taken away by the router's configuration, not by
// BGP or BFD.
func (r *Router) SetStaticEdges(names ...string) error {
	var via []topo.Host
	for _, e := range r.edges {
		if slices.Contains(names, e.Name) {
			via = append(via, e)
		}
	}
	if err := writeFile(r.Conf, birdConf(r.cfg, r.Host, r.edges, via)); err != nil {
		return err
	}
	out, err := r.Birdc("configure")
	if err != nil || !strings.Contains(out, "Reconfigured") {
		return fmt.Errorf("birdc configure: %v: %s", err, out)
	}
	return nil
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }

func (r *Router) stop() {
	if r != nil && r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
}

// Birdc runs one birdc command against the router's BIRD.
func (r *Router) Birdc(args ...string) (string, error) {
	return topo.Run(r.Host.Name, "birdc", append([]string{"-s", r.Sock}, args...)...)
}

// RouteAll is `birdc show route all PREFIX`: every path BIRD holds for it,
// with its attributes (BGP communities, local preference, from which edge).
func (r *Router) RouteAll(prefix string) (string, error) {
	return r.Birdc("show", "route", "all", "for", prefix)
}

// Protocols returns `birdc show protocols` as protocol name → state and
// info (for BGP: "up Established", "start Active", ...).
func (r *Router) Protocols() (map[string]string, error) {
	out, err := r.Birdc("show", "protocols")
	if err != nil {
		return nil, err
	}
	return parseProtocols(out), nil
}

// parseProtocols reads `show protocols`: Name Proto Table State Since Info.
func parseProtocols(out string) map[string]string {
	res := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || f[0] == "Name" || strings.HasPrefix(l, "BIRD") {
			continue
		}
		state := f[3]
		// Since is a time (one or two fields); Info follows it.
		if i := 5; len(f) > i {
			info := f[i:]
			if len(info) > 0 && strings.Contains(info[0], ":") && len(f) > i+1 {
				info = info[1:] // a date and a time
			}
			state += " " + strings.Join(info, " ")
		}
		res[f[0]] = strings.TrimSpace(state)
	}
	return res
}

// BFDSessions returns `birdc show bfd sessions` as neighbour address → state
// (Up, Down, Init, AdminDown).
func (r *Router) BFDSessions() (map[netip.Addr]string, error) {
	out, err := r.Birdc("show", "bfd", "sessions")
	if err != nil {
		return nil, err
	}
	return parseBFD(out), nil
}

func parseBFD(out string) map[netip.Addr]string {
	res := map[netip.Addr]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		if a, err := netip.ParseAddr(f[0]); err == nil {
			res[a] = f[2]
		}
	}
	return res
}

// Nexthops returns the gateways of the router kernel's route to addr, read
// over netlink in its namespace: one per edge the route leads to, several
// for an ECMP route, none without a route. Not through `ip route`: the
// scenarios poll it to time a path's drop, and a process start costs up to
// a second in the guest.
func (r *Router) Nexthops(addr netip.Addr) ([]netip.Addr, error) {
	family := netlink.FAMILY_V4
	if addr.Is6() {
		family = netlink.FAMILY_V6
	}
	dst := &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(addr.BitLen(), addr.BitLen())}
	var routes []netlink.Route
	err := netns.Do(r.Host.Name, func() error {
		var err error
		routes, err = netlink.RouteListFiltered(family, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("routes to %s in %s: %w", addr, r.Host.Name, err)
	}
	var res []netip.Addr
	add := func(ip net.IP) {
		if a, ok := netip.AddrFromSlice(ip); ok {
			res = append(res, a.Unmap())
		}
	}
	for _, rt := range routes {
		if rt.Gw != nil {
			add(rt.Gw)
		}
		for _, nh := range rt.MultiPath {
			if nh.Gw != nil {
				add(nh.Gw)
			}
		}
	}
	return res, nil
}

// EdgeOf names the edge whose address is a (for nexthops), "" if none.
func (r *Router) EdgeOf(a netip.Addr) string {
	for _, e := range r.edges {
		if e.V4 == a || e.V6 == a {
			return e.Name
		}
	}
	return ""
}

// LBDConfig is the bgp section of lbd.yaml (docs/BGP.md) that peers every
// edge with this router: one session per family, BFD at the router's
// interval. Every member takes its router ID from its API address.
func (c RouterConfig) LBDConfig() string {
	c.defaults()
	r := topo.RouterHost()
	bfd := fmt.Sprintf("\n      bfd:\n        enabled: true\n        minTx: %s\n        minRx: %s\n        multiplier: %d", c.BFDInterval, c.BFDInterval, c.BFDMultiplier)
	if c.NoBFD {
		bfd = "\n      bfd:\n        enabled: false"
	}
	drain := ""
	if c.LBDDrainWait > 0 {
		drain = fmt.Sprintf("\n  drainWait: %s", c.LBDDrainWait)
	}
	return fmt.Sprintf(`bgp:
  asn: %d%s
  peers:
    - address: %s
      asn: %d
      holdTime: %ds
      families: [ipv4]%s
    - address: %s
      asn: %d
      holdTime: %ds
      families: [ipv6]%s
`, c.EdgeASN, drain, r.V4, c.ASN, c.HoldTime, bfd, r.V6, c.ASN, c.HoldTime, bfd)
}
