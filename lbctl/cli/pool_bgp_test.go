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
