package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsconn"
)

// PullHandover asks from, a VIP's previous owner, to send the established
// connections of vips to every member's kernel sync daemon now (its
// PushConnections), and returns once it has, with the count it sent per VIP.
// ctx bounds it. It returns ErrNotInContact at once when from is not heard
// from: a crashed owner has nothing to send and must cost the takeover
// nothing.
type PullHandover func(ctx context.Context, from string, vips []netip.Addr) (map[netip.Addr]int, error)

// ErrNotInContact is what a PullHandover returns, at once, for a previous
// owner this member does not hear from.
var ErrNotInContact = errors.New("the previous owner is not in contact")

// maxPullWait bounds the wait for the old owners' pushes in a pass that takes
// VIPs over. The new owner's pass and the old owner's act on the same commit,
// and the old owner pushes by itself when its pass starts the handover; the
// pull only closes the race in which the new owner would announce first
// (docs/DATAPLANE.md, "Handover sync"). An answer on a healthy segment takes
// a few milliseconds (one read of /proc/net/ip_vs_conn, a few multicast
// datagrams). In a planned move the old owner serves until the new one
// announces, so waiting costs no traffic; but a previous owner in contact
// whose own pass hung no longer serves, and the wait adds to that outage.
// Beside stress-ng the guest's answer took 90 ms (2026-12-05), past an
// earlier bound of 100 ms; hence 500 ms, still at most a quarter of the
// lease (pullWait).
const maxPullWait = 500 * time.Millisecond

// pullWait is how long a pass waits for the pulls: maxPullWait, or a
// quarter of the lease when that is shorter (lbd's default lease is 250 ms,
// and a pass must add its addresses well within it).
func (e *Engine) pullWait() time.Duration {
	if l := e.cfg.FenceDelay; l > 0 {
		return min(maxPullWait, l/4)
	}
	return maxPullWait
}

// SetPullHandover installs Config.PullHandover once what answers it (the
// liveness connections to the other members) exists.
func (e *Engine) SetPullHandover(f PullHandover) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg.PullHandover = f
}

// pullHandovers asks the previous owners of the VIPs this pass takes over
// (from: VIP → previous owner) to push their connections, one request per
// owner, all at once, and returns a function that waits for the answers, at
// most pullWait from now, and a channel closed when that wait is over (at
// once when nothing is pulled: the stale conntrack clean-up before the
// addresses uses the same time, not more). A failure or a timeout is
// logged: the takeover goes on. The caller holds e.mu.
func (e *Engine) pullHandovers(ctx context.Context, vips []netip.Addr, from map[netip.Addr]string, tenantOf func(netip.Addr) string) (wait func(), over <-chan struct{}) {
	pull := e.cfg.PullHandover
	byOwner := map[string][]netip.Addr{}
	for _, a := range vips {
		if o := from[a]; o != "" {
			byOwner[o] = append(byOwner[o], a)
		}
	}
	if pull == nil || e.cfg.SyncInterface == "" || len(byOwner) == 0 {
		// Without a sync daemon here, a push would reach nothing.
		return func() {}, alreadyOver
	}
	// Read now, under the caller's lock: a goroutine that outlives the
	// wait must not read the plan's maps that later passes write.
	tenant := make(map[netip.Addr]string, len(vips))
	for _, vs := range byOwner {
		for _, a := range vs {
			tenant[a] = tenantOf(a)
		}
	}
	bound := e.pullWait()
	ctx, cancel := context.WithTimeout(ctx, bound)
	var wg sync.WaitGroup
	for owner, vs := range byOwner {
		wg.Go(func() {
			t0 := time.Now()
			sent, err := pull(ctx, owner, vs)
			took := time.Since(t0).Round(time.Microsecond)
			for _, a := range vs {
				switch {
				case errors.Is(err, ErrNotInContact):
					e.log.Debug("connections of a VIP taken over not pulled: its previous owner is not in contact", "vip", a, "tenant", tenant[a], "from", owner)
				case err != nil:
					e.log.Warn("connections of a VIP taken over not pulled from its previous owner; the kernel's own sync follows within seconds",
						"vip", a, "tenant", tenant[a], "from", owner, "took", took, "bound", bound, "err", err)
				default:
					e.log.Info("connections of a VIP taken over pulled from its previous owner before announcing it",
						"vip", a, "tenant", tenant[a], "from", owner, "connections", sent[a], "took", took)
				}
			}
		})
	}
	finished := make(chan struct{})
	go func() {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			// A PullHandover that does not honour ctx must not hold the
			// takeover: its goroutine finishes (and logs) on its own.
		}
		close(finished)
	}()
	return func() { <-finished; cancel() }, finished
}

// alreadyOver is a channel that is always closed.
var alreadyOver = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// PushConnections sends the established connections of vips, as this
// host's IPVS table holds them, to every member's sync daemon now, and
// returns how many it sent per VIP: the old owner's answer to a new owner
// that takes them over (from). It reads the table once, stops when ctx ends
// (the new owner has stopped waiting), and waits for no engine lock: a pass
// may hold it for long, and the new owner waits. A VIP not in the table
// sends nothing. An error (no sync interface here, the table unreadable, a
// send failed) goes back to the new owner, which warns.
func (e *Engine) PushConnections(ctx context.Context, from string, vips []netip.Addr) (map[netip.Addr]int, error) {
	out := make(map[netip.Addr]int, len(vips))
	if e.cfg.SyncInterface == "" {
		return out, errNoSyncInterface
	}
	all, err := ipvsconn.ReadFile(ipvsconn.Path)
	if err != nil {
		return out, err
	}
	tenants := e.tenantsNow(vips)
	var errs []error
	for _, a := range vips {
		if _, done := out[a]; done {
			continue
		}
		if err := ctx.Err(); err != nil {
			return out, errors.Join(append(errs, err)...)
		}
		n, err := e.sendSync(ctx, a, tenants[a], "asked by the new owner", establishedTo(all, a), "by", from)
		out[a] = n
		if err != nil {
			errs = append(errs, fmt.Errorf("vip %s: %w", a, err))
		}
	}
	return out, errors.Join(errs...)
}

// errNoSyncInterface: this member runs no sync daemons, so it has nothing
// to push to.
var errNoSyncInterface = errors.New("no connection sync interface configured on this member")

// tenantsNow returns the tenants of vips for the log, as the last pass or a
// handover knows them, if the engine's lock is free now: it never waits for
// a pass (the new owner is waiting), and the log then says tenant "".
func (e *Engine) tenantsNow(vips []netip.Addr) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	if !e.mu.TryLock() {
		return out
	}
	defer e.mu.Unlock()
	for _, a := range vips {
		if h, ok := e.ho.pending[a]; ok {
			out[a] = h.tenant
		} else if t, ok := e.owned[a]; ok {
			out[a] = t
		}
	}
	return out
}
