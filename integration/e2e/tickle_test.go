package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/probe"
	"github.com/edgelb/edgelb/integration/topo"
	"github.com/edgelb/edgelb/lbd/dataplane/syncd"
)

// tickleACKs: connections whose client is silent survive a move. The
// client asked once for a stream and only reads; the node pushes a line
// every second, so between pushes the client has acknowledged everything
// and sends nothing. After the gratuitous ARP the node's next push reaches
// the new owner, which has no conntrack entry for the connection yet: the
// takeover guard drops it and its retransmits, nothing from the client
// would set the connection up, and when the guard's window ends the host's
// stack resets it. The new owner's tickle ACKs (lbd dataplane/tickle.go,
// sent below netfilter) make each client's stack answer at once, and that
// answer sets the connection up. A connection breaks here on a reset or when
// no line arrives for 8 s. The control, with dataPlane.tickleACKs: false
// (EDGELB_E2E_LBD_CONFIG), breaks them (the closing note of issue 19 has
// the figures).
func (s *scenarios) tickleACKs(t *testing.T) {
	const name, vip = "silent", "10.0.0.210"
	tcp, owner, other := s.movableVIP(t, name, vip)
	defer s.deleteVIP_(t, name)
	tcp.Timeout, tcp.PushEvery = 8*time.Second, time.Second
	before, err := other.GuardDrops()
	if err != nil {
		t.Fatal(err)
	}
	hold, err := probe.StartPushHold(tcp, 10, time.Hour) // no ping after the request
	if err != nil {
		t.Fatal(err)
	}
	logRedials(t, hold)
	time.Sleep(2 * time.Second) // connection sync has carried them to every member
	s.moveHeld(t, vip, owner, other, hold)
	time.Sleep(14 * time.Second) // past the guard's window (10 s) and a node retransmit after it
	hr := hold.Stop()
	after, err := other.GuardDrops()
	if err != nil {
		t.Fatal(err)
	}
	reportBroken(t, "silent-client", hr)
	sent := lastLogLine(other, "tickle ACKs")
	if sent == "" {
		sent = "no tickle ACKs logged"
	}
	t.Logf("moved %s→%s: silent-client connections %d/%d kept, %d lines read; the guard dropped %d early node packets (the clients' answers to the tickles usually come first); %s",
		owner.ID, other.ID, hr.Kept, hr.Opened, hr.Pings, after-before, sent)
	if !strings.Contains(sent, "msg=\"tickle ACKs sent") {
		t.Errorf("%s sent no tickle ACKs for the connections it took over (%s)", other.ID, sent)
	}
}

// lastLogLine returns m's last log line (of the tail) that holds every one
// of words, or "" when none does.
func lastLogLine(m *lab.Member, words ...string) string {
	var last string
next:
	for _, l := range strings.Split(m.LogTail(200), "\n") {
		for _, w := range words {
			if !strings.Contains(l, w) {
				continue next
			}
		}
		last = strings.TrimSpace(l)
	}
	return last
}

// handoverSync: a planned move carries the old owner's connections to the
// new one even with the old owner's kernel sync daemon (master) stopped,
// because lbd sends them itself, in the kernel's sync messages, when the
// move starts and when it withdraws the address (lbd dataplane/syncpush.go).
// The VIP schedules round-robin: a connection the new owner did not know
// would be scheduled afresh there (sloppy_tcp), most likely to another node,
// and break.
func (s *scenarios) handoverSync(t *testing.T) {
	const name, vip = "handsync", "10.0.0.219"
	tcp := probe.Options{Addr: vip + ":80", NetNS: client, Timeout: 2 * time.Second}
	owner := s.createVIP(t, name, []string{"--vip", vip, "--port", "tcp/80:30080", "--scheduler", "rr",
		"--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 1), "--backend", nodeBackend(3, 1)}, tcp)
	defer s.deleteVIP_(t, name)
	to := s.otherMember(t, owner)
	// lbd starts the master with small messages (syncd.MasterMaxLen), so
	// they leave within tens of milliseconds under traffic.
	daemons, err := topo.Run(owner.Host.Name, "ipvsadm", "-L", "--daemon")
	if err != nil {
		t.Fatal(err)
	}
	master := ""
	for _, l := range strings.Split(daemons, "\n") {
		if strings.HasPrefix(l, "master sync daemon") {
			master = l
		}
	}
	if want := fmt.Sprintf("maxlen=%d,", syncd.MasterMaxLen); !strings.Contains(master, want) {
		t.Errorf("%s's master sync daemon is not started with %s:\n%s", owner.ID, want, daemons)
	}
	// Restarted by ipvsadm, which cannot set the message size (Debian's has
	// no --syncmaxlen): the scenarios after this one run with the kernel's
	// default size on that member.
	defer stopSyncDaemon(t, owner, "master")()
	hold, err := probe.StartHold(tcp, 10, 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	logRedials(t, hold)
	time.Sleep(2 * time.Second)
	// Only established entries count: the connection that showed the VIP
	// answering closed before the daemon stopped, and its synced close
	// (TIME_WAIT) may still be listed on the other member.
	conns, _ := topo.Run(to.Host.Name, "ipvsadm", "-Lnc")
	if slices.ContainsFunc(strings.Split(conns, "\n"), func(l string) bool {
		return strings.Contains(l, " ESTABLISHED ") && strings.Contains(l, vip+":80")
	}) {
		hold.Stop()
		t.Fatalf("%s knows the connections although %s's master sync daemon is stopped:\n%s", to.ID, owner.ID, conns)
	}
	s.moveHeld(t, vip, owner, to, hold)
	time.Sleep(3 * time.Second) // a dozen pings on each connection through the new owner
	hr := hold.Stop()
	reportBroken(t, "held", hr)
	sent := lastLogLine(owner, "connections of a handed-over VIP sent", vip)
	if sent == "" {
		t.Errorf("%s logged no handover sync for %s", owner.ID, vip)
	}
	t.Logf("moved %s→%s (rr) with %s's master sync daemon stopped: held %d/%d kept, %d pings; %s", owner.ID, to.ID, owner.ID, hr.Kept, hr.Opened, hr.Pings, sent)
}
