package ha

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/arp"

	"github.com/edgelb/edgelb/integration/guesttest"
	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/probe"
	"github.com/edgelb/edgelb/integration/stats"
	"github.com/edgelb/edgelb/integration/topo"
)

// Timing profiles for lbd in the guest. "double" (the default) is every
// timer at twice lbd's own: probes every 100 ms, lease 500 ms, grace 700 ms,
// raft heartbeat/election 1 s. "lan" is lbd's own timing (probes 50 ms,
// lease 250 ms, grace 350 ms, raft 500 ms); "guest" the slow timers these
// scenarios needed before the guest kernel's clock was fixed (raft 1.5 s,
// lease 4 s, grace 4.5 s, probes every 200 ms).
//
// Why the guest runs at twice the defaults (issue 19 allows that much): it
// is one emulated CPU carrying three lbd, three nodes and the traffic, and a
// member's start takes it for seconds. At "lan" every unplanned scenario
// passes, but while a member restarts the owner's loop is kept off the CPU
// longer than its 250 ms lease allows: its fence withdraws the VIP for
// 60-150 ms at a time, and the rolling restart lost 1-4 new connections in
// two of four runs (2026-12-06). At "double" the same runs lost none, and
// no SYN needed a retransmission.
//
// Why only since the clock fix: User-Mode Linux's vDSO made every clock read
// a syscall that the emulator traps (65 µs in Go's time.Now), and Go reads
// the clock at every goroutine switch and timer. An idle lbd at the double
// profile took 14–25 % of the guest's CPU and owners' leases lapsed under
// the scenarios' load; for weeks the double profile failed planned moves
// by a few new connections one run in two or three (docs/OPERATIONS.md,
// "Failover timing", keeps the runs). The guest kernel's patch
// (integration/uml/patches/um-vdso-clock.patch) has the vDSO read the host's
// TSC instead (53 ns): an idle member then takes 4.7 % at the double profile
// and 11.6 % at lan (TestGuestBench/idle).
var profiles = map[string]string{
	"lan": "",
	"double": `raft:
  heartbeatTimeout: 1s
  electionTimeout: 1s
  leaderLeaseTimeout: 500ms
ownership:
  probeInterval: 100ms
  lease: 500ms
  grace: 700ms
`,
	"guest": lab.GuestTiming,
}

const (
	vipName = "ha"
	vip     = "10.0.0.210"
	client  = "client"
)

type suite struct {
	l       *lab.Lab
	profile string
}

func start(t *testing.T) *suite {
	t.Helper()
	if !guesttest.InGuest() {
		t.Skip("runs inside the User-Mode Linux guest only; see TestUML")
	}
	profile := os.Getenv("EDGELB_HA_PROFILE")
	if profile == "" {
		profile = "double"
	}
	cfg, ok := profiles[profile]
	if !ok {
		t.Fatalf("EDGELB_HA_PROFILE=%q: want guest, double or lan", profile)
	}
	t.Logf("lbd timing profile %q:\n%s", profile, cfg)
	// The hung_pass scenario holds one member's reconcile pass through the
	// stall file (lbd/daemon/testhook.go); inert unless the file exists.
	os.Setenv("EDGELB_TEST_HOOKS", "1")
	var lbdArgs []string
	if v := os.Getenv("EDGELB_E2E_SNAT"); v != "" {
		// The rule engine, as in integration/e2e: EDGELB_E2E_SNAT=iptables-legacy
		// for the fallback (auto, the default, takes nftables).
		lbdArgs = append(lbdArgs, "--snat", v)
		t.Logf("lbd rule engine: %s", v)
	}
	l, err := lab.Start(lab.Config{
		LBDArgs:   lbdArgs,
		LBDConfig: cfg,
		Bin:       os.Getenv("EDGELB_E2E_BIN"),
		Work:      os.Getenv("EDGELB_E2E_WORK"),
		Logf:      t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range l.Members {
				t.Logf("---- lbd %s (log tail) ----\n%s", m.ID, m.LogTail(80))
			}
		}
		l.Close()
	})
	s := &suite{l: l, profile: profile}
	s.lbctl(t, "pool", "create", "lab4", "--range", topo.VIPPoolV4)
	// lbd's default scheduler (mh) unless EDGELB_HA_SCHEDULER names
	// another. It matters at a handover: a client packet of a connection
	// the new owner does not know yet (opened on the old owner in the last
	// moments, its sync message still on the way) is scheduled like a new
	// one (sloppy TCP); mh sends it to the node that holds the connection,
	// rr to any node, which resets it (ci22, 2026-12-06: 1 of 912 new
	// connections in a rolling restart).
	args := []string{"vip", "create", vipName, "--wait", "--vip", vip, "--port", "tcp/80:30080",
		"--backend", backend(1), "--backend", backend(2), "--backend", backend(3)}
	if sched := os.Getenv("EDGELB_HA_SCHEDULER"); sched != "" {
		args = append(args, "--scheduler", sched)
		t.Logf("scheduler: %s", sched)
	}
	s.lbctl(t, args...)
	owner := s.owner(t)
	if _, err := topo.WaitAnswer(s.tcp(time.Second), 60*time.Second); err != nil {
		t.Fatalf("vip %s (owner %s) does not answer: %v", vip, owner.ID, err)
	}
	return s
}

func backend(i int) string { return fmt.Sprintf("%s:%d", topo.NodeHost(i).V4, topo.NodePort) }

func (s *suite) tcp(timeout time.Duration) probe.Options {
	return probe.Options{Addr: vip + ":80", NetNS: client, Timeout: timeout}
}

func (s *suite) lbctl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.l.LBCTL(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *suite) owner(t *testing.T) *lab.Member {
	t.Helper()
	m, _, err := s.l.WaitOwner(vipName, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (s *suite) leader(t *testing.T) *lab.Member {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := s.l.LBCTL("leader", "-o", "json")
		var v struct {
			Leader struct {
				ID string `json:"id"`
			} `json:"leader"`
		}
		if err == nil && json.Unmarshal([]byte(out), &v) == nil {
			if m := s.l.Member(v.Leader.ID); m != nil && m.Running() && !m.IsCut() {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reachable raft leader within 30s: %v %s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// moveTo hands the VIP to m (a planned move) unless m owns it already, and
// waits until m holds the address and the VIP answers.
func (s *suite) moveTo(t *testing.T, m *lab.Member) {
	t.Helper()
	if s.owner(t) != m {
		s.lbctl(t, "vip", "move", vip, m.ID)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !(s.owner(t) == m && m.HasAddr(vip)) {
		if time.Now().After(deadline) {
			t.Fatalf("vip %s did not move to %s within 60s", vip, m.ID)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := topo.WaitAnswer(s.tcp(time.Second), 30*time.Second); err != nil {
		t.Fatalf("vip %s on %s does not answer: %v", vip, m.ID, err)
	}
	s.waitSoleHolder(t, m)
}

// waitSoleHolder waits until m is the only running member that holds the
// VIP's address: a planned move's old holder keeps it until the new owner
// has announced it (make before break), and a scenario that counts hosts
// answering ARP starts once that is over.
func (s *suite) waitSoleHolder(t *testing.T, m *lab.Member) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var others []string
		for _, o := range s.l.Members {
			if o != m && o.Running() && o.HasAddr(vip) {
				others = append(others, o.ID)
			}
		}
		if len(others) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v still hold %s 30s after it moved to %s", others, vip, m.ID)
		}
	}
}

// traffic is the load every scenario runs: held connections pinged on an
// interval (their timeout outlasts any failover, so only a connection the
// survivor does not know breaks) and new connections at a steady rate.
type traffic struct {
	hold   *probe.Hold
	steady *probe.Steady
}

func (s *suite) startTraffic(t *testing.T, held int) *traffic {
	t.Helper()
	return s.startTrafficWith(t, held, s.tcp(time.Second))
}

// plannedProbe is the new connections' probe of the planned moves: a new
// connection fails if it is not answered within 3 s. One answered only after
// a retransmission (≥ 1 s) is not failed but counted as slow and logged by
// check: a connection whose handshake spans the moment the nodes learn the
// new owner's MAC can lose its SYN-ACK to the new owner's takeover guard
// (the synced connection has not arrived yet) and completes on the client's
// SYN retransmit, 1 s later. That race is known and measured, not hidden;
// failing on it made these scenarios fail about one run in four.
func (s *suite) plannedProbe() probe.Options {
	return s.tcp(3 * time.Second)
}

func (s *suite) startTrafficWith(t *testing.T, held int, steady probe.Options) *traffic {
	t.Helper()
	// A held connection is broken when a ping goes unanswered for 40 s. A
	// takeover can stall one for up to about 27 s without breaking it: the
	// node's retransmit that the takeover guard drops (it came before any
	// packet of the client's) is next sent about 13 s later. The stall is
	// reported (LongestWait); tickle ACKs would end it (docs/OPERATIONS.md).
	o := s.tcp(40 * time.Second)
	h, err := probe.StartHold(o, held, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range h.Redials() {
		t.Logf("hold: a dial through the VIP failed and was retried: %s", r)
	}
	st, err := probe.StartSteady(steady, 40, 8)
	if err != nil {
		h.Stop()
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	return &traffic{hold: h, steady: st}
}

func (tr *traffic) stop() (probe.HoldResult, probe.SteadyResult) {
	return tr.hold.Stop(), tr.steady.Stop(true)
}

// outage is the longest time new connections failed after the mark: from the
// start of the first failed attempt (or the mark, when the first attempt after
// it failed) to the end of the next successful one. A run that never
// recovered reports its whole span after the mark.
func outage(r probe.SteadyResult) time.Duration {
	var worst time.Duration
	start := time.Duration(-1)
	first := true
	var last time.Duration
	for _, a := range r.Timeline {
		if a.At < r.Mark {
			continue
		}
		if a.Err != "" {
			if start < 0 {
				start = a.At
				if first {
					start = r.Mark
				}
			}
		} else if start >= 0 {
			worst = max(worst, a.At+a.Took-start)
			start = -1
		}
		first = false
		last = a.At + a.Took
	}
	if start >= 0 {
		worst = max(worst, last-start)
	}
	return worst
}

// addrWatch samples which members hold the VIP address, to prove that no two
// hosts ever hold it at once (a host off the segment may still hold it until
// its lease runs out; it must have withdrawn before it is back on).
type addrWatch struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	both []string // samples where two reachable members held the address
	n    int
}

func (s *suite) watchAddrs() *addrWatch {
	w := &addrWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			var holders []string
			for _, m := range s.l.Members {
				if m.HasAddr(vip) && !m.IsCut() {
					holders = append(holders, m.ID)
				}
			}
			w.mu.Lock()
			w.n++
			if len(holders) > 1 {
				w.both = append(w.both, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), holders))
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *addrWatch) finish() (samples int, both []string) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.both
}

// guardDrops reads every running member's takeover-guard drop counter.
func (s *suite) guardDrops() map[string]int {
	out := map[string]int{}
	for _, m := range s.l.Members {
		if n, err := m.GuardDrops(); err == nil {
			out[m.ID] = n
		}
	}
	return out
}

// round is one failover.
type round struct {
	Kind     string        `json:"kind"`
	From, To string        `json:"-"`
	Outage   time.Duration `json:"outageNs"`
	Takeover time.Duration `json:"takeoverNs"` // event → the new owner holds the address
	// Withdrew is when the old owner, still on the segment (oneway), had
	// dropped the address by itself; zero if it still held it when a
	// survivor took over.
	Withdrew time.Duration `json:"withdrewNs,omitempty"`
	Opened   int           `json:"opened"`
	Kept     int           `json:"kept"`
	Stall    time.Duration `json:"stallNs"` // the longest a kept connection's ping waited
	Failed   int           `json:"failed"`  // new connections that failed
	Attempts int           `json:"attempts"`
	// GuardDrops is what the survivor's takeover guard dropped: nodes'
	// packets that reached it before the client's (-1: not read).
	GuardDrops int `json:"guardDrops"`
}

func (r round) String() string {
	owner := "" // what the old owner did: only a one-way partition leaves it able to
	if r.Kind == "oneway" {
		owner = ", the old owner still held it then"
		if r.Withdrew > 0 {
			owner = ", the old owner withdrew by itself after " + r.Withdrew.Round(time.Millisecond).String()
		}
	}
	return fmt.Sprintf("%s %s→%s: new connections out %s (%d of %d failed)%s, address on the survivor after %s, held %d/%d kept (longest ping wait %s), %d early node packets dropped by the takeover guard",
		r.Kind, r.From, r.To, r.Outage.Round(time.Millisecond), r.Failed, r.Attempts, owner, r.Takeover.Round(time.Millisecond), r.Kept, r.Opened, r.Stall.Round(time.Millisecond), r.GuardDrops)
}

// failover makes one unplanned failover of the given kind under traffic and
// puts the cluster back together afterwards:
//
//	sigkill    SIGKILL the owner's lbd (not the raft leader); its host stays up
//	leader     SIGKILL the raft leader, which owns the VIP
//	partition  cut the owner's link to the segment, then heal it
//	oneway     drop what the owner sends to its peers (it still hears the
//	           leader, and clients still reach it), then lift that
func (s *suite) failover(t *testing.T, kind string) round {
	t.Helper()
	leader := s.leader(t)
	switch kind {
	case "leader":
		s.moveTo(t, leader)
	default:
		if o := s.owner(t); o == leader {
			for _, m := range s.l.Members {
				if m != leader && m.Running() {
					s.moveTo(t, m)
					break
				}
			}
		}
	}
	old := s.owner(t)
	drops := s.guardDrops()
	tr := s.startTraffic(t, 10)
	watch := s.watchAddrs()
	tr.steady.Mark()
	t0 := time.Now()
	switch kind {
	case "sigkill", "leader":
		old.Kill()
	case "partition":
		if err := old.Cut(); err != nil {
			t.Fatal(err)
		}
	case "oneway":
		if err := old.MutePeers(); err != nil {
			t.Fatal(err)
		}
		// Count from when the rule is in (one netlink batch, but the
		// guest's one CPU may be busy).
		t0 = time.Now()
	}
	// The survivors move the VIP; wait until one holds the address.
	var survivor *lab.Member
	var takeover, withdrew time.Duration
	for deadline := t0.Add(60 * time.Second); survivor == nil; time.Sleep(50 * time.Millisecond) {
		if kind == "oneway" && withdrew == 0 && !old.HasAddr(vip) {
			withdrew = time.Since(t0)
		}
		for _, m := range s.l.Members {
			if m != old && m.Running() && m.HasAddr(vip) {
				survivor, takeover = m, time.Since(t0)
			}
		}
		if survivor == nil && time.Now().After(deadline) {
			tr.stop()
			watch.finish()
			t.Fatalf("%s of %s: no survivor holds %s after 60s", kind, old.ID, vip)
		}
	}
	if _, err := topo.WaitAnswer(s.tcp(time.Second), 30*time.Second); err != nil {
		t.Errorf("%s of %s: vip does not answer from %s: %v", kind, old.ID, survivor.ID, err)
	}
	time.Sleep(time.Second)
	hr, sr := tr.stop()
	r := round{Kind: kind, From: old.ID, To: survivor.ID, Outage: outage(sr), Takeover: takeover, Withdrew: withdrew,
		Opened: hr.Opened, Kept: hr.Kept, Stall: hr.LongestWait, Failed: sr.FailedAfterMark, Attempts: sr.Attempts, GuardDrops: -1}
	if n, err := survivor.GuardDrops(); err == nil {
		r.GuardDrops = n - drops[survivor.ID]
	}

	// Put it back together: the killed member restarts (its VIP stays with the
	// survivor: ownership is sticky), the cut one comes back.
	switch kind {
	case "sigkill", "leader":
		if err := old.Start(); err != nil {
			t.Fatal(err)
		}
	case "partition":
		if old.HasAddr(vip) {
			t.Errorf("%s still holds %s after %s off the segment: it would answer beside %s once back", old.ID, vip, time.Since(t0).Round(time.Millisecond), survivor.ID)
		}
		if err := old.Heal(); err != nil {
			t.Fatal(err)
		}
	case "oneway":
		// Still on the segment all along: the address watch below has
		// counted it as a second holder at every sample it held the VIP
		// after a survivor did.
		if old.HasAddr(vip) {
			t.Errorf("%s still holds %s %s after its peers stopped hearing it, beside %s", old.ID, vip, time.Since(t0).Round(time.Millisecond), survivor.ID)
		}
		if err := old.UnmutePeers(); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.WaitServing(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	// After the member is back, exactly one host answers ARP for the VIP
	// (requests from the client, counting who replies): the survivor, or
	// the old owner when it came back before the cluster committed the
	// move (a killed lbd restarted within an election, as at the double
	// profile: the survivor's copy was provisional). Which of them the
	// cluster says, read before and after the replies.
	s.checkOneARPHolder(t, kind, old, survivor)
	if _, err := probe.Once(s.tcp(time.Second)); err != nil {
		t.Errorf("after %s of %s: vip does not answer: %v", kind, old.ID, err)
	}
	n, both := watch.finish()
	if len(both) > 0 {
		t.Errorf("two reachable hosts held %s at once in %d of %d samples: %v", vip, len(both), n, both)
	}
	for _, b := range hr.Broken {
		t.Logf("held connection %d to %s broke %s after the start: %s", b.Conn, b.Node, b.After.Round(time.Millisecond), b.Err)
	}
	t.Log(r)
	return r
}

// TestGuest: each scenario once, with its assertions.
func TestGuest(t *testing.T) {
	s := start(t)
	for _, kind := range []string{"sigkill", "leader", "partition", "oneway"} {
		t.Run(kind, func(t *testing.T) {
			r := s.failover(t, kind)
			// Connection sync: the survivor knows every established
			// connection (some may stall for seconds: see startTraffic).
			if r.Kept != r.Opened {
				t.Errorf("%d of %d established connections broke", r.Opened-r.Kept, r.Opened)
			}
			if kind == "sigkill" {
				s.metricsAfterFailover(t, s.l.Member(r.To))
			}
		})
	}
	// A hung owner (issue 18): its fence withdraws the VIP.
	t.Run("hung_sigstop", func(t *testing.T) { s.hung(t, "sigstop") })
	t.Run("hung_leader", func(t *testing.T) { s.hung(t, "leader") })
	t.Run("hung_pass", func(t *testing.T) { s.hung(t, "pass") })
	t.Run("drain", func(t *testing.T) {
		p := s.drain(t)
		p.check(t, "drain")
		s.explainFailures(t, p.steady)
	})
	t.Run("move", func(t *testing.T) {
		p := s.move(t)
		p.check(t, "vip move")
		s.explainFailures(t, p.steady)
	})
	t.Run("rolling_restart", s.rollingRestart)
}

// checkOneARPHolder asserts that, some leases after old is back, exactly
// one host answers ARP for the VIP and that it is the member the cluster
// names as owner, the same before and after the replies (retried while
// ownership still moves): the survivor, or old if it came back before the
// move was committed.
func (s *suite) checkOneARPHolder(t *testing.T, kind string, old, survivor *lab.Member) {
	t.Helper()
	time.Sleep(2 * s.lease(t))
	var last string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		owner := s.owner(t)
		mac, _ := owner.MAC()
		macs, err := arpReplies(vip)
		switch {
		case err != nil:
			last = fmt.Sprintf("ARP requests for %s: %v", vip, err)
		case len(macs) > 1:
			t.Errorf("after %s of %s: ARP replies for %s from %v: more than one host answers", kind, old.ID, vip, macs)
			return
		case s.owner(t) != owner:
			last = fmt.Sprintf("the owner moved from %s while its replies were read", owner.ID)
		case len(macs) == 1 && strings.EqualFold(macs[0], mac):
			if owner == old {
				t.Logf("%s: %s was back before the cluster committed a move; the VIP returned to it from %s's provisional copy", kind, old.ID, survivor.ID)
			} else if owner != survivor {
				t.Logf("%s: the VIP moved on to %s", kind, owner.ID)
			}
			return
		default:
			last = fmt.Sprintf("ARP replies for %s from %v; want only its owner %s (%s)", vip, macs, owner.ID, mac)
		}
		if time.Now().After(deadline) {
			t.Errorf("after %s of %s: %s", kind, old.ID, last)
			return
		}
	}
}

// metricsAfterFailover scrapes the survivor's /metrics: the failover shows
// as an ownership change by reason, a takeover time, and a served VIP with
// traffic counted by IPVS.
func (s *suite) metricsAfterFailover(t *testing.T, m *lab.Member) {
	t.Helper()
	series, _, err := m.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	sum := func(name string, match ...string) float64 {
		v, _ := series.Sum(name, match...)
		return v
	}
	for _, c := range []struct {
		what  string
		value float64
		ok    bool
	}{
		{"failovers counted by reason (owner_unreachable)", sum("edgelb_ownership_assignments_total", `reason="owner_unreachable"`), sum("edgelb_ownership_assignments_total", `reason="owner_unreachable"`) >= 1},
		{"takeovers timed", sum("edgelb_ownership_takeover_seconds_count"), sum("edgelb_ownership_takeover_seconds_count") >= 1},
		{"VIPs served by the survivor", sum("edgelb_ownership_vips_served"), sum("edgelb_ownership_vips_served") >= 1},
		{"takeover announcements sent", sum("edgelb_dataplane_announcements_total", `kind="takeover"`), sum("edgelb_dataplane_announcements_total", `kind="takeover"`) >= 1},
		{"connections through the VIP counted by IPVS", sum("edgelb_ipvs_service_connections_total", `vip="`+vip+`"`), sum("edgelb_ipvs_service_connections_total", `vip="`+vip+`"`) >= 1},
		{"a raft leader known", sum("edgelb_raft_leader"), sum("edgelb_raft_leader") == 1},
	} {
		if !c.ok {
			t.Errorf("%s on %s after the failover: %v", c.what, m.ID, c.value)
		} else {
			t.Logf("%s on %s: %v", c.what, m.ID, c.value)
		}
	}
}

// planned is what a planned move (drain, vip move) did to the traffic.
type planned struct {
	from, to      *lab.Member
	moved         time.Duration
	hold          probe.HoldResult
	steady        probe.SteadyResult
	guarded, both int
	// handovers are the moments the VIP changed hands, on the steady
	// traffic's clock: from a second before the new owner was seen with
	// the address to a second after the old one let it go.
	handovers []handover
}

type handover struct{ from, to time.Duration }

// A planned move fails no new connection (issue 19). Four causes of the
// residue that runs before 2026-12-05 saw at each handover are fixed
// (docs/OPERATIONS.md, "What a planned move still loses"); a failure is
// reported with the handover it fell in, if any, since those and a gap in
// the data path away from a handover point at different causes.

// plannedMove runs move under traffic (held connections and new ones at a
// steady rate), waits until another member holds the VIP and answers, and
// keeps the traffic going for a moment after.
func (s *suite) plannedMove(t *testing.T, move func(old *lab.Member)) planned {
	t.Helper()
	old := s.owner(t)
	drops := s.guardDrops()
	tr := s.startTrafficWith(t, 20, s.plannedProbe())
	watch := s.watchAddrs()
	stopped := false
	defer func() {
		if !stopped { // a Fatal below: the probes must not run on into the next scenario
			tr.stop()
			watch.finish()
		}
	}()
	tr.steady.Mark()
	t0 := time.Now()
	move(old)
	// Watched through the members' addresses (read in-process): asking lbctl
	// in a loop would start a process per look, and on the guest's one CPU
	// that slows the very traffic being measured.
	var to *lab.Member
	seen := tr.steady.Elapsed()
	for deadline := time.Now().Add(60 * time.Second); to == nil; time.Sleep(50 * time.Millisecond) {
		seen = tr.steady.Elapsed()
		for _, m := range s.l.Members {
			if m != old && m.Running() && m.HasAddr(vip) {
				to = m
			}
		}
		if to == nil && time.Now().After(deadline) {
			t.Fatalf("planned move from %s: no other member holds %s within 60s", old.ID, vip)
		}
	}
	moved := time.Since(t0)
	if o := s.owner(t); o != to {
		t.Errorf("%s holds %s, but the cluster says %s owns it", to.ID, vip, o.ID)
	}
	// The old owner keeps the address until the new one announces it: wait
	// for that, then let the traffic run on a little (new connections made
	// after the move must succeed too).
	for deadline := time.Now().Add(30 * time.Second); old.HasAddr(vip) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if old.HasAddr(vip) {
		t.Errorf("%s still holds %s 30s after the VIP moved to %s", old.ID, vip, to.ID)
	}
	released := tr.steady.Elapsed()
	time.Sleep(1500 * time.Millisecond)
	stopped = true
	hr, sr := tr.stop()
	n, both := watch.finish()
	if len(both) > 0 {
		t.Logf("during the planned move two hosts held %s in %d of %d samples (the old owner keeps it until the new one announces it): %v", vip, len(both), n, both)
	}
	p := planned{from: old, to: to, moved: moved, hold: hr, steady: sr, guarded: -1, both: len(both),
		handovers: []handover{{seen - time.Second, released + time.Second}}}
	if n, err := to.GuardDrops(); err == nil {
		p.guarded = n - drops[to.ID]
	}
	return p
}

// check fails t for every held connection the move broke and every new
// connection that failed: a planned move loses nothing.
func (p planned) check(t *testing.T, what string) {
	t.Helper()
	for _, b := range p.hold.Broken {
		t.Errorf("%s: held connection %d to %s broke %s after the start: %s", what, b.Conn, b.Node, b.After.Round(time.Millisecond), b.Err)
	}
	// Counted from the mark (the move's start): a connection that failed
	// while the traffic was still starting up is logged, not the move's.
	if atHandover, away := p.residue(); p.steady.FailedAfterMark > 0 {
		t.Errorf("%s: %d of %d new connections failed (a planned move fails none): %v within a second of the handovers, %d away from any (longest gap %s)",
			what, p.steady.FailedAfterMark, p.steady.Attempts, atHandover, away, p.steady.LongestOutage.Round(time.Millisecond))
	}
	slow := 0
	for _, a := range p.steady.Timeline {
		switch {
		case a.Err != "":
			t.Logf("  failed new connection at %s (mark %s, took %s) from %s: %s", a.At.Round(time.Millisecond), p.steady.Mark.Round(time.Millisecond), a.Took.Round(time.Millisecond), a.Local, a.Err)
		case a.At >= p.steady.Mark && a.Took >= time.Second:
			slow++
			t.Logf("  slow new connection at %s (mark %s): answered after %s (a retransmission)", a.At.Round(time.Millisecond), p.steady.Mark.Round(time.Millisecond), a.Took.Round(time.Millisecond))
		}
	}
	guard := fmt.Sprintf("%d early node packets dropped by the takeover guard", p.guarded)
	if p.guarded < 0 {
		guard = "the takeover guard's drops not counted (members restarted)"
	}
	t.Logf("%s %s→%s: moved in %s, held %d/%d kept (longest ping wait %s), new %d/%d ok (%d slow, ≥ 1 s), %s",
		what, p.from.ID, p.to.ID, p.moved.Round(time.Millisecond), p.hold.Kept, p.hold.Opened, p.hold.LongestWait.Round(time.Millisecond), p.steady.OK, p.steady.Attempts, slow, guard)
}

// residue sorts the new connections that failed after the mark: per
// handover, those that started within its window; away, the rest.
func (p planned) residue() (atHandover []int, away int) {
	atHandover = make([]int, len(p.handovers))
next:
	for _, a := range p.steady.Timeline {
		if a.Err == "" || a.At < p.steady.Mark {
			continue
		}
		for i, h := range p.handovers {
			if a.At >= h.from && a.At <= h.to {
				atHandover[i]++
				continue next
			}
		}
		away++
	}
	return atHandover, away
}

// drain hands the owner's VIPs to the others under traffic (lbctl member
// drain), then makes the member active again.
func (s *suite) drain(t *testing.T) planned {
	t.Helper()
	var drained *lab.Member
	// Undone however the scenario ends: a member left draining would fail
	// every later scenario that moves the VIP to it.
	defer func() {
		if drained != nil {
			if _, err := s.l.LBCTL("member", "drain", drained.ID, "--undo"); err != nil {
				t.Errorf("undo the drain of %s: %v", drained.ID, err)
			}
		}
	}()
	return s.plannedMove(t, func(old *lab.Member) {
		drained = old
		s.lbctl(t, "member", "drain", old.ID, "--wait")
	})
}

// move hands the VIP to another member under traffic (lbctl vip move).
func (s *suite) move(t *testing.T) planned {
	t.Helper()
	return s.plannedMove(t, func(old *lab.Member) {
		for _, m := range s.l.Members {
			if m != old && m.Running() {
				s.lbctl(t, "vip", "move", vip, m.ID)
				return
			}
		}
		t.Fatalf("no running member to move %s to", vip)
	})
}

// rollingRestart restarts every member in turn (SIGTERM, start, serving) under
// traffic. A stopping member hands its VIPs over first (a planned move), so
// no held connection may drop and no new connection may fail.
func (s *suite) rollingRestart(t *testing.T) {
	tr := s.startTrafficWith(t, 20, s.plannedProbe())
	stopped := false
	defer func() {
		if !stopped {
			tr.stop()
		}
	}()
	tr.steady.Mark()
	var handovers []handover
	for _, m := range s.l.Members {
		t0 := time.Now()
		owned := s.owner(t) == m
		signalled := tr.steady.Elapsed()
		if err := m.Signal(syscall.SIGTERM, 20*time.Second); err != nil {
			t.Errorf("stop %s: %v", m.ID, err)
		}
		if owned { // a clean stop hands the VIP over before lbd exits
			handovers = append(handovers, handover{signalled - time.Second, tr.steady.Elapsed() + time.Second})
		}
		stopped := time.Since(t0)
		if owned && m.HasAddr(vip) {
			t.Errorf("%s stopped still holding %s: it should have handed it over first", m.ID, vip)
		}
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		if err := m.WaitServing(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		serving := time.Since(t0)
		// As docs/OPERATIONS.md's rolling upgrade says: the next member only
		// once the cluster is healthy again (every member ready and caught
		// up). Stopped sooner, on the loaded guest, the pair left could not
		// keep a leader while the restarted member was still starved.
		s.waitHealthy(t, 60*time.Second)
		t.Logf("%s (owner before: %v) stopped in %s, serving after %s, cluster healthy after %s; %s owned by %s", m.ID, owned, stopped.Round(time.Millisecond),
			serving.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), vip, s.owner(t).ID)
	}
	stopped = true
	hr, sr := tr.stop()
	p := planned{from: s.l.Members[0], to: s.owner(t), hold: hr, steady: sr, guarded: -1, handovers: handovers}
	p.check(t, "rolling restart")
	s.explainFailures(t, sr)
}

// explainFailures logs what every member's IPVS and conntrack tables hold
// for the source port of each new connection that failed: the evidence a
// failed run needs, since the tables expire long before anyone looks.
func (s *suite) explainFailures(t *testing.T, sr probe.SteadyResult) {
	t.Helper()
	var ports []string
	for _, a := range sr.Timeline {
		if a.Err != "" && a.Local != "" {
			ap, err := netip.ParseAddrPort(a.Local)
			if err == nil {
				ports = append(ports, fmt.Sprintf(":%d ", ap.Port()), fmt.Sprintf("sport=%d ", ap.Port()), fmt.Sprintf("dport=%d ", ap.Port()))
			}
		}
	}
	if len(ports) == 0 {
		return
	}
	failed := func(l string) bool {
		return slices.ContainsFunc(ports, func(p string) bool { return strings.Contains(l+" ", p) })
	}
	for _, m := range s.l.Members {
		ipvs, ct, err := m.ConnEntries(failed)
		if err != nil {
			t.Logf("%s: %v", m.ID, err)
		}
		t.Logf("%s IPVS connections of the failed ports: %q", m.ID, ipvs)
		t.Logf("%s conntrack entries of the failed ports: %q", m.ID, ct)
	}
}

// waitHealthy waits until lbctl status calls the cluster healthy.
func (s *suite) waitHealthy(t *testing.T, within time.Duration) {
	t.Helper()
	var last string
	for t0 := time.Now(); time.Since(t0) < within; time.Sleep(time.Second) {
		out, err := s.l.LBCTL("status", "-o", "json")
		var v struct {
			Health string `json:"health"`
		}
		if err == nil && json.Unmarshal([]byte(out), &v) == nil {
			if v.Health == "healthy" {
				return
			}
			last = v.Health
		} else {
			last = fmt.Sprint(err)
		}
	}
	t.Fatalf("cluster not healthy within %s (last: %s)", within, last)
}

// TestGuestBench: many failovers of each kind; figures as BENCH-JSON lines.
func TestGuestBench(t *testing.T) {
	s := start(t)
	rounds := 20
	if v := os.Getenv("EDGELB_HA_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("EDGELB_HA_ROUNDS=%q", v)
		}
		rounds = n
	}
	// First the cluster at rest: in the guest a member's cost is its
	// wake-ups (each clock read traps into the emulator), and what three
	// idle members leave of the one CPU decides whether a profile holds.
	t.Run("idle", func(t *testing.T) {
		time.Sleep(5 * time.Second) // past the VIP's creation
		u := lab.MeasureCPU(30 * time.Second)
		var sum, most time.Duration
		for _, m := range s.l.Members {
			c := u.Procs["lbd:"+m.ID]
			if c == 0 {
				t.Fatalf("no CPU time measured for lbd %s: %v", m.ID, u.Procs)
			}
			sum, most = sum+c, max(most, c)
		}
		pct := func(d time.Duration) float64 { return 100 * d.Seconds() / u.Span.Seconds() }
		fmt.Printf("BENCH-JSON {\"name\":\"idle-cpu-member\",\"value\":%.1f,\"max\":%.1f,\"n\":%d,\"profile\":%q}\n",
			pct(sum/time.Duration(len(s.l.Members))), pct(most), len(s.l.Members), s.profile)
		fmt.Printf("BENCH-JSON {\"name\":\"idle-cpu-guest\",\"value\":%.1f,\"profile\":%q}\n", pct(u.Busy), s.profile)
	})
	for _, kind := range []string{"sigkill", "leader", "partition", "oneway"} {
		t.Run(kind, func(t *testing.T) {
			var outs, takeovers []time.Duration
			opened, kept := 0, 0
			for i := 0; i < rounds && !t.Failed(); i++ {
				r := s.failover(t, kind)
				outs = append(outs, r.Outage)
				takeovers = append(takeovers, r.Takeover)
				opened += r.Opened
				kept += r.Kept
			}
			p50, p99 := stats.Percentiles(outs)
			fmt.Printf("BENCH-JSON {\"name\":\"failover-%s\",\"p50\":%.1f,\"p99\":%.1f,\"n\":%d,\"profile\":%q}\n",
				kind, ms(p50), ms(p99), len(outs), s.profile)
			// The new connections' outage includes the client's SYN
			// retransmission (1 s) for a SYN sent into any gap, however
			// short; the takeover itself is the address on the survivor.
			p50, p99 = stats.Percentiles(takeovers)
			fmt.Printf("BENCH-JSON {\"name\":\"takeover-%s\",\"p50\":%.1f,\"p99\":%.1f,\"n\":%d,\"profile\":%q}\n",
				kind, ms(p50), ms(p99), len(takeovers), s.profile)
			if opened > 0 {
				fmt.Printf("BENCH-JSON {\"name\":\"kept-%s\",\"value\":%.2f,\"n\":%d}\n", kind, 100*float64(kept)/float64(opened), opened)
			}
		})
	}
	t.Run("drain", func(t *testing.T) {
		dropped, failed := 0, 0
		n := max(rounds/4, 1)
		for i := 0; i < n; i++ {
			p := s.drain(t)
			dropped += len(p.hold.Broken)
			failed += p.steady.Failed
		}
		fmt.Printf("BENCH-JSON {\"name\":\"drain-dropped\",\"value\":%d,\"n\":%d}\n", dropped, n)
		fmt.Printf("BENCH-JSON {\"name\":\"drain-new-failed\",\"value\":%d,\"n\":%d}\n", failed, n)
	})
}

// arpReplies asks for ip from the client three times, a second apart, and
// returns the distinct hardware addresses that answered. The requests go
// out of a packet socket opened in the client's namespace, not through
// arping: a process start in the guest stalls every lbd for up to a second.
func arpReplies(ip string) ([]string, error) {
	target, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, err
	}
	var c *arp.Client
	if err := netns.Do(client, func() error {
		ifi, err := net.InterfaceByName(topo.Interface)
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	}); err != nil {
		return nil, fmt.Errorf("arp socket in %s: %w", client, err)
	}
	defer c.Close()
	seen := map[string]bool{}
	var macs []string
	for i := 0; i < 3; i++ {
		if err := c.Request(target); err != nil {
			return nil, fmt.Errorf("arp request for %s: %w", ip, err)
		}
		if err := c.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			return nil, err
		}
		for {
			p, _, err := c.Read()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read arp replies for %s: %w", ip, err)
			}
			if m := p.SenderHardwareAddr.String(); p.Operation == arp.OperationReply && p.SenderIP == target && !seen[m] {
				seen[m] = true
				macs = append(macs, m)
			}
		}
	}
	return macs, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
