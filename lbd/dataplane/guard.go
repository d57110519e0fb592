package dataplane

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/snat"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// guardTakeovers opens the takeover guard's window for each nat-mode VIP in
// moved that this pass is about to add here, drops the guards whose window is
// over or whose VIP is no longer here, and sets e.snatList to the SNAT rules
// and guards to apply. The caller holds e.mu.
//
// Only a VIP that comes from another member gets the guard: its nodes may
// still be sending to connections the previous owner forwarded. A new VIP has
// none, and a guard on it would only swallow the late packets that close
// connections cleanly (see package snat).
func (e *Engine) guardTakeovers(all []*edgelbv1.VirtualService, vips map[netip.Addr]string, natVIPs map[netip.Addr]bool, moved []netip.Addr, tenantOf func(netip.Addr) string) {
	now := time.Now()
	if e.guards == nil {
		e.guards = map[netip.Addr]time.Time{}
	}
	if e.cfg.TakeoverGuard > 0 {
		for _, a := range moved {
			if _, mine := vips[a]; mine && natVIPs[a] && !e.vips[a] {
				e.guards[a] = now.Add(e.cfg.TakeoverGuard)
				e.log.Info("VIP taken over: dropping mid-stream packets to its unserved TCP ports until its connections have been seen here",
					"vip", a, "tenant", tenantOf(a), "for", e.cfg.TakeoverGuard)
			}
		}
	}
	for a, until := range e.guards {
		if _, mine := vips[a]; !mine || !natVIPs[a] || !now.Before(until) {
			delete(e.guards, a)
		}
	}
	// The guard lets a guarded VIP's own TCP ports through (a client's
	// packet of a connection synced here is what sets it up); finding them
	// walks all services, so only while some VIP is guarded.
	ports := map[netip.Addr][]uint16{}
	if len(e.guards) > 0 {
		for _, vs := range all {
			a := netip.MustParseAddr(vs.Vip)
			if _, ok := e.guards[a]; !ok {
				continue
			}
			for _, p := range vs.Ports {
				if p.Protocol == edgelbv1.Protocol_PROTOCOL_TCP {
					ports[a] = append(ports[a], uint16(p.Port))
				}
			}
		}
	}
	list := make([]snat.VIP, 0, len(natVIPs))
	for a := range natVIPs {
		_, guarded := e.guards[a]
		list = append(list, snat.VIP{Addr: a, TCPPorts: ports[a], Guard: guarded})
	}
	e.snatList = list
	e.scheduleGuardLift()
}

// scheduleGuardLift arms the timer that lifts the next guard to run out
// between passes (an owner may see no pass for a while). The caller holds e.mu.
func (e *Engine) scheduleGuardLift() {
	if len(e.guards) == 0 || e.closed {
		return
	}
	var next time.Time
	for _, until := range e.guards {
		if next.IsZero() || until.Before(next) {
			next = until
		}
	}
	d := max(time.Until(next), 0)
	if e.guardTimer == nil {
		e.guardTimer = time.AfterFunc(d, e.liftGuards)
	} else {
		e.guardTimer.Reset(d)
	}
}

// liftGuards rewrites the SNAT rules without the guards whose window is over.
func (e *Engine) liftGuards() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || e.snat == nil {
		return
	}
	now := time.Now()
	lifted := false
	for i, v := range e.snatList {
		if until, ok := e.guards[v.Addr]; v.Guard && (!ok || !now.Before(until)) {
			e.snatList[i].Guard = false
			delete(e.guards, v.Addr)
			lifted = true
			e.log.Info("takeover guard lifted", "vip", v.Addr, "tenant", e.owned[v.Addr])
		}
	}
	if lifted {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.snat.Set(ctx, slices.Clone(e.snatList)); err != nil {
			// The rules stay as they were; the next pass writes them again.
			e.log.Warn("lift takeover guard", "err", err)
		}
	}
	e.scheduleGuardLift()
}
