package dataplane

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/arp"
)

// A planned move (lbctl vip move, a drain, a member handing its VIPs over as
// it stops) commits one entry that every member applies at about the same
// time. Withdrawn at once, the old owner's address would be gone before the
// new owner's pass has added and announced it (hundreds of milliseconds on a
// slow host): new connections in that gap go to a MAC that no longer answers
// for the VIP. Instead the old owner keeps the address, serving from the
// same IPVS entries, but stops announcing it, and withdraws once it sees the
// new owner's gratuitous ARP on the segment — from then on the clients and
// nodes send to the new owner. The fence still guards the kept address: the
// lease bounds it as it bounds any other.
//
// Only a member in contact hands over (a fenced pass has no owner and
// withdraws at once), and only for a VIP the committed state gives to
// another member; a deleted VIP, or one whose new owner is unknown, goes at
// once.

// HandoverHold bounds how long an old owner keeps a moved VIP waiting for the
// new owner's announcement; an IPv6 VIP (whose neighbour advertisements are
// not watched) is kept this long. Past it the address goes: the new owner
// has not taken over, and the assigner decides what happens next.
var HandoverHold = 3 * time.Second

// handovers are the moved VIPs this host still holds; guarded by Engine.mu.
type handovers struct {
	pending map[netip.Addr]*handover
	wake    chan struct{} // a new handover: the watcher takes it on
	running bool          // the watcher runs (only while some are pending)
	// closed: the engine closed; the watcher stops and none starts. Close
	// leaves the kernel as it is, held VIPs too (a restarted lbd adopts
	// them), so nothing may withdraw one after it.
	closed  bool
	watcher sync.WaitGroup
	// atOnce: VIPs the next pass withdraws without a handover (EndProvisional).
	atOnce map[netip.Addr]bool
}

type handover struct {
	to     string
	tenant string
	until  time.Time
}

// The daemon finds EndProvisional by this interface (lbd/daemon provisionalEnder).
var _ interface{ EndProvisional([]netip.Addr) } = (*Engine)(nil)

// EndProvisional names VIPs this host served as provisional copies of a lost
// owner's (lbd/daemon provisional takeover) that the committed state still
// gives to that owner: it is back, or the survivors no longer agree it is
// gone. The next pass withdraws them at once. A handover would keep the
// address until the owner announces it, and the owner, whose lease this
// member's claim no longer blocks once the copy ends, would then add it
// beside this host: two hosts answering ARP for one VIP (seen in the guest,
// hung_leader with the double profile). Break before make: the owner serves
// again within its next pass.
func (e *Engine) EndProvisional(vips []netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ho.atOnce == nil {
		e.ho.atOnce = map[netip.Addr]bool{}
	}
	for _, a := range vips {
		e.ho.atOnce[a] = true
		if _, ok := e.ho.pending[a]; ok {
			// Already handing over: it goes in the next pass too.
			delete(e.ho.pending, a)
		}
	}
}

// handOver starts (or continues) the handover of a, which this pass does not
// want here, and reports whether the address stays for now. owner is this
// pass's owner ("" when fenced); the caller holds e.mu.
func (e *Engine) handOver(a netip.Addr, owner, tenant string) bool {
	to := e.owners[a]
	if owner == "" || to == "" || to == owner || e.cfg.NoHandover || e.ho.atOnce[a] {
		// Fenced, deleted or unowned now: it goes in this pass, handover
		// or not.
		delete(e.ho.pending, a)
		return false
	}
	if _, ok := e.ho.pending[a]; ok {
		return true
	}
	if e.ho.pending == nil {
		e.ho.pending = map[netip.Addr]*handover{}
		e.ho.wake = make(chan struct{}, 1)
	}
	// No more announcements from here: a repeat after the new owner's would
	// draw the segment back to this host.
	e.ann.Removed(a)
	e.ho.pending[a] = &handover{to: to, tenant: tenant, until: time.Now().Add(HandoverHold)}
	e.log.Info("VIP moved to another member: keeping it until the new owner announces it", "vip", a, "tenant", tenant, "to", to, "at_most", HandoverHold)
	if e.bg != nil {
		go e.pushSync(e.bg, a, tenant, "handover started")
	}
	if !e.ho.running && !e.ho.closed {
		e.ho.running = true
		e.ho.watcher.Go(e.watchHandovers)
	}
	select {
	case e.ho.wake <- struct{}{}:
	default:
	}
	return true
}

// reclaim ends the handover of every VIP in vips (owned here again): it
// stays, and is announced afresh since the other member may have announced it
// meanwhile. The caller holds e.mu.
func (e *Engine) reclaim(vips map[netip.Addr]string) {
	for a, h := range e.ho.pending {
		if t, ok := vips[a]; ok {
			delete(e.ho.pending, a)
			if e.vips[a] {
				e.ann.Added(a, t)
			}
			e.log.Info("VIP handed back before the handover ended: kept and announced", "vip", a, "tenant", t, "was_moving_to", h.to)
		}
	}
}

// HandingOver reports whether some moved VIP is still held here, waiting for
// its new owner's announcement.
func (e *Engine) HandingOver() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.ho.pending) > 0
}

// watchHandovers reads ARP on the interface while handovers are pending and
// ends each when its new owner announces it or its hold runs out.
func (e *Engine) watchHandovers() {
	var c *arp.Client
	var own net.HardwareAddr
	if ifi, err := net.InterfaceByName(e.cfg.Interface); err == nil {
		own = ifi.HardwareAddr
		if c, err = arp.Dial(ifi); err != nil {
			e.log.Warn("cannot watch for the new owner's announcements: moved VIPs are kept for the whole hold", "interface", e.cfg.Interface, "err", err, "hold", HandoverHold)
			c = nil
		}
	}
	if c != nil {
		defer c.Close()
	}
	for {
		var seen netip.Addr
		if c != nil {
			_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			p, _, err := c.Read()
			switch {
			case err == nil:
				if !bytes.Equal(p.SenderHardwareAddr, own) {
					seen = p.SenderIP
				}
			case errors.Is(err, os.ErrDeadlineExceeded):
			default:
				// A malformed frame, or the socket failing: the hold still
				// bounds every handover.
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					time.Sleep(50 * time.Millisecond)
				}
			}
		} else {
			time.Sleep(50 * time.Millisecond)
		}
		if !e.endHandovers(seen, time.Now()) {
			return
		}
	}
}

// endHandovers withdraws the VIP announced from elsewhere (seen, when valid)
// and those whose hold ran out by now; it reports whether some remain (when
// none do the watcher stops, under e.mu so no new handover misses it).
func (e *Engine) endHandovers(seen netip.Addr, now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ho.closed {
		e.ho.running = false
		return false
	}
	changed := false
	for a, h := range e.ho.pending {
		why := ""
		switch {
		case a == seen:
			why = "VIP withdrawn: its new owner announced it"
		case !now.Before(h.until):
			why = "VIP withdrawn: its new owner did not announce it within the hold"
			if a.Is6() {
				why = "VIP withdrawn after the handover hold (IPv6: announcements are not watched)"
			}
		default:
			continue
		}
		delete(e.ho.pending, a)
		if !e.vips[a] {
			continue // the fence or a fenced pass took it already
		}
		if err := e.removeAddr(a, h.tenant, why); err != nil {
			e.log.Error("withdraw a handed-over VIP", "vip", a, "err", err)
			continue
		}
		if e.bg != nil {
			go e.pushSync(e.bg, a, h.tenant, "address withdrawn")
		}
		changed = true
	}
	if changed {
		if err := e.save(); err != nil {
			e.log.Warn("record the withdrawn VIPs", "err", err)
		}
	}
	if len(e.ho.pending) == 0 {
		e.ho.running = false
		return false
	}
	return true
}
