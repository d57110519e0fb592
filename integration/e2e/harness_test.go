// Package e2e holds edgelb's real-kernel scenario tests. They run inside one
// User-Mode Linux guest per `go test` run (integration/uml): the host side (TestUML)
// builds lbd, lbctl, nodeserver and probe, boots the guest with this same test binary as
// its init, runs TestGuest inside it — the topology of integration/topo with three lbd
// members and three nodes — and turns each guest scenario into a subtest here.
//
//	sudo bash scripts/uml-deps.sh
//	EDGELB_UML=1 go test ./integration/e2e/ -v -timeout 20m
//	EDGELB_UML=1 go test ./integration/e2e/ -v -run 'TestUML/ipv6'   # one scenario
//
// Knobs: EDGELB_E2E_BIN=DIR uses prebuilt binaries (lbd, lbctl, nodeserver, probe)
// instead of building them; EDGELB_E2E_KEEP=1 keeps the work directory (lbd and node
// logs, guest console); EDGELB_E2E_DATAPLANE=none runs lbd control-plane-only (harness
// debugging; the data-plane scenarios then fail).
package e2e

import (
	"testing"

	"github.com/edgelb/edgelb/integration/guesttest"
)

func TestMain(m *testing.M) { guesttest.Main(m) }

const guestEnv = guesttest.GuestEnv

func TestUML(t *testing.T) {
	guesttest.HostOnly(t, "real-kernel scenarios", "sudo bash scripts/uml-deps.sh && EDGELB_UML=1 go test ./integration/e2e/ -v -timeout 20m (or scripts/e2e-uml.sh)")
	guesttest.Run(t, guesttest.Options{})
}
