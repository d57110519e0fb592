package dataplane

// The kernel reads: what IPVS and the interface hold for this engine's
// services, at open (adopt) and every resyncEvery (resync), so a change made
// behind the engine's back is repaired.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"time"

	"github.com/cloudflare/ipvs"
	"golang.org/x/sys/unix"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsdiff"
	"github.com/edgelb/edgelb/lbd/dataplane/snat"
)

// readKernel lists the IPVS services that are ours, with their
// destinations, and the addresses on the interface.
func (e *Engine) readKernel(ours func(ipvsdiff.SvcKey) bool) (map[ipvsdiff.SvcKey]*ipvsdiff.Svc, []netip.Addr, error) {
	svcs, err := e.ipvs.Services()
	if err != nil && !isNotExist(err) { // an empty table answers ENOENT
		return nil, nil, fmt.Errorf("list IPVS services: %w", err)
	}
	read := map[ipvsdiff.SvcKey]*ipvsdiff.Svc{}
	for _, s := range svcs {
		k := ipvsdiff.SvcKey{Addr: s.Address, Proto: s.Protocol, Port: s.Port}
		if !ours(k) {
			continue
		}
		sv, err := e.read(s)
		if err != nil {
			return nil, nil, err
		}
		read[k] = sv
	}
	have, err := e.addrs.List(e.ifindex)
	if err != nil {
		return nil, nil, fmt.Errorf("list addresses on %s: %w", e.cfg.Interface, err)
	}
	return read, have, nil
}

// read is the kernel's view of one IPVS service with its destinations.
func (e *Engine) read(s ipvs.ServiceExtended) (*ipvsdiff.Svc, error) {
	k := ipvsdiff.SvcKey{Addr: s.Address, Proto: s.Protocol, Port: s.Port}
	ds, err := e.ipvs.Destinations(s.Service)
	if err != nil && !isNotExist(err) {
		return nil, fmt.Errorf("list destinations of %s: %w", k, err)
	}
	sv := &ipvsdiff.Svc{Key: k, Scheduler: s.Scheduler, Flags: s.Flags & ipvsdiff.FlagsMask, Timeout: s.Timeout, Dests: map[ipvsdiff.DestKey]ipvsdiff.Dest{}}
	if sv.Flags&ipvs.ServicePersistent == 0 {
		sv.Timeout = 0
	}
	for _, d := range ds {
		sv.Dests[ipvsdiff.DestKey{Addr: d.Address, Port: d.Port}] = ipvsdiff.Dest{Weight: d.Weight, Fwd: d.FwdMethod, Slots: d.Weight} // a non-zero weight is also the kernel's last_weight; 0: unknown
	}
	return sv, nil
}

// resyncEvery is how often Reconcile starts re-reading the kernel to repair
// changes made behind its back; between resyncs it trusts what it applied.
const resyncEvery = 30 * time.Second

// Resync re-reads the kernel for this engine's services, so a change made by
// someone else (ipvsadm by hand, another program) is repaired on the next
// Reconcile. Reconcile starts one by itself every resyncEvery.
func (e *Engine) Resync() error {
	e.resyncMu.Lock()
	defer e.resyncMu.Unlock()
	return e.resync()
}

// resync reads the kernel without the engine's lock, so reconciles go on
// meanwhile; what they change during the read is kept as they applied it
// rather than overwritten by the older reading. The caller holds resyncMu.
func (e *Engine) resync() error {
	e.mu.Lock()
	e.lastResync = time.Now()
	ours := maps.Clone(e.ours)
	e.touched, e.touchedVIPs = map[ipvsdiff.SvcKey]bool{}, map[netip.Addr]bool{}
	repair := (e.resyncs+1)%snatRepairEvery == 0
	e.mu.Unlock()
	read, have, err := e.readKernel(func(k ipvsdiff.SvcKey) bool { return ours[k] })
	// The SNAT repair looks first, here beside the passes; only rules found
	// missing or changed are rewritten, by the next pass.
	snatIntact := true
	if s, ok := e.snat.(snat.Repairable); ok && repair {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		snatIntact = s.Intact(ctx)
		cancel()
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	touched, touchedVIPs := e.touched, e.touchedVIPs
	e.touched, e.touchedVIPs = nil, nil
	if err != nil {
		return err
	}
	for k := range ours {
		if touched[k] || !e.ours[k] {
			continue
		}
		if sv, ok := read[k]; ok {
			e.actual[k] = sv
		} else {
			delete(e.actual, k) // deleted behind our back: recreate
		}
	}
	e.settled = nil // compare everything against what was just read
	e.needFull = true
	on := map[netip.Addr]bool{}
	for _, a := range have {
		on[a] = true
	}
	for a := range e.vips {
		if !on[a] && !touchedVIPs[a] {
			delete(e.vips, a) // lost with a link flap or by hand: re-add and re-announce
		}
	}
	// Rewriting the SNAT chains starts iptables processes (seconds on a
	// small or emulated host, with the engine locked), so they are looked at
	// only every snatRepairEvery resyncs (above, unlocked), and rewritten
	// only when not intact.
	e.resyncs++
	if e.resyncs%snatRepairEvery == 0 {
		if s, ok := e.snat.(snat.Repairable); ok && !snatIntact {
			e.log.Warn("SNAT rules not as lbd left them; rewriting them", "backend", e.snat.Backend())
			s.Forget()
		}
		if e.filter != nil {
			e.filter.Forget()
		}
	}
	return nil
}

func (e *Engine) touchVIP(a netip.Addr) {
	if e.touchedVIPs != nil {
		e.touchedVIPs[a] = true
	}
}

// snatRepairEvery resyncs (of resyncEvery) the SNAT chains are rewritten, in
// case someone flushed them: every 5 minutes.
const snatRepairEvery = 10

// isNotExist: IPVS answers ESRCH for a missing service, ENOENT for a missing
// destination, which the client may also hand back as fs.ErrNotExist.
func isNotExist(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, fs.ErrNotExist)
}
