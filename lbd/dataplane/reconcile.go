package dataplane

// Applying: Reconcile brings the kernel to the planned state, change by
// change, in the order that keeps traffic safe; Withdraw takes the
// addresses down.

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/conntrack"
	"github.com/edgelb/edgelb/lbd/dataplane/ipvsdiff"
	"github.com/edgelb/edgelb/lbd/dataplane/snat"
	"github.com/edgelb/edgelb/lbd/dataplane/srcrange"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// slowPass is how long a pass may take before it is logged with where its time
// went: a takeover waits for the pass that adds the address.
const slowPass = time.Second

// Reconcile makes the kernel hold the IPVS services and SNAT rules of every
// service in all — a hot standby: a takeover then only adds the address — and
// the VIP addresses (announced) of exactly those whose Owner is owner (none
// when owner is empty: fenced or not serving). Anything it programmed before
// and not listed is withdrawn. It is the full pass: it plans and compares
// every service (the periodic repair of drift, and the first pass).
func (e *Engine) Reconcile(ctx context.Context, all []*edgelbv1.VirtualService, owner string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	changed := make(map[ServiceKey]*edgelbv1.VirtualService)
	known := 0 // services of all the plan holds: when that is all of them, none was deleted
	for _, vs := range all {
		k := KeyOf(vs)
		n := e.plan.svcs[k]
		if n != nil {
			known++
		}
		if n == nil || n.vs != vs || n.why != "" {
			changed[k] = vs
		}
	}
	if known < len(e.plan.svcs) {
		seen := make(map[ServiceKey]struct{}, len(all))
		for _, vs := range all {
			seen[KeyOf(vs)] = struct{}{}
		}
		for k := range e.plan.svcs {
			if _, ok := seen[k]; !ok {
				changed[k] = nil
			}
		}
	}
	return e.reconcile(ctx, changed, owner, true)
}

// ReconcileChanged is Reconcile for the services in changed only (nil: the
// service was deleted), the rest being as the last pass left them: it plans
// and compares only those services and their VIPs, so its cost follows the
// change, not the number of services. It makes a full pass by itself when
// one is needed (the first pass, a change of owner, after a failed pass, a
// re-read of the kernel, or addresses the fence withdrew).
func (e *Engine) ReconcileChanged(ctx context.Context, changed map[ServiceKey]*edgelbv1.VirtualService, owner string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reconcile(ctx, changed, owner, false)
}

// reconcile is one pass; full compares everything, else only the scope of
// changed. The caller holds e.mu.
func (e *Engine) reconcile(ctx context.Context, changed map[ServiceKey]*edgelbv1.VirtualService, owner string, full bool) error {
	defer clear(e.ho.atOnce) // EndProvisional speaks for the pass that follows it
	e.startResync()
	p := &pass{e: e, ctx: ctx, start: time.Now()}
	e.stats.Reconciles++
	p.lapses = e.absorbLapsed()
	full = full || e.needFull || owner != e.plan.owner
	e.needFull = false
	var sc *scope
	sc, p.moved = e.update(changed, owner, full)
	p.gone = sc.gone
	if full {
		if owner != e.plan.owner {
			e.replan(owner)
		}
		sc = nil
		e.stats.FullPasses++
	}
	p.scope = sc
	pl := e.plan
	p.want, p.vips, p.natVIPs, p.filters = pl.want, pl.vips, pl.natVIPs, pl.filters
	if sc == nil || sc.isolated {
		e.noteIsolated(maps.Clone(pl.isolated))
	}
	p.labelAdopted()
	defer func() { e.owned = p.vips }()
	p.mark = p.start
	p.phase("plan")

	// Withdraw addresses first, so no new traffic reaches services about to go;
	// a VIP moved to another member stays until that member announces it
	// (handover.go).
	e.reclaim(p.vips)
	p.withdrawAddrs(owner)
	p.applyIPVS()
	p.phase("ipvs")

	// Addresses go up only once IPVS and SNAT are ready. A VIP whose SNAT
	// rule the kernel holds already (a standby's takeover; a restart that
	// outlasted the lease, whose fence withdrew the address) or that needs
	// none (DR) goes up before this pass's iptables run, which takes seconds
	// on a slow host; the rest after it. The takeover guard opens first.
	// The pull of the old owners' connections (pull.go) runs beside the
	// guard and the conntrack clean-up; the addresses wait for it, bounded.
	// The conntrack clean-up takes only the pull's time (none when nothing
	// is pulled, as after a crash); what it has no time for is deleted once
	// the addresses are up.
	takenOver := e.takenOver(p.moved, p.vips)
	pulled, pullOver := e.pullHandovers(p.ctx, takenOver, p.moved, p.tenantOf)
	e.guardTakeovers(takenOver, p.natVIPs, p.tenantOf)
	left := e.forgetConntrack(takenOver, pullOver, forgetTakenOver, p.tenantOf)
	p.phase("guard")
	pulled()
	p.phase("pull")
	p.addAddrs(p.readyBeforeRules)
	p.phase("early-addresses")
	// The rules are set from the whole plan, and only when they may have
	// changed: a backend change leaves them alone.
	rules := sc == nil || sc.rules
	if e.filter != nil && rules {
		p.setSourceRanges()
		p.phase("source-ranges")
	}
	if e.snat != nil && rules {
		p.setSNAT()
		p.phase("snat")
	}
	p.addAddrs(p.filtered)
	p.phase("addresses")
	// After the addresses, and after the pass: neither the rest of the
	// takeovers' clean-up nor that of the VIPs this pass withdrew may hold
	// a takeover back, nor the loop's next renewal of the lease (in the
	// guest a takeover's rest, 136 entries in 282 ms, outlasted what was
	// left of a 500 ms lease, and the fence withdrew the VIP just taken over).
	e.forgetAfter(left, p.withdrawn, p.unnated, p.tenantOf)
	if p.changed {
		if err := e.save(); err != nil {
			p.errs = append(p.errs, err)
		}
	}
	p.phase("record")
	return p.finish()
}

// pass is one Reconcile: its plan, and what it has done and met so far. It
// lives while the pass holds e.mu.
type pass struct {
	e     *Engine
	ctx   context.Context
	start time.Time
	// lapses is the fence's withdrawal count when the pass began.
	lapses uint64
	// scope is what this pass looks at (nil: everything).
	scope *scope
	gone  map[netip.Addr]string // tenants of the VIPs of changed services
	// withdrawn: VIPs this pass took down that no other member carries on,
	// whose stale conntrack entries go after the addresses.
	withdrawn []netip.Addr
	// unnated: the nat-mode ports whose entries no NAT rewrote go after
	// the pass (conntrack.Request.Unnated): those of the addresses this
	// pass put up (and kept), and those it created on addresses already up
	// (until then their packets met the host's stack).
	unnated map[conntrack.Service]bool

	// The plan (desired).
	want    ipvsdiff.State
	vips    map[netip.Addr]string // owned VIP → tenant
	natVIPs map[netip.Addr][]uint16
	filters map[netip.Addr]*srcrange.VIP
	// moved is each VIP that came here from another member, with that
	// member (its previous owner).
	moved map[netip.Addr]string

	errs     []error
	changed  bool // the record must be rewritten
	ops      int
	outlived bool // this pass outlived its lease: it adds nothing more
	// Where the pass spends its time, for the slow-pass warning.
	phases []any
	mark   time.Time
}

// startResync starts re-reading the kernel when it is due. The re-read runs
// beside this pass, not before it: at 10k VIPs × 50 it takes seconds (half a
// minute in an emulated kernel), and a takeover must not wait for it. Its
// repairs apply from the next pass on. The caller holds mu.
func (e *Engine) startResync() {
	if time.Since(e.lastResync) > resyncEvery && e.resyncMu.TryLock() {
		e.lastResync = time.Now()
		go func() {
			defer e.resyncMu.Unlock()
			if err := e.resync(); err != nil {
				e.log.Warn("re-read kernel state", "err", err)
			}
		}()
	}
}

// tenantOf names a VIP's tenant for log lines, so an operator can find
// every line about one tenant's VIPs: an owned VIP's comes with the plan, a
// withdrawn one's from the services changed in this pass, or those still at
// the address, or the last pass.
func (p *pass) tenantOf(a netip.Addr) string {
	if t, ok := p.vips[a]; ok {
		return t
	}
	if t, ok := p.gone[a]; ok {
		return t
	}
	if ks := p.e.plan.atVIP[a]; len(ks) > 0 {
		return ks[0].Tenant
	}
	return p.e.owned[a]
}

// labelAdopted names the tenant of the addresses adopted at open that this
// pass owns; the rest are withdrawn by it.
func (p *pass) labelAdopted() {
	for a := range p.e.unlabelled {
		if t, ok := p.vips[a]; ok {
			p.e.ann.SetTenant(a, t)
		}
		delete(p.e.unlabelled, a) // not owned: withdrawn below
	}
}

func (p *pass) phase(name string) {
	now := time.Now()
	p.phases = append(p.phases, name, now.Sub(p.mark).Round(time.Microsecond))
	p.mark = now
}

// withdrawAddrs takes down the addresses this host no longer owns.
func (p *pass) withdrawAddrs(owner string) {
	for a := range scoped(p, p.e.vips) {
		if !p.e.vips[a] {
			continue
		}
		if _, ok := p.vips[a]; !ok {
			if p.e.handOver(a, owner, p.tenantOf(a)) {
				continue
			}
			if err := p.e.removeAddr(a, p.tenantOf(a), "VIP withdrawn"); err != nil {
				p.errs = append(p.errs, err)
				continue
			}
			// Only a VIP no other member carries on: a fenced pass keeps
			// the entries (the VIP may come back here with its
			// connections), and so does a VIP moved to another member:
			// packets still sent here (a node's neighbour entry not yet
			// updated) are translated with them and reach the client.
			// Its next takeover here deletes them.
			if to := p.e.owners[a]; owner != "" && (to == "" || to == owner) {
				p.withdrawn = append(p.withdrawn, a)
			}
			p.changed = true
		}
	}
}

// scoped is the VIPs pass p looks at among all: every one in a full pass,
// else those in its scope.
func scoped[V any](p *pass, all map[netip.Addr]V) iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		if p.scope == nil {
			for a := range all {
				if !yield(a) {
					return
				}
			}
			return
		}
		for a := range p.scope.vips {
			if !yield(a) {
				return
			}
		}
	}
}

// applyIPVS makes the IPVS changes the plan needs, and remembers which
// services are settled (applied in full) so the next pass skips them.
func (p *pass) applyIPVS() {
	e := p.e
	want, actual := p.want, e.actual
	if p.scope != nil {
		// Only the IPVS services of the services that changed: the
		// others are as the last pass left them.
		want, actual = make(ipvsdiff.State, len(p.scope.svcs)), make(ipvsdiff.State, len(p.scope.svcs))
		for k := range p.scope.svcs {
			if d, ok := p.want[k]; ok {
				want[k] = d
			}
			if a, ok := e.actual[k]; ok {
				actual[k] = a
			}
		}
	}
	ops := ipvsdiff.Plan(want, actual, func(k ipvsdiff.SvcKey) bool { return e.ours[k] },
		func(k ipvsdiff.SvcKey, d *ipvsdiff.Svc) bool { return e.settled[k] == d })
	failed := map[ipvsdiff.SvcKey]bool{}
	for _, op := range ops {
		if err := p.ctx.Err(); err != nil {
			p.errs = append(p.errs, err)
			failed[op.Svc.Key] = true
			continue
		}
		if err := e.apply(op, p.tenantOf); err != nil {
			p.errs = append(p.errs, fmt.Errorf("%s: %w", op, err))
			failed[op.Svc.Key] = true
			continue
		}
		e.obs.KernelChange(opNames[op.Kind])
		if k := op.Svc.Key; op.Kind == ipvsdiff.CreateService && e.vips[k.Addr] {
			if _, nat := p.natVIPs[k.Addr]; nat {
				p.noteUnnated(map[conntrack.Service]bool{{Proto: uint8(k.Proto), Dst: netip.AddrPortFrom(k.Addr.Unmap(), k.Port)}: true})
			}
		}
		// The record names services and addresses, not destinations: only
		// those changes need it rewritten.
		p.changed = p.changed || op.Kind == ipvsdiff.CreateService || op.Kind == ipvsdiff.RemoveService
	}
	// What was planned is settled unless its change failed.
	if e.settled == nil {
		e.settled = make(map[ipvsdiff.SvcKey]*ipvsdiff.Svc, len(p.want))
	}
	if p.scope == nil {
		for k, d := range want {
			if failed[k] {
				delete(e.settled, k)
			} else if e.settled[k] != d {
				e.settled[k] = d
			}
		}
		if len(e.settled) > len(want) {
			for k := range e.settled {
				if _, ok := want[k]; !ok {
					delete(e.settled, k)
				}
			}
		}
	} else {
		for k := range p.scope.svcs {
			if d, ok := want[k]; ok && !failed[k] {
				e.settled[k] = d
			} else {
				delete(e.settled, k)
			}
		}
	}
	e.stats.Ops += uint64(len(ops))
	p.ops = len(ops)
}

// filtered reports whether a's source ranges, if it has any, are enforced
// already. A VIP with source ranges goes up only once the kernel filters it
// as wanted: a standby holds the filter already, so a takeover is closed
// from its first packet and waits for no iptables run.
func (p *pass) filtered(a netip.Addr) bool {
	f, ok := p.filters[a]
	return !ok || p.e.filter.Holds(*f)
}

// readyBeforeRules reports whether a may go up before this pass's iptables
// run: filtered, and its SNAT rule already held or not needed.
func (p *pass) readyBeforeRules(a netip.Addr) bool {
	if !p.filtered(a) {
		return false
	}
	if p.e.snat == nil {
		return true
	}
	_, nat := p.natVIPs[a]
	return !nat || p.e.snat.Present(a)
}

// noteUnnated adds ports to the clean-up after the pass (p.unnated).
func (p *pass) noteUnnated(ports map[conntrack.Service]bool) {
	if len(ports) == 0 {
		return
	}
	if p.unnated == nil {
		p.unnated = map[conntrack.Service]bool{}
	}
	maps.Copy(p.unnated, ports)
}

// addAddrs adds and announces the owned addresses not up yet that ready
// accepts.
func (p *pass) addAddrs(ready func(netip.Addr) bool) {
	e := p.e
	if p.outlived {
		return
	}
	e.pending = e.pending[:0]
	for a := range scoped(p, p.vips) {
		if _, mine := p.vips[a]; mine && !e.vips[a] && ready(a) {
			e.pending = append(e.pending, a)
		}
	}
	if len(e.pending) == 0 {
		return
	}
	// Recorded before they go up: the fence withdraws only the
	// addresses the record names, should lbd die or hang from here on.
	if err := e.save(); err != nil {
		p.errs = append(p.errs, err)
		e.pending = e.pending[:0]
		return // an address the fence does not know of could outlive a hang
	}
	var added []netip.Addr
	failed := false
	for _, a := range e.pending {
		if !e.leaseHeld() {
			// The lease this pass was started under has run out: the
			// pass hung, and its plan is stale (the cluster may have
			// moved these VIPs meanwhile). Seen in the guest: a pass
			// released after 14 s added a VIP its successor served.
			// The daemon's next pass decides afresh.
			p.errs = append(p.errs, fmt.Errorf("%w: not adding %d VIP addresses from a pass that outlived it", ErrLeaseLapsed, len(e.pending)-len(added)))
			failed, p.outlived = true, true
			break
		}
		if err := e.addrs.Add(e.ifindex, a); err != nil {
			p.errs = append(p.errs, err)
			failed = true
			continue
		}
		e.vips[a] = true
		e.touchVIP(a)
		e.obs.KernelChange("addr_add")
		added = append(added, a)
	}
	e.pending = e.pending[:0]
	if failed {
		if err := e.save(); err != nil {
			p.errs = append(p.errs, err)
		}
	}
	if e.lapses.Load() != p.lapses {
		// The fence withdrew while this pass was in the kernel: what it
		// added may be gone again, and announcing an address not held
		// would draw traffic to this host. The next pass (the report
		// wakes the daemon) adds and announces them afresh, if this host
		// still owns them then; until then they are not held (fail closed).
		for _, a := range added {
			if err := e.addrs.Remove(e.ifindex, a); err != nil {
				p.errs = append(p.errs, fmt.Errorf("withdraw VIP %s the fence raced: %w", a, err))
				continue
			}
			delete(e.vips, a)
		}
		// An incremental pass with nothing changed would not look at them
		// again: the next one compares every address.
		e.needFull = true
		if len(added) > 0 {
			e.log.Warn("the fence withdrew during this pass: its VIP additions taken back until the next pass", "vips", added)
		}
		if err := e.save(); err != nil {
			p.errs = append(p.errs, err)
		}
		return
	}
	p.noteUnnated(e.plan.natServices(added))
	for _, a := range added {
		e.ann.Added(a, p.tenantOf(a))
		// From the start of this pass (which began on the commit that
		// gave this host the VIP) to the first announcement.
		e.obs.TookOver(time.Since(p.start))
		e.log.Info("VIP added and announced", "vip", a, "tenant", p.tenantOf(a), "interface", e.cfg.Interface, "after", time.Since(p.start).Round(time.Microsecond))
		if e.cfg.TickleACKs && e.bg != nil && p.moved[a] != "" {
			go e.tickle(e.bg, a, p.tenantOf(a))
		}
	}
}

// setSourceRanges makes the kernel filter every VIP with source ranges.
func (p *pass) setSourceRanges() {
	list := make([]srcrange.VIP, 0, len(p.filters))
	for _, f := range p.filters {
		list = append(list, *f)
	}
	if err := p.e.filter.Set(p.ctx, list); err != nil {
		p.errs = append(p.errs, err)
	}
}

// setSNAT makes the kernel hold the SNAT rules of every nat-mode VIP.
func (p *pass) setSNAT() {
	list := make([]snat.VIP, 0, len(p.natVIPs))
	for a, ports := range p.natVIPs {
		list = append(list, snat.VIP{Addr: a, TCPPorts: ports})
	}
	if err := p.e.snat.Set(p.ctx, list); err != nil {
		p.errs = append(p.errs, fmt.Errorf("SNAT rules: %w", err))
	}
}

// finish records the pass's duration, warns when it was slow, and returns
// its errors.
func (p *pass) finish() error {
	e := p.e
	if len(p.errs) > 0 {
		// What failed is not in the scope of the next change: compare
		// everything again.
		e.needFull = true
	}
	e.stats.LastDuration = time.Since(p.start)
	if e.stats.LastDuration > slowPass {
		e.log.Warn("slow data-plane pass", append([]any{"took", e.stats.LastDuration.Round(time.Microsecond), "ops", p.ops}, p.phases...)...)
	}
	if len(p.errs) > 0 {
		e.stats.Errors++
		return errors.Join(p.errs...)
	}
	return nil
}

// apply makes one IPVS change and records it in actual; tenantOf names a
// VIP's tenant for the log.
func (e *Engine) apply(op ipvsdiff.Op, tenantOf func(netip.Addr) string) error {
	if e.touched != nil {
		e.touched[op.Svc.Key] = true
	}
	svc := op.Svc.Service()
	switch op.Kind {
	case ipvsdiff.CreateService:
		if err := e.ipvs.CreateService(svc); err != nil {
			// Someone else's service with our key: take it over rather than fail forever.
			if uerr := e.ipvs.UpdateService(svc); uerr != nil {
				return err
			}
			e.log.Warn("took over an existing IPVS service not created by lbd", "vip", op.Svc.Key.Addr, "tenant", tenantOf(op.Svc.Key.Addr), "service", op.Svc.Key)
		}
		e.ours[op.Svc.Key] = true
		e.actual[op.Svc.Key] = &ipvsdiff.Svc{Key: op.Svc.Key, Scheduler: op.Svc.Scheduler, Flags: op.Svc.Flags, Timeout: op.Svc.Timeout, Dests: map[ipvsdiff.DestKey]ipvsdiff.Dest{}}
	case ipvsdiff.UpdateService:
		if err := e.ipvs.UpdateService(svc); err != nil {
			return err
		}
		a := e.actual[op.Svc.Key]
		a.Scheduler, a.Flags, a.Timeout = op.Svc.Scheduler, op.Svc.Flags, op.Svc.Timeout
	case ipvsdiff.RemoveService:
		if err := e.ipvs.RemoveService(svc); err != nil && !isNotExist(err) {
			return err
		}
		delete(e.actual, op.Svc.Key)
		delete(e.ours, op.Svc.Key)
	case ipvsdiff.CreateDest:
		if err := e.ipvs.CreateDestination(svc, ipvsdiff.Destination(op.Dest, op.D)); err != nil {
			if uerr := e.ipvs.UpdateDestination(svc, ipvsdiff.Destination(op.Dest, op.D)); uerr != nil {
				return err
			}
		}
		e.actual[op.Svc.Key].Dests[op.Dest] = op.D
	case ipvsdiff.UpdateDest:
		if err := e.ipvs.UpdateDestination(svc, ipvsdiff.Destination(op.Dest, op.D)); err != nil {
			return err
		}
		e.actual[op.Svc.Key].Dests[op.Dest] = op.D
	case ipvsdiff.RemoveDest:
		if err := e.ipvs.RemoveDestination(svc, ipvsdiff.Destination(op.Dest, op.D)); err != nil && !isNotExist(err) {
			return err
		}
		delete(e.actual[op.Svc.Key].Dests, op.Dest)
	}
	return nil
}

var opNames = map[ipvsdiff.OpKind]string{
	ipvsdiff.CreateService: "service_add", ipvsdiff.UpdateService: "service_update", ipvsdiff.RemoveService: "service_remove",
	ipvsdiff.CreateDest: "dest_add", ipvsdiff.UpdateDest: "dest_update", ipvsdiff.RemoveDest: "dest_remove",
}

// Withdraw removes every VIP address this engine added and leaves IPVS and
// SNAT alone: the connection entries must outlive a fence, since the VIPs
// may come back here or move to a member that relies on the same entries
// having been synced.
func (e *Engine) Withdraw(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.needFull = true // the next pass puts back every address still owned
	var errs []error
	changed := false
	for a := range e.vips {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := e.removeAddr(a, e.owned[a], "VIP withdrawn (fenced; IPVS and SNAT kept)"); err != nil {
			errs = append(errs, err)
			continue
		}
		changed = true
	}
	if changed {
		if err := e.save(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeAddr takes VIP a off the interface and stops announcing it; the
// caller holds e.mu and saves the record.
func (e *Engine) removeAddr(a netip.Addr, tenant, msg string) error {
	if err := e.addrs.Remove(e.ifindex, a); err != nil {
		return fmt.Errorf("withdraw VIP %s from %s: %w", a, e.cfg.Interface, err)
	}
	e.ann.Removed(a)
	e.obs.KernelChange("addr_remove")
	delete(e.vips, a)
	e.touchVIP(a)
	e.log.Info(msg, "vip", a, "tenant", tenant, "interface", e.cfg.Interface)
	return nil
}
