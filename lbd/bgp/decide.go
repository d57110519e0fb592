// Package bgp is a member's BGP speaker for VIPs of bgp-mode address pools
// (docs/BGP.md): Decide says which routes this member advertises, Speaker
// (embedded GoBGP) advertises them to the configured routers.
//
// Decide is the one place the decision is made; everything else only
// gathers its inputs or carries out its result.
package bgp

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/rules"
)

// Member is what Decide needs to know about this member.
type Member struct {
	// LeaseValid: a majority of the voters answered this member's probes
	// within the lease (lbd/lease), the same condition that lets an l2
	// owner keep its addresses.
	LeaseValid bool
	// DataPlaneHealthy: the data plane is programmed and its fence has not
	// withdrawn.
	DataPlaneHealthy bool
	// Draining, and for how long so far (monotonic).
	Draining     bool
	DrainElapsed time.Duration
	// DrainWait is how long a drain advertises with GRACEFUL_SHUTDOWN
	// before withdrawing (bgp.drainWait).
	DrainWait time.Duration
}

// VIP is one VIP of a bgp-mode pool.
type VIP struct {
	Addr netip.Addr
	// Pool names the pool the VIP is from; Attrs are that pool's attributes.
	Pool  string
	Attrs *edgelbv1.BgpAttributes
	// Healthy: at least one of its backends is up (by this member's view
	// of the health checks).
	Healthy bool
}

// Route is one prefix to advertise with its attributes.
type Route struct {
	Prefix netip.Prefix
	// Communities sorted, GRACEFUL_SHUTDOWN (65535:0) included while draining.
	Communities      []uint32
	LargeCommunities []rules.LargeCommunity
	// LocalPref is sent when HasLocalPref (iBGP sessions only).
	LocalPref    uint32
	HasLocalPref bool
	// Pool whose attributes the route carries (the first by name when an
	// aggregate covers VIPs of several pools).
	Pool string
}

// GracefulShutdown reports whether the route carries 65535:0.
func (r Route) GracefulShutdown() bool {
	_, ok := slices.BinarySearch(r.Communities, rules.GracefulShutdown)
	return ok
}

// Decision is what a member advertises now, and when to decide again
// without any input having changed (the end of a drain's graceful period);
// Recheck is 0 when nothing is due.
type Decision struct {
	Routes []Route
	// VIPs are the addresses this member serves: it holds them locally
	// (LocalAddrs) while their routes are advertised.
	VIPs    []netip.Addr
	Recheck time.Duration
}

// Decide returns the routes member m advertises for vips. A VIP is
// advertised iff the member's lease is valid, its data plane healthy, it is
// not draining (or is within DrainWait of the drain's start, then tagged
// GRACEFUL_SHUTDOWN), and the VIP has a healthy backend. VIPs aggregated
// into one prefix advertise it once; the routes are sorted by prefix.
func Decide(m Member, vips []VIP) Decision {
	var d Decision
	if !m.LeaseValid || !m.DataPlaneHealthy {
		return d
	}
	gs := false
	if m.Draining {
		if m.DrainElapsed >= m.DrainWait {
			return d
		}
		gs = true
		d.Recheck = m.DrainWait - m.DrainElapsed
	}
	byPrefix := map[netip.Prefix]Route{}
	for _, v := range vips {
		if !v.Healthy || !v.Addr.IsValid() {
			continue
		}
		d.VIPs = append(d.VIPs, v.Addr.Unmap())
		p := prefixOf(v.Addr, v.Attrs)
		if old, ok := byPrefix[p]; ok && old.Pool <= v.Pool {
			continue
		}
		byPrefix[p] = routeFor(p, v, gs)
	}
	d.Routes = make([]Route, 0, len(byPrefix))
	for _, r := range byPrefix {
		d.Routes = append(d.Routes, r)
	}
	slices.SortFunc(d.Routes, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits())
	})
	return d
}

// prefixOf is the prefix a VIP is advertised as: the VIP itself, or the
// pool's aggregate holding it.
func prefixOf(a netip.Addr, attrs *edgelbv1.BgpAttributes) netip.Prefix {
	a = a.Unmap()
	v4, v6 := rules.AggregationLengths(attrs)
	bits := v4
	if a.Is6() {
		bits = v6
	}
	p, _ := a.Prefix(bits)
	return p
}

func routeFor(p netip.Prefix, v VIP, gs bool) Route {
	r := Route{Prefix: p, Pool: v.Pool}
	for _, s := range v.Attrs.GetCommunities() {
		// Stored pools hold only valid communities (raft/rules); one that
		// is not is skipped rather than advertised wrong.
		if c, err := rules.ParseCommunity(s); err == nil {
			r.Communities = append(r.Communities, c)
		}
	}
	if gs {
		r.Communities = append(r.Communities, rules.GracefulShutdown)
	}
	slices.Sort(r.Communities)
	r.Communities = slices.Compact(r.Communities)
	for _, s := range v.Attrs.GetLargeCommunities() {
		if l, err := rules.ParseLargeCommunity(s); err == nil {
			r.LargeCommunities = append(r.LargeCommunities, l)
		}
	}
	if v.Attrs != nil && v.Attrs.LocalPreference != nil {
		r.LocalPref, r.HasLocalPref = *v.Attrs.LocalPreference, true
	}
	return r
}

// Equal reports whether two routes are the same advertisement.
func (r Route) Equal(o Route) bool {
	return r.Prefix == o.Prefix && slices.Equal(r.Communities, o.Communities) && slices.Equal(r.LargeCommunities, o.LargeCommunities) &&
		r.HasLocalPref == o.HasLocalPref && r.LocalPref == o.LocalPref
}
