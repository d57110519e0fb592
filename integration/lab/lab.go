// Package lab runs a whole edgelb cluster inside a User-Mode Linux guest: the topology
// of integration/topo, a nodeserver on every "Kubernetes node", and real lbd
// processes on the edge hosts driven by lbctl's command tree. The guest scenarios
// (integration/e2e) and the sandbox (integration/cmd/sandbox) are built on it. It
// must run as root inside the guest.
package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cloudflare/ipvs"
	"github.com/google/nftables/expr"

	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/topo"
	"github.com/edgelb/edgelb/lbctl/cli"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Config of a lab.
type Config struct {
	Bin      string   // directory holding lbd and nodeserver (lbctl runs in-process)
	Work     string   // directory for logs (visible on the host)
	DataRoot string   // lbd data directories (default /run/edgelb: the guest's tmpfs)
	Edges    int      // edge hosts running lbd (default 3)
	Nodes    int      // Kubernetes nodes running nodeserver (default 3)
	Members  int      // how many edge hosts start lbd (default all)
	Clients  int      // extra client source addresses (topo.Config.ClientAddrs)
	DataMode string   // lbd --data-plane (default "ipvs")
	LBDArgs  []string // extra flags for every lbd
	// LBDConfig, when set, is YAML written to Work/lbd.yaml and passed as --config.
	LBDConfig string
	// Capabilities, when set, are all lbd (and the fence it starts) may use:
	// it runs as root under setpriv with only these in its bounding set, as
	// the systemd unit runs it (UnitCapabilities).
	Capabilities []string
	// Router, when set, builds the BGP lab: a router namespace running BIRD
	// between the client and the lan (topo.Config.Router, router.go).
	Router *RouterConfig
	// Ready is how long a member may take to report SERVING (default 60s: the guest
	// has one slow CPU).
	Ready time.Duration
	Logf  func(format string, args ...any) // progress (default: none)
}

// UnitCapabilities are the capabilities configs/systemd/lbd.service grants
// lbd (its packaging test checks that they match).
var UnitCapabilities = []string{"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}

// Lab is a running cluster.
type Lab struct {
	Cfg     Config
	Topo    *topo.Topology
	Members []*Member
	// Router is the BGP lab's router (nil without Config.Router).
	Router *Router
	nodes  []*exec.Cmd
	stalls *stallWatch
	cpu    *cpuWatch // nil unless EDGELB_LAB_CPU=1
}

// Member is one lbd on an edge host.
type Member struct {
	lab     *Lab
	Host    topo.Host
	ID      string
	API     string // host:port
	Raft    string
	DataDir string
	LogPath string
	Join    []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
	cut    bool
	// ExtraArgs are flags for this member's lbd alone, after the lab's
	// (a later flag wins): a scenario that starts one member differently.
	ExtraArgs []string
	// guardRule is the nftables guard rule SetGuard(false) removed.
	guardRule []expr.Any
}

func (c *Config) defaults() {
	if c.DataRoot == "" {
		c.DataRoot = "/run/edgelb"
	}
	if c.Edges == 0 {
		c.Edges = 3
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Members == 0 || c.Members > c.Edges {
		c.Members = c.Edges
	}
	if c.DataMode == "" {
		c.DataMode = "ipvs"
	}
	if c.Ready == 0 {
		c.Ready = 60 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
}

// Start builds the topology, starts the node servers and the lbd members (the first
// bootstraps, the others join it) and waits until every member reports SERVING.
func Start(cfg Config) (*Lab, error) {
	cfg.defaults()
	if err := os.MkdirAll(cfg.Work, 0o755); err != nil {
		return nil, err
	}
	l := &Lab{Cfg: cfg, stalls: startStallWatch()}
	if os.Getenv("EDGELB_LAB_CPU") == "1" {
		l.cpu = startCPUWatch()
	}
	t0 := time.Now()
	tp, err := topo.Build(topo.Config{Edges: cfg.Edges, Nodes: cfg.Nodes, ClientAddrs: cfg.Clients, Router: cfg.Router != nil})
	if err != nil {
		l.stalls.close()
		if l.cpu != nil {
			l.cpu.close()
		}
		return nil, err
	}
	l.Topo = tp
	cfg.Logf("topology: %d edges, %d nodes, client (%s)", cfg.Edges, cfg.Nodes, time.Since(t0).Round(time.Millisecond))
	if cfg.Router != nil {
		t1 := time.Now()
		if err := l.startRouter(*cfg.Router); err != nil {
			l.Close()
			return nil, err
		}
		cfg.Logf("router: BIRD up in %s (%s)", tp.Router.Name, time.Since(t1).Round(time.Millisecond))
	}
	for _, n := range tp.Nodes {
		cmd, err := topo.StartNodeServer(n, filepath.Join(cfg.Bin, "nodeserver"), cfg.Work)
		if err != nil {
			l.Close()
			return nil, err
		}
		l.nodes = append(l.nodes, cmd)
	}
	for i, h := range tp.Edges {
		m := &Member{
			lab: l, Host: h, ID: h.Name,
			API:     fmt.Sprintf("%s:%d", h.V4, topo.APIPort),
			Raft:    fmt.Sprintf("%s:%d", h.V4, topo.RaftPort),
			DataDir: filepath.Join(cfg.DataRoot, h.Name),
			LogPath: filepath.Join(cfg.Work, "lbd-"+h.Name+".log"),
		}
		if i > 0 {
			m.Join = []string{l.Members[0].API}
		}
		l.Members = append(l.Members, m)
	}
	for i, m := range l.Members[:cfg.Members] {
		t1 := time.Now()
		if err := m.Start(); err != nil {
			l.Close()
			return nil, err
		}
		if err := m.WaitServing(cfg.Ready); err != nil {
			l.Close()
			return nil, fmt.Errorf("%w\n--- %s log ---\n%s", err, m.ID, m.LogTail(40))
		}
		cfg.Logf("lbd %s serving (%s) after %s", m.ID, map[bool]string{true: "bootstrap", false: "join"}[i == 0], time.Since(t1).Round(time.Millisecond))
	}
	return l, nil
}

// Close stops every process the lab started.
func (l *Lab) Close() {
	for _, m := range l.Members {
		m.Kill()
	}
	l.Router.stop()
	for _, c := range l.nodes {
		if c.Process != nil {
			c.Process.Kill()
		}
	}
	l.stalls.close()
	l.Cfg.Logf("%s", stallSummary(l.stalls.since(time.Time{}), 5))
	if l.cpu != nil {
		l.cpu.close()
		l.Cfg.Logf("%s", l.cpu.summary())
	}
}

// Endpoints is the lbctl --endpoints value for the running members that are
// not cut off the segment.
func (l *Lab) Endpoints() string {
	var eps []string
	for _, m := range l.Members {
		if m.Running() && !m.IsCut() {
			eps = append(eps, m.API)
		}
	}
	return strings.Join(eps, ",")
}

// Member returns the member with that id (nil if none).
func (l *Lab) Member(id string) *Member {
	for _, m := range l.Members {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// LBCTL runs lbctl against the running members and returns its stdout; the
// error carries the exit code and stderr. It runs lbctl's own command tree
// (lbctl/cli, all of the binary but main's os.Exit) in this process, which
// sits in the management namespace: in the guest's kernel, which does not
// preempt, starting a Go binary can hold the one CPU for most of a second,
// long enough to starve the lbd whose timing a scenario measures.
func (l *Lab) LBCTL(args ...string) (string, error) {
	full := append([]string{"--endpoints", l.Endpoints()}, args...)
	var out, errb bytes.Buffer
	if code := cli.ExecuteContext(context.Background(), full, &out, &errb); code != 0 {
		return out.String(), &LBCTLError{Args: args, Code: code, Stderr: strings.TrimSpace(errb.String())}
	}
	return out.String(), nil
}

// LBCTLError is a failed lbctl run.
type LBCTLError struct {
	Args   []string
	Code   int
	Stderr string
}

func (e *LBCTLError) Error() string {
	return fmt.Sprintf("lbctl %s: exit %d: %s", strings.Join(e.Args, " "), e.Code, e.Stderr)
}

// VIP reads a virtual service with lbctl vip get -o json.
func (l *Lab) VIP(name string) (*edgelbv1.VirtualService, error) {
	out, err := l.LBCTL("vip", "get", name, "-o", "json")
	if err != nil {
		return nil, err
	}
	vs := &edgelbv1.VirtualService{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(out), vs); err != nil {
		return nil, fmt.Errorf("vip get %s: %w: %s", name, err, out)
	}
	return vs, nil
}

// WaitOwner waits until the virtual service has an owner among the running members
// and returns it.
func (l *Lab) WaitOwner(name string, within time.Duration) (*Member, *edgelbv1.VirtualService, error) {
	deadline := time.Now().Add(within)
	for {
		vs, err := l.VIP(name)
		if err == nil && vs.GetOwner() != "" {
			if m := l.Member(vs.GetOwner()); m != nil && m.Running() {
				return m, vs, nil
			}
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("owner %q", vs.GetOwner())
			}
			return nil, vs, fmt.Errorf("vip %s: no running owner within %s: %w", name, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Cut takes the member's host off the segment (its switch port goes down): a
// partition, or to its peers and clients a dead host. Heal undoes it.
func (m *Member) Cut() error  { return m.setLink(false) }
func (m *Member) Heal() error { return m.setLink(true) }

func (m *Member) setLink(up bool) error {
	if err := topo.SetLink(m.Host, up); err != nil {
		return fmt.Errorf("%s link up=%v: %w", m.ID, up, err)
	}
	m.mu.Lock()
	m.cut = !up
	m.mu.Unlock()
	return nil
}

// MutePeers makes a one-way partition: everything the member's host sends to
// the other members is dropped (an output chain of the lab's own nftables
// table in its namespace, see mutePeers), while their packets still reach it and it stays on the
// segment for clients and nodes. It hears the raft leader; the leader never
// hears back. UnmutePeers undoes it.
func (m *Member) MutePeers() error   { return m.mutePeers(true) }
func (m *Member) UnmutePeers() error { return m.mutePeers(false) }

// IsCut reports whether the member's host is off the segment.
func (m *Member) IsCut() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cut
}

// MAC is the hardware address of the member's data interface.
func (m *Member) MAC() (string, error) {
	var mac string
	err := netns.Do(m.Host.Name, func() error {
		ifc, err := net.InterfaceByName(topo.Interface)
		if err != nil {
			return err
		}
		mac = ifc.HardwareAddr.String()
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("%s: hardware address of %s: %w", m.ID, topo.Interface, err)
	}
	return mac, nil
}

// HasAddr reports whether the member's data interface holds ip. It asks the
// kernel over netlink from a thread in the member's namespace, not through
// `ip`: scenarios poll it often, and in the guest a process start costs up
// to seconds of its one CPU.
func (m *Member) HasAddr(ip string) bool {
	want, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	found := false
	netns.Do(m.Host.Name, func() error {
		ifc, err := net.InterfaceByName(topo.Interface)
		if err != nil {
			return err
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if got, ok := netip.AddrFromSlice(n.IP); ok && got.Unmap() == want {
					found = true
				}
			}
		}
		return nil
	})
	return found
}

// Neighbour returns the hardware address ns's neighbour table holds for ip
// ("" when it holds none, or an incomplete or failed entry).
func Neighbour(ns, ip string) string {
	out, err := topo.IP(ns, "neigh", "show", ip)
	if err != nil {
		return ""
	}
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "lladdr" {
			return f[i+1]
		}
	}
	return ""
}

// Start starts the member's lbd (again, after Kill or Stop: it rejoins from its data
// directory).
func (m *Member) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil && !isClosed(m.exited) {
		return fmt.Errorf("lbd %s already running", m.ID)
	}
	cfg := m.lab.Cfg
	args := []string{
		"--id", m.ID, "--data-dir", m.DataDir,
		"--api-addr", m.API, "--raft-addr", m.Raft,
		"--data-plane", cfg.DataMode, "--interface", topo.Interface,
		"--insecure-plaintext",
	}
	if len(m.Join) > 0 {
		args = append(args, "--join", strings.Join(m.Join, ","))
	}
	if cfg.LBDConfig != "" {
		p := filepath.Join(cfg.Work, "lbd.yaml")
		if err := os.WriteFile(p, []byte(cfg.LBDConfig), 0o644); err != nil {
			return err
		}
		args = append(args, "--config", p)
	}
	args = append(args, cfg.LBDArgs...)
	args = append(args, m.ExtraArgs...)
	f, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "==== %s lbd %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(args, " "))
	cmd := exec.Command(filepath.Join(cfg.Bin, "lbd"), args...)
	if len(cfg.Capabilities) > 0 {
		set := "-all"
		for _, c := range cfg.Capabilities {
			set += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
		}
		cmd = exec.Command("setpriv", append([]string{"--bounding-set", set, "--", filepath.Join(cfg.Bin, "lbd")}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := netns.Start(m.Host.Name, cmd); err != nil {
		return fmt.Errorf("start lbd %s: %w", m.ID, err)
	}
	m.cmd = cmd
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		err := cmd.Wait()
		m.mu.Lock()
		m.err = err
		m.mu.Unlock()
		close(exited)
	}(cmd, m.exited)
	return nil
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Running reports whether the member's lbd process is alive.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd != nil && !isClosed(m.exited)
}

// Pid of the running lbd (0 when not running).
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || isClosed(m.exited) {
		return 0
	}
	return m.cmd.Process.Pid
}

// Signal sends sig and waits up to within for the process to end; it kills it after
// that. It returns the process's exit error.
func (m *Member) Signal(sig syscall.Signal, within time.Duration) error {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.mu.Unlock()
	if cmd == nil || isClosed(exited) {
		return nil
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(within):
		if sig == syscall.SIGKILL {
			<-exited
			return fmt.Errorf("lbd %s did not exit within %s of %s", m.ID, within, sig)
		}
		// SIGQUIT makes the Go runtime write every goroutine's stack to
		// lbd's stderr (its log) and exit: what held the exit up.
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		b, _ := os.ReadFile(m.LogPath)
		return fmt.Errorf("lbd %s did not exit within %s of %s; stopped with SIGQUIT, its goroutines are in %s; the stopping one:\n%s",
			m.ID, within, sig, m.LogPath, StuckIn(string(b), "(*Daemon).Stop"))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// StuckIn returns, from a Go runtime's goroutine dump in log (the last one),
// the stacks of the goroutines whose frames name fn, or "" when none does.
func StuckIn(log, fn string) string {
	i := strings.LastIndex(log, "SIGQUIT: quit")
	if i < 0 {
		return ""
	}
	var out []string
	for _, g := range strings.Split(log[i:], "\n\n") {
		if strings.HasPrefix(g, "goroutine ") && strings.Contains(g, fn) {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// Kill SIGKILLs the member's lbd and waits for it.
func (m *Member) Kill() { m.Signal(syscall.SIGKILL, 5*time.Second) }

// Stop SIGTERMs the member's lbd and waits (up to 20s) for a clean exit.
func (m *Member) Stop() error { return m.Signal(syscall.SIGTERM, 20*time.Second) }

// WaitServing waits until the member's gRPC health service reports SERVING.
func (m *Member) WaitServing(within time.Duration) error {
	conn, err := grpc.NewClient(m.API, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(within)
	var last string
	for {
		if !m.Running() {
			return fmt.Errorf("lbd %s exited while starting: %v", m.ID, m.err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = resp.GetStatus().String()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lbd %s not SERVING within %s: %s", m.ID, within, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// LogTail returns the last n lines of the member's log.
func (m *Member) LogTail(n int) string {
	b, err := os.ReadFile(m.LogPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// IPVSSave returns the member's IPVS table as `ipvsadm -Sn` lines, sorted.
func (m *Member) IPVSSave() ([]string, error) {
	out, err := topo.Run(m.Host.Name, "ipvsadm", "-Sn")
	if err != nil {
		return nil, err
	}
	return sortedLines(out), nil
}

// GuardDrops counts the packets the member's takeover guard has dropped since
// its rules were last written (lbd/dataplane/snat).
func (m *Member) GuardDrops() (int, error) {
	if c, t, ok, err := m.nft(); err != nil {
		return 0, err
	} else if ok {
		defer c.CloseLasting()
		return guardDropsNft(c, t)
	}
	out, err := topo.Run(m.Host.Name, "iptables-legacy", "-t", "mangle", "-vnxL", "EDGELB-PREROUTING")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 2 && f[2] == "DROP" {
			p, err := strconv.Atoi(f[0])
			if err != nil {
				return 0, fmt.Errorf("iptables counters: %q: %w", l, err)
			}
			n += p
		}
	}
	return n, nil
}

// IPVSServices reads the member's IPVS services with their counters over
// netlink from this process. Loops that run while a scenario times a loss use
// it rather than ipvsadm: a process start stalls the guest's one CPU, long
// enough at the BGP lab's BFD timers to expire a session that lost nothing.
func (m *Member) IPVSServices() ([]ipvs.ServiceExtended, error) {
	var svcs []ipvs.ServiceExtended
	err := netns.Do(m.Host.Name, func() error {
		c, err := ipvs.New()
		if err != nil {
			return err
		}
		if cl, ok := c.(io.Closer); ok { // the interface has no Close; its client does
			defer cl.Close()
		}
		svcs, err = c.Services()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: read IPVS services: %w", m.ID, err)
	}
	return svcs, nil
}

// IPVSList returns `ipvsadm -Ln` (with extra flags, e.g. --stats) on the member.
func (m *Member) IPVSList(flags ...string) (string, error) {
	return topo.Run(m.Host.Name, "ipvsadm", append([]string{"-Ln"}, flags...)...)
}

// Conntrack returns the member's conntrack table (/proc/net/nf_conntrack).
func (m *Member) Conntrack() (string, error) {
	return topo.Run(m.Host.Name, "cat", "/proc/net/nf_conntrack")
}

// ConnEntries returns the lines of the member's IPVS connection table and of
// its conntrack table that match, their fields single-spaced: what a
// scenario logs of the connections it saw fail. err names a table that could
// not be read; the other's lines are still returned.
func (m *Member) ConnEntries(match func(line string) bool) (ipvs, ct []string, err error) {
	filter := func(table string) []string {
		var out []string
		for _, l := range strings.Split(table, "\n") {
			if match(l) {
				out = append(out, strings.Join(strings.Fields(l), " "))
			}
		}
		return out
	}
	conns, errIPVS := m.IPVSList("-c")
	track, errCT := m.Conntrack()
	return filter(conns), filter(track), errors.Join(errIPVS, errCT)
}

// Addrs returns the addresses on the member's data interface, as CIDR strings.
func (m *Member) Addrs() ([]string, error) {
	out, err := topo.IP(m.Host.Name, "-o", "addr", "show", "dev", topo.Interface)
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "inet" || f[i] == "inet6" {
				addrs = append(addrs, f[i+1])
			}
		}
	}
	return addrs, nil
}

// NATRules returns the member's SNAT rules: on nftables one line per VIP in
// its snat sets ("nft snat VIP"), else its iptables and ip6tables nat-table
// rules (legacy backend), as `-A ...` lines.
func (m *Member) NATRules() ([]string, error) {
	if m.RuleEngine() == "nftables" {
		vips, err := m.SNATVIPs()
		var rules []string
		for _, v := range vips {
			rules = append(rules, "nft snat "+v)
		}
		return rules, err
	}
	return m.iptablesNAT()
}

func (m *Member) iptablesNAT() ([]string, error) {
	var rules []string
	for _, bin := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
		out, err := topo.Run(m.Host.Name, bin, "-t", "nat")
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "-A ") {
				rules = append(rules, l)
			}
		}
	}
	return rules, nil
}

func sortedLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// Metrics is one scrape of a member's /metrics: series (name with labels) to value.
type Metrics map[string]float64

// Metrics scrapes the member's metrics listener (lbd's default, loopback in
// its namespace). The connection is opened in the namespace from this
// process rather than by curl: in the guest's kernel, which does not
// preempt, a process start can hold the one CPU for most of a second, long
// enough to starve lbd's BFD.
func (m *Member) Metrics() (Metrics, string, error) {
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := netns.Do(m.Host.Name, func() error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	resp, err := c.Get("http://127.0.0.1:7702/metrics")
	if err != nil {
		return nil, "", fmt.Errorf("scrape %s: %w", m.ID, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	out := string(b)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	if err != nil {
		return nil, out, fmt.Errorf("scrape %s: %w", m.ID, err)
	}
	series := Metrics{}
	for _, l := range strings.Split(out, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if i := strings.LastIndexByte(l, ' '); i > 0 {
			if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
				series[l[:i]] += v
			}
		}
	}
	return series, out, nil
}

// Sum adds up the series named name whose labels contain every match
// (`vip="10.0.0.1"`); found is false when none matched.
func (s Metrics) Sum(name string, match ...string) (total float64, found bool) {
	for k, v := range s {
		n, _, _ := strings.Cut(k, "{")
		ok := n == name
		for _, m := range match {
			ok = ok && strings.Contains(k, m)
		}
		if ok {
			total += v
			found = true
		}
	}
	return total, found
}
