package bgp

import (
	"context"
	"log/slog"
	"net/netip"
	"time"
)

// Inputs reads the current inputs of Decide, and how long this member's
// lease has left (≤ 0 when it is not valid): when it runs out without a
// renewal the decision changes though nothing else did.
type Inputs func() (m Member, vips []VIP, leaseLeft time.Duration)

// Announcer keeps a Speaker's routes equal to Decide's result: it decides
// again when kicked (state, health, drain or lease changes) and when the
// lease or a drain's graceful period runs out.
type Announcer struct {
	sp   *Speaker
	in   Inputs
	log  *slog.Logger
	kick chan struct{}
	// local holds the served VIPs on this host (nil: no data plane).
	local Local
}

// Local holds served VIPs as local addresses; LocalAddrs is the real one.
type Local interface {
	Add(vips []netip.Addr) error
	Keep(vips []netip.Addr) error
	Holds(a netip.Addr) bool
}

// SetLocal makes the announcer hold the VIPs it advertises on this host:
// added before their routes go out, removed after they are withdrawn, so
// no packet routed here finds the address missing.
func (a *Announcer) SetLocal(l Local) { a.local = l }

// NewAnnouncer returns an announcer; Run drives it.
func NewAnnouncer(sp *Speaker, in Inputs, log *slog.Logger) *Announcer {
	if log == nil {
		log = slog.Default()
	}
	return &Announcer{sp: sp, in: in, log: log, kick: make(chan struct{}, 1)}
}

// Kick asks for a new decision; it never blocks.
func (a *Announcer) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// retryApply is how soon a failed Apply is tried again.
const retryApply = time.Second

// Run decides and applies until ctx ends. It does not withdraw on return:
// Speaker.Stop does.
func (a *Announcer) Run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		m, vips, left := a.in()
		d := Decide(m, vips)
		next := d.Recheck
		if a.local != nil {
			if err := a.local.Add(d.VIPs); err != nil {
				a.log.Warn("bgp: add VIPs locally", "err", err)
				next = pick(next, retryApply)
				// Fail closed: no route for a prefix with no VIP held here.
				d.Routes = heldOnly(d.Routes, d.VIPs, a.local)
			}
		}
		if err := a.sp.Apply(d.Routes); err != nil {
			a.log.Warn("bgp: apply routes", "err", err)
			next = pick(next, retryApply)
		} else if a.local != nil {
			if err := a.local.Keep(d.VIPs); err != nil {
				a.log.Warn("bgp: remove VIPs locally", "err", err)
				next = pick(next, retryApply)
			}
		}
		if m.LeaseValid && left > 0 {
			// The lease lapsing withdraws everything: wake when it would.
			next = pick(next, left)
		}
		if next <= 0 {
			next = time.Hour
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-t.C:
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
	}
}

// pick is the sooner of two positive durations (0 means none).
func pick(a, b time.Duration) time.Duration {
	if a <= 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// heldOnly keeps the routes covering at least one VIP the host holds.
func heldOnly(routes []Route, vips []netip.Addr, l Local) []Route {
	out := routes[:0:0]
	for _, r := range routes {
		for _, v := range vips {
			if r.Prefix.Contains(v) && l.Holds(v) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}
