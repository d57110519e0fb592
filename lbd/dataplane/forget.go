package dataplane

import (
	"net/netip"
	"slices"
	"time"
)

// forgetConntrack deletes the stale conntrack entries of vips, those of
// connections IPVS no longer carries (package conntrack says why); the
// caller holds e.mu. It runs when this member takes a VIP over, before the
// address goes up (entries from an earlier turn here whose connections ended
// elsewhere), and when it withdraws one that no other member carries on
// (deleted, unowned). Not when the VIP moves to another member: until every
// node has learnt the new owner's address, packets still reach this member,
// which translates them with these entries; the VIP's next takeover here
// deletes the stale ones. Not when the fence withdraws: the VIP may come
// back here with its connections. A failure is logged, not returned: the VIP
// still goes up or away, and only a client reusing an old connection's
// source port pays for it.
func (e *Engine) forgetConntrack(vips []netip.Addr, why string, tenantOf func(netip.Addr) string) {
	if e.ct == nil || len(vips) == 0 {
		return
	}
	t0 := time.Now()
	n, err := e.ct.Forget(vips)
	took := time.Since(t0).Round(time.Microsecond)
	if err != nil {
		e.log.Warn("delete the conntrack entries of VIPs: a client reusing the source port of one of their old connections may wait for a SYN retransmit", "why", why, "vips", len(vips), "took", took, "err", err)
	}
	for a, k := range n {
		e.log.Info("stale conntrack entries of a VIP deleted", "vip", a, "tenant", tenantOf(a), "why", why, "entries", k, "took", took)
	}
}

// takenOver is the VIPs of moved that this pass is about to add here, in
// address order.
func (e *Engine) takenOver(moved map[netip.Addr]string, vips map[netip.Addr]string) []netip.Addr {
	var out []netip.Addr
	for a := range moved {
		if _, mine := vips[a]; mine && !e.vips[a] {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
