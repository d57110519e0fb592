package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/probe"
	"github.com/edgelb/edgelb/integration/topo"
	"github.com/edgelb/edgelb/integration/uml"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// TestGuest runs inside the guest (started by TestUML): one lab, then the scenarios
// in order, each creating and deleting its own VIPs.
func TestGuest(t *testing.T) {
	if os.Getenv(guestEnv) != "1" || !uml.InGuest() {
		t.Skip("runs inside the User-Mode Linux guest only; see TestUML")
	}
	mode := os.Getenv("EDGELB_E2E_DATAPLANE")
	lbdConfig := guestLBDConfig
	switch v := os.Getenv("EDGELB_E2E_LBD_CONFIG"); v {
	case "":
	case "default":
		lbdConfig = ""
	default:
		b, err := os.ReadFile(v)
		if err != nil {
			t.Fatal(err)
		}
		lbdConfig = string(b)
	}
	if lbdConfig != "" {
		t.Logf("lbd config:\n%s", lbdConfig)
	}
	var lbdArgs []string
	if v := os.Getenv("EDGELB_E2E_SNAT"); v != "" {
		// The rule engine for every member: EDGELB_E2E_SNAT=iptables-legacy
		// runs the suite on the iptables fallback (auto, the default, takes
		// nftables where the kernel has it).
		lbdArgs = append(lbdArgs, "--snat", v)
	}
	l, err := lab.Start(lab.Config{
		LBDArgs:   lbdArgs,
		LBDConfig: lbdConfig,
		Bin:       os.Getenv("EDGELB_E2E_BIN"),
		Work:      os.Getenv("EDGELB_E2E_WORK"),
		DataMode:  mode,
		Clients:   512,
		// Every scenario runs lbd with only the systemd unit's capabilities.
		Capabilities: lab.UnitCapabilities,
		Logf:         t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	defer func() {
		if t.Failed() {
			for _, m := range l.Members {
				t.Logf("---- lbd %s (log tail) ----\n%s", m.ID, m.LogTail(60))
			}
		}
	}()
	mustLBCTL(t, l, "pool", "create", "lab4", "--range", topo.VIPPoolV4)
	mustLBCTL(t, l, "pool", "create", "lab6", "--range", topo.VIPPoolV6)

	s := &scenarios{l: l}
	t.Run("weights_tcp_udp", s.weights)
	t.Run("ipvs_exact_state", s.ipvsExact)
	t.Run("one_backend_change", s.oneBackendChange)
	t.Run("restart_lbd_under_traffic", s.restartUnderTraffic)
	t.Run("upgrade_from_iptables_under_traffic", s.upgradeFromIptables)
	t.Run("no_process_on_vip_path", s.noProcess)
	t.Run("delete_vip_cleans_up", s.deleteVIP)
	t.Run("ipv6_vip", s.ipv6)
	t.Run("direct_routing_keeps_client_address", s.directRouting)
	t.Run("sctp_weights_and_health", s.sctp)
	t.Run("announcements_teach_the_client", s.announcements)
	t.Run("takeover_without_sync_keeps_connections", s.sloppyTakeover)
	t.Run("takeover_guard_keeps_server_push", s.takeoverGuard)
	t.Run("stale_conntrack_of_a_reused_port", s.staleConntrack)
	t.Run("forwarded_entry_before_the_address", s.forwardedEntry)
	t.Run("tickle_acks_wake_silent_clients", s.tickleACKs)
	t.Run("handover_sends_the_connections", s.handoverSync)
	t.Run("source_ranges_drop_denied_clients", s.sourceRanges)
	t.Run("health_checks_follow_healthz", s.health)
	t.Run("metrics_after_traffic", s.metrics)
	// 10,000 connects (about a minute): asked for with
	// EDGELB_E2E_SLOWCONN=1. Its last CI-rehearsal run had 1 connect of
	// 10,000 needing a SYN retransmit, on the port of a connection the
	// owner's IPVS still carried as established from the VIP's earlier turn
	// (sync missed its close), which the takeover keeps on purpose: the
	// residue of issue 21's slow connects, not yet fixed.
	if os.Getenv("EDGELB_E2E_SLOWCONN") == "1" {
		t.Run("slow_connects", s.slowConnects)
	}
	t.Run("bench_conns_per_second", s.bench)
}

// guestLBDConfig is the guest's raft timing (lab.GuestRaft says why) with a
// long lease. EDGELB_E2E_LBD_CONFIG=default runs lbd's defaults; =FILE uses
// that file.
//
// The lease is long because restart_lbd_under_traffic restarts lbd within it
// (a restart inside the lease keeps the VIPs; the fence withdraws them after
// it): the guest has one emulated CPU, and with the scenario's traffic on it an
// lbd start (exec of a 27 MB binary, iptables, the fence process, raft catch-up)
// took 11-22 s on an idle host and over 60 s on a loaded one.
const guestLBDConfig = lab.GuestRaft + `ownership:
  lease: 120s
  grace: 121s
`

// restartWithin bounds an lbd restart in restart_lbd_under_traffic: inside the
// lease above, with room for the kernel checks that follow.
const restartWithin = 100 * time.Second

// guestWait bounds how long a scenario waits for the kernel to follow a
// change. In the guest every process start (lbctl, ipvsadm, iptables) costs
// 0.5-4 s depending on the host, so this is generous; the scenarios log what
// they measured.
const guestWait = 60 * time.Second

type scenarios struct{ l *lab.Lab }

func mustLBCTL(t *testing.T, l *lab.Lab, args ...string) string {
	t.Helper()
	t0 := time.Now()
	out, err := l.LBCTL(args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lbctl %s (%s)", strings.Join(args, " "), time.Since(t0).Round(time.Millisecond))
	return out
}

// moveVIP hands vip to member to with lbctl vip move. Under load the raft
// leader can change while the move commits: lbctl exits 8 (Unavailable,
// OUTCOME_UNKNOWN or no leader yet), and since a move to the same member is
// idempotent it is simply asked again. Any other failure fails t.
func moveVIP(t *testing.T, l *lab.Lab, vip, to string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		_, err := l.LBCTL("vip", "move", vip, to)
		if err == nil {
			t.Logf("lbctl vip move %s %s (%s)", vip, to, time.Since(t0).Round(time.Millisecond))
			return
		}
		var le *lab.LBCTLError
		if !errors.As(err, &le) || le.Code != 8 || attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("%v: asking again", err)
		time.Sleep(500 * time.Millisecond)
	}
}

const client = "client"

func nodeBackend(i int, weight int) string {
	return fmt.Sprintf("%s:%d,weight=%d", topo.NodeHost(i).V4, topo.NodePort, weight)
}

// createVIP creates a virtual service, waits for its owner and for the VIP to answer
// from the client on every given address:port.
func (s *scenarios) createVIP(t *testing.T, name string, args []string, answer ...probe.Options) *lab.Member {
	t.Helper()
	mustLBCTL(t, s.l, append([]string{"vip", "create", name, "--wait"}, args...)...)
	owner, vs, err := s.l.WaitOwner(name, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for _, o := range answer {
		o.NetNS = client
		if _, err := topo.WaitAnswer(o, guestWait); err != nil {
			s.dumpMember(t, owner)
			t.Fatalf("vip %s (%s, owner %s): %v", name, vs.GetVip(), owner.ID, err)
		}
	}
	t.Logf("vip %s = %s owned by %s, answering after %s", name, vs.GetVip(), owner.ID, time.Since(t0).Round(time.Millisecond))
	return owner
}

func (s *scenarios) deleteVIP_(t *testing.T, name string) {
	t.Helper()
	if _, err := s.l.LBCTL("vip", "delete", name); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

func (s *scenarios) dumpMember(t *testing.T, m *lab.Member) {
	t.Helper()
	ipvs, _ := m.IPVSList()
	addrs, _ := m.Addrs()
	nat, _ := m.NATRules()
	t.Logf("%s: ipvsadm -Ln:\n%s\naddresses: %v\nnat rules:\n%s", m.ID, ipvs, addrs, strings.Join(nat, "\n"))
}

// checkProportions wants counts[nodeI] ≈ total*w_i/Σw within tol (a share of total).
func checkProportions(t *testing.T, what string, r probe.CountResult, weights map[string]int, tol float64) {
	t.Helper()
	sum := 0
	for _, w := range weights {
		sum += w
	}
	if r.OK == 0 {
		t.Errorf("%s: no answers: %s", what, r)
		return
	}
	if r.Errors > 0 {
		t.Errorf("%s: %d errors: %v", what, r.Errors, r.Samples)
	}
	for node, w := range weights {
		want := float64(r.OK) * float64(w) / float64(sum)
		got := float64(r.Counts[node])
		if math.Abs(got-want) > tol*float64(r.OK)+1 {
			t.Errorf("%s: %s got %.0f answers, want %.0f (weight %d of %d) ± %.0f%%: %s", what, node, got, want, w, sum, tol*100, r)
		}
	}
	for node := range r.Counts {
		if _, ok := weights[node]; !ok {
			t.Errorf("%s: answer from %s, which is not a backend", what, node)
		}
	}
	t.Logf("%s: %s", what, r)
}

func (s *scenarios) weights(t *testing.T) {
	const name = "weights"
	vip := "10.0.0.200"
	args := []string{"--vip", vip, "--port", "tcp/80:30080", "--port", "udp/80:30080", "--scheduler", "wrr",
		"--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 2), "--backend", nodeBackend(3, 3)}
	tcp := probe.Options{Proto: "tcp", Addr: vip + ":80", NetNS: client}
	udp := probe.Options{Proto: "udp", Addr: vip + ":80", NetNS: client}
	s.createVIP(t, name, args, tcp, udp)
	defer s.deleteVIP_(t, name)
	w := map[string]int{"node1": 1, "node2": 2, "node3": 3}
	ctx := context.Background()
	r, err := probe.Count(ctx, tcp, 600, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkProportions(t, "tcp wrr 1:2:3", r, w, 0.03)
	r, err = probe.Count(ctx, udp, 600, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkProportions(t, "udp wrr 1:2:3", r, w, 0.03)

	// The default scheduler, Maglev hashing, with weights. IPVS mh hashes the source
	// address (and the source port only with the mh-port flag), so the spread shows
	// over many clients: one connection from each of 512 source addresses. Proportional,
	// not exact.
	mustLBCTL(t, s.l, "vip", "update", name, "--scheduler", "mh")
	lines := waitIPVS(t, s.l, name, func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "-A -t "+vip+":80 -s mh") })
	})
	t.Logf("owner's table with mh:\n%s", strings.Join(lines, "\n"))
	// UDP entries from the wrr rounds (same source ports) would still pin to the old
	// choice: flush the client side by using the other source addresses only.
	many := s.l.Topo.ClientSources
	tcpMany, udpMany := tcp, udp
	tcpMany.Sources, udpMany.Sources = many, many
	r, err = probe.Count(ctx, tcpMany, len(many), 4)
	if err != nil {
		t.Fatal(err)
	}
	checkProportions(t, fmt.Sprintf("tcp mh 1:2:3 from %d clients", len(many)), r, w, 0.08)
	r, err = probe.Count(ctx, udpMany, len(many), 4)
	if err != nil {
		t.Fatal(err)
	}
	checkProportions(t, fmt.Sprintf("udp mh 1:2:3 from %d clients", len(many)), r, w, 0.08)
	// From one client address, every connection lands on one node unless the service
	// hashes source ports too: record which, for the reader.
	r, _ = probe.Count(ctx, tcp, 60, 2)
	t.Logf("tcp mh from a single client address: %s", r)
}

// waitIPVS polls the owner's ipvsadm -Sn until ok.
func waitIPVS(t *testing.T, l *lab.Lab, name string, ok func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(guestWait)
	var lines []string
	for {
		owner, _, err := l.WaitOwner(name, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		lines, err = owner.IPVSSave()
		if err == nil && ok(lines) {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: ipvsadm -Sn did not reach the wanted state within %s; it holds:\n%s", owner.ID, guestWait, strings.Join(lines, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *scenarios) ipvsExact(t *testing.T) {
	const name = "exact"
	vip := "10.0.0.201"
	owner := s.createVIP(t, name, []string{"--vip", vip, "--port", "tcp/80:30080", "--port", "udp/53:30080", "--scheduler", "wlc",
		"--persistence", "300", "--backend", nodeBackend(1, 5), "--backend", nodeBackend(2, 1), "--backend", nodeBackend(3, 1) + ",drained"},
		probe.Options{Addr: vip + ":80"})
	defer s.deleteVIP_(t, name)
	want := []string{
		"-A -t " + vip + ":80 -s wlc -p 300",
		"-a -t " + vip + ":80 -r 10.0.0.21:30080 -m -w 5",
		"-a -t " + vip + ":80 -r 10.0.0.22:30080 -m -w 1",
		"-a -t " + vip + ":80 -r 10.0.0.23:30080 -m -w 0",
		"-A -u " + vip + ":53 -s wlc -p 300",
		"-a -u " + vip + ":53 -r 10.0.0.21:30080 -m -w 5",
		"-a -u " + vip + ":53 -r 10.0.0.22:30080 -m -w 1",
		"-a -u " + vip + ":53 -r 10.0.0.23:30080 -m -w 0",
	}
	sort.Strings(want)
	got, err := owner.IPVSSave()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("owner %s ipvsadm -Sn:\n%s\nwant exactly:\n%s", owner.ID, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	list, _ := owner.IPVSList()
	t.Logf("owner %s ipvsadm -Ln:\n%s", owner.ID, list)
	// The other members are hot standbys: the same IPVS entries, ready for a
	// takeover that only adds the address, but never the address itself.
	for _, m := range s.l.Members {
		if m == owner {
			continue
		}
		lines, err := m.IPVSSave()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(lines, want) {
			t.Errorf("standby %s ipvsadm -Sn:\n%s\nwant the owner's:\n%s", m.ID, strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		addrs, _ := m.Addrs()
		for _, a := range addrs {
			if strings.HasPrefix(a, vip+"/") {
				t.Errorf("%s (not the owner) has the VIP address %s", m.ID, a)
			}
		}
	}
	// The owner has the VIP as a /32, a SNAT rule for it, and the sysctls nat mode needs.
	addrs, _ := owner.Addrs()
	if !slices.Contains(addrs, vip+"/32") {
		t.Errorf("owner %s addresses %v lack %s/32", owner.ID, addrs, vip)
	}
	nat, _ := owner.NATRules()
	if !slices.ContainsFunc(nat, func(r string) bool { return strings.Contains(r, vip) }) {
		t.Errorf("owner %s has no nat rule for %s:\n%s", owner.ID, vip, strings.Join(nat, "\n"))
	}
	// ip_forward: IPVS NAT replies are forwarded packets; without it the client's SYN
	// reaches the node but no SYN-ACK comes back (checked in this guest).
	for key, want := range map[string]string{"net.ipv4.vs.conntrack": "1", "net.ipv4.vs.expire_nodest_conn": "1", "net.ipv4.ip_forward": "1", "net.netfilter.nf_conntrack_tcp_be_liberal": "1"} {
		got, err := netns.ReadSysctl(owner.Host.Name, key)
		if err != nil || strings.TrimSpace(got) != want {
			t.Errorf("owner %s: %s = %q (%v), want %s", owner.ID, key, strings.TrimSpace(got), err, want)
		}
	}
}

// destStats parses `ipvsadm -Ln --stats` into "proto vip:port -> dest" -> Conns.
func destStats(out string) map[string]int64 {
	stats := map[string]int64{}
	svc := ""
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		switch {
		case f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP":
			svc = f[0] + " " + f[1]
			n, _ := strconv.ParseInt(f[2], 10, 64)
			stats[svc] = n
		case f[0] == "->" && svc != "" && f[1] != "RemoteAddress:Port":
			n, _ := strconv.ParseInt(f[2], 10, 64)
			stats[svc+" -> "+f[1]] = n
		}
	}
	return stats
}

func diffLines(before, after []string) (removed, added []string) {
	for _, l := range before {
		if !slices.Contains(after, l) {
			removed = append(removed, l)
		}
	}
	for _, l := range after {
		if !slices.Contains(before, l) {
			added = append(added, l)
		}
	}
	return
}

func (s *scenarios) oneBackendChange(t *testing.T) {
	const name = "change"
	vip := "10.0.0.202"
	tcp := probe.Options{Addr: vip + ":80", NetNS: client}
	owner := s.createVIP(t, name, []string{"--vip", vip, "--port", "tcp/80:30080", "--scheduler", "rr",
		"--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 1), "--backend", nodeBackend(3, 1)}, tcp)
	defer s.deleteVIP_(t, name)

	hold, err := probe.StartHold(tcp, 12, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	logRedials(t, hold)
	time.Sleep(500 * time.Millisecond)
	before, _ := owner.IPVSSave()
	statsOut, _ := owner.IPVSList("--stats")
	statsBefore := destStats(statsOut)

	// 1. A weight.
	mustLBCTL(t, s.l, "backend", "set", name, "--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 4), "--backend", nodeBackend(3, 1))
	after := waitIPVS(t, s.l, name, func(l []string) bool { return slices.Contains(l, "-a -t "+vip+":80 -r 10.0.0.22:30080 -m -w 4") })
	rm, add := diffLines(before, after)
	if len(rm) != 1 || len(add) != 1 || !strings.Contains(rm[0], "10.0.0.22:30080") {
		t.Errorf("weight change of node2: removed %v, added %v; want only node2's line changed", rm, add)
	}
	statsOut, _ = owner.IPVSList("--stats")
	statsAfter := destStats(statsOut)
	for k, v := range statsBefore {
		if statsAfter[k] < v {
			t.Errorf("counter of %s went from %d to %d: the entry was recreated", k, v, statsAfter[k])
		}
	}
	time.Sleep(500 * time.Millisecond)

	// 2. Remove node3.
	before = after
	mustLBCTL(t, s.l, "backend", "remove", name, fmt.Sprintf("%s:%d", topo.NodeHost(3).V4, topo.NodePort))
	after = waitIPVS(t, s.l, name, func(l []string) bool {
		return !slices.ContainsFunc(l, func(x string) bool { return strings.Contains(x, "10.0.0.23:30080") })
	})
	rm, add = diffLines(before, after)
	if len(rm) != 1 || len(add) != 0 || !strings.Contains(rm[0], "10.0.0.23:30080") {
		t.Errorf("removal of node3: removed %v, added %v; want only node3's line removed", rm, add)
	}

	// 3. Add it back with weight 2.
	before = after
	mustLBCTL(t, s.l, "backend", "add", name, fmt.Sprintf("%s:%d", topo.NodeHost(3).V4, topo.NodePort), "--weight", "2")
	after = waitIPVS(t, s.l, name, func(l []string) bool { return slices.Contains(l, "-a -t "+vip+":80 -r 10.0.0.23:30080 -m -w 2") })
	rm, add = diffLines(before, after)
	if len(rm) != 0 || len(add) != 1 {
		t.Errorf("adding node3: removed %v, added %v; want one line added", rm, add)
	}
	time.Sleep(300 * time.Millisecond)

	res := hold.Stop()
	t.Logf("held %d connections %v: %d pings, broken %d", res.Opened, res.Nodes, res.Pings, len(res.Broken))
	for _, b := range res.Broken {
		// Connections to a removed backend may end (expire_nodest_conn); no other may.
		if b.Node != "node3" {
			t.Errorf("connection %d to %s broke at %s: %s", b.Conn, b.Node, b.After.Round(time.Millisecond), b.Err)
		}
	}
}

// leader waits for a raft leader and names it. On a loaded machine the guest's
// cluster is at times between leaders for seconds (seen: "no leader elected"
// right after a scenario that restarted members): a scenario waits for one
// rather than fail on the moment.
func (s *scenarios) leader(t *testing.T) string {
	t.Helper()
	for t0 := time.Now(); ; time.Sleep(300 * time.Millisecond) {
		out, err := s.l.LBCTL("leader", "-o", "json")
		var v struct {
			Leader struct {
				ID string `json:"id"`
			} `json:"leader"`
		}
		if err == nil {
			if err = json.Unmarshal([]byte(out), &v); err == nil && v.Leader.ID != "" {
				return v.Leader.ID
			}
		}
		if time.Since(t0) > guestWait {
			t.Fatalf("no raft leader within %s: lbctl leader -o json: %v: %s", guestWait, err, out)
		}
	}
}

func (s *scenarios) restartUnderTraffic(t *testing.T) {
	for _, how := range []struct {
		name string
		sig  syscall.Signal
	}{{"sigkill", syscall.SIGKILL}, {"sigterm", syscall.SIGTERM}} {
		t.Run(how.name, func(t *testing.T) { s.restartOnce(t, how.sig) })
	}
}

func (s *scenarios) restartOnce(t *testing.T, sig syscall.Signal) {
	name := "restart-" + strings.ToLower(strings.TrimPrefix(sig.String(), "SIG"))
	vip := "10.0.0.203"
	// Pin the VIP to a member that is not the raft leader, so the restart tests the
	// data plane's adoption of kernel state, not a change of leader or owner.
	leader := s.leader(t)
	pin := ""
	for _, m := range s.l.Members {
		if m.ID != leader && m.Running() {
			pin = m.ID
			break
		}
	}
	// A new connection or datagram fails when it is not answered within 3 s
	// or (TCP) needed a retransmission: a lost SYN, request or datagram is
	// what a gap in serving shows as, however short. With a 1 s timeout,
	// answers merely slowed down on a loaded guest (the restarting lbd takes
	// its one CPU for seconds) failed while the kernel kept serving.
	tcp := probe.Options{Addr: vip + ":80", NetNS: client, Timeout: 3 * time.Second, NoRetransmit: true}
	udp := probe.Options{Proto: "udp", Addr: vip + ":80", NetNS: client, Timeout: 3 * time.Second}
	owner := s.createVIP(t, name, []string{"--vip", vip, "--pin", pin, "--port", "tcp/80:30080", "--port", "udp/80:30080",
		"--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 1), "--backend", nodeBackend(3, 1)}, tcp, udp)
	defer s.deleteVIP_(t, name)
	if owner.ID != pin {
		t.Fatalf("owner %s, pinned to %s", owner.ID, pin)
	}
	before, _ := owner.IPVSSave()
	// Traffic light enough to leave the guest's one CPU to the restarting lbd,
	// dense enough that a gap of a second would show.
	hold, steady := startRestartTraffic(t, tcp)
	steadyUDP, err := probe.StartSteady(udp, 5, 2)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	steady.Mark()
	t0 := time.Now()
	err = owner.Signal(sig, 20*time.Second)
	t.Logf("%s %s: exited after %s (%v)", sig, owner.ID, time.Since(t0).Round(time.Millisecond), err)
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	if err := owner.WaitServing(restartWithin); err != nil {
		t.Logf("---- lbd %s (log tail) ----\n%s", owner.ID, owner.LogTail(40))
		t.Fatal(err)
	}
	t.Logf("%s serving again %s after the signal", owner.ID, time.Since(t0).Round(time.Millisecond))
	// Keep the traffic going while the restarted lbd reconciles (up to 15 s for the
	// table to be what it was, then 2 s more).
	var after []string
	for deadline := time.Now().Add(guestWait); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if after, _ = owner.IPVSSave(); slices.Equal(before, after) {
			break
		}
	}
	time.Sleep(2 * time.Second)
	hr := hold.Stop()
	sr := steady.Stop(false)
	ur := steadyUDP.Stop(false)
	after, _ = owner.IPVSSave()
	if !slices.Equal(before, after) {
		t.Errorf("IPVS before the restart:\n%s\nafter:\n%s", strings.Join(before, "\n"), strings.Join(after, "\n"))
	}
	t.Logf("held: %d/%d kept, %d pings; new tcp: %d/%d ok, longest outage %s; new udp: %d/%d ok",
		hr.Kept, hr.Opened, hr.Pings, sr.OK, sr.Attempts, sr.LongestOutage.Round(time.Millisecond), ur.OK, ur.Attempts)
	reportBroken(t, "held", hr)
	if len(hr.Broken) > 0 {
		logVIPState(t, owner, vip)
	}
	if sr.Failed > 0 || ur.Failed > 0 {
		t.Errorf("new connections failed during the restart: tcp %d of %d, udp %d of %d", sr.Failed, sr.Attempts, ur.Failed, ur.Attempts)
	}
}

func (s *scenarios) deleteVIP(t *testing.T) {
	const name = "delete"
	vip := "10.0.0.204"
	tcp := probe.Options{Addr: vip + ":80", NetNS: client}
	owner := s.createVIP(t, name, []string{"--vip", vip, "--port", "tcp/80:30080", "--port", "udp/80:30080",
		"--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 1)}, tcp)
	has := func(m *lab.Member) (addr, ipvs, nat bool) {
		addrs, _ := m.Addrs()
		addr = slices.ContainsFunc(addrs, func(a string) bool { return strings.HasPrefix(a, vip+"/") })
		lines, _ := m.IPVSSave()
		ipvs = slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, vip+":") })
		rules, _ := m.NATRules()
		nat = slices.ContainsFunc(rules, func(l string) bool { return strings.Contains(l, vip) })
		return
	}
	if a, i, n := has(owner); !a || !i || !n {
		s.dumpMember(t, owner)
		t.Fatalf("before delete, owner %s: address %v, ipvs %v, nat rule %v; want all", owner.ID, a, i, n)
	}
	mustLBCTL(t, s.l, "vip", "delete", name)
	t0 := time.Now()
	deadline := t0.Add(guestWait)
	for {
		clean := true
		var state []string
		for _, m := range s.l.Members {
			a, i, n := has(m)
			if a || i || n {
				clean = false
				state = append(state, fmt.Sprintf("%s: address %v ipvs %v nat %v", m.ID, a, i, n))
			}
		}
		if clean {
			t.Logf("address, IPVS services and SNAT rule gone from every member %s after the delete", time.Since(t0).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			s.dumpMember(t, owner)
			t.Fatalf("%s after the delete: %v", guestWait, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if name, err := probe.Once(probe.Options{Addr: vip + ":80", Timeout: 500 * time.Millisecond}); err == nil {
		t.Errorf("deleted VIP still answers (from %s)", name)
	}
	if _, err := s.l.LBCTL("vip", "get", name); err == nil {
		t.Errorf("vip get %s still finds it", name)
	}
}

func (s *scenarios) ipv6(t *testing.T) {
	const name = "web6"
	vip := "fd00::210"
	var args []string
	weights := map[string]int{}
	for i := 1; i <= 3; i++ {
		args = append(args, "--backend", fmt.Sprintf("[%s]:%d,weight=%d", topo.NodeHost(i).V6, topo.NodePort, i))
		weights[fmt.Sprintf("node%d", i)] = i
	}
	tcp := probe.Options{Addr: "[" + vip + "]:80", NetNS: client}
	udp := probe.Options{Proto: "udp", Addr: "[" + vip + "]:80", NetNS: client}
	owner := s.createVIP(t, name, append([]string{"--vip", vip, "--port", "tcp/80:30080", "--port", "udp/80:30080", "--scheduler", "wrr"}, args...), tcp, udp)
	defer s.deleteVIP_(t, name)
	ctx := context.Background()
	r, err := probe.Count(ctx, tcp, 300, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkProportions(t, "tcp6 wrr 1:2:3", r, weights, 0.03)
	r, err = probe.Count(ctx, udp, 300, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkProportions(t, "udp6 wrr 1:2:3", r, weights, 0.03)
	lines, _ := owner.IPVSSave()
	if !slices.Contains(lines, "-A -t ["+vip+"]:80 -s wrr") {
		t.Errorf("owner %s ipvsadm -Sn lacks the IPv6 service:\n%s", owner.ID, strings.Join(lines, "\n"))
	}
	addrs, _ := owner.Addrs()
	if !slices.Contains(addrs, vip+"/128") {
		t.Errorf("owner %s addresses %v lack %s/128", owner.ID, addrs, vip)
	}
}

// directRouting: in dr mode the owner forwards each connection at L2 and the
// node answers the client itself, from the VIP it holds on lo without
// answering ARP for it (as DR real servers are set up): the node sees the
// client's own address, and no SNAT rule exists for the VIP.
func (s *scenarios) directRouting(t *testing.T) {
	const name = "dr"
	vip := "10.0.0.206"
	for i := 1; i <= 3; i++ {
		ns := topo.NodeHost(i).Name
		for _, kv := range [][2]string{{"net.ipv4.conf.all.arp_ignore", "1"}, {"net.ipv4.conf.all.arp_announce", "2"}} {
			if err := netns.WriteSysctl(ns, kv[0], kv[1]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := topo.IP(ns, "addr", "add", vip+"/32", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		defer func() {
			topo.IP(ns, "addr", "del", vip+"/32", "dev", "lo")
			netns.WriteSysctl(ns, "net.ipv4.conf.all.arp_ignore", "0")
			netns.WriteSysctl(ns, "net.ipv4.conf.all.arp_announce", "0")
		}()
	}
	args := []string{"--vip", vip, "--mode", "dr", "--scheduler", "rr", "--port", "tcp/30080"}
	for i := 1; i <= 3; i++ {
		args = append(args, "--backend", topo.NodeHost(i).V4.String()) // dr keeps the VIP's port
	}
	owner := s.createVIP(t, name, args, probe.Options{Addr: vip + ":30080"})
	defer s.deleteVIP_(t, name)

	o := probe.Options{Addr: vip + ":30080", NetNS: client, Timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), guestWait)
	defer cancel()
	r, err := probe.Count(ctx, o, 60, 3)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK != r.Sent || len(r.Counts) != 3 {
		t.Errorf("dr rr over 3 nodes: %s", r)
	}
	want := topo.ClientHost().V4.String()
	seen := map[string]bool{}
	for i := 0; i < 9; i++ {
		line, err := whoami(vip + ":30080")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(line)
		if len(f) != 2 || f[1] != want {
			t.Errorf("through the dr VIP the node saw %q, want \"NODE %s\" (the client's own address)", line, want)
			continue
		}
		seen[f[0]] = true
	}
	if rules, _ := owner.NATRules(); slices.ContainsFunc(rules, func(l string) bool { return strings.Contains(l, vip) }) {
		t.Errorf("owner %s has a SNAT rule for the dr VIP:\n%s", owner.ID, strings.Join(rules, "\n"))
	}
	lines, _ := owner.IPVSSave()
	for i := 1; i <= 3; i++ {
		if d := fmt.Sprintf("-a -t %s:30080 -r %s:30080 -g -w 1", vip, topo.NodeHost(i).V4); !slices.Contains(lines, d) {
			t.Errorf("owner %s ipvsadm -Sn lacks %q:\n%s", owner.ID, d, strings.Join(lines, "\n"))
		}
	}
	t.Logf("dr: %s; nodes %v saw the client as %s", r, slices.Sorted(maps.Keys(seen)), want)
}

// whoami asks, from the client, the node behind addr which address it sees.
func whoami(addr string) (string, error) {
	return probe.Whoami(client, addr, 5*time.Second)
}

// announcements: the client learns where a new VIP lives from the owner's
// gratuitous ARP (IPv4) and unsolicited neighbour advertisement (IPv6)
// alone. Its neighbour entries, planted beforehand with a wrong MAC, switch
// to the owner's before it has sent the VIP anything; then a VIP move
// switches them to the new owner's the same way.
func (s *scenarios) announcements(t *testing.T) {
	const bogus = "02:00:00:00:00:99"
	vips := []struct{ name, ip, backend string }{
		{"garp4", "10.0.0.207", fmt.Sprintf("%s:%d", topo.NodeHost(1).V4, topo.NodePort)},
		{"garp6", "fd00::211", fmt.Sprintf("[%s]:%d", topo.NodeHost(1).V6, topo.NodePort)},
	}
	plant := func() {
		t.Helper()
		for _, v := range vips {
			if _, err := topo.IP(client, "neigh", "replace", v.ip, "lladdr", bogus, "dev", topo.Interface, "nud", "stale"); err != nil {
				t.Fatal(err)
			}
		}
	}
	learns := func(name, ip string, m *lab.Member, what string) {
		t.Helper()
		mac, err := m.MAC()
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		for got := lab.Neighbour(client, ip); got != mac; got = lab.Neighbour(client, ip) {
			if time.Since(t0) > guestWait {
				t.Fatalf("%s: the client's neighbour entry for %s is %q, want %s's %s: no announcement reached it", what, ip, got, m.ID, mac)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("%s: the client learnt %s → %s (%s) from announcements within %s", what, ip, mac, m.ID, time.Since(t0).Round(time.Millisecond))
	}
	plant()
	for _, v := range vips {
		// No probe yet: the client must not send anything before the check.
		mustLBCTL(t, s.l, "vip", "create", v.name, "--wait", "--vip", v.ip, "--port", "tcp/80:30080", "--backend", v.backend)
		defer s.deleteVIP_(t, v.name)
	}
	for _, v := range vips {
		owner, _, err := s.l.WaitOwner(v.name, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		learns(v.name, v.ip, owner, "new VIP")
		addr := v.ip + ":80"
		if strings.Contains(v.ip, ":") {
			addr = "[" + v.ip + "]:80"
		}
		if _, err := topo.WaitAnswer(probe.Options{Addr: addr, NetNS: client, Timeout: time.Second}, guestWait); err != nil {
			t.Fatalf("%s does not answer: %v", v.ip, err)
		}
	}

	// A planned move: the new owner announces, the client follows.
	plant()
	for _, v := range vips {
		old, _, err := s.l.WaitOwner(v.name, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var to *lab.Member
		for _, m := range s.l.Members {
			if m != old {
				to = m
				break
			}
		}
		moveVIP(t, s.l, v.ip, to.ID)
		learns(v.name, v.ip, to, "after moving to "+to.ID)
	}
}

// sloppyTakeover: a member that never heard a connection's sync message
// still carries it when it takes the VIP over. With net.ipv4.vs.sloppy_tcp
// (lbd sets it) IPVS schedules the connection's next packet as new, mh (the
// default scheduler) hashes it to the node that holds it, and conntrack picks
// it up mid-stream and SNATs it to the same VIP:port; without sloppy_tcp the
// new owner resets it. Connection sync normally spares this path: the new
// owner's backup sync daemon is stopped here, so nothing else can explain a
// kept connection.
func (s *scenarios) sloppyTakeover(t *testing.T) {
	const name, vip = "sloppy", "10.0.0.208"
	tcp, owner, to := s.movableVIP(t, name, vip)
	defer s.deleteVIP_(t, name)
	ns := to.Host.Name
	if v, err := netns.ReadSysctl(ns, "net.ipv4.vs.sloppy_tcp"); err != nil || strings.TrimSpace(v) != "1" {
		t.Fatalf("%s: net.ipv4.vs.sloppy_tcp = %q (%v), want 1 (set by lbd)", to.ID, v, err)
	}
	defer stopSyncDaemon(t, to, "backup")()

	hold, err := probe.StartHold(tcp, 10, 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	logRedials(t, hold)
	time.Sleep(2 * time.Second)
	conns, _ := topo.Run(ns, "ipvsadm", "-Lnc")
	if strings.Contains(conns, vip+":80") {
		hold.Stop()
		t.Fatalf("%s knows the connections although its backup sync daemon is stopped:\n%s", to.ID, conns)
	}
	s.moveHeld(t, vip, owner, to, hold)
	time.Sleep(3 * time.Second) // a dozen pings on each connection through the new owner
	hr := hold.Stop()
	reportBroken(t, "held", hr)
	conns, _ = topo.Run(ns, "ipvsadm", "-Lnc")
	t.Logf("moved %s→%s with %s's sync daemon stopped: held %d/%d kept, %d pings; %d IPVS connection entries of the VIP on %s afterwards",
		owner.ID, to.ID, to.ID, hr.Kept, hr.Opened, hr.Pings, strings.Count(conns, vip+":80"), to.ID)
}

// takeoverGuard: connections on which the node speaks first (a push every
// 20 ms, the client pings every 300 ms) survive a takeover by a member that
// never heard of them. The destination's backup sync daemon is stopped for
// each move, as in a failover whose sync was lost: neither the kernel's sync
// nor the handover pull (which sends through the same daemons) can tell it
// about the connections, so after the GARP the nodes' packets reach it
// before the clients' do. The takeover guard drops them (its counter shows
// it) until a client's ping has set the connection up there (sloppy_tcp).
// The control moves back, again unsynced, with the guard's jump removed on
// the destination: the host's stack answers the nodes' packets with RSTs and
// the connections break.
func (s *scenarios) takeoverGuard(t *testing.T) {
	const name, vip = "push", "10.0.0.209"
	tcp, owner, other := s.movableVIP(t, name, vip)
	defer s.deleteVIP_(t, name)
	move := func(from, to *lab.Member) (probe.HoldResult, int) {
		t.Helper()
		before, err := to.GuardDrops()
		if err != nil {
			t.Fatal(err)
		}
		defer stopSyncDaemon(t, to, "backup")()
		known := establishedOf(t, to, vip)
		hold, err := probe.StartPushHold(tcp, 10, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		logRedials(t, hold)
		time.Sleep(2 * time.Second) // long enough for a sync to have carried them, had it run
		if n := establishedOf(t, to, vip); n > known {
			hold.Stop()
			t.Fatalf("%s learnt %d connections of %s although its backup sync daemon is stopped: this scenario would not test the guard", to.ID, n-known, vip)
		}
		s.moveHeld(t, vip, from, to, hold)
		time.Sleep(3 * time.Second)
		hr := hold.Stop()
		after, err := to.GuardDrops()
		if err != nil {
			t.Fatal(err)
		}
		return hr, after - before
	}

	hr, dropped := move(owner, other)
	reportBroken(t, "pushing", hr)
	if dropped == 0 {
		t.Errorf("the guard on %s dropped nothing: the nodes' packets did not reach it first, so this scenario proved nothing", other.ID)
	}
	t.Logf("moved %s→%s under server push, unsynced: held %d/%d kept, %d lines read; the guard dropped %d early node packets", owner.ID, other.ID, hr.Kept, hr.Opened, hr.Pings, dropped)

	// Control: back to the first owner, unsynced too, with its guard's jump
	// removed.
	if _, err := owner.SetGuard(false); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if _, err := owner.SetGuard(true); err != nil {
			t.Errorf("restore %s's guard jump: %v", owner.ID, err)
		}
	}()
	hr, _ = move(other, owner)
	if was, err := owner.SetGuard(false); err == nil && was {
		t.Logf("lbd restored %s's guard jump during the control (its periodic repair): control skipped", owner.ID)
		return
	}
	if len(hr.Broken) == 0 {
		t.Errorf("control, moved %s→%s unsynced and without the guard: no pushing connection broke, so the guard's drops above were not what kept them", other.ID, owner.ID)
	}
	t.Logf("control, moved %s→%s unsynced and without the guard: %d/%d broken", other.ID, owner.ID, len(hr.Broken), hr.Opened)
}

// establishedOf counts m's ESTABLISHED IPVS connection entries to vip:80.
func establishedOf(t *testing.T, m *lab.Member, vip string) int {
	t.Helper()
	conns, err := topo.Run(m.Host.Name, "ipvsadm", "-Lnc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(conns, "\n") {
		if strings.Contains(l, "ESTABLISHED") && strings.Contains(l, " "+vip+":80 ") {
			n++
		}
	}
	return n
}

// movableVIP creates a nat VIP on tcp/80 over the three nodes and returns how
// to reach it, its owner and another running member to move it to.
func (s *scenarios) movableVIP(t *testing.T, name, vip string) (tcp probe.Options, owner, other *lab.Member) {
	t.Helper()
	tcp = probe.Options{Addr: vip + ":80", NetNS: client, Timeout: 2 * time.Second}
	owner = s.createVIP(t, name, []string{"--vip", vip, "--port", "tcp/80:30080",
		"--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 1), "--backend", nodeBackend(3, 1)}, tcp)
	return tcp, owner, s.otherMember(t, owner)
}

// otherMember returns a running member other than m (to move a VIP to).
func (s *scenarios) otherMember(t *testing.T, m *lab.Member) *lab.Member {
	t.Helper()
	for _, o := range s.l.Members {
		if o != m && o.Running() {
			return o
		}
	}
	t.Fatalf("no running member besides %s", m.ID)
	return nil
}

// stopSyncDaemon stops m's IPVS sync daemon of the given state ("master" or
// "backup") and returns what starts it again as it was.
func stopSyncDaemon(t *testing.T, m *lab.Member, state string) (restart func()) {
	t.Helper()
	ns := m.Host.Name
	daemons, err := topo.Run(ns, "ipvsadm", "-L", "--daemon")
	if err != nil {
		t.Fatal(err)
	}
	var mcast, syncid string
	for _, l := range strings.Split(daemons, "\n") {
		if strings.HasPrefix(l, state+" sync daemon") {
			// backup sync daemon (mcast=eth0, syncid=1, ...)
			for _, f := range strings.FieldsFunc(l, func(r rune) bool { return r == '(' || r == ')' || r == ',' || r == ' ' }) {
				if v, ok := strings.CutPrefix(f, "mcast="); ok {
					mcast = v
				}
				if v, ok := strings.CutPrefix(f, "syncid="); ok {
					syncid = v
				}
			}
		}
	}
	if mcast == "" || syncid == "" {
		t.Fatalf("%s runs no %s sync daemon:\n%s", m.ID, state, daemons)
	}
	if _, err := topo.Run(ns, "ipvsadm", "--stop-daemon", state); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := topo.Run(ns, "ipvsadm", "--start-daemon", state, "--mcast-interface", mcast, "--syncid", syncid); err != nil {
			t.Errorf("restart %s's %s sync daemon: %v", m.ID, state, err)
		}
	}
}

// waitStandby waits until m has programmed vip as a hot standby (its SNAT rule
// is in place, which a pass writes after the IPVS services). A move to a
// member still busy programming waits for that pass, and in the emulated guest
// a pass that writes iptables can take seconds: long enough for a held
// connection's read to time out, which is not what these scenarios test.
func waitStandby(t *testing.T, m *lab.Member, vip string) {
	t.Helper()
	for t0 := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		vips, err := m.SNATVIPs()
		if err == nil && slices.Contains(vips, vip) {
			return
		}
		if time.Since(t0) > guestWait {
			t.Fatalf("%s has no SNAT rule for %s after %s: %v %v", m.ID, vip, guestWait, vips, err)
		}
	}
}

// moveHeld moves vip from one member to another while hold keeps connections
// through it: once to is a hot standby, then until the address has left from
// and reached to. On a timeout it stops hold (if any) before failing, so the
// probe's goroutines do not outlive the test.
func (s *scenarios) moveHeld(t *testing.T, vip string, from, to *lab.Member, hold *probe.Hold) {
	t.Helper()
	waitStandby(t, to, vip)
	moveVIP(t, s.l, vip, to.ID)
	for t0 := time.Now(); !to.HasAddr(vip) || from.HasAddr(vip); time.Sleep(100 * time.Millisecond) {
		if time.Since(t0) > guestWait {
			if hold != nil {
				hold.Stop()
			}
			t.Fatalf("%s did not move from %s to %s within %s", vip, from.ID, to.ID, guestWait)
		}
	}
}

// startRestartTraffic starts, through tcp, 20 held connections and a steady
// stream of new ones around an lbd restart. A held connection that stalls
// for a second while the guest's one CPU execs and starts lbd is not reset:
// each answer may take 5 s, so only a broken connection counts.
func startRestartTraffic(t *testing.T, tcp probe.Options) (*probe.Hold, *probe.Steady) {
	t.Helper()
	held := tcp
	held.Timeout, held.NoRetransmit = 5*time.Second, false
	hold, err := probe.StartHold(held, 20, 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	logRedials(t, hold)
	steady, err := probe.StartSteady(tcp, 10, 4)
	if err != nil {
		hold.Stop()
		t.Fatal(err)
	}
	return hold, steady
}

// logVIPState logs what m's kernel holds of vip's connections (IPVS's
// table and conntrack's), for a scenario that saw one break: a connection's
// entries, or their absence, say where its packets went.
func logVIPState(t *testing.T, m *lab.Member, vip string) {
	t.Helper()
	ipvs, ct, err := m.ConnEntries(func(l string) bool { return strings.Contains(l, vip) })
	if err != nil {
		t.Logf("%s: %v", m.ID, err)
	}
	t.Logf("%s's connections to %s (IPVS, then conntrack):\n%s", m.ID, vip, strings.Join(slices.Concat(ipvs, ct), "\n"))
}

// reportBroken fails t for each connection of hr that broke (what names
// the kind: held, pushing).
func reportBroken(t *testing.T, what string, hr probe.HoldResult) {
	t.Helper()
	for _, b := range hr.Broken {
		t.Errorf("%s connection %d to %s broke %s after the start: %s", what, b.Conn, b.Node, b.After.Round(time.Millisecond), b.Err)
	}
}

// setHealthz sets a node's /healthz (kube-proxy's healthCheckNodePort
// stand-in): ok, fail, or flap (200 and 503 in turn to each prober).
func setHealthz(t *testing.T, node int, st string) {
	t.Helper()
	url := fmt.Sprintf("http://%s:%d/healthz?status=%s", topo.NodeHost(node).V4, topo.HealthPort, st)
	if out, err := exec.Command("curl", "-s", "-X", "POST", "--max-time", "5", url).CombinedOutput(); err != nil {
		t.Fatalf("POST %s: %v %s", url, err, out)
	}
}

// health: a node whose /healthz answers 503 (no ready local endpoint, as with
// externalTrafficPolicy: Local) stops receiving new connections within about
// fall × interval, and receives again after rise × interval once it answers 200.
// The health scenario's probe timing. A probe that times out counts as a
// failure, rightly; with 200 ms on the guest's one CPU beside other jobs, a
// flapping /healthz's "ok" answers timed out now and then, two failures came
// in a row and the backend went unhealthy (a fresh-clone make test did so).
// The timeout leaves the answer room on a loaded host; the damping is what
// is tested, not how fast a probe is answered.
const (
	healthInterval = time.Second
	healthTimeout  = 800 * time.Millisecond
)

func (s *scenarios) health(t *testing.T) {
	const name = "health"
	vip := "10.0.0.205"
	owner := s.createVIP(t, name, []string{"--vip", vip, "--port", "tcp/80:30080", "--scheduler", "rr",
		"--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 1), "--backend", nodeBackend(3, 1),
		"--health-check", "http", "--health-port", fmt.Sprint(topo.HealthPort), "--health-path", "/healthz",
		"--health-interval", healthInterval.String(), "--health-timeout", healthTimeout.String(), "--rise", "2", "--fall", "2"},
		probe.Options{Addr: vip + ":80"})
	defer s.deleteVIP_(t, name)
	defer setHealthz(t, 2, "ok")
	o := probe.Options{Addr: vip + ":80", NetNS: client, Timeout: time.Second}
	count := func() probe.CountResult {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := probe.Count(ctx, o, 30, 3)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// The VIP answers once one backend is up; node2's checks must rise too
	// (rise 2: two intervals, longer on a loaded guest) before it gets its
	// share.
	for t0 := time.Now(); ; {
		r := count()
		if r.Counts["node2"] > 0 {
			break
		}
		if time.Since(t0) > guestWait {
			t.Fatalf("node2 gets no traffic before the test, %s after the VIP answered: %s", guestWait, r)
		}
	}
	setHealthz(t, 2, "fail")
	t0 := time.Now()
	var out time.Duration
	for time.Since(t0) < guestWait {
		if r := count(); r.Counts["node2"] == 0 && r.OK == r.Sent {
			out = time.Since(t0)
			break
		}
	}
	if out == 0 {
		t.Fatalf("node2 still receives connections %s after its /healthz turned 503", guestWait)
	}
	// The owner's metrics count the failed probes and the transition.
	if series, _, err := owner.Metrics(); err != nil {
		t.Error(err)
	} else {
		for _, c := range []struct {
			name  string
			match []string
		}{
			{"edgelb_health_transitions_total", []string{`to="unhealthy"`}},
			{"edgelb_health_checks_total", []string{`type="http"`, `result="fail"`}},
		} {
			if v, found := series.Sum(c.name, c.match...); !found || v < 1 {
				t.Errorf("owner %s after node2 failed: %s%v = %v (found %v), want ≥ 1", owner.ID, c.name, c.match, v, found)
			}
		}
	}
	// Stays out while unhealthy, and the API says why.
	if r := count(); r.Counts["node2"] != 0 {
		t.Errorf("node2 got traffic again while unhealthy: %s", r)
	}
	vs, err := s.l.VIP(name)
	if err != nil {
		t.Fatal(err)
	}
	// The reason is the 503, or a check that timed out on the loaded guest
	// after it (the last error is the last check's).
	for _, b := range vs.Backends {
		e := b.GetHealth().GetLastError()
		if b.Address == topo.NodeHost(2).V4.String() && (b.GetHealth().GetState().String() != "BACKEND_HEALTH_STATE_UNHEALTHY" || !(strings.Contains(e, "503") || strings.Contains(e, "deadline exceeded"))) {
			t.Errorf("node2 health in the API: %v", b.GetHealth())
		}
	}
	setHealthz(t, 2, "ok")
	t1 := time.Now()
	var back time.Duration
	for time.Since(t1) < guestWait {
		if r := count(); r.Counts["node2"] > 0 {
			back = time.Since(t1)
			break
		}
	}
	if back == 0 {
		t.Fatalf("node2 receives nothing %s after its /healthz recovered", guestWait)
	}
	t.Logf("node2 left the rotation %s after /healthz turned 503 (fall 2 × %s) and returned %s after it recovered (rise 2 × %s); times include the probe rounds", out.Round(time.Millisecond), healthInterval, back.Round(time.Millisecond), healthInterval)

	// Flapping is damped: a /healthz that answers 200 and 503 in turn never
	// gives fall (or rise) results in a row, so the backend keeps the state it
	// had — in the rotation when it was healthy, out of it when it was not.
	node2 := func() *edgelbv1.BackendHealth {
		t.Helper()
		vs, err := s.l.VIP(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range vs.Backends {
			if b.Address == topo.NodeHost(2).V4.String() {
				return b.GetHealth()
			}
		}
		t.Fatal("node2 is not a backend")
		return nil
	}
	waitState := func(want edgelbv1.BackendHealthState) *edgelbv1.BackendHealth {
		t.Helper()
		for t0 := time.Now(); ; time.Sleep(300 * time.Millisecond) {
			if h := node2(); h.GetState() == want {
				return h
			}
			if time.Since(t0) > guestWait {
				t.Fatalf("node2 health %v, want %v", node2(), want)
			}
		}
	}
	for _, from := range []edgelbv1.BackendHealthState{edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY, edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY} {
		if from == edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY {
			setHealthz(t, 2, "fail")
		}
		before := waitState(from)
		setHealthz(t, 2, "flap")
		time.Sleep(15 * healthInterval) // 15 intervals of flapping
		r := count()
		after := node2()
		setHealthz(t, 2, "ok")
		if after.GetState() != from || !after.GetLastTransitionTime().AsTime().Equal(before.GetLastTransitionTime().AsTime()) {
			t.Errorf("flapping from %v: node2 health went %v → %v", from, before, after)
		}
		if got := r.Counts["node2"] > 0; got != (from == edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY) {
			t.Errorf("flapping from %v: node2 got traffic %v (%s)", from, got, r)
		}
		t.Logf("flapping /healthz for 15 intervals from %v: no transition; traffic %s", from, r)
	}
}

// metrics scrapes the owner's /metrics after real traffic and checks the
// series an operator dashboards on carry sensible values.
func (s *scenarios) metrics(t *testing.T) {
	const name = "metrics"
	vip := "10.0.0.204"
	owner := s.createVIP(t, name, []string{"--vip", vip, "--port", "tcp/80:30080", "--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 1),
		"--health-check", "tcp", "--health-interval", "500ms"},
		probe.Options{Addr: vip + ":80"})
	defer s.deleteVIP_(t, name)
	for i := 0; i < 20; i++ {
		if _, err := probe.Once(probe.Options{Addr: vip + ":80", NetNS: client, Timeout: time.Second}); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	// IPVS publishes its counters through its estimator, every 2 s.
	time.Sleep(3 * time.Second)
	series, out, err := owner.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	sum := series.Sum
	checks := []struct {
		what   string
		prefix string
		match  []string
		ok     func(float64) bool
	}{
		{"IPVS connections of the VIP (≥20)", "edgelb_ipvs_service_connections_total", []string{`vip="` + vip + `"`, `service="metrics"`}, func(v float64) bool { return v >= 20 }},
		{"IPVS connections per backend", "edgelb_ipvs_backend_connections_total", []string{`vip="` + vip + `"`}, func(v float64) bool { return v >= 20 }},
		{"backend weights", "edgelb_ipvs_backend_weight", []string{`vip="` + vip + `"`}, func(v float64) bool { return v == 2 }},
		{"IPVS read up", "edgelb_ipvs_up", nil, func(v float64) bool { return v == 1 }},
		{"raft term", "edgelb_raft_term", nil, func(v float64) bool { return v >= 1 }},
		{"raft applied index", "edgelb_raft_applied_index", nil, func(v float64) bool { return v > 0 }},
		{"a raft leader known", "edgelb_raft_leader", nil, func(v float64) bool { return v == 1 }},
		{"VIPs served by the owner", "edgelb_ownership_vips_served", nil, func(v float64) bool { return v >= 1 }},
		{"gRPC requests handled", "edgelb_grpc_server_handled_total", nil, func(v float64) bool { return v > 0 }},
		{"gratuitous ARPs sent on takeover", "edgelb_dataplane_announcements_total", []string{`kind="takeover"`}, func(v float64) bool { return v >= 1 }},
		{"kernel changes", "edgelb_dataplane_changes_total", []string{`op="addr_add"`}, func(v float64) bool { return v >= 1 }},
		{"takeover timing recorded", "edgelb_ownership_takeover_seconds_count", nil, func(v float64) bool { return v >= 1 }},
		{"packets in through the VIP", "edgelb_ipvs_service_packets_total", []string{`vip="` + vip + `"`, `direction="in"`}, func(v float64) bool { return v >= 20 }},
		{"bytes out through the VIP", "edgelb_ipvs_service_bytes_total", []string{`vip="` + vip + `"`, `direction="out"`}, func(v float64) bool { return v > 0 }},
		{"bytes to the backends", "edgelb_ipvs_backend_bytes_total", []string{`vip="` + vip + `"`, `direction="in"`}, func(v float64) bool { return v > 0 }},
		{"the kernel's connection rate estimate", "edgelb_ipvs_service_connections_per_second", []string{`vip="` + vip + `"`}, func(v float64) bool { return v >= 0 }},
		{"health probes that passed", "edgelb_health_checks_total", []string{`type="tcp"`, `result="ok"`}, func(v float64) bool { return v >= 1 }},
		{"health probe latency observed", "edgelb_health_check_seconds_count", []string{`type="tcp"`}, func(v float64) bool { return v >= 1 }},
		{"reconcile passes that succeeded", "edgelb_reconcile_total", []string{`result="ok"`}, func(v float64) bool { return v >= 1 }},
		{"reconcile time observed", "edgelb_reconcile_duration_seconds_count", nil, func(v float64) bool { return v >= 1 }},
		{"raft entries applied, timed", "edgelb_raft_fsm_apply_seconds_count", nil, func(v float64) bool { return v >= 1 }},
	}
	for _, c := range checks {
		v, found := sum(c.prefix, c.match...)
		if !found || !c.ok(v) {
			t.Errorf("%s: %s %v = %v (found %v)", c.what, c.prefix, c.match, v, found)
		}
	}
	if t.Failed() {
		t.Logf("scrape of %s:\n%s", owner.ID, out)
	}
	// Commit latency is the leader's to see.
	if leader := s.l.Member(s.leader(t)); leader != nil {
		ls, _, err := leader.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		if v, found := ls.Sum("edgelb_raft_commit_seconds_count"); !found || v < 1 {
			t.Errorf("leader %s: edgelb_raft_commit_seconds_count = %v (found %v), want ≥ 1 after the writes", leader.ID, v, found)
		}
	}

	// The same counters through the API: lbctl asks any member, which reads
	// the owner's kernel.
	js := mustLBCTL(t, s.l, "vip", "stats", name, "-o", "json")
	var st struct {
		Member string
		Ports  []struct {
			Protocol string
			Port     int
			Counters struct{ Connections string }
			Backends []struct {
				Address  string
				Weight   int
				Counters struct{ Connections string }
			}
		}
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatalf("vip stats -o json: %v\n%s", err, js)
	}
	var total int64
	for _, p := range st.Ports {
		for _, b := range p.Backends {
			n, _ := strconv.ParseInt(b.Counters.Connections, 10, 64)
			total += n
		}
	}
	if st.Member != owner.ID || len(st.Ports) != 1 || len(st.Ports[0].Backends) != 2 || total < 20 {
		t.Errorf("lbctl vip stats %s: from %q (owner %s), %d connections over the backends (want ≥20):\n%s", name, st.Member, owner.ID, total, js)
	}
	table := mustLBCTL(t, s.l, "vip", "get", name)
	if !strings.Contains(table, "Traffic:") || !strings.Contains(table, "10.0.0.21:30080") {
		t.Errorf("lbctl vip get %s lacks the live traffic:\n%s", name, table)
	}
	t.Logf("lbctl vip get %s:\n%s", name, table)
}

func (s *scenarios) bench(t *testing.T) {
	const name = "bench"
	vip := "10.0.0.205"
	tcp := probe.Options{Addr: vip + ":80", NetNS: client}
	s.createVIP(t, name, []string{"--vip", vip, "--port", "tcp/80:30080", "--port", "udp/80:30080",
		"--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 1), "--backend", nodeBackend(3, 1)}, tcp)
	defer s.deleteVIP_(t, name)
	ctx := context.Background()
	n, conc := 1500, 4
	if v, err := strconv.Atoi(os.Getenv("EDGELB_E2E_BENCH_N")); err == nil && v > 0 {
		n = v
	}
	direct := probe.Options{Addr: fmt.Sprintf("%s:%d", topo.NodeHost(1).V4, topo.NodePort), NetNS: client}
	var lines []string
	for _, proto := range []string{"tcp", "udp"} {
		via, dir := tcp, direct
		via.Proto, dir.Proto = proto, proto
		// 3 s lets a SYN be retransmitted once: IPVS drops a SYN whose client
		// port matches a connection it still holds in TIME_WAIT
		// (net.ipv4.vs.conn_reuse_mode=1 with conntrack on), and 1,500 quick
		// connections from one address reuse ports; the retransmit succeeds.
		via.Timeout, dir.Timeout = 3*time.Second, 3*time.Second
		// Alternate, twice each, so a slow phase of the guest hits both sides.
		var rv, rd []float64
		// This scenario measures; the others check that every connection
		// is answered. The loaded guest loses a UDP datagram now and then,
		// and TCP connects through the VIP timed out about once in a
		// thousand. The cause found since (slow_connects, with pcaps):
		// stale conntrack entries from a VIP's earlier turn on its owner,
		// which lbd now deletes (docs/DATAPLANE.md); not proven to be
		// this scenario's. Tolerate 2 % and 1 %, and log every loss with
		// its errors.
		limit := 0.02
		if proto == "tcp" {
			limit = 0.01
		}
		for round := 0; round < 2; round++ {
			a, err := probe.Count(ctx, via, n, conc)
			if err != nil || float64(a.Errors) > limit*float64(n) {
				t.Errorf("via VIP: %v %s", err, a)
			}
			b, err := probe.Count(ctx, dir, n, conc)
			if err != nil || float64(b.Errors) > limit*float64(n) {
				t.Errorf("direct: %v %s", err, b)
			}
			if a.Errors+b.Errors > 0 {
				t.Logf("%s lost: via VIP %d %v, direct %d %v of %d", proto, a.Errors, a.Samples, b.Errors, b.Samples, n)
			}
			rv, rd = append(rv, a.PerSecond), append(rd, b.PerSecond)
			// One line per round: make bench shows their spread.
			lines = append(lines, fmt.Sprintf("BENCH %s new connections/s from the client (concurrency %d, %d per round, round %d of 2): via VIP %.0f/s, straight to a node %.0f/s, ratio %.2f",
				proto, conc, n, round+1, a.PerSecond, b.PerSecond, a.PerSecond/b.PerSecond))
		}
		v, d := (rv[0]+rv[1])/2, (rd[0]+rd[1])/2
		lines = append(lines, fmt.Sprintf("%s, both rounds: via VIP %.0f/s, straight to a node %.0f/s, ratio %.2f", proto, v, d, v/d))
	}
	for _, l := range lines {
		t.Log(l)
	}
	if w := os.Getenv("EDGELB_E2E_WORK"); w != "" {
		os.WriteFile(filepath.Join(w, "bench.txt"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	}
}

// logRedials names the dials that failed and were retried while a hold
// opened (see probe.HoldResult.Redials).
func logRedials(t *testing.T, h *probe.Hold) {
	t.Helper()
	for _, r := range h.Redials() {
		t.Logf("hold: a dial through the VIP failed and was retried: %s", r)
	}
}
