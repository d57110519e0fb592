package cli

import (
	"strings"
	"testing"

	"github.com/edgelb/edgelb/lbctl/exitcode"
)

// A bgp pool is created with its attributes in canonical form; bad
// attributes are refused by the server (InvalidArgument) or, for a flag
// combination, by lbctl (usage), and nothing is created.
func TestPoolCreateBGP(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "rack", "--range", "198.51.100.0/26", "--mode", "bgp", "--community", "65000:0100",
		"--large-community", "65000:1:2", "--local-pref", "200", "--aggregation-length", "32")
	p := decodeJSON(t, e.ok("pool", "get", "rack", "-o", "json"))["pool"].(map[string]any)
	if p["announceMode"] != "ANNOUNCE_MODE_BGP" {
		t.Errorf("announceMode = %v", p["announceMode"])
	}
	b, _ := p["bgp"].(map[string]any)
	if b == nil || b["communities"].([]any)[0] != "65000:100" || b["localPreference"] != float64(200) {
		t.Errorf("bgp attributes = %v", b)
	}
	if tbl := e.ok("pool", "list"); !strings.Contains(tbl, "MODE") || !strings.Contains(tbl, "bgp") || !strings.Contains(tbl, "l2") {
		t.Errorf("pool list:\n%s", tbl)
	}

	msg := e.fails(exitcode.InvalidArgument, "pool", "create", "bad", "--range", "203.0.113.0/28", "--mode", "bgp", "--community", "65535:0")
	if !strings.Contains(msg, "GRACEFUL_SHUTDOWN") {
		t.Errorf("graceful-shutdown community: %q", msg)
	}
	msg = e.fails(exitcode.InvalidArgument, "pool", "create", "bad", "--range", "203.0.113.0/28", "--mode", "bgp", "--aggregation-length", "40")
	if !strings.Contains(msg, "aggregation_length") {
		t.Errorf("aggregation length: %q", msg)
	}
	if msg := e.fails(exitcode.Usage, "pool", "create", "bad", "--range", "203.0.113.0/28", "--community", "65000:1"); !strings.Contains(msg, "--mode bgp") {
		t.Errorf("community without bgp mode: %q", msg)
	}
	if msg := e.fails(exitcode.Usage, "pool", "create", "bad", "--range", "203.0.113.0/28", "--mode", "ospf"); !strings.Contains(msg, "ospf") {
		t.Errorf("mode: %q", msg)
	}
	e.fails(exitcode.NotFound, "pool", "get", "bad")
}

// A VIP in a bgp pool is served by every member at once: lbctl vip create
// with rr or nat there exits 6 (FailedPrecondition) with the reason and the
// fix, creates nothing; without --scheduler/--mode it gets mh and dr. An
// update to nat is refused alike. --help says so.
func TestVIPInBGPPoolModes(t *testing.T) {
	e := newEnv(t)
	e.ok("pool", "create", "rack", "--range", "198.51.100.0/28", "--mode", "bgp")
	for _, args := range [][]string{
		{"--scheduler", "rr"},
		{"--mode", "nat"},
	} {
		msg := e.fails(exitcode.Conflict, append([]string{"vip", "create", "web", "--pool", "rack", "--port", "tcp/80", "--backend", "10.0.0.11"}, args...)...)
		for _, want := range []string{"[BGP_POOL_NEEDS_MH_DR]", "--scheduler mh --mode dr", "a pool in l2 mode"} {
			if !strings.Contains(msg, want) {
				t.Errorf("vip create %v: %q does not say %q", args, msg, want)
			}
		}
	}
	e.fails(exitcode.NotFound, "vip", "get", "web")
	vs := decodeJSON(t, e.ok("vip", "create", "web", "--pool", "rack", "--port", "tcp/80", "--backend", "10.0.0.11", "-o", "json"))
	if vs["scheduler"] != "SCHEDULER_MH" || vs["forwardingMode"] != "FORWARDING_MODE_DR" {
		t.Errorf("defaults in a bgp pool: scheduler %v, mode %v; want mh, dr", vs["scheduler"], vs["forwardingMode"])
	}
	if msg := e.fails(exitcode.Conflict, "vip", "update", "web", "--mode", "nat"); !strings.Contains(msg, "BGP_POOL_NEEDS_MH_DR") {
		t.Errorf("vip update --mode nat: %q", msg)
	}
	got := decodeJSON(t, e.ok("vip", "get", "web", "-o", "json"))
	if got["forwardingMode"] != "FORWARDING_MODE_DR" {
		t.Errorf("refused update changed the mode to %v", got["forwardingMode"])
	}
	if help := e.ok("vip", "create", "--help"); !strings.Contains(help, "bgp mode") || !strings.Contains(help, "BGP_POOL_NEEDS_MH_DR") {
		t.Errorf("vip create --help does not explain bgp pools:\n%s", help)
	}
}
