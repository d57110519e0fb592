package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/probe"
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
	sent := tickleLog(t, other)
	t.Logf("moved %s→%s: silent-client connections %d/%d kept, %d lines read; the guard dropped %d early node packets (the clients' answers to the tickles usually come first); %s",
		owner.ID, other.ID, hr.Kept, hr.Opened, hr.Pings, after-before, sent)
	if !strings.Contains(sent, "msg=\"tickle ACKs sent") {
		t.Errorf("%s sent no tickle ACKs for the connections it took over (%s)", other.ID, sent)
	}
}

// tickleLog returns the new owner's last tickle log line (what it sent), or
// says there was none.
func tickleLog(t *testing.T, m *lab.Member) string {
	t.Helper()
	var last string
	for _, l := range strings.Split(m.LogTail(200), "\n") {
		if strings.Contains(l, "tickle ACKs") {
			last = strings.TrimSpace(l)
		}
	}
	if last == "" {
		return "no tickle ACKs logged"
	}
	return last
}
