package dataplane

// Planning: from the replicated services to the state the kernel should
// hold (IPVS services, owned addresses, SNAT and source-range rules), and
// the services that cannot be programmed.

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/cloudflare/ipvs"

	"github.com/edgelb/edgelb/lbd/dataplane/conntrack"
	"github.com/edgelb/edgelb/lbd/dataplane/ipvsdiff"
	"github.com/edgelb/edgelb/lbd/dataplane/srcrange"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// ServiceKey names a virtual service: its tenant and name.
type ServiceKey struct{ Tenant, Name string }

// KeyOf is vs's key.
func KeyOf(vs *edgelbv1.VirtualService) ServiceKey { return ServiceKey{vs.Tenant, vs.Name} }

// planned is one service as the plan holds it: its (immutable) object and
// what the kernel needs for it, or why it cannot be programmed.
type planned struct {
	vs     *edgelbv1.VirtualService
	addr   netip.Addr // invalid only when the VIP does not parse
	svcs   []*ipvsdiff.Svc
	ranged *srcrange.Service // its source-range filter, when it has ranges
	why    string            // not "": isolated (left out), and why
	// aa: planned active-active (Config.ActiveActive); a pool's mode is
	// not in the object, so a change of it is looked for here.
	aa bool
}

// plan is the state the kernel should hold, kept up to date service by
// service (update), so that a change costs in proportion to what changed,
// not to the number of services: the IPVS services of every service (a hot
// standby), the owned addresses with their tenant (the FSM gives an address
// to one tenant only), the nat-mode VIPs with their TCP ports (which the
// takeover guard lets through), and the VIPs with source ranges.
type plan struct {
	svcs    map[ServiceKey]*planned
	atVIP   map[netip.Addr][]ServiceKey
	want    ipvsdiff.State
	vips    map[netip.Addr]string
	natVIPs map[netip.Addr][]uint16
	filters map[netip.Addr]*srcrange.VIP
	// isolated names the services left out (tenant/name → why).
	isolated map[string]string
	owner    string
}

func newPlan(owner string) *plan {
	return &plan{svcs: map[ServiceKey]*planned{}, atVIP: map[netip.Addr][]ServiceKey{}, want: ipvsdiff.State{},
		vips: map[netip.Addr]string{}, natVIPs: map[netip.Addr][]uint16{}, filters: map[netip.Addr]*srcrange.VIP{},
		isolated: map[string]string{}, owner: owner}
}

// scope is what one pass changes in the plan: the VIPs and IPVS services
// whose desired state may differ from the last pass's. A nil scope (a full
// pass) covers everything.
type scope struct {
	vips map[netip.Addr]struct{}
	svcs map[ipvsdiff.SvcKey]struct{}
	// gone is the tenant of VIPs of services changed or deleted, for the log
	// lines of their withdrawal.
	gone map[netip.Addr]string
	// rules: the SNAT or source-range rules may need to change.
	rules bool
	// isolated: the set of isolated services changed.
	isolated bool
}

// update brings the plan's services to changed (nil: deleted) and returns
// the scope of the change, with the VIPs that came to owner from another
// member, each with that member. Objects are immutable: one the plan holds
// already is not looked at again, unless it is isolated and retry is set (a full pass looks at those
// again: what kept one out may have been mended). The caller holds e.mu.
func (e *Engine) update(changed map[ServiceKey]*edgelbv1.VirtualService, owner string, retry bool) (*scope, map[netip.Addr]string) {
	pl := e.plan
	sc := &scope{vips: map[netip.Addr]struct{}{}, svcs: map[ipvsdiff.SvcKey]struct{}{}, gone: map[netip.Addr]string{}}
	if e.owners == nil {
		e.owners = map[netip.Addr]string{}
	}
	var moved map[netip.Addr]string // VIP → its previous owner
	// Removals first, so a key another changed service takes over (a port
	// moved from one service to another of the same VIP) is not removed
	// after it was added.
	var fresh []*planned
	for k, vs := range changed {
		old := pl.svcs[k]
		if old != nil && old.vs == vs && old.aa == e.activeActive(vs) && (!retry || old.why == "") {
			continue
		}
		if old != nil {
			e.unplan(k, old, sc)
		}
		if vs == nil {
			continue
		}
		n := e.planService(vs)
		if n.addr.IsValid() && (old == nil || old.vs != vs) {
			// An ownership change is a new object, so looking at new
			// objects only sees every one.
			if was := e.owners[n.addr]; owner != "" && vs.Owner == owner && was != "" && was != owner {
				if moved == nil {
					moved = map[netip.Addr]string{}
				}
				moved[n.addr] = was
			}
			e.owners[n.addr] = vs.Owner
		}
		fresh = append(fresh, n)
	}
	for _, n := range fresh {
		k := KeyOf(n.vs)
		pl.svcs[k] = n
		if n.why != "" {
			pl.isolated[k.Tenant+"/"+k.Name] = n.why
			sc.isolated = true
		}
		if !n.addr.IsValid() {
			continue
		}
		pl.atVIP[n.addr] = append(pl.atVIP[n.addr], k)
		sc.vips[n.addr] = struct{}{}
		if n.why != "" {
			continue
		}
		for _, s := range n.svcs {
			pl.want[s.Key] = s
			sc.svcs[s.Key] = struct{}{}
		}
	}
	for a := range sc.vips {
		if e.replanVIP(a) {
			sc.rules = true
		}
	}
	if len(e.owners) > 2*len(pl.svcs)+1024 {
		// Forget deleted VIPs now and then (a map rebuild, not every pass).
		e.owners = make(map[netip.Addr]string, len(pl.svcs))
		for _, n := range pl.svcs {
			if n.addr.IsValid() {
				e.owners[n.addr] = n.vs.Owner
			}
		}
	}
	return sc, moved
}

// unplan takes service k (planned as old) out of the plan.
func (e *Engine) unplan(k ServiceKey, old *planned, sc *scope) {
	pl := e.plan
	delete(pl.svcs, k)
	if old.why != "" {
		delete(pl.isolated, k.Tenant+"/"+k.Name)
		sc.isolated = true
	}
	if !old.addr.IsValid() {
		return
	}
	sc.vips[old.addr] = struct{}{}
	sc.gone[old.addr] = k.Tenant
	keys := pl.atVIP[old.addr]
	for i, x := range keys {
		if x == k {
			keys = append(keys[:i:i], keys[i+1:]...)
			break
		}
	}
	if len(keys) == 0 {
		delete(pl.atVIP, old.addr)
	} else {
		pl.atVIP[old.addr] = keys
	}
	if old.why != "" {
		return
	}
	for _, s := range old.svcs {
		if pl.want[s.Key] == s {
			delete(pl.want, s.Key)
		}
		sc.svcs[s.Key] = struct{}{}
	}
}

// planService is what the kernel needs for vs.
func (e *Engine) planService(vs *edgelbv1.VirtualService) *planned {
	n := &planned{vs: vs}
	n.addr, _ = netip.ParseAddr(vs.Vip) // FromService reports a bad one
	n.aa = e.activeActive(vs)
	svcs, err := ipvsdiff.FromService(vs)
	if err == nil && n.aa {
		// Served by every member at once: the same mh table everywhere
		// (docs/DATAPLANE.md, "Active-active").
		err = ipvsdiff.ActiveActive(svcs)
	}
	if err != nil {
		// One service the kernel cannot take (a scheduler this binary
		// does not know, say, from a newer member) must not keep every
		// other service from being programmed: it is left out, with its
		// address, and reported.
		n.why = err.Error()
		return n
	}
	n.svcs = svcs
	if len(vs.SourceRanges) > 0 || vs.DenyAllSources {
		// Fail closed: served open would let in every client the ranges
		// keep out.
		n.ranged, n.why = e.sourceRanges(vs, svcs)
	}
	return n
}

// replanVIP recomputes what address a needs from the services at it: owned
// here or not, its SNAT ports, its source-range filter. It reports whether
// its rules changed.
func (e *Engine) replanVIP(a netip.Addr) bool {
	pl := e.plan
	oldPorts, hadNAT := pl.natVIPs[a]
	oldFilter := pl.filters[a]
	delete(pl.vips, a)
	delete(pl.natVIPs, a)
	delete(pl.filters, a)
	for _, k := range pl.atVIP[a] {
		n := pl.svcs[k]
		if n.why != "" {
			continue
		}
		vs := n.vs
		if n.ranged != nil {
			f := pl.filters[a]
			if f == nil {
				f = &srcrange.VIP{Addr: a}
				pl.filters[a] = f
			}
			f.Services = append(f.Services, n.ranged)
		}
		if pl.owner != "" && vs.Owner == pl.owner {
			pl.vips[a] = vs.Tenant
		}
		if vs.ForwardingMode != edgelbv1.ForwardingMode_FORWARDING_MODE_DR {
			ports := pl.natVIPs[a]
			for _, s := range n.svcs {
				if s.Key.Proto == ipvs.TCP {
					ports = append(ports, s.Key.Port)
				}
			}
			pl.natVIPs[a] = ports
		}
	}
	newPorts, hasNAT := pl.natVIPs[a]
	newFilter := pl.filters[a]
	if hadNAT != hasNAT || !slices.Equal(oldPorts, newPorts) {
		return true
	}
	if (oldFilter == nil) != (newFilter == nil) {
		return true
	}
	return oldFilter != nil && !slices.Equal(oldFilter.Services, newFilter.Services)
}

// natServices is every port the nat-mode services of vips serve, as the
// conntrack clean-up of entries no NAT rewrote names them (nil: none).
func (pl *plan) natServices(vips []netip.Addr) map[conntrack.Service]bool {
	var out map[conntrack.Service]bool
	for _, a := range vips {
		for _, k := range pl.atVIP[a] {
			n := pl.svcs[k]
			if n.why != "" || n.vs.ForwardingMode == edgelbv1.ForwardingMode_FORWARDING_MODE_DR {
				continue
			}
			for _, s := range n.svcs {
				if out == nil {
					out = map[conntrack.Service]bool{}
				}
				out[conntrack.Service{Proto: uint8(s.Key.Proto), Dst: netip.AddrPortFrom(a.Unmap(), s.Key.Port)}] = true
			}
		}
	}
	return out
}

// activeActive reports whether vs is served by every member at once (a bgp
// pool's service).
func (e *Engine) activeActive(vs *edgelbv1.VirtualService) bool {
	return vs != nil && e.cfg.ActiveActive != nil && e.cfg.ActiveActive(vs)
}

// replan makes the plan anew for owner from the services it holds, keeping
// each service's IPVS form: a full pass (the periodic resync, a change of
// owner, after a failed pass).
func (e *Engine) replan(owner string) {
	old := e.plan
	e.plan = newPlan(owner)
	// Reuse the planned forms: objects are immutable.
	for k, n := range old.svcs {
		e.plan.svcs[k] = n
		if n.why != "" {
			e.plan.isolated[k.Tenant+"/"+k.Name] = n.why
		}
		if !n.addr.IsValid() {
			continue
		}
		e.plan.atVIP[n.addr] = append(e.plan.atVIP[n.addr], k)
		if n.why == "" {
			for _, s := range n.svcs {
				e.plan.want[s.Key] = s
			}
		}
	}
	for a := range e.plan.atVIP {
		e.replanVIP(a)
	}
}

// sourceRanges is vs's source-range filter, or nil and why it cannot be
// enforced here (then vs is not programmed at all).
func (e *Engine) sourceRanges(vs *edgelbv1.VirtualService, svcs []*ipvsdiff.Svc) (*srcrange.Service, string) {
	if e.filter == nil {
		return nil, "it has source ranges (or denies all sources) and this host cannot enforce them (no usable iptables; see the log at start)"
	}
	// DenyAllSources leaves Ranges empty: the VIP's chain then holds only
	// the DROP of its ports.
	s := &srcrange.Service{Name: vs.Tenant + "/" + vs.Name}
	for _, r := range vs.SourceRanges {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			return nil, fmt.Sprintf("source range %q: %v", r, err) // the FSM's rules refuse these
		}
		s.Ranges = append(s.Ranges, p.Masked())
	}
	for _, sv := range svcs {
		proto, ok := protoNames[sv.Key.Proto]
		if !ok {
			return nil, fmt.Sprintf("source ranges on protocol %d are not supported", sv.Key.Proto)
		}
		s.Ports = append(s.Ports, srcrange.Port{Proto: proto, Port: sv.Key.Port})
	}
	return s, ""
}

var protoNames = map[ipvs.Protocol]string{ipvs.TCP: "tcp", ipvs.UDP: "udp", ipvs.SCTP: "sctp"}

// IsolationObserver is implemented by an Observer that also wants the number
// of services the data plane cannot program (lbd/metrics does).
type IsolationObserver interface {
	Isolated(n int)
}

// Isolated returns the services the data plane could not program in its
// last pass, as "tenant/name: why", sorted.
func (e *Engine) Isolated() []string {
	e.isoMu.Lock()
	defer e.isoMu.Unlock()
	out := make([]string, 0, len(e.isolated))
	for k, why := range e.isolated {
		out = append(out, k+": "+why)
	}
	sort.Strings(out)
	return out
}

// noteIsolated records this pass's isolated services, logging each once when
// it becomes isolated and when it is programmable again.
func (e *Engine) noteIsolated(now map[string]string) {
	e.isoMu.Lock()
	before := e.isolated
	e.isolated = now
	e.isoMu.Unlock()
	for k, why := range now {
		if before[k] != why {
			e.log.Error("cannot program virtual service; it is left out and every other service is programmed", "service", k, "err", why)
		}
	}
	for k := range before {
		if _, still := now[k]; !still {
			e.log.Info("virtual service is programmable again", "service", k)
		}
	}
	if o, ok := e.obs.(IsolationObserver); ok {
		o.Isolated(len(now))
	}
}
