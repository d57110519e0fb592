package daemon

import (
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/config"
)

// What the probes tell peers: a member that serves, or catches up while its
// reconcile loop runs, is not one that holds nothing (whose VIPs peers move
// after the grace); a hung loop, or a catch-up that never ends, is.
func TestReportsServing(t *testing.T) {
	const lease, grace = 500 * time.Millisecond, 700 * time.Millisecond
	now := time.Now()
	for _, c := range []struct {
		name                  string
		servingUntil, catchUp time.Time // zero: unset
		beat                  time.Time
		want                  bool
	}{
		{"serving", now.Add(lease), time.Time{}, now, true},
		{"lease lapsed, no catch-up", now.Add(-time.Millisecond), time.Time{}, now, false},
		{"never served", time.Time{}, time.Time{}, now, false},
		{"catching up, loop running", time.Time{}, now.Add(-2 * grace), now, true},
		{"catching up, loop hung", time.Time{}, now.Add(-2 * grace), now.Add(-2 * lease), false},
		{"catching up for too long", time.Time{}, now.Add(-catchUpHeld*grace - time.Millisecond), now, false},
		{"serving beats a hung loop", now.Add(lease), now.Add(-time.Hour), now.Add(-time.Hour), true},
	} {
		d := &Daemon{}
		d.cfg.Ownership = config.Ownership{Lease: config.Duration{Duration: lease}, Grace: config.Duration{Duration: grace}}
		if !c.servingUntil.IsZero() {
			d.servingUntil.Store(&c.servingUntil)
		}
		if !c.catchUp.IsZero() {
			d.catchingUp.Store(&c.catchUp)
		}
		d.loopBeat.Store(c.beat.UnixNano())
		if got := d.reportsServing(); got != c.want {
			t.Errorf("%s: reportsServing %v, want %v", c.name, got, c.want)
		}
	}
}
