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

	"github.com/edgelb/edgelb/integration/guesttest"
)

func TestMain(m *testing.M) { guesttest.Main(m) }

func TestUML(t *testing.T) {
	guesttest.HostOnly(t, "BGP-mode scenarios", "sudo bash scripts/uml-deps.sh && EDGELB_UML=1 go test ./integration/bgp/ -v -timeout 20m")
	guesttest.Run(t, guesttest.Options{})
}
