package dataplane

import (
	"net/netip"
	"slices"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/conntrack"
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
//
// stop, when not nil, bounds it (a takeover's, which holds the address
// back): once stop is closed it deletes no more and returns the entries it
// had no time for, which forgetAfter deletes once the pass is over. Each
// deletion is a netlink round trip, and a VIP that carried many connections
// before it moved away leaves that many stale entries: unbounded, the
// takeover would wait for all of them.
func (e *Engine) forgetConntrack(vips []netip.Addr, stop <-chan struct{}, why string, tenantOf func(netip.Addr) string) map[conntrack.Tuple]bool {
	return e.forget(e.ct, conntrack.Request{VIPs: vips, Stop: stop}, why, tenantOf)
}

// forgetTakenOver is why a takeover deletes conntrack entries (the log's).
const forgetTakenOver = "taken over: entries of connections that ended while the VIP was elsewhere"

// forgetAfter deletes, once the pass is over: the entries no NAT rewrote
// of unnated, the nat-mode ports of the addresses the pass put up and
// those it created on addresses already up (a packet this member forwarded
// while it did not hold the VIP, or one that met the host's stack before
// IPVS served the port: conntrack.Request.Unnated); the entries a bounded
// forgetConntrack left (unless IPVS carries their connection by then); and
// those of the VIPs the pass withdrew. The caller holds e.mu. The unnated
// ones go first: a client retransmitting a SYN on such a tuple fails until
// its entry is gone. On a port IPVS serves none is made once the address
// is up (IPVS takes the packets first), so one clean-up after it suffices.
// A job may run after the VIP moved on: what it deletes then is transit
// entries, made again by the next packet. It runs on a socket of its own
// beside the loop, so a pass ends, and its loop renews the lease, as soon
// as its addresses are up; jobs run one at a time, in order, and none
// waits for another. The tenants are looked up now: engine state is e.mu's.
func (e *Engine) forgetAfter(left map[conntrack.Tuple]bool, withdrawn []netip.Addr, unnated map[conntrack.Service]bool, tenantOf func(netip.Addr) string) {
	if e.ctAfter == nil || len(left) == 0 && len(withdrawn) == 0 && len(unnated) == 0 {
		return
	}
	seen := map[netip.Addr]bool{}
	var vips, up []netip.Addr
	for t := range left {
		if a := t.Dst.Addr(); !seen[a] {
			seen[a] = true
			vips = append(vips, a)
		}
	}
	clear(seen)
	for s := range unnated {
		if a := s.Dst.Addr(); !seen[a] {
			seen[a] = true
			up = append(up, a)
		}
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	slices.SortFunc(up, netip.Addr.Compare)
	tenants := map[netip.Addr]string{}
	for _, a := range slices.Concat(vips, withdrawn, up) {
		tenants[a] = tenantOf(a)
	}
	tenant := func(a netip.Addr) string { return tenants[a] }
	withdrawn = slices.Clone(withdrawn)
	prev, done := e.afterDone, make(chan struct{})
	e.afterDone = done
	e.afterWG.Go(func() {
		defer close(done)
		if prev != nil {
			<-prev // one job at a time on the socket, in the passes' order
		}
		e.forget(e.ctAfter, conntrack.Request{VIPs: up, Unnated: unnated}, forgetUnnated, tenant)
		if len(vips) > 0 {
			e.forget(e.ctAfter, conntrack.Request{VIPs: vips, Only: left}, forgetTakenOver+" (the rest, after the addresses)", tenant)
		}
		e.forget(e.ctAfter, conntrack.Request{VIPs: withdrawn}, "deleted or unowned", tenant)
	})
}

// forgetUnnated is why entries no NAT rewrote are deleted (the log's).
const forgetUnnated = "address up: entries of packets this member forwarded while it did not hold the VIP (no NAT)"

func (e *Engine) forget(ct conntrack.Forgetter, r conntrack.Request, why string, tenantOf func(netip.Addr) string) map[conntrack.Tuple]bool {
	if ct == nil || len(r.VIPs) == 0 {
		return nil
	}
	t0 := time.Now()
	res, err := ct.Forget(r)
	took := time.Since(t0).Round(time.Microsecond)
	if err != nil {
		e.log.Warn("delete the conntrack entries of VIPs: a client reusing the source port of one of their old connections may wait for a SYN retransmit", "why", why, "vips", len(r.VIPs), "took", took, "err", err)
	}
	for a, k := range res.Deleted {
		e.log.Info("stale conntrack entries of a VIP deleted", "vip", a, "tenant", tenantOf(a), "why", why, "entries", k, "took", took)
	}
	if len(res.Left) > 0 {
		e.log.Info("stale conntrack entries of VIPs taken over left until after their addresses: the takeover had no more time for them", "why", why, "vips", len(r.VIPs), "left", len(res.Left), "took", took)
	}
	return res.Left
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
