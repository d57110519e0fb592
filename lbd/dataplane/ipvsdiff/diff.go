// Package ipvsdiff turns virtual services into the IPVS services and
// destinations they need, and plans the fewest changes that take the kernel
// from what it holds to that. It is pure: no netlink, so it is tested and
// benchmarked at 10k-service scale without a kernel.
package ipvsdiff

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/cloudflare/ipvs"
	"github.com/cloudflare/ipvs/netmask"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// SvcKey identifies an IPVS service.
type SvcKey struct {
	Addr  netip.Addr
	Proto ipvs.Protocol
	Port  uint16
}

func (k SvcKey) String() string {
	p := map[ipvs.Protocol]string{ipvs.TCP: "tcp", ipvs.UDP: "udp", ipvs.SCTP: "sctp"}[k.Proto]
	return fmt.Sprintf("%s/%s", p, netip.AddrPortFrom(k.Addr, k.Port))
}

// DestKey identifies a destination within a service.
type DestKey struct {
	Addr netip.Addr
	Port uint16
}

// Svc is one IPVS service with its destinations.
type Svc struct {
	Key       SvcKey
	Scheduler string
	Flags     ipvs.Flags
	Timeout   uint32
	Dests     map[DestKey]Dest
	// Canonical services (ActiveActive) keep their destinations in one
	// order, with one share of the mh table each, on every member: see
	// canonicalDests.
	Canonical bool
}

// Dest is one destination's settings.
type Dest struct {
	Weight uint32
	Fwd    ipvs.ForwardType
	// Slots is the weight whose share of the mh table the destination
	// holds: its configured weight, also while drained or unhealthy
	// (Weight 0). The kernel keeps a destination's last non-zero weight
	// for that (last_weight); only canonical services set and use it, and
	// 0 means unknown (read back from a kernel at weight 0).
	Slots uint32
}

// same reports whether the kernel's destination needs no change: Slots is
// not something the kernel reports, only what a change must leave behind.
func same(have, want Dest) bool { return have.Weight == want.Weight && have.Fwd == want.Fwd }

// State is a set of IPVS services.
type State map[SvcKey]*Svc

var schedulers = map[edgelbv1.Scheduler]string{
	edgelbv1.Scheduler_SCHEDULER_UNSPECIFIED: "mh",
	edgelbv1.Scheduler_SCHEDULER_MH:          "mh",
	edgelbv1.Scheduler_SCHEDULER_RR:          "rr",
	edgelbv1.Scheduler_SCHEDULER_WRR:         "wrr",
	edgelbv1.Scheduler_SCHEDULER_LC:          "lc",
	edgelbv1.Scheduler_SCHEDULER_WLC:         "wlc",
	edgelbv1.Scheduler_SCHEDULER_SH:          "sh",
}

var protocols = map[edgelbv1.Protocol]ipvs.Protocol{
	edgelbv1.Protocol_PROTOCOL_TCP:  ipvs.TCP,
	edgelbv1.Protocol_PROTOCOL_UDP:  ipvs.UDP,
	edgelbv1.Protocol_PROTOCOL_SCTP: ipvs.SCTP,
}

// Weight is the IPVS weight of a backend: 0 while drained or known unhealthy,
// so established connections finish but no new ones arrive.
func Weight(b *edgelbv1.Backend) uint32 {
	if b.Drained || b.GetHealth().GetState() == edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY {
		return 0
	}
	if b.Weight == 0 {
		return 1
	}
	return b.Weight
}

// Configured is a backend's weight as configured (1 when unset), whatever
// its drain and health: the share of the mh table it holds (Dest.Slots).
func Configured(b *edgelbv1.Backend) uint32 {
	if b.Weight == 0 {
		return 1
	}
	return b.Weight
}

// FromService returns the IPVS services one virtual service needs.
func FromService(vs *edgelbv1.VirtualService) ([]*Svc, error) {
	addr, err := netip.ParseAddr(vs.Vip)
	if err != nil {
		return nil, fmt.Errorf("virtual service %s/%s: vip %q: %w", vs.Tenant, vs.Name, vs.Vip, err)
	}
	sched, ok := schedulers[vs.Scheduler]
	if !ok {
		return nil, fmt.Errorf("virtual service %s/%s: unknown scheduler %v", vs.Tenant, vs.Name, vs.Scheduler)
	}
	fwd := ipvs.Masquerade
	if vs.ForwardingMode == edgelbv1.ForwardingMode_FORWARDING_MODE_DR {
		fwd = ipvs.DirectRoute
	}
	var flags ipvs.Flags
	var timeout uint32
	if t := vs.GetPersistence().GetTimeoutSeconds(); t > 0 {
		flags |= ipvs.ServicePersistent
		timeout = t
	} else if sched == "mh" || sched == "sh" {
		// Hash the client port too: without it every connection from one client
		// (or one NAT gateway in front of many) lands on one node. With
		// persistence the client address alone is the point.
		flags |= ipvs.ServiceSchedulerOpt2 // mh-port / sh-port
	}
	if sched == "mh" || sched == "sh" {
		// Fall back to another node when the hashed one has weight 0 (drained,
		// unhealthy) instead of dropping the connection.
		flags |= ipvs.ServiceSchedulerOpt1 // mh-fallback / sh-fallback
	}
	out := make([]*Svc, 0, len(vs.Ports))
	for _, p := range vs.Ports {
		if p == nil {
			return nil, fmt.Errorf("virtual service %s/%s: empty port", vs.Tenant, vs.Name)
		}
		proto, ok := protocols[p.Protocol]
		if !ok {
			return nil, fmt.Errorf("virtual service %s/%s: unknown protocol %v", vs.Tenant, vs.Name, p.Protocol)
		}
		// The kernel's ports are 16 bits: a larger number would be
		// truncated into another port, not refused.
		if p.Port == 0 || p.Port > 65535 || p.BackendPort > 65535 {
			return nil, fmt.Errorf("virtual service %s/%s: port %d → %d is out of range", vs.Tenant, vs.Name, p.Port, p.BackendPort)
		}
		s := &Svc{
			Key:       SvcKey{Addr: addr, Proto: proto, Port: uint16(p.Port)},
			Scheduler: sched, Flags: flags, Timeout: timeout,
			Dests: make(map[DestKey]Dest, len(vs.Backends)),
		}
		for _, b := range vs.Backends {
			if b == nil {
				return nil, fmt.Errorf("virtual service %s/%s: empty backend", vs.Tenant, vs.Name)
			}
			ba, err := netip.ParseAddr(b.Address)
			if err != nil {
				return nil, fmt.Errorf("virtual service %s/%s: backend %q: %w", vs.Tenant, vs.Name, b.Address, err)
			}
			if b.Port > 65535 {
				return nil, fmt.Errorf("virtual service %s/%s: backend %s port %d is out of range", vs.Tenant, vs.Name, b.Address, b.Port)
			}
			port := uint16(p.BackendPort)
			if port == 0 {
				port = uint16(p.Port)
			}
			if b.Port != 0 {
				port = uint16(b.Port)
			}
			if fwd == ipvs.DirectRoute {
				port = uint16(p.Port) // DR cannot rewrite the port
			}
			s.Dests[DestKey{ba, port}] = Dest{Weight: Weight(b), Fwd: fwd, Slots: Configured(b)}
		}
		out = append(out, s)
	}
	return out, nil
}

// OpKind is what one step does.
type OpKind int

const (
	CreateService OpKind = iota
	UpdateService
	RemoveService
	CreateDest
	UpdateDest
	RemoveDest
)

func (k OpKind) String() string {
	return [...]string{"create service", "update service", "remove service", "create destination", "update destination", "remove destination"}[k]
}

// Op is one IPVS change.
type Op struct {
	Kind OpKind
	Svc  *Svc
	Dest DestKey
	D    Dest
}

func (o Op) String() string {
	if o.Kind >= CreateDest {
		return fmt.Sprintf("%s %s → %s", o.Kind, o.Svc.Key, netip.AddrPortFrom(o.Dest.Addr, o.Dest.Port))
	}
	return fmt.Sprintf("%s %s", o.Kind, o.Svc.Key)
}

// Plan returns the changes from actual to desired, touching only services in
// desired or for which ours is true. Order: new services first (so their
// destinations can be added), destination changes, then removals — a
// changed backend is one UpdateDest, nothing else. settled, when not nil,
// names services known to match already (the caller applied this very *Svc
// and nothing changed since), which are skipped: at 10k services that is what
// makes a one-backend change cost microseconds instead of a full comparison.
func Plan(desired, actual State, ours func(SvcKey) bool, settled func(SvcKey, *Svc) bool) []Op {
	var ops []Op
	keys := make([]SvcKey, 0, len(desired))
	inActual := 0 // desired services the kernel has: when that is all of actual, none is to go
	for k, d := range desired {
		_, ok := actual[k]
		if ok {
			inActual++
			if settled != nil && settled(k, d) {
				continue
			}
		}
		keys = append(keys, k)
	}
	sortKeys(keys)
	for _, k := range keys {
		d := desired[k]
		a, exists := actual[k]
		if !exists {
			ops = append(ops, Op{Kind: CreateService, Svc: d})
			for _, dk := range sortedDests(d.Dests) {
				ops = appendCreate(ops, d, dk, d.Dests[dk])
			}
			continue
		}
		if a.Scheduler != d.Scheduler || a.Flags&FlagsMask != d.Flags&FlagsMask || a.Timeout != d.Timeout {
			ops = append(ops, Op{Kind: UpdateService, Svc: d})
		}
		if d.Canonical {
			ops = canonicalDests(ops, d, a)
			continue
		}
		for _, dk := range sortedDests(d.Dests) {
			want := d.Dests[dk]
			have, ok := a.Dests[dk]
			switch {
			case !ok:
				ops = append(ops, Op{Kind: CreateDest, Svc: d, Dest: dk, D: want})
			case !same(have, want):
				ops = append(ops, Op{Kind: UpdateDest, Svc: d, Dest: dk, D: want})
			}
		}
		for _, dk := range sortedDests(a.Dests) {
			if _, ok := d.Dests[dk]; !ok {
				ops = append(ops, Op{Kind: RemoveDest, Svc: d, Dest: dk, D: a.Dests[dk]})
			}
		}
	}
	var gone []SvcKey
	if inActual < len(actual) {
		for k := range actual {
			if _, want := desired[k]; !want && ours(k) {
				gone = append(gone, k)
			}
		}
	}
	sortKeys(gone)
	for _, k := range gone {
		ops = append(ops, Op{Kind: RemoveService, Svc: actual[k]})
	}
	return ops
}

// ActiveActive marks svcs (one virtual service's, from FromService) as served
// by every member at once (a bgp pool): a flow the router moves to another
// member must find the same backend there. That holds for the mh scheduler,
// whose hash keys are fixed in the kernel, only when every member's mh table
// is the same; see canonicalDests. Other schedulers pick per host (rr, lc)
// and are refused.
//
// So is nat forwarding: a node answers the VIP (SNAT) through its router,
// which hashes the answer (another 5-tuple) to any member, and only the
// member that forwarded the request holds the conntrack entry that undoes
// the SNAT; elsewhere the answer meets the member's own stack and a reset.
// In the guest lab 16-19 of 60 new connections through three members were
// answered (docs/DATAPLANE.md, "Active-active"). dr is served.
func ActiveActive(svcs []*Svc) error {
	for _, s := range svcs {
		if s.Scheduler != "mh" {
			return fmt.Errorf("IPVS service %s: scheduler %s cannot be served by every member at once (each would pick other backends for the same flow): use mh", s.Key, s.Scheduler)
		}
		for _, d := range s.Dests {
			if d.Fwd == ipvs.Masquerade {
				return fmt.Errorf("IPVS service %s: nat forwarding cannot be served by every member at once (the nodes' answers return through whichever member their router picks, and only the forwarding one can undo its SNAT): use dr (--mode dr) in a bgp pool", s.Key)
			}
		}
		s.Canonical = true
	}
	return nil
}

// appendCreate adds the creation of one destination. In a canonical service
// a destination created at weight 0 (drained, unhealthy) is created at its
// configured weight first: the kernel takes a destination's share of the mh
// table from the last non-zero weight it was given, so one created at 0
// would hold none here and its share on a member that saw it healthy. With
// mh-fallback a weight-0 destination's flows go to the next choice, the same
// on every member.
func appendCreate(ops []Op, s *Svc, dk DestKey, want Dest) []Op {
	if s.Canonical && want.Weight == 0 && want.Slots > 0 {
		first := want
		first.Weight = want.Slots
		return append(ops, Op{Kind: CreateDest, Svc: s, Dest: dk, D: first}, Op{Kind: UpdateDest, Svc: s, Dest: dk, D: want})
	}
	return append(ops, Op{Kind: CreateDest, Svc: s, Dest: dk, D: want})
}

// canonicalDests plans the destination changes of a canonical service so
// that the kernel ends with the mh table every member builds from the same
// backends, whatever order and history of changes led there.
//
// The kernel's mh scheduler (net/netfilter/ipvs/ip_vs_mh.c) hashes each
// destination's address and port with fixed keys into a preference list,
// then fills the table's slots taking the destinations in the order of the
// service's destination list, each as many turns as its weight allows; who
// comes first wins a contested slot. A new destination is put at the head
// of that list (list_add_rcu), and its turns come from its last non-zero
// weight. So the table depends on insertion order and weight history, not
// only on the current destinations. The canonical list is descending by
// address and port (that is, created in ascending order, as a new service's
// are), and each destination holds its configured weight's share.
//
// Removals keep the order. A new destination that sorts above every kept
// one goes to the head, where it belongs. One that sorts below some must be
// inserted behind them: those are removed and created again, ascending,
// after it. A destination removed from IPVS and added back within the same
// pass is the same kernel object (IPVS keeps it in its trash), and its
// connections stay bound to it; a packet of theirs arriving in between is
// rescheduled (expire_nodest_conn) to the table as it is then.
func canonicalDests(ops []Op, d, a *Svc) []Op {
	for _, dk := range sortedDests(a.Dests) {
		if _, ok := d.Dests[dk]; !ok {
			ops = append(ops, Op{Kind: RemoveDest, Svc: d, Dest: dk, D: a.Dests[dk]})
		}
	}
	want := sortedDests(d.Dests)
	// The lowest new destination, and from where the list is rebuilt.
	low := -1
	var maxKept DestKey
	haveKept := false
	for i, dk := range want {
		if _, ok := a.Dests[dk]; ok {
			maxKept, haveKept = dk, true
		} else if low < 0 {
			low = i
		}
	}
	if low >= 0 && haveKept && destLess(want[low], maxKept) {
		// Remove the kept destinations above it (the head of the
		// kernel's list), then create everything from it up, ascending.
		for _, dk := range want[low:] {
			if have, ok := a.Dests[dk]; ok {
				ops = append(ops, Op{Kind: RemoveDest, Svc: d, Dest: dk, D: have})
			}
		}
		for _, dk := range want[:low] {
			ops = appendUpdate(ops, d, dk, a.Dests[dk], d.Dests[dk])
		}
		for _, dk := range want[low:] {
			ops = appendCreate(ops, d, dk, d.Dests[dk])
		}
		return ops
	}
	for _, dk := range want {
		have, ok := a.Dests[dk]
		if !ok {
			ops = appendCreate(ops, d, dk, d.Dests[dk])
			continue
		}
		ops = appendUpdate(ops, d, dk, have, d.Dests[dk])
	}
	return ops
}

// appendUpdate adds what takes a kept destination of a canonical service
// from have to want. Going to weight 0 leaves the kernel's share at the last
// non-zero weight: when that is known to differ from the configured one, the
// configured weight is set first.
func appendUpdate(ops []Op, s *Svc, dk DestKey, have, want Dest) []Op {
	if want.Weight == 0 && want.Slots > 0 && have.Slots != 0 && have.Slots != want.Slots {
		first := want
		first.Weight = want.Slots
		ops = append(ops, Op{Kind: UpdateDest, Svc: s, Dest: dk, D: first})
		return append(ops, Op{Kind: UpdateDest, Svc: s, Dest: dk, D: want})
	}
	if !same(have, want) {
		ops = append(ops, Op{Kind: UpdateDest, Svc: s, Dest: dk, D: want})
	}
	return ops
}

func destLess(a, b DestKey) bool {
	if a.Addr != b.Addr {
		return a.Addr.Less(b.Addr)
	}
	return a.Port < b.Port
}

func sortKeys(ks []SvcKey) {
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].Addr != ks[j].Addr {
			return ks[i].Addr.Less(ks[j].Addr)
		}
		if ks[i].Proto != ks[j].Proto {
			return ks[i].Proto < ks[j].Proto
		}
		return ks[i].Port < ks[j].Port
	})
}

func sortedDests(m map[DestKey]Dest) []DestKey {
	out := make([]DestKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return destLess(out[i], out[j]) })
	return out
}

// FlagsMask is the service flags lbd sets and compares (the kernel adds others, e.g. hashed).
const FlagsMask = ipvs.ServicePersistent | ipvs.ServiceSchedulerOpt1 | ipvs.ServiceSchedulerOpt2 | ipvs.ServiceSchedulerOpt3

// Family is the IPVS address family of an address.
func Family(a netip.Addr) ipvs.AddressFamily {
	if a.Is4() {
		return ipvs.INET
	}
	return ipvs.INET6
}

// Service is the cloudflare/ipvs form of s.
func (s *Svc) Service() ipvs.Service {
	bits := 32
	if s.Key.Addr.Is6() {
		bits = 128
	}
	return ipvs.Service{
		Address: s.Key.Addr, Port: s.Key.Port, Protocol: s.Key.Proto, Family: Family(s.Key.Addr),
		Netmask: netmask.MaskFrom(bits, bits), Scheduler: s.Scheduler, Flags: s.Flags, Timeout: s.Timeout,
	}
}

// Destination is the cloudflare/ipvs form of one destination.
func Destination(k DestKey, d Dest) ipvs.Destination {
	return ipvs.Destination{Address: k.Addr, Port: k.Port, Family: Family(k.Addr), Weight: d.Weight, FwdMethod: d.Fwd}
}
