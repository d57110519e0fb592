package fsm

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/ipam"
	"github.com/edgelb/edgelb/raft/rules"
)

// applier applies one command under the FSM lock and collects its events.
type applier struct {
	f       *FSM
	idx     uint64
	time    *timestamppb.Timestamp
	version uint32 // the command's: which rules its proposer applied
	events  []*edgelbv1.Event
	// dry: a preview under the read lock (PlacementPool), which must not
	// write even the allocator's low-water marks.
	dry bool
	// lvl is the validation rule set the command is held to (raftv1.Command.rules).
	lvl rules.Level
}

func (a *applier) st() *state { return a.f.st }

func (a *applier) emit(t edgelbv1.EventType, reason string, obj any) {
	e := &edgelbv1.Event{Type: t, Reason: reason, Time: a.time}
	switch o := obj.(type) {
	case *edgelbv1.VirtualService:
		e.Object = &edgelbv1.Event_VirtualService{VirtualService: o}
	case *edgelbv1.AddressPool:
		e.Object = &edgelbv1.Event_AddressPool{AddressPool: o}
	case *edgelbv1.Member:
		e.Object = &edgelbv1.Event_Member{Member: o}
	}
	a.events = append(a.events, e)
}

const (
	put = edgelbv1.EventType_EVENT_TYPE_PUT
	del = edgelbv1.EventType_EVENT_TYPE_DELETE
)

func notFound(k Key) *Result {
	return fail(codes.NotFound, "virtual service %s not found", k)
}

func (a *applier) lookup(tenant, name string) (*edgelbv1.VirtualService, Key, *Result) {
	k := Key{tenant, name}
	vs, ok := a.st().services[k]
	if !ok {
		return nil, k, notFound(k)
	}
	return vs, k, nil
}

func checkGeneration(vs *edgelbv1.VirtualService, expected uint64) *Result {
	if expected != 0 && expected != vs.Generation {
		return fail(codes.Aborted, "virtual service %s/%s is at generation %d, not %d: it changed since you read it; read it again and retry",
			vs.Tenant, vs.Name, vs.Generation, expected)
	}
	return nil
}

// store records a new version of a service, bumping its generation.
func (a *applier) store(old, vs *edgelbv1.VirtualService, reason string) *Result {
	if old != nil {
		vs.Generation = old.Generation + 1
		vs.CreateTime = old.CreateTime
	} else {
		vs.Generation = 1
		vs.CreateTime = a.time
	}
	vs.UpdateTime = a.time
	a.st().putService(vs)
	a.emit(put, reason, vs)
	return &Result{Service: cloneVS(vs)}
}

func (a *applier) createService(c *raftv1.CreateVirtualService) *Result {
	vs := cloneVS(c.Service)
	k := KeyOf(vs)
	if _, ok := a.st().services[k]; ok {
		return fail(codes.AlreadyExists, "virtual service %s already exists; use update to change it", k)
	}
	if r := backendLimit(k, len(vs.Backends)); r != nil {
		return r
	}
	if r := a.checkPin(vs, nil); r != nil {
		return r
	}
	if r := a.placeVIP(vs, nil); r != nil {
		return r
	}
	if r := a.placed(vs); r != nil {
		return r
	}
	if r := a.poolModes(vs); r != nil {
		return r
	}
	vs.Owner = c.Owner
	if a.bgpPool(vs.Pool) {
		// A bgp-pool VIP has no single owner: every eligible member
		// advertises it (lbd/bgp), whatever the leader proposed.
		vs.Owner = ""
	}
	why := c.OwnerReason
	if vs.Owner != "" && why == edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED {
		// An entry from before the reason existed: its leader placed it.
		why = edgelbv1.OwnershipReason_OWNERSHIP_REASON_ASSIGNED
	}
	// Services that share an address share its owner: the address can live
	// on one host only. The leader decided the owner (ownership.Decide) and
	// already put a service that joins a shared address where its services
	// are; this only catches a decision made on state that changed before
	// the entry applied (two creates of one new address in flight at once,
	// or the address moved in between). It normalises instead of refusing:
	// the correction is a function of the log alone, so every member makes
	// the same one, and a client's create must not fail because of an
	// interleaving it can neither see nor avoid.
	for _, k := range a.st().byVIP[netip.MustParseAddr(vs.Vip)] {
		if o := a.st().services[k].Owner; o != "" {
			if o != vs.Owner {
				vs.Owner, why = o, edgelbv1.OwnershipReason_OWNERSHIP_REASON_SHARED_VIP
			}
			break
		}
	}
	if vs.Owner == "" {
		why = edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED
	}
	res := a.store(nil, vs, "created")
	a.events[len(a.events)-1].OwnershipReason = why
	return res
}

func (a *applier) updateService(c *raftv1.UpdateVirtualService) *Result {
	old, _, r := a.lookup(c.Service.Tenant, c.Service.Name)
	if r != nil {
		return r
	}
	if r := checkGeneration(old, c.ExpectedGeneration); r != nil {
		return r
	}
	if r := backendLimit(KeyOf(old), len(c.Service.Backends)); r != nil {
		return r
	}
	vs := cloneVS(c.Service)
	if vs.Vip == "" && vs.Pool == "" || vs.Vip == "" && vs.Pool == old.Pool {
		// An update that names no address keeps the one it has.
		vs.Vip, vs.Pool, vs.IpFamily = old.Vip, old.Pool, old.IpFamily
	}
	if r := a.checkPin(vs, old); r != nil {
		return r
	}
	if r := a.placeVIP(vs, old); r != nil {
		return r
	}
	if r := a.placed(vs); r != nil {
		return r
	}
	if r := a.poolModes(vs); r != nil {
		return r
	}
	vs.Owner = old.Owner
	// Keep the health the checkers reported for backends that stay.
	carryHealth(old, vs)
	return a.store(old, vs, "updated")
}

func carryHealth(old, vs *edgelbv1.VirtualService) {
	type bk struct {
		a string
		p uint32
	}
	h := map[bk]*edgelbv1.BackendHealth{}
	for _, b := range old.Backends {
		if b.Health != nil {
			h[bk{b.Address, b.Port}] = b.Health
		}
	}
	for _, b := range vs.Backends {
		if x, ok := h[bk{b.Address, b.Port}]; ok {
			b.Health = x
		}
	}
}

func (a *applier) deleteService(c *raftv1.DeleteVirtualService) *Result {
	old, k, r := a.lookup(c.Tenant, c.Name)
	if r != nil {
		return r
	}
	if r := checkGeneration(old, c.ExpectedGeneration); r != nil {
		return r
	}
	a.st().deleteService(k)
	a.emit(del, "deleted", old)
	return &Result{Service: cloneVS(old)}
}

// withBackends stores a copy of old with a changed backend list.
func (a *applier) withBackends(old *edgelbv1.VirtualService, bs []*edgelbv1.Backend, reason string) *Result {
	vs := cloneVS(old)
	vs.Backends = bs
	return a.store(old, vs, reason)
}

func (a *applier) checkFamily(vs *edgelbv1.VirtualService, bs []*edgelbv1.Backend) *Result {
	v6 := netip.MustParseAddr(vs.Vip).Is6()
	for _, b := range bs {
		ad, err := netip.ParseAddr(b.Address)
		if err != nil {
			return fail(codes.InvalidArgument, "backend %q is not an IP address", b.Address)
		}
		if ad.Is6() != v6 {
			return fail(codes.InvalidArgument, "backend %s is not of the family of VIP %s; a VIP's backends share its family", b.Address, vs.Vip)
		}
	}
	return nil
}

func (a *applier) setBackends(c *raftv1.SetBackends) *Result {
	old, _, r := a.lookup(c.Tenant, c.Name)
	if r != nil {
		return r
	}
	if r := checkGeneration(old, c.ExpectedGeneration); r != nil {
		return r
	}
	if r := backendLimit(KeyOf(old), len(c.Backends)); r != nil {
		return r
	}
	if r := a.checkFamily(old, c.Backends); r != nil {
		return r
	}
	bs := make([]*edgelbv1.Backend, len(c.Backends))
	for i, b := range c.Backends {
		bs[i] = proto.Clone(b).(*edgelbv1.Backend)
	}
	if r := a.checkBackends(old, bs, bs); r != nil {
		return r
	}
	tmp := &edgelbv1.VirtualService{Backends: old.Backends}
	carryHealth(tmp, &edgelbv1.VirtualService{Backends: bs})
	return a.withBackends(old, bs, "backends set")
}

// checkBackends holds a new backend list bs of old to the rules (from Strict
// on): no backend on the VIP, none twice, and each of fresh (the backends the
// command brings; the others were checked when they came) in its one stored
// form and as the API would store it. The rest of the service is held to the
// rules every release enforced (Legacy), not today's: a service an older
// release accepted (a name with "..", say) keeps taking backend changes.
// Checking only fresh keeps an add to a 5,000-backend service cheap.
// Entries without a rule level (older binaries) still have fresh held to the
// form every release's API stored (a weight filled in, say): only a raw
// command could lack it, and such a backend would reach the kernel as the
// API never sends it (found by FuzzPlanCommand).
func (a *applier) checkBackends(old *edgelbv1.VirtualService, bs, fresh []*edgelbv1.Backend) *Result {
	if a.lvl >= rules.Strict {
		if err := rules.Distinct(old, "backends", bs); err != nil {
			return refused("virtual service "+KeyOf(old).String(), err)
		}
		rules.NormalizeBackends(old, fresh)
	}
	// A shallow copy without old's backends: Stored clones what it changes.
	vs := &edgelbv1.VirtualService{}
	m := vs.ProtoReflect()
	old.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() != "backends" {
			m.Set(fd, v)
		}
		return true
	})
	vs.Backends = fresh
	if err := rules.Stored(vs, rules.Legacy); err != nil {
		return refused("virtual service "+KeyOf(vs).String(), err)
	}
	return nil
}

// placed holds a service whose VIP is now known to the rules that need it.
func (a *applier) placed(vs *edgelbv1.VirtualService) *Result {
	if err := rules.Placed(vs, a.lvl); err != nil {
		return refused("virtual service "+KeyOf(vs).String(), err)
	}
	return nil
}

// poolModes holds a service placed in a bgp pool to the modes every member
// can serve it with at once (rules.BGPPoolModes), from level BGPModes on:
// the API refuses first, this refuses a raw entry alike. Older entries
// replay as they applied; the data plane isolates such a service.
func (a *applier) poolModes(vs *edgelbv1.VirtualService) *Result {
	if a.lvl < rules.BGPModes || !a.bgpPool(vs.Pool) {
		return nil
	}
	if err := rules.BGPPoolModes(vs, vs.Pool); err != nil {
		return refused("virtual service "+KeyOf(vs).String(), err)
	}
	return nil
}

// checkPin refuses a pin to a member the cluster does not have: it would be
// silently ignored, and the VIP placed elsewhere. A pin the service already
// had stays allowed (its member may have left since).
func (a *applier) checkPin(vs, old *edgelbv1.VirtualService) *Result {
	if a.lvl < rules.Strict || vs.PinnedMember == "" || old != nil && old.PinnedMember == vs.PinnedMember {
		return nil
	}
	if _, ok := a.st().members[vs.PinnedMember]; ok {
		return nil
	}
	ids := make([]string, 0, len(a.st().members))
	for id := range a.st().members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return failR(codes.FailedPrecondition, errinfo.UnknownMember, map[string]string{"field": "service.pinned_member", "member": vs.PinnedMember},
		"service.pinned_member: %s is not a member of this cluster (members: %s); pin to one of them or leave the pin out", vs.PinnedMember, strings.Join(ids, ", "))
}

func findBackend(bs []*edgelbv1.Backend, addr string, port uint32) int {
	for i, b := range bs {
		if b.Address == addr && b.Port == port {
			return i
		}
	}
	return -1
}

// findBackendIn finds a backend of vs by its identity: from Strict on,
// 10.0.0.11:30080 names the backend stored as 10.0.0.11 when every port of vs
// sends to 30080 (and the other way round).
func (a *applier) findBackendIn(vs *edgelbv1.VirtualService, addr string, port uint32) int {
	if i := findBackend(vs.Backends, addr, port); i >= 0 || a.lvl < rules.Strict {
		return i
	}
	for i, b := range vs.Backends {
		if rules.SameBackend(vs, b.Address, b.Port, addr, port) {
			return i
		}
	}
	return -1
}

func backendName(addr string, port uint32) string {
	if port == 0 {
		return addr
	}
	return netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(port)).String()
}

// MaxBackends is the most backends one virtual service may hold (see
// rules.MaxBackends: raise it in a release, never lower it).
const MaxBackends = rules.MaxBackends

// backendLimit refuses a backend list of n for k beyond MaxBackends.
func backendLimit(k Key, n int) *Result {
	if n > MaxBackends {
		return fail(codes.InvalidArgument, "backends: virtual service %s would have %d backends; the limit is %d per service: remove unused ones or spread them over more virtual services", k, n, MaxBackends)
	}
	return nil
}

func (a *applier) addBackend(c *raftv1.AddBackend) *Result {
	old, k, r := a.lookup(c.Tenant, c.Name)
	if r != nil {
		return r
	}
	if n := len(old.Backends); n >= MaxBackends {
		return fail(codes.InvalidArgument, "backends: virtual service %s already has %d backends, the limit per service; remove one first (lbctl backend remove) or spread them over more virtual services", k, n)
	}
	if r := a.checkFamily(old, []*edgelbv1.Backend{c.Backend}); r != nil {
		return r
	}
	if i := a.findBackendIn(old, c.Backend.Address, c.Backend.Port); i >= 0 {
		have := old.Backends[i]
		if have.Address == c.Backend.Address && have.Port == c.Backend.Port {
			return failR(codes.AlreadyExists, errinfo.DuplicateBackend, map[string]string{"field": "backend"},
				"backend %s is already in %s; change it with lbctl backend set or drain, or remove it first", backendName(c.Backend.Address, c.Backend.Port), k)
		}
		return failR(codes.AlreadyExists, errinfo.DuplicateBackend, map[string]string{"field": "backend"},
			"backend %s is already in %s as %s: the service's ports send to the same port either way; change that entry (lbctl backend set or drain) instead of adding another",
			backendName(c.Backend.Address, c.Backend.Port), k, backendName(have.Address, have.Port))
	}
	bs := cloneBackends(old.Backends)
	bs = append(bs, proto.Clone(c.Backend).(*edgelbv1.Backend))
	if r := a.checkBackends(old, bs, bs[len(bs)-1:]); r != nil {
		return r
	}
	return a.withBackends(old, bs, "backend added")
}

func cloneBackends(in []*edgelbv1.Backend) []*edgelbv1.Backend {
	out := make([]*edgelbv1.Backend, len(in), len(in)+1)
	for i, b := range in {
		out[i] = proto.Clone(b).(*edgelbv1.Backend)
	}
	return out
}

func (a *applier) removeBackend(c *raftv1.RemoveBackend) *Result {
	old, k, r := a.lookup(c.Tenant, c.Name)
	if r != nil {
		return r
	}
	i := a.findBackendIn(old, c.Address, c.Port)
	if i < 0 {
		return fail(codes.NotFound, "backend %s is not in %s", backendName(c.Address, c.Port), k)
	}
	bs := cloneBackends(old.Backends)
	bs = append(bs[:i], bs[i+1:]...)
	return a.withBackends(old, bs, "backend removed")
}

func (a *applier) drainBackend(c *raftv1.DrainBackend) *Result {
	old, k, r := a.lookup(c.Tenant, c.Name)
	if r != nil {
		return r
	}
	i := a.findBackendIn(old, c.Address, c.Port)
	if i < 0 {
		return fail(codes.NotFound, "backend %s is not in %s", backendName(c.Address, c.Port), k)
	}
	if old.Backends[i].Drained == c.Drained {
		// Nothing changes: answer with the stored object and record no event.
		return &Result{Service: cloneVS(old)}
	}
	bs := cloneBackends(old.Backends)
	bs[i].Drained = c.Drained
	reason := "backend drained"
	if !c.Drained {
		reason = "backend undrained"
	}
	return a.withBackends(old, bs, reason)
}

func (a *applier) createPool(c *raftv1.CreateAddressPool) *Result {
	p := proto.Clone(c.Pool).(*edgelbv1.AddressPool)
	if _, ok := a.st().pools[p.Name]; ok {
		return fail(codes.AlreadyExists, "address pool %s already exists", p.Name)
	}
	p.CreateTime = a.time
	p.UpdateTime = nil
	p.Generation = 0
	if a.version >= versionAnycast {
		p.Generation = 1
	}
	st := a.st()
	parsed, err := ipam.ParsePool(p.Ranges)
	if err != nil {
		return fail(codes.InvalidArgument, "pool %s: %v", p.Name, err)
	}
	if r := a.checkPoolPlace(p, parsed); r != nil {
		return r
	}
	st.putParsedPool(p, parsed)
	a.emit(put, "created", p)
	return &Result{Pool: proto.Clone(p).(*edgelbv1.AddressPool)}
}

func (a *applier) deletePool(c *raftv1.DeleteAddressPool) *Result {
	p, ok := a.st().pools[c.Name]
	if !ok {
		return fail(codes.NotFound, "address pool %s not found", c.Name)
	}
	var users []string
	for k, vs := range a.st().services {
		if vs.Pool == c.Name {
			users = append(users, k.String())
		}
	}
	if len(users) > 0 {
		sort.Strings(users)
		more := ""
		if len(users) > 3 {
			more = fmt.Sprintf(" and %d more", len(users)-3)
			users = users[:3]
		}
		return fail(codes.FailedPrecondition, "address pool %s is in use by %d virtual services (%s%s); delete them or move their VIPs first",
			c.Name, len(users), strings.Join(users, ", "), more)
	}
	a.st().deletePool(c.Name)
	a.emit(del, "deleted", p)
	return &Result{Pool: proto.Clone(p).(*edgelbv1.AddressPool)}
}

func (a *applier) putMember(c *raftv1.PutMember) *Result {
	m := proto.Clone(c.Member).(*edgelbv1.Member)
	if m.State == edgelbv1.MemberState_MEMBER_STATE_UNSPECIFIED {
		m.State = edgelbv1.MemberState_MEMBER_STATE_ACTIVE
	}
	old, had := a.st().members[m.Id]
	if had && proto.Equal(old, m) {
		return &Result{Member: proto.Clone(m).(*edgelbv1.Member)}
	}
	a.st().members[m.Id] = m
	why := "member updated"
	if had && !slices.Equal(old.BgpPeersDown, m.BgpPeersDown) {
		// A BGP session change (lbd/bgp), the member's only frequent update.
		why = "bgp peers down: none"
		if len(m.BgpPeersDown) > 0 {
			why = "bgp peers down: " + strings.Join(m.BgpPeersDown, ", ")
		}
	}
	a.emit(put, why, m)
	return &Result{Member: proto.Clone(m).(*edgelbv1.Member)}
}

func (a *applier) removeMember(c *raftv1.RemoveMember) *Result {
	m, ok := a.st().members[c.Id]
	if !ok {
		return fail(codes.NotFound, "member %s not found", c.Id)
	}
	delete(a.st().members, c.Id)
	a.emit(del, "member removed", m)
	// Its VIPs are unowned now; the leader's assigner gives them to others.
	for _, vs := range a.sortedServices() {
		if vs.Owner == c.Id {
			n := cloneVS(vs)
			n.Owner = ""
			a.st().putService(n)
			a.emit(put, "owner "+c.Id+" removed", n)
			a.events[len(a.events)-1].OwnershipReason = edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_REMOVED
		}
	}
	return &Result{Member: proto.Clone(m).(*edgelbv1.Member)}
}

func (a *applier) setOwners(c *raftv1.SetOwners) *Result {
	for _, as := range c.Assignments {
		vs, ok := a.st().services[Key{as.Tenant, as.Name}]
		if !ok || vs.Owner == as.Owner || a.bgpPool(vs.Pool) {
			// Deleted or already there since the leader decided, or a
			// bgp-pool VIP, which no one owns: nothing to do.
			continue
		}
		n := cloneVS(vs)
		n.Owner = as.Owner
		// Ownership is not a spec change: the generation stays, so clients'
		// optimistic updates are not refused because a VIP moved.
		a.st().putService(n)
		why := as.OwnershipReason
		if why == edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED {
			// An entry from before the enum holds only the text.
			why = legacyOwnershipReasons[as.Reason]
		}
		// The text goes on too, for people (the leader writes both).
		a.emit(put, as.Reason, n)
		a.events[len(a.events)-1].OwnershipReason = why
	}
	return &Result{}
}

// legacyOwnershipReasons maps the text of an assignment written before
// Assignment.ownership_reason existed to the reason, so that replaying an
// old log gives its events the enum too. The texts are frozen: they are what
// those entries hold, whatever the current release writes.
var legacyOwnershipReasons = map[string]edgelbv1.OwnershipReason{
	"assigned":                        edgelbv1.OwnershipReason_OWNERSHIP_REASON_ASSIGNED,
	"pinned to member":                edgelbv1.OwnershipReason_OWNERSHIP_REASON_PINNED,
	"owner left the cluster":          edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_LEFT,
	"owner unreachable":               edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_UNREACHABLE,
	"owner draining":                  edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_DRAINING,
	"VIP shared with another service": edgelbv1.OwnershipReason_OWNERSHIP_REASON_SHARED_VIP,
	"moved by operator":               edgelbv1.OwnershipReason_OWNERSHIP_REASON_MOVED,
}

// setBackendHealth records the owner's health observations. Reports from a
// member that no longer owns the service are dropped: after a failover only
// the new owner's checks count. A bgp-pool VIP has no owner; any member's
// report counts (the leader sends them).
func (a *applier) setBackendHealth(c *raftv1.SetBackendHealth) *Result {
	changed := map[Key]*edgelbv1.VirtualService{}
	var order []Key
	for _, u := range c.Updates {
		k := Key{u.Tenant, u.Name}
		vs, ok := changed[k]
		if !ok {
			cur, exists := a.st().services[k]
			// A bgp-pool VIP has no owner: its reports come from the raft
			// leader (lbd/daemon/health.go), whichever member that is.
			bgpReport := exists && cur.Owner == "" && u.Reporter != "" && a.bgpPool(cur.Pool)
			if !exists || !bgpReport && (cur.Owner == "" || cur.Owner != u.Reporter) {
				continue
			}
			vs = cloneVS(cur)
		}
		i := findBackend(vs.Backends, u.Address, u.Port)
		if i < 0 || u.Health == nil || proto.Equal(vs.Backends[i].Health, u.Health) {
			continue
		}
		vs.Backends[i].Health = proto.Clone(u.Health).(*edgelbv1.BackendHealth)
		if !ok {
			changed[k] = vs
			order = append(order, k)
		}
	}
	for _, k := range order {
		vs := changed[k]
		a.st().putService(vs)
		a.emit(put, "backend health changed", vs)
	}
	return &Result{}
}

func (a *applier) sortedServices() []*edgelbv1.VirtualService {
	return a.st().sortedServices()
}

// placeVIP resolves vs's VIP against the pools: checks a requested one or
// allocates a free one, and enforces the sharing rules. old is the stored
// version on update (its own address and ports do not conflict with itself).
func (a *applier) placeVIP(vs, old *edgelbv1.VirtualService) *Result {
	st := a.st()
	if vs.Pool != "" {
		p, ok := st.pools[vs.Pool]
		if !ok {
			return fail(codes.FailedPrecondition, "address pool %s does not exist; create it or name another pool", vs.Pool)
		}
		if !PoolOpenTo(p, vs.Tenant) {
			return fail(codes.PermissionDenied, "address pool %s is not open to tenant %s", vs.Pool, vs.Tenant)
		}
	}
	if vs.Vip != "" {
		addr := netip.MustParseAddr(vs.Vip)
		pool := a.poolFor(addr, vs.Tenant, vs.Pool)
		if pool == "" {
			if r := a.reservedVIP(addr, vs.Tenant, vs.Pool); r != nil {
				return r
			}
			return fail(codes.FailedPrecondition, "vip %s is not in any address pool open to tenant %s%s; pick an address from one (lbctl pool list) or create a pool that holds it",
				vs.Vip, vs.Tenant, a.poolHint(vs.Pool))
		}
		// The subnet-router anycast address is in its range (VIPs allocated
		// there before version 2 stay valid, also across updates) but a new
		// request for it is refused: routers on the subnet answer it.
		if a.version >= versionAnycast && st.parsed[pool].IsAnycast(addr) && (old == nil || old.Vip != vs.Vip) {
			return a.reservedVIP(addr, vs.Tenant, pool)
		}
		vs.Pool = pool
		return a.checkShare(vs, addr, old)
	}
	// Allocate. A sharing key first joins an existing VIP that has the key.
	v6 := vs.IpFamily == edgelbv1.IPFamily_IP_FAMILY_IPV6
	if vs.SharingKey != "" {
		for _, other := range a.sortedServices() {
			if other.Tenant == vs.Tenant && other.SharingKey == vs.SharingKey && (old == nil || KeyOf(other) != KeyOf(old)) &&
				netip.MustParseAddr(other.Vip).Is6() == v6 && (vs.Pool == "" || vs.Pool == other.Pool) {
				if a.checkShare(vs, netip.MustParseAddr(other.Vip), old) == nil {
					vs.Vip, vs.Pool = other.Vip, other.Pool
					return nil
				}
			}
		}
	}
	var tried, withFamily []string
	for _, name := range st.sortedPoolNames() {
		p := st.pools[name]
		if vs.Pool != "" && name != vs.Pool || vs.Pool == "" && p.Manual || !PoolOpenTo(p, vs.Tenant) {
			continue
		}
		tried = append(tried, name)
		parsed := st.parsed[name]
		if !parsed.HasFamily(v6) {
			continue
		}
		withFamily = append(withFamily, name)
		lk := lowFreeKey(name, v6)
		addr, ok := a.allocate(parsed, v6, st.lowFree[lk])
		if ok {
			vs.Vip, vs.Pool = addr.String(), name
			if !a.dry {
				st.lowFree[lk] = addr
			}
			return nil
		}
	}
	fam, example := "IPv4", "192.0.2.0/24"
	if v6 {
		fam, example = "IPv6", "2001:db8::/112"
	}
	if len(tried) == 0 {
		return fail(codes.FailedPrecondition, "no address pool is open to tenant %s%s; create one (lbctl pool create) or request a VIP", vs.Tenant, a.poolHint(vs.Pool))
	}
	meta := map[string]string{"tenant": vs.Tenant, "family": fam, "pools": strings.Join(tried, ",")}
	if len(withFamily) == 0 {
		// Not a full pool: there is none of this family to be full. Saying
		// "no free address" would send the operator looking for leaks.
		name := "NAME"
		if vs.Pool != "" {
			name = vs.Pool
		}
		return failInfo(codes.FailedPrecondition, errinfo.NoPoolForFamily, meta,
			"no address pool for %s open to tenant %s (pools %s hold no %s range); create one with lbctl pool create NAME --range %s, add a range with lbctl pool update %s --add-range %s, or ask for the other family",
			fam, vs.Tenant, strings.Join(tried, ", "), fam, example, name, example)
	}
	return failInfo(codes.ResourceExhausted, errinfo.PoolExhausted, meta,
		"no free %s address in pools %s open to tenant %s; add a range with lbctl pool update %s --add-range CIDR|FIRST-LAST, or free a VIP",
		fam, strings.Join(withFamily, ", "), vs.Tenant, withFamily[0])
}

// allocate picks the lowest free address of the family in pool p, starting at
// from (the pool's low-water mark: everything before it is in use or is a
// subnet-router anycast address). Commands of version 2 on never take the
// anycast address; version 1 commands (logs written before) may, and start
// from it when it is free and before from, so they allocate exactly what
// they did when first applied.
func (a *applier) allocate(p *ipam.Pool, v6 bool, from netip.Addr) (netip.Addr, bool) {
	st := a.st()
	skipAnycast := a.version >= versionAnycast
	if !skipAnycast && from.IsValid() {
		for _, x := range p.Anycast() {
			if p.Before(x, from) && len(st.byVIP[x]) == 0 {
				from = x
				break
			}
		}
	}
	return p.AllocateFrom(v6, from, func(x netip.Addr) bool {
		return len(st.byVIP[x]) > 0 || skipAnycast && x.Is6() && p.IsAnycast(x)
	})
}

// reservedVIP explains a requested VIP that is an address a pool's CIDR
// holds but never hands out (IPv4 network/broadcast, IPv6 subnet-router
// anycast), or returns nil when no pool open to tenant reserves it.
func (a *applier) reservedVIP(addr netip.Addr, tenant, want string) *Result {
	st := a.st()
	for _, name := range st.sortedPoolNames() {
		if want != "" && name != want || !PoolOpenTo(st.pools[name], tenant) {
			continue
		}
		r, why, ok := st.parsed[name].Reserved(addr)
		if !ok {
			continue
		}
		return failInfo(codes.FailedPrecondition, errinfo.ReservedAddress,
			map[string]string{"vip": addr.String(), "pool": name, "range": r.Prefix.String(), "kind": why},
			"vip %s is the %s of %s in address pool %s, which is never used for a VIP; pick another address of the pool (lbctl pool get %s), or leave --vip out to allocate one",
			addr, why, r.Prefix, name, name)
	}
	return nil
}

func (a *applier) poolHint(pool string) string {
	if pool != "" {
		return " in pool " + pool
	}
	return ""
}

// poolFor returns the pool (restricted to want, if set) open to tenant that holds addr.
func (a *applier) poolFor(addr netip.Addr, tenant, want string) string {
	st := a.st()
	for _, name := range st.sortedPoolNames() {
		if want != "" && name != want {
			continue
		}
		if PoolOpenTo(st.pools[name], tenant) && st.parsed[name].Contains(addr) {
			return name
		}
	}
	return ""
}

// checkShare enforces who may use an address already in use: only services of
// the same tenant with the same non-empty sharing key, on distinct ports.
func (a *applier) checkShare(vs *edgelbv1.VirtualService, addr netip.Addr, old *edgelbv1.VirtualService) *Result {
	for _, k := range a.st().byVIP[addr] {
		if old != nil && k == KeyOf(old) {
			continue
		}
		other := a.st().services[k]
		if other.Tenant != vs.Tenant {
			return fail(codes.AlreadyExists, "vip %s is in use by another tenant; request another address", addr)
		}
		if vs.SharingKey == "" || other.SharingKey != vs.SharingKey {
			return fail(codes.AlreadyExists, "vip %s is in use by %s; to share it, give both the same sharing key and distinct ports", addr, k)
		}
		for _, p := range vs.Ports {
			for _, q := range other.Ports {
				if p.Protocol == q.Protocol && p.Port == q.Port {
					return fail(codes.AlreadyExists, "port %s/%d on vip %s is already used by %s; pick another port",
						strings.ToLower(strings.TrimPrefix(p.Protocol.String(), "PROTOCOL_")), p.Port, addr, k)
				}
			}
		}
	}
	return nil
}

// bgpPool reports whether the named pool announces by BGP (docs/BGP.md).
func (a *applier) bgpPool(name string) bool {
	p, ok := a.st().pools[name]
	return ok && name != "" && p.GetAnnounceMode() == edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP
}
