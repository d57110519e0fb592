package fsm

import (
	"net/netip"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Filter selects virtual services in List. Zero fields match everything.
type Filter struct {
	Tenant string
	Labels map[string]string
	Pool   string
	VIP    string
	Owner  string
}

func (f Filter) match(vs *edgelbv1.VirtualService) bool {
	if f.Tenant != "" && vs.Tenant != f.Tenant || f.Pool != "" && vs.Pool != f.Pool || f.Owner != "" && vs.Owner != f.Owner {
		return false
	}
	if f.VIP != "" {
		want, err := netip.ParseAddr(f.VIP)
		if err != nil || netip.MustParseAddr(vs.Vip) != want {
			return false
		}
	}
	for k, v := range f.Labels {
		if got, ok := vs.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Service returns a copy of the virtual service with key k.
func (f *FSM) Service(k Key) (*edgelbv1.VirtualService, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	vs, ok := f.st.services[k]
	if !ok {
		return nil, false
	}
	return cloneVS(vs), true
}

// List returns copies of the services that match, sorted by tenant and name,
// and the revision they were read at.
func (f *FSM) List(flt Filter) ([]*edgelbv1.VirtualService, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	vss, _, _ := f.st.snapshot()
	out := make([]*edgelbv1.VirtualService, 0, len(vss))
	for _, vs := range vss {
		if flt.match(vs) {
			out = append(out, cloneVS(vs))
		}
	}
	return out, f.revision
}

// Pool returns a pool with its used and total address counts.
func (f *FSM) Pool(name string) (p *edgelbv1.AddressPool, used, size uint64, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p, ok = f.st.pools[name]
	if !ok {
		return nil, 0, 0, false
	}
	parsed := f.st.parsed[name]
	for a := range f.st.byVIP {
		if parsed.Contains(a) {
			used++
		}
	}
	return clonePool(p), used, parsed.Size(), true
}

// Pools returns copies of every pool, sorted by name.
func (f *FSM) Pools() []*edgelbv1.AddressPool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, pools, _ := f.st.snapshot()
	for i, p := range pools {
		pools[i] = clonePool(p)
	}
	return pools
}

// Members returns copies of every member, sorted by id.
func (f *FSM) Members() []*edgelbv1.Member {
	f.mu.RLock()
	defer f.mu.RUnlock()
	_, _, ms := f.st.snapshot()
	for i, m := range ms {
		ms[i] = cloneMember(m)
	}
	return ms
}

// Member returns a copy of the member with this id.
func (f *FSM) Member(id string) (*edgelbv1.Member, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	m, ok := f.st.members[id]
	if !ok {
		return nil, false
	}
	return cloneMember(m), true
}
