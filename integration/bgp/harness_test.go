// Package bgp holds edgelb's BGP-mode scenarios, run inside one User-Mode
// Linux guest per `go test` run like integration/e2e: the lab of
// integration/lab with Config.Router, a router namespace running BIRD 2 between
// the client and the edges (BGP and BFD to every edge, ECMP into its kernel).
//
//	sudo bash scripts/uml-deps.sh      # installs bird2 with the UML packages
//	EDGELB_UML=1 go test ./integration/bgp/ -v -timeout 20m
//
// Knobs as integration/e2e: EDGELB_E2E_BIN=DIR (prebuilt lbd, lbctl,
// nodeserver, probe), EDGELB_E2E_KEEP=1 (keep lbd, node and bird logs).
package bgp

import (
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/guesttest"
	"github.com/edgelb/edgelb/integration/probe"
)

func TestMain(m *testing.M) { guesttest.Main(m) }

func TestUML(t *testing.T) {
	guesttest.HostOnly(t, "BGP-mode scenarios", "sudo bash scripts/uml-deps.sh && EDGELB_UML=1 go test ./integration/bgp/ -v -timeout 20m")
	guesttest.Run(t, guesttest.Options{})
}

// failingFor: failures up to the bound set the figure, later ones are
// counted apart, those before the mark and successes not at all.
func TestFailingFor(t *testing.T) {
	ms := time.Millisecond
	at := func(d time.Duration, err string) probe.Attempt { return probe.Attempt{At: 1000*ms + d, Err: err} }
	sr := probe.SteadyResult{Mark: 1000 * ms, Timeline: []probe.Attempt{
		at(-100*ms, "before the mark"), at(100*ms, ""), at(300*ms, "lost"), at(700*ms, "lost"), at(900*ms, ""), at(3*time.Second, "late"),
	}}
	if failing, late := failingFor(sr, 2*time.Second); failing != 700*ms || late != 1 {
		t.Errorf("failing %s, late %d; want 700ms and 1", failing, late)
	}
	if failing, late := failingFor(probe.SteadyResult{Mark: ms}, time.Second); failing != 0 || late != 0 {
		t.Errorf("no attempts: failing %s, late %d", failing, late)
	}
}
