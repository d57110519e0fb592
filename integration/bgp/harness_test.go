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
	"os"
	"testing"

	"github.com/edgelb/edgelb/integration/guesttest"
	"github.com/edgelb/edgelb/integration/uml"
)

func TestMain(m *testing.M) {
	uml.MaybeGuestInit() // PID 1 of the guest: mount, load modules, run TestGuest
	os.Exit(m.Run())
}

func TestUML(t *testing.T) {
	if os.Getenv("EDGELB_UML") != "1" {
		t.Skip("BGP-mode scenarios boot a User-Mode Linux guest; run: sudo bash scripts/uml-deps.sh && EDGELB_UML=1 go test ./integration/bgp/ -v -timeout 20m")
	}
	if uml.InGuest() {
		t.Skip("host side only")
	}
	guesttest.Run(t, guesttest.Options{})
}
