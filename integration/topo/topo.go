// Package topo builds, inside a User-Mode Linux guest (see integration/uml), the
// network the edgelb scenarios run on: one shared L2 segment and network namespaces
// for the edge hosts, the "Kubernetes nodes" and a client.
//
// Address plan (IPv4 10.0.0.0/24 and IPv6 fd00::/64 on one bridge, "lan"):
//
//	what                 netns     IPv4            IPv6        serves
//	management (guest)   (root)    10.0.0.1        fd00::1     lbctl/tests reach every host from here
//	edge host i (1..3)   edgeI     10.0.0.1I       fd00::1I    lbd: API :7700, raft :7701; VIPs on eth0
//	k8s node i (1..N)    nodeI     10.0.0.2I       fd00::2I    nodeserver: NodePort tcp+udp :30080, /healthz on :30256
//	client               client    10.0.0.100      fd00::100   probe
//	VIP pool                       10.0.0.200-250  fd00::200/120
//	more clients         client    10.1.0.0/16                 Config.ClientAddrs extra source addresses (routed via 10.0.0.100)
//
// With Config.Router (BGP mode) a router sits between the client and the rest:
//
//	what                 netns     IPv4            IPv6        serves
//	router, lan side     router    10.0.0.254      fd00::254   eth0 on lan; BGP peer of every edge (integration/lab runs BIRD here)
//	router, client side  router    10.2.0.1        fd02::1     eth1 on a second bridge, "wan"
//	client               client    10.2.0.100      fd02::100   on wan only, default route via the router
//	BGP VIP pool                   10.3.0.0/24     fd03::/120  reachable only through routes the router learns
//
// Edges and nodes then route everything off the lan (the client, its extra
// addresses) via the router, and the client reaches a VIP only through it.
//
// Every host's interface is eth0 (a veth whose peer "v-NAME" is a port of lan). The
// root namespace holds the bridge and a management address on it, so code running
// there (tests, lbctl) reaches every host without entering a namespace. IPv6 addresses
// are added without duplicate address detection.
package topo

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/probe"
	"github.com/vishvananda/netlink"
)

// Fixed parts of the plan.
const (
	Bridge       = "lan"
	Interface    = "eth0"
	NodePort     = 30080
	HealthPort   = 30256
	APIPort      = 7700
	RaftPort     = 7701
	VIPPoolV4    = "10.0.0.200-10.0.0.250"
	VIPPoolV6    = "fd00::200/120"
	ManagementV4 = "10.0.0.1"
	ManagementV6 = "fd00::1"
	// ClientNet holds the client's extra source addresses (many clients behind one
	// router): every other host routes it via the client's 10.0.0.100.
	ClientNet = "10.1.0.0/16"

	// WANBridge is the client's segment in router mode (Config.Router),
	// WANNet and WANNet6 its prefixes.
	WANBridge = "wan"
	WANNet    = "10.2.0.0/24"
	WANNet6   = "fd02::/64"
	// RouterWANInterface is the router's interface on WANBridge.
	RouterWANInterface = "eth1"
	// BGPPoolV4 and BGPPoolV6 are VIP ranges for bgp pools: off every
	// segment, so only the router's routes lead to them.
	BGPPoolV4 = "10.3.0.0/24"
	BGPPoolV6 = "fd03::/120"
)

// RouterHost is the router's lan side; RouterWAN and RouterWAN6 its addresses on wan.
func RouterHost() Host { return host("router", 254) }

var (
	RouterWAN  = netip.MustParseAddr("10.2.0.1")
	RouterWAN6 = netip.MustParseAddr("fd02::1")
)

// WANClientHost is the client in router mode: on wan, behind the router.
func WANClientHost() Host {
	return Host{Name: "client", V4: netip.MustParseAddr("10.2.0.100"), V6: netip.MustParseAddr("fd02::100")}
}

// Host is one namespace on the segment.
type Host struct {
	Name string // namespace name, also the host's name
	V4   netip.Addr
	V6   netip.Addr
}

// Config sizes the topology.
type Config struct {
	Edges int // edge hosts (default 3)
	Nodes int // Kubernetes nodes (default 3)
	// Forwarding turns on net.ipv4.ip_forward and IPv6 forwarding on the edge hosts.
	// Off by default: lbd sets what its data-plane mode needs, and the scenarios check it.
	Forwarding bool
	// ClientAddrs extra IPv4 addresses from ClientNet on the client (10.1.0.1, ...), so
	// traffic can come from many sources (source-hashing schedulers). Default 0.
	ClientAddrs int
	// Router puts a router namespace between the client and the lan (see the
	// package comment): the client moves to its own segment, and the router
	// forwards with ECMP hashing on the 5-tuple
	// (net.ipv4.fib_multipath_hash_policy=1), so the flows of one client spread
	// over the paths of a multipath route.
	Router bool
}

// Topology is a built network.
type Topology struct {
	Edges  []Host
	Nodes  []Host
	Client Host
	// ClientSources are the client's extra addresses (Config.ClientAddrs).
	ClientSources []netip.Addr
	// Router is the router's lan side (nil without Config.Router).
	Router *Host
}

// EdgeHost, NodeHost and ClientHost give a host's place in the plan.
func EdgeHost(i int) Host { return host(fmt.Sprintf("edge%d", i), 10+i) }
func NodeHost(i int) Host { return host(fmt.Sprintf("node%d", i), 20+i) }
func ClientHost() Host    { return host("client", 100) }

func host(name string, octet int) Host {
	return Host{
		Name: name,
		V4:   netip.AddrFrom4([4]byte{10, 0, 0, byte(octet)}),
		V6:   netip.MustParseAddr(fmt.Sprintf("fd00::%d", octet)),
	}
}

// All lists every host.
func (t *Topology) All() []Host {
	out := append(append([]Host{}, t.Edges...), t.Nodes...)
	return append(out, t.Client)
}

// lanHosts lists the hosts with a port on lan (all but the client behind a router).
func (t *Topology) lanHosts() []Host {
	if t.Router == nil {
		return t.All()
	}
	return append(append(append([]Host{}, t.Edges...), t.Nodes...), *t.Router)
}

// Build creates the bridge, the namespaces and their links. It must run as root inside
// the guest (it changes the running kernel's network). It runs one `ip -batch` for the
// root namespace and one per host namespace.
func Build(cfg Config) (*Topology, error) {
	if cfg.Edges == 0 {
		cfg.Edges = 3
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Edges > 9 || cfg.Nodes > 9 {
		return nil, fmt.Errorf("topo: at most 9 edges and 9 nodes fit the address plan")
	}
	t := &Topology{Client: ClientHost()}
	// gw is where the lan's hosts send what is not on it (the client's
	// extra addresses; with a router, everything).
	gw := t.Client.V4
	if cfg.Router {
		r := RouterHost()
		t.Router, t.Client, gw = &r, WANClientHost(), r.V4
	}
	for i := 1; i <= cfg.Edges; i++ {
		t.Edges = append(t.Edges, EdgeHost(i))
	}
	for i := 1; i <= cfg.Nodes; i++ {
		t.Nodes = append(t.Nodes, NodeHost(i))
	}

	if cfg.ClientAddrs > 65000 {
		return nil, fmt.Errorf("topo: at most 65000 client addresses")
	}
	for i := 1; i <= cfg.ClientAddrs; i++ {
		t.ClientSources = append(t.ClientSources, netip.AddrFrom4([4]byte{10, 1, byte(i / 256), byte(i % 256)}))
	}
	var root strings.Builder
	fmt.Fprintf(&root, "link add %s type bridge stp_state 0 forward_delay 0 mcast_snooping 0\n", Bridge)
	fmt.Fprintf(&root, "link set %s up\n", Bridge)
	fmt.Fprintf(&root, "addr add %s/24 dev %s\n", ManagementV4, Bridge)
	fmt.Fprintf(&root, "addr add %s/64 dev %s nodad\n", ManagementV6, Bridge)
	if cfg.ClientAddrs > 0 {
		fmt.Fprintf(&root, "route add %s via %s\n", ClientNet, gw)
	}
	for _, h := range t.lanHosts() {
		fmt.Fprintf(&root, "netns add %s\n", h.Name)
		fmt.Fprintf(&root, "link add v-%s type veth peer name %s netns %s\n", h.Name, Interface, h.Name)
		fmt.Fprintf(&root, "link set v-%s master %s up\n", h.Name, Bridge)
	}
	if t.Router != nil {
		// The client's segment: the client and the router's second leg.
		fmt.Fprintf(&root, "link add %s type bridge stp_state 0 forward_delay 0 mcast_snooping 0\n", WANBridge)
		fmt.Fprintf(&root, "link set %s up\n", WANBridge)
		fmt.Fprintf(&root, "netns add %s\n", t.Client.Name)
		fmt.Fprintf(&root, "link add v-%s type veth peer name %s netns %s\n", t.Client.Name, Interface, t.Client.Name)
		fmt.Fprintf(&root, "link set v-%s master %s up\n", t.Client.Name, WANBridge)
		fmt.Fprintf(&root, "link add w-%s type veth peer name %s netns %s\n", t.Router.Name, RouterWANInterface, t.Router.Name)
		fmt.Fprintf(&root, "link set w-%s master %s up\n", t.Router.Name, WANBridge)
		// The management side (tests, lbctl) reaches the client through the router too.
		fmt.Fprintf(&root, "route add %s via %s\n", WANNet, t.Router.V4)
		fmt.Fprintf(&root, "route add %s via %s\n", WANNet6, t.Router.V6)
	}
	if err := ipBatch("", root.String()); err != nil {
		return nil, err
	}
	for _, h := range t.All() {
		if err := t.configure(h, cfg, gw); err != nil {
			return nil, err
		}
	}
	if t.Router != nil {
		if err := t.configure(*t.Router, cfg, gw); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// configure sets up one host's namespace: sysctls, addresses, routes.
func (t *Topology) configure(h Host, cfg Config, gw netip.Addr) error {
	for _, kv := range [][2]string{
		{"net.ipv6.conf.all.accept_dad", "0"},
		{"net.ipv6.conf.default.accept_dad", "0"},
		{"net.ipv6.conf." + Interface + ".accept_dad", "0"},
	} {
		if err := netns.WriteSysctl(h.Name, kv[0], kv[1]); err != nil {
			return err
		}
	}
	if cfg.Forwarding && strings.HasPrefix(h.Name, "edge") {
		netns.WriteSysctl(h.Name, "net.ipv4.ip_forward", "1")
		netns.WriteSysctl(h.Name, "net.ipv6.conf.all.forwarding", "1")
	}
	isRouter := t.Router != nil && h.Name == t.Router.Name
	if isRouter {
		for _, kv := range [][2]string{
			{"net.ipv4.ip_forward", "1"},
			{"net.ipv6.conf.all.forwarding", "1"},
			// Hash the 5-tuple, not only the addresses: one client's
			// flows then spread over every path of a multipath route.
			{"net.ipv4.fib_multipath_hash_policy", "1"},
			{"net.ipv6.fib_multipath_hash_policy", "1"},
			{"net.ipv6.conf." + RouterWANInterface + ".accept_dad", "0"},
		} {
			if err := netns.WriteSysctl(h.Name, kv[0], kv[1]); err != nil {
				return err
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "link set lo up\n")
	fmt.Fprintf(&b, "addr add %s/24 dev %s\n", h.V4, Interface)
	fmt.Fprintf(&b, "addr add %s/64 dev %s nodad\n", h.V6, Interface)
	fmt.Fprintf(&b, "link set %s up\n", Interface)
	switch {
	case h.Name == t.Client.Name:
		for _, a := range t.ClientSources {
			fmt.Fprintf(&b, "addr add %s/16 dev %s\n", a, Interface)
		}
		if t.Router != nil {
			fmt.Fprintf(&b, "route add default via %s\n", RouterWAN)
			fmt.Fprintf(&b, "route add default via %s\n", RouterWAN6)
		}
	case isRouter:
		fmt.Fprintf(&b, "addr add %s/24 dev %s\n", RouterWAN, RouterWANInterface)
		fmt.Fprintf(&b, "addr add %s/64 dev %s nodad\n", RouterWAN6, RouterWANInterface)
		fmt.Fprintf(&b, "link set %s up\n", RouterWANInterface)
		if cfg.ClientAddrs > 0 {
			fmt.Fprintf(&b, "route add %s via %s\n", ClientNet, t.Client.V4)
		}
	case t.Router != nil:
		fmt.Fprintf(&b, "route add default via %s\n", t.Router.V4)
		fmt.Fprintf(&b, "route add default via %s\n", t.Router.V6)
	case cfg.ClientAddrs > 0:
		fmt.Fprintf(&b, "route add %s via %s\n", ClientNet, gw)
	}
	if err := ipBatch(h.Name, b.String()); err != nil {
		return err
	}
	return nil
}

// ipBatch runs `ip [-n NS] -batch -` with the given commands.
func ipBatch(ns, cmds string) error {
	args := []string{}
	if ns != "" {
		args = append(args, "-n", ns)
	}
	args = append(args, "-batch", "-")
	cmd := exec.Command("ip", args...)
	cmd.Stdin = strings.NewReader(cmds)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %v\n%s\ncommands:\n%s", strings.Join(args, " "), err, out.String(), cmds)
	}
	return nil
}

// IP runs one `ip` command in a namespace ("" for the root) and returns its output.
func IP(ns string, args ...string) (string, error) {
	if ns != "" {
		args = append([]string{"-n", ns}, args...)
	}
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// SetLink brings a host's link to the segment down (cut) or up (heal), from the
// bridge side, as a switch port would.
func SetLink(h Host, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	// Over netlink from this process, not through `ip`: a process start
	// costs up to a second in the guest, and the scenarios time a failover
	// from the cut.
	link, err := netlink.LinkByName("v-" + h.Name)
	if err != nil {
		return fmt.Errorf("set %s's link %s: %w", h.Name, state, err)
	}
	if up {
		err = netlink.LinkSetUp(link)
	} else {
		err = netlink.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("set %s's link %s: %w", h.Name, state, err)
	}
	return nil
}

// Run runs a command inside a namespace and returns its combined output.
func Run(ns string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := netns.Start(ns, cmd); err != nil {
		return "", err
	}
	err := cmd.Wait()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(args, " "), ns, err, out.String())
	}
	return out.String(), nil
}

// StartNodeServer starts integration/cmd/nodeserver in a node's namespace, answering
// with the node's name on NodePort (TCP and UDP) and /healthz on HealthPort. Its log
// goes to logDir/NAME.log.
func StartNodeServer(h Host, bin, logDir string, extraArgs ...string) (*exec.Cmd, error) {
	args := append([]string{"--name", h.Name, "--port", fmt.Sprint(NodePort), "--health-port", fmt.Sprint(HealthPort)}, extraArgs...)
	return StartLogged(h.Name, filepath.Join(logDir, h.Name+".log"), bin, args...)
}

// StartLogged starts a process in a namespace with stdout and stderr appended to logPath.
func StartLogged(ns, logPath, bin string, args ...string) (*exec.Cmd, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	err = netns.Start(ns, cmd)
	f.Close() // the child holds its own copy
	if err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", bin, ns, err)
	}
	return cmd, nil
}

// WaitAnswer retries probe.Once until it succeeds or the time is up, and returns the
// answering node's name.
func WaitAnswer(o probe.Options, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	if o.Timeout == 0 {
		o.Timeout = 500 * time.Millisecond
	}
	for {
		var name string
		err := netns.Do(o.NetNS, func() error {
			var err error
			name, err = probe.Once(probe.Options{Proto: o.Proto, Addr: o.Addr, Timeout: o.Timeout})
			return err
		})
		if err == nil {
			return name, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s %s: no answer within %s: %w", o.Proto, o.Addr, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
