package guesttest

import (
	"strings"
	"testing"
)

func TestParseGuestOutput(t *testing.T) {
	out := `=== RUN   TestGuest
    lab.go:111: topology built
=== RUN   TestGuest/weights_tcp_udp
    guest_test.go:10: tcp wrr ok
--- PASS: TestGuest/weights_tcp_udp (1.00s)
=== RUN   TestGuest/restart_lbd_under_traffic
=== RUN   TestGuest/restart_lbd_under_traffic/sigkill
    guest_test.go:20: held connection broke
--- FAIL: TestGuest/restart_lbd_under_traffic (2.00s)
    --- FAIL: TestGuest/restart_lbd_under_traffic/sigkill (2.00s)
=== RUN   TestGuest/ipv6_vip
    guest_test.go:30: no answer
=== NAME  TestGuest
    guest_test.go:45: lbd log tail
--- FAIL: TestGuest (3.00s)
FAIL
`
	g := parseGuest(strings.NewReader(out), false)
	want := map[string]string{
		"TestGuest":                                   "FAIL",
		"TestGuest/weights_tcp_udp":                   "PASS",
		"TestGuest/restart_lbd_under_traffic":         "FAIL",
		"TestGuest/restart_lbd_under_traffic/sigkill": "FAIL",
		"TestGuest/ipv6_vip":                          "", // crashed: no result line
	}
	for name, status := range want {
		r := g.results[name]
		if r == nil {
			t.Errorf("%s missing", name)
			continue
		}
		if r.status != status {
			t.Errorf("%s: status %q, want %q", name, r.status, status)
		}
	}
	if got := g.results["TestGuest/restart_lbd_under_traffic/sigkill"].output.String(); !strings.Contains(got, "held connection broke") {
		t.Errorf("sigkill output %q", got)
	}
	if got := g.results["TestGuest"].output.String(); !strings.Contains(got, "lbd log tail") || !strings.Contains(got, "topology built") {
		t.Errorf("TestGuest output %q", got)
	}

	// The summary names the failed leaves with their messages, not the
	// parent (whose log tail is what pushed them out of sight), nor passes.
	sum := g.failureSummary("TestGuest", 12)
	want2 := "TestGuest/restart_lbd_under_traffic/sigkill: FAIL\n    guest_test.go:20: held connection broke\n" +
		"TestGuest/ipv6_vip: no result (crashed or timed out)\n    guest_test.go:30: no answer\n"
	if sum != want2 {
		t.Errorf("summary:\n%s\nwant:\n%s", sum, want2)
	}
}
