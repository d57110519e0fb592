package ha

import (
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/probe"
)

func TestOutage(t *testing.T) {
	ms := time.Millisecond
	ok := func(at, took time.Duration) probe.Attempt { return probe.Attempt{At: at, Took: took} }
	bad := func(at time.Duration) probe.Attempt { return probe.Attempt{At: at, Took: 500 * ms, Err: "timeout"} }
	for _, c := range []struct {
		name string
		r    probe.SteadyResult
		want time.Duration
	}{
		{"never failed", probe.SteadyResult{Mark: 100 * ms, Timeline: []probe.Attempt{ok(0, ms), ok(110*ms, ms), ok(150*ms, ms)}}, 0},
		// The first attempt after the mark failed: the outage counts from the mark.
		{"cut", probe.SteadyResult{Mark: 100 * ms, Timeline: []probe.Attempt{ok(50*ms, ms), bad(120 * ms), bad(200 * ms), ok(900*ms, 2*ms)}}, 802 * ms},
		// Served on after the mark, then a gap (fence withdrew before the takeover).
		{"gap", probe.SteadyResult{Mark: 100 * ms, Timeline: []probe.Attempt{ok(120*ms, ms), bad(2000 * ms), ok(2400*ms, ms), bad(2500 * ms), ok(2600*ms, ms)}}, 401 * ms},
		// Failures before the mark do not count.
		{"before mark", probe.SteadyResult{Mark: 1000 * ms, Timeline: []probe.Attempt{bad(0), ok(100*ms, ms), ok(1100*ms, ms)}}, 0},
		{"never recovered", probe.SteadyResult{Mark: 0, Timeline: []probe.Attempt{bad(0), bad(1000 * ms)}}, 1500 * ms},
	} {
		if got := outage(c.r); got != c.want {
			t.Errorf("%s: outage %s, want %s", c.name, got, c.want)
		}
	}
}

// TestProfileLease: the hung scenarios bound the fence by the lease of the
// profile in use, lbd's own default for the empty lan profile.
func TestProfileLease(t *testing.T) {
	for name, want := range map[string]time.Duration{"lan": 250 * time.Millisecond, "double": 500 * time.Millisecond, "guest": 4 * time.Second} {
		if got := (&suite{profile: name}).lease(t); got != want {
			t.Errorf("profile %s: lease %s, want %s", name, got, want)
		}
	}
}

// TestResidue: failed new connections count against the handover whose
// window they started in; those before the mark are not the move's; the
// rest are away from any handover.
func TestResidue(t *testing.T) {
	s := time.Second
	bad := func(at time.Duration) probe.Attempt { return probe.Attempt{At: at, Err: "timeout"} }
	p := planned{
		steady: probe.SteadyResult{Mark: 2 * s, Timeline: []probe.Attempt{
			bad(s), {At: 3 * s}, bad(4 * s), bad(5 * s), bad(9 * s), bad(20 * s),
		}},
		handovers: []handover{{3 * s, 5 * s}, {8 * s, 10 * s}},
	}
	at, away := p.residue()
	if len(at) != 2 || at[0] != 2 || at[1] != 1 || away != 1 {
		t.Errorf("residue = %v, %d; want [2 1], 1", at, away)
	}
}
