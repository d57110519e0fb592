// Package ha holds edgelb's failover scenarios (issue 4), run against real lbd
// processes and the real IPVS of a User-Mode Linux guest (integration/guesttest):
// three edge hosts on one segment, three nodes, a client, live traffic — new
// connections at a steady rate and a set of long-lived ones — while an owner is
// SIGKILLed, the raft leader that owns the VIP is SIGKILLed, an owner's link is
// cut, an owner's packets to its peers are dropped (a one-way partition), a
// member is drained, and every member is restarted in turn; and an owner that
// hangs (issue 18: SIGSTOP of a follower or of the raft leader, a reconcile
// pass held through the EDGELB_TEST_HOOKS stall file), whose fence must
// withdraw the VIP within the lease.
//
//	sudo bash scripts/uml-deps.sh
//	EDGELB_UML=1 go test ./integration/ha/ -v -run 'TestUML$' -timeout 20m          # scenarios
//	EDGELB_UML=1 go test ./integration/ha/ -v -run 'TestUML$/hung' -timeout 20m     # the hung owners only
//	EDGELB_UML=1 go test ./integration/ha/ -v -run 'TestUMLBench' -timeout 40m      # ≥20 failovers of each kind
//
// EDGELB_HA_ROUNDS sets the rounds per kind of the benchmark (default 20);
// EDGELB_HA_PROFILE picks lbd's timing: "double" (twice lbd's defaults, the
// default), "lan" (lbd's defaults) or "guest" (the slow timers of a guest
// whose clock reads trapped); see profiles.
// EDGELB_E2E_SNAT picks the rule engine (nftables, iptables-legacy, ...), as in
// integration/e2e; EDGELB_HA_SCHEDULER the VIP's scheduler (default lbd's, mh).
package ha

import (
	"strings"
	"testing"

	"github.com/edgelb/edgelb/integration/guesttest"
)

func TestMain(m *testing.M) { guesttest.Main(m) }

func hostOnly(t *testing.T) {
	t.Helper()
	guesttest.HostOnly(t, "failover scenarios", "sudo bash scripts/uml-deps.sh && EDGELB_UML=1 go test ./integration/ha/ -v")
}

// TestUML runs the failover scenarios once each.
func TestUML(t *testing.T) {
	hostOnly(t)
	guesttest.Run(t, guesttest.Options{GuestTest: "TestGuest"})
}

// TestUMLBench runs many failovers of each kind and prints their figures as
// BENCH-JSON lines (make bench reads them). It runs only when asked for by name.
func TestUMLBench(t *testing.T) {
	hostOnly(t)
	if f := guesttest.RunFilter(); !strings.Contains(f, "Bench") {
		t.Skip("the failover benchmark runs only when named: -run TestUMLBench")
	}
	guesttest.Run(t, guesttest.Options{GuestTest: "TestGuestBench"})
}
