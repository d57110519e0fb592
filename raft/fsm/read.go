package fsm

import (
	"net/netip"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/rules"
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

// BackendCount returns how many backends the service with key k has, without
// copying them.
func (f *FSM) BackendCount(k Key) (int, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	vs, ok := f.st.services[k]
	if !ok {
		return 0, false
	}
	return len(vs.Backends), true
}

// List returns copies of the services that match, sorted by tenant and name,
// and the revision they were read at.
func (f *FSM) List(flt Filter) ([]*edgelbv1.VirtualService, uint64) {
	var out []*edgelbv1.VirtualService
	rev := f.View(flt, func(vs *edgelbv1.VirtualService) { out = append(out, cloneVS(vs)) })
	return out, rev
}

// View calls fn with the services that match, in order, without copying them.
// Stored objects are never mutated (writers replace them), so fn may keep
// them for reading but must never modify them. fn runs under the FSM's read lock: it must not call back into the FSM.
func (f *FSM) View(flt Filter, fn func(vs *edgelbv1.VirtualService)) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var keys []Key
	indexed := true
	switch {
	case flt.VIP != "":
		// The services of one address, from the index: the leader looks
		// them up on every create of a service with its own VIP.
		a, err := netip.ParseAddr(flt.VIP)
		if err != nil {
			return f.revision // matches nothing, as match would say
		}
		keys = slices.Clone(f.st.byVIP[a])
	case flt.Owner != "":
		keys = make([]Key, 0, len(f.st.byOwner[flt.Owner]))
		for k := range f.st.byOwner[flt.Owner] {
			keys = append(keys, k)
		}
	default:
		indexed = false
	}
	if indexed {
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].Tenant != keys[j].Tenant {
				return keys[i].Tenant < keys[j].Tenant
			}
			return keys[i].Name < keys[j].Name
		})
		for _, k := range keys {
			if vs := f.st.services[k]; flt.match(vs) {
				fn(vs)
			}
		}
		return f.revision
	}
	for _, k := range f.st.sortedKeys() {
		if vs := f.st.services[k]; flt.match(vs) {
			fn(vs)
		}
	}
	return f.revision
}

// Shared returns the matching services without copying them: they are
// immutable once stored, so callers may read them freely but must never modify them.
func (f *FSM) Shared(flt Filter) ([]*edgelbv1.VirtualService, uint64) {
	var out []*edgelbv1.VirtualService
	rev := f.View(flt, func(vs *edgelbv1.VirtualService) { out = append(out, vs) })
	return out, rev
}

// All returns every service, shared (never modify them), in no particular
// order: for readers that need the whole set but not its order, without the
// sort a write invalidates.
func (f *FSM) All() ([]*edgelbv1.VirtualService, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*edgelbv1.VirtualService, 0, len(f.st.services))
	for _, vs := range f.st.services {
		out = append(out, vs)
	}
	return out, f.revision
}

// OwnerLoad returns how many services each member owns.
func (f *FSM) OwnerLoad() map[string]int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]int, len(f.st.byOwner))
	for id, set := range f.st.byOwner {
		out[id] = len(set)
	}
	return out
}

// OwnsAny reports whether any of ids owns a service, from the owner index:
// in proportion to len(ids), not to the number of services (each member's
// reconcile loop asks it on every pass, with the members it counts as gone).
func (f *FSM) OwnsAny(ids map[string]bool) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for id, in := range ids {
		if in && len(f.st.byOwner[id]) > 0 {
			return true
		}
	}
	return false
}

// TenantServices returns how many services a tenant has.
func (f *FSM) TenantServices(tenant string) int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.tenants[tenant]
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
	// Size counts what can be handed out: a free subnet-router anycast
	// address never is (one already held by an older VIP counts as used).
	size = parsed.Size()
	for _, x := range parsed.Anycast() {
		if len(f.st.byVIP[x]) == 0 && size > 0 && size < 1<<63 {
			size--
		}
	}
	return clonePool(p), used, size, true
}

// Pools returns copies of every pool, sorted by name.
func (f *FSM) Pools() []*edgelbv1.AddressPool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	pools := f.st.sortedPools()
	for i, p := range pools {
		pools[i] = clonePool(p)
	}
	return pools
}

// Members returns copies of every member, sorted by id.
func (f *FSM) Members() []*edgelbv1.Member {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ms := f.st.sortedMembers()
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

// PlacementPool is the address pool a create (update false) or an update of
// the validated service vs would place it in on the current state, as the
// apply functions decide it; nil when the placement would fail (the command
// then fails with the reason) or the pool cannot be known. The API takes the
// pool's defaults from it (rules.VirtualServiceIn). It is a preview: the
// state may change before the command applies, and the FSM checks the
// outcome again (applier.poolModes).
func (f *FSM) PlacementPool(vs *edgelbv1.VirtualService, update bool) *edgelbv1.AddressPool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c := cloneVS(vs)
	var old *edgelbv1.VirtualService
	if update {
		var ok bool
		if old, ok = f.st.services[KeyOf(c)]; !ok {
			return nil
		}
		if c.Vip == "" && (c.Pool == "" || c.Pool == old.Pool) {
			// As updateService: an update that names no address keeps its own.
			c.Vip, c.Pool, c.IpFamily = old.Vip, old.Pool, old.IpFamily
		}
	}
	a := applier{f: f, version: CommandVersion, lvl: rules.Current, dry: true}
	if r := a.placeVIP(c, old); r != nil {
		return nil
	}
	p, ok := f.st.pools[c.Pool]
	if !ok {
		return nil
	}
	return proto.Clone(p).(*edgelbv1.AddressPool)
}
