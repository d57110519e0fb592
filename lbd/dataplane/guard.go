package dataplane

import (
	"net/netip"
)

// guardTakeovers opens the takeover guard's window (package snat) for each
// nat-mode VIP of takenOver (those this pass is about to add here that came
// from another member: Engine.takenOver); it runs after the
// SNAT rules are set and before the addresses go up. The caller holds e.mu.
//
// Only a VIP that comes from another member gets the guard: its nodes may
// still be sending to connections the previous owner forwarded. A new VIP has
// none, and a guard on it would only swallow the late packets that close
// connections cleanly.
func (e *Engine) guardTakeovers(takenOver []netip.Addr, natVIPs map[netip.Addr][]uint16, tenantOf func(netip.Addr) string) {
	if e.snat == nil || e.cfg.TakeoverGuard <= 0 {
		return
	}
	for _, a := range takenOver {
		if _, nat := natVIPs[a]; !nat {
			continue
		}
		if err := e.snat.Guard(a); err != nil {
			// The takeover goes on: at worst a connection whose node
			// answers first is reset, as without the guard.
			e.log.Warn("takeover guard not set", "vip", a, "tenant", tenantOf(a), "err", err)
			continue
		}
		e.log.Info("VIP taken over: dropping mid-stream packets to its unserved TCP ports until its connections have been seen here",
			"vip", a, "tenant", tenantOf(a), "for", e.cfg.TakeoverGuard)
	}
}
