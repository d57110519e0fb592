package dataplane

// The lease: how long this host may serve, as given to the fence, and what
// the engine does when the fence withdrew addresses because it ran out.

import (
	"errors"
	"net/netip"
	"time"
)

// ErrLeaseLapsed is returned by a Reconcile that did not add addresses
// because the lease last given to the fence had run out during the pass.
var ErrLeaseLapsed = errors.New("the serving lease ran out during the data-plane pass")

// Renew tells the fence this host may serve until until (see Fence.Renew:
// only from where lbd has just confirmed it serves). It does not wait for
// the engine's lock, so a pass stuck in the kernel does not block it.
func (e *Engine) Renew(until time.Time) error {
	if e.fence == nil {
		return nil
	}
	e.renewed(until)
	return e.fence.Renew(until)
}

// renewed records a new lease. A renewal that comes after the last lease ran
// out means the fence withdraws, or has withdrawn, every recorded address,
// and its report may not have been read yet: this is what a stopped raft
// leader does right after SIGCONT (raft counts its step-down as contact).
// Announcing them until the report arrives would draw traffic to a host
// without the addresses — seen in the guest — so they stop now, and the
// next pass adds back and announces those this member still owns.
func (e *Engine) renewed(until time.Time) {
	if prev := e.leaseUntil.Load(); prev != 0 && monotonic() >= time.Duration(prev) {
		for _, a := range e.ann.RemoveAll() {
			e.lapsedMu.Lock()
			e.lapsed[a] = true
			e.lapsedMu.Unlock()
		}
		e.lapses.Add(1)
		select {
		case e.lapsedCh <- struct{}{}:
		default:
		}
	}
	e.leaseUntil.Store(int64(monotonicAt(until)))
}

// leaseHeld reports whether the fence's lease still runs (or was never
// armed): past it the fence may have withdrawn the addresses, and after a
// SIGSTOP the announcer's timer can fire before the fence's report is read.
func (e *Engine) leaseHeld() bool {
	u := e.leaseUntil.Load()
	return u == 0 || monotonic() < time.Duration(u)
}

// Lapsed is signalled when the fence withdrew addresses because the lease
// was not renewed in time; the next Reconcile puts back those still owned.
func (e *Engine) Lapsed() <-chan struct{} { return e.lapsedCh }

// Keep tells the fence that lbd is stopping cleanly: from now on nothing in
// lbd renews the lease, and the fence gives a restart the lease to take the
// addresses over (as after a crash) instead of withdrawing them at once.
func (e *Engine) Keep() {
	if e.fence != nil {
		e.fence.Keep()
	}
}

// fenceWithdrew handles the fence's report that a lapsed lease made it
// withdraw a. It runs on its own goroutine, without mu.
func (e *Engine) fenceWithdrew(a netip.Addr) {
	e.ann.Removed(a) // no more GARPs for an address this host no longer holds
	e.lapsedMu.Lock()
	e.lapsed[a] = true
	e.lapsedMu.Unlock()
	e.lapses.Add(1)
	e.log.Warn("the fence withdrew a VIP: lbd did not renew its lease in time (hung, stopped, or out of contact)", "vip", a, "interface", e.cfg.Interface)
	select {
	case e.lapsedCh <- struct{}{}:
	default:
	}
}

// absorbLapsed forgets the addresses the fence withdrew, so this pass adds
// back those still owned; it returns the withdrawal count it has seen.
// The caller holds mu.
func (e *Engine) absorbLapsed() uint64 {
	n := e.lapses.Load()
	e.lapsedMu.Lock()
	defer e.lapsedMu.Unlock()
	changed := false
	for a := range e.lapsed {
		if e.vips[a] {
			delete(e.vips, a)
			e.touchVIP(a)
			changed = true
		}
		// The pass looks at every address, this one too, even when it is
		// not recorded as held: one lapse is reported twice (a late
		// renewal, then the fence), and a pass the second report raced has
		// taken back what it added.
		e.needFull = true
		delete(e.lapsed, a)
	}
	if changed {
		if err := e.save(); err != nil {
			e.log.Warn("record the addresses the fence withdrew", "err", err)
		}
	}
	return n
}
