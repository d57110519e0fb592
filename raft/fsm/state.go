package fsm

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/ipam"
)

// Key names a virtual service: its tenant and name.
type Key struct{ Tenant, Name string }

func (k Key) String() string { return k.Tenant + "/" + k.Name }

// KeyOf returns the key of vs.
func KeyOf(vs *edgelbv1.VirtualService) Key { return Key{vs.Tenant, vs.Name} }

// state is the replicated data with its indexes. It is only touched under the
// FSM's lock; objects in it are never mutated after insertion (writers replace
// them), so readers may hand out clones without copying under contention.
type state struct {
	services map[Key]*edgelbv1.VirtualService
	byVIP    map[netip.Addr][]Key
	pools    map[string]*edgelbv1.AddressPool
	parsed   map[string]*ipam.Pool
	members  map[string]*edgelbv1.Member
	// heartbeats: tenant → its cloud provider's last heartbeat (tenant.go).
	heartbeats map[string]*timestamppb.Timestamp
	// orphans: tenant → the service names its cloud provider last reported
	// orphaned (sorted; tenant.go). Kept with the heartbeat it came with.
	orphans map[string][]string

	// Derived indexes, rebuilt from the above (never snapshotted).
	sortMu  sync.Mutex                  // readers build sorted lazily, under the FSM read lock
	sorted  []Key                       // services' keys in order; nil when stale
	byOwner map[string]map[Key]struct{} // owner → its services
	tenants map[string]int              // tenant → number of services
	// lowFree[pool+family]: every address of the pool before it (in the pool's
	// order) is in use, so allocation may start there. Only a shortcut: the
	// address found is the same as from a full scan, so members stay identical.
	lowFree map[string]netip.Addr
	// ownerVIPs: owner → its VIPs → how many of its services each has
	// (the assigner's load is counted in addresses, not services).
	ownerVIPs map[string]map[netip.Addr]int
	// touched collects the VIPs whose services an apply changed (before
	// and after), for the change feed; ApplyCommand resets it.
	touched []netip.Addr
}

func newState() *state {
	return &state{
		services: map[Key]*edgelbv1.VirtualService{},
		byVIP:    map[netip.Addr][]Key{},
		pools:    map[string]*edgelbv1.AddressPool{},
		parsed:   map[string]*ipam.Pool{},
		members:  map[string]*edgelbv1.Member{},
		byOwner:  map[string]map[Key]struct{}{},
		tenants:  map[string]int{},
		lowFree:  map[string]netip.Addr{},

		ownerVIPs: map[string]map[netip.Addr]int{},

		heartbeats: map[string]*timestamppb.Timestamp{},
		orphans:    map[string][]string{},
	}
}

func (s *state) indexOwner(k Key, owner string, add bool) {
	if owner == "" {
		return
	}
	set := s.byOwner[owner]
	if add {
		if set == nil {
			set = map[Key]struct{}{}
			s.byOwner[owner] = set
		}
		set[k] = struct{}{}
		return
	}
	delete(set, k)
	if len(set) == 0 {
		delete(s.byOwner, owner)
	}
}

// sortedKeys returns the services' keys ordered by tenant and name.
func (s *state) sortedKeys() []Key {
	s.sortMu.Lock()
	defer s.sortMu.Unlock()
	if s.sorted == nil {
		keys := make([]Key, 0, len(s.services))
		for k := range s.services {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareKeys)
		s.sorted = keys
	}
	return s.sorted
}

func compareKeys(a, b Key) int {
	if c := strings.Compare(a.Tenant, b.Tenant); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// sortedInsert and sortedDelete keep the order up to date, when it has been
// built, so a write costs a binary search and a copy rather than a full sort
// for the next ordered read (the leader's assigner reads in order after every
// commit). They run under the FSM's write lock, with no reader holding the slice.
func (s *state) sortedInsert(k Key) {
	if s.sorted == nil {
		return
	}
	i, _ := slices.BinarySearchFunc(s.sorted, k, compareKeys)
	s.sorted = slices.Insert(s.sorted, i, k)
}

func (s *state) sortedDelete(k Key) {
	if s.sorted == nil {
		return
	}
	if i, ok := slices.BinarySearchFunc(s.sorted, k, compareKeys); ok {
		s.sorted = slices.Delete(s.sorted, i, i+1)
	}
}

// indexOwnerVIP counts (add) or uncounts a service of owner at vip.
func (s *state) indexOwnerVIP(owner, vip string, add bool) {
	if owner == "" {
		return
	}
	a := netip.MustParseAddr(vip)
	m := s.ownerVIPs[owner]
	if add {
		if m == nil {
			m = map[netip.Addr]int{}
			s.ownerVIPs[owner] = m
		}
		m[a]++
		return
	}
	if m[a]--; m[a] <= 0 {
		delete(m, a)
		if len(m) == 0 {
			delete(s.ownerVIPs, owner)
		}
	}
}

func (s *state) putService(vs *edgelbv1.VirtualService) {
	k := KeyOf(vs)
	if old, ok := s.services[k]; ok {
		if old.Vip != vs.Vip {
			s.touched = append(s.touched, netip.MustParseAddr(old.Vip))
		}
		s.unindexVIP(k, old.Vip)
		s.indexOwner(k, old.Owner, false)
		s.indexOwnerVIP(old.Owner, old.Vip, false)
	} else {
		s.sortedInsert(k)
		s.tenants[k.Tenant]++
	}
	s.indexOwner(k, vs.Owner, true)
	s.indexOwnerVIP(vs.Owner, vs.Vip, true)
	s.services[k] = vs
	a := netip.MustParseAddr(vs.Vip)
	s.byVIP[a] = append(s.byVIP[a], k)
	s.touched = append(s.touched, a)
}

func (s *state) deleteService(k Key) {
	if old, ok := s.services[k]; ok {
		s.touched = append(s.touched, netip.MustParseAddr(old.Vip))
		s.unindexVIP(k, old.Vip)
		s.indexOwner(k, old.Owner, false)
		s.indexOwnerVIP(old.Owner, old.Vip, false)
		delete(s.services, k)
		s.sortedDelete(k)
		if s.tenants[k.Tenant]--; s.tenants[k.Tenant] <= 0 {
			delete(s.tenants, k.Tenant)
		}
	}
}

func (s *state) unindexVIP(k Key, vip string) {
	a := netip.MustParseAddr(vip)
	keys := s.byVIP[a]
	for i, x := range keys {
		if x == k {
			keys = append(keys[:i:i], keys[i+1:]...)
			break
		}
	}
	if len(keys) == 0 {
		delete(s.byVIP, a)
		s.freed(a)
	} else {
		s.byVIP[a] = keys
	}
}

// freed lowers the allocation shortcut of every pool holding a.
func (s *state) freed(a netip.Addr) {
	for name, p := range s.parsed {
		if !p.Contains(a) {
			continue
		}
		k := lowFreeKey(name, a.Is6())
		if low, ok := s.lowFree[k]; ok && p.Before(a, low) {
			s.lowFree[k] = a
		}
	}
}

func lowFreeKey(pool string, v6 bool) string {
	if v6 {
		return pool + "/6"
	}
	return pool + "/4"
}

func (s *state) putPool(p *edgelbv1.AddressPool) error {
	parsed, err := ipam.ParsePool(p.Ranges)
	if err != nil {
		return err
	}
	s.putParsedPool(p, parsed)
	return nil
}

// putParsedPool stores p with its parsed ranges. A changed pool starts its
// allocation shortcut over: its order of addresses may have changed.
func (s *state) putParsedPool(p *edgelbv1.AddressPool, parsed *ipam.Pool) {
	s.pools[p.Name] = p
	s.parsed[p.Name] = parsed
	delete(s.lowFree, lowFreeKey(p.Name, false))
	delete(s.lowFree, lowFreeKey(p.Name, true))
}

func (s *state) deletePool(name string) {
	delete(s.pools, name)
	delete(s.parsed, name)
	delete(s.lowFree, lowFreeKey(name, false))
	delete(s.lowFree, lowFreeKey(name, true))
}

// PoolOpenTo reports whether tenant may use pool p (allocate from it, see it).
func PoolOpenTo(p *edgelbv1.AddressPool, tenant string) bool {
	if len(p.Tenants) == 0 {
		return true
	}
	for _, t := range p.Tenants {
		if t == tenant {
			return true
		}
	}
	return false
}

// sortedPoolNames returns pool names in a stable order: allocation must not
// depend on Go's map iteration order, or members would disagree.
func (s *state) sortedPoolNames() []string {
	names := make([]string, 0, len(s.pools))
	for n := range s.pools {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// snapshot copies the state into its wire form.
func (s *state) snapshot() (vss []*edgelbv1.VirtualService, pools []*edgelbv1.AddressPool, members []*edgelbv1.Member) {
	return s.sortedServices(), s.sortedPools(), s.sortedMembers()
}

func (s *state) sortedServices() []*edgelbv1.VirtualService {
	vss := make([]*edgelbv1.VirtualService, 0, len(s.services))
	for _, k := range s.sortedKeys() {
		vss = append(vss, s.services[k])
	}
	return vss
}

func (s *state) sortedPools() []*edgelbv1.AddressPool {
	var pools []*edgelbv1.AddressPool
	for _, n := range s.sortedPoolNames() {
		pools = append(pools, s.pools[n])
	}
	return pools
}

func (s *state) sortedMembers() []*edgelbv1.Member {
	ids := make([]string, 0, len(s.members))
	for id := range s.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	members := make([]*edgelbv1.Member, 0, len(ids))
	for _, id := range ids {
		members = append(members, s.members[id])
	}
	return members
}

func cloneVS(vs *edgelbv1.VirtualService) *edgelbv1.VirtualService {
	return proto.Clone(vs).(*edgelbv1.VirtualService)
}

func clonePool(p *edgelbv1.AddressPool) *edgelbv1.AddressPool {
	return proto.Clone(p).(*edgelbv1.AddressPool)
}

func cloneMember(m *edgelbv1.Member) *edgelbv1.Member {
	return proto.Clone(m).(*edgelbv1.Member)
}
