package rules

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// Level is the set of rules a command was checked against when it was
// proposed; the proposer records it in raftv1.Command.rules. Rules only get
// stricter over time, and the FSM must decide an old log entry exactly as the
// binary that wrote it did (members replay the log, and during a rolling
// upgrade old and new binaries apply the same entries), so each tightening is
// a new level that binds only commands stamped with it.
type Level uint32

const (
	// Legacy is what the API's validators enforced before the FSM checked
	// commands: entries written by older binaries carry no level. The FSM
	// holds them to exactly those rules, so each still applies as it did.
	Legacy Level = 0
	// Strict adds: no control characters in port names, no ".." in names,
	// no backend on the VIP itself, and one entry per backend identity
	// (address and effective port).
	Strict Level = 1
	// BGPModes adds: a service placed in a bgp pool uses scheduler mh and
	// forwarding dr (BGPPoolModes). Older entries may hold other modes
	// there; they replay as stored and the data plane isolates them.
	BGPModes Level = 2
	// Current is the level this binary validates and proposes with.
	Current = BGPModes
)

// printable refuses control characters and invalid UTF-8: a name is shown in
// terminals and logs, where ESC starts an escape sequence and NUL truncates.
func printable(field, s string) error {
	for i, r := range s {
		if r == utf8.RuneError {
			return invalidR(errinfo.ControlCharacter, field, "%q is not valid UTF-8 at byte %d; use printable characters", trunc(s), i)
		}
		if unicode.IsControl(r) {
			return invalidR(errinfo.ControlCharacter, field, "%q has a control character (%U) at byte %d; use printable characters", trunc(s), r, i)
		}
	}
	return nil
}

// effectivePorts is the set of ports traffic to backend port p of vs reaches,
// as a comparable key: p itself, or for p == 0 each port's backend port.
func effectivePorts(vs *edgelbv1.VirtualService, p uint32) string {
	if p != 0 {
		return strconv.FormatUint(uint64(p), 10)
	}
	set := map[uint32]bool{}
	for _, sp := range vs.Ports {
		if sp == nil {
			continue
		}
		bp := sp.BackendPort
		if bp == 0 {
			bp = sp.Port
		}
		set[bp] = true
	}
	ps := make([]string, 0, len(set))
	for p := range set {
		ps = append(ps, strconv.FormatUint(uint64(p), 10))
	}
	sort.Strings(ps)
	return strings.Join(ps, ",")
}

// SameBackend reports whether two backend entries of vs are one backend:
// the same address reached on the same ports. For a port tcp/80:30080,
// 10.0.0.11 (port 0: the service's backend port) and 10.0.0.11:30080 are.
func SameBackend(vs *edgelbv1.VirtualService, addr1 string, port1 uint32, addr2 string, port2 uint32) bool {
	return addr1 == addr2 && (port1 == port2 || effectivePorts(vs, port1) == effectivePorts(vs, port2))
}

// NormalizeBackend gives b its one stored form in vs: an explicit port that
// every port of vs sends to anyway is dropped (port 0), so the same backend
// is never stored twice under two spellings.
func NormalizeBackend(vs *edgelbv1.VirtualService, b *edgelbv1.Backend) {
	if b != nil && b.Port != 0 && len(vs.Ports) > 0 && effectivePorts(vs, 0) == strconv.FormatUint(uint64(b.Port), 10) {
		b.Port = 0
	}
}

// NormalizeBackends is NormalizeBackend for each of bs, looking at the
// service's ports once.
func NormalizeBackends(vs *edgelbv1.VirtualService, bs []*edgelbv1.Backend) {
	if len(vs.Ports) == 0 {
		return
	}
	def := effectivePorts(vs, 0)
	for _, b := range bs {
		if b != nil && b.Port != 0 && def == strconv.FormatUint(uint64(b.Port), 10) {
			b.Port = 0
		}
	}
}

// backendsOn checks bs against the service they belong to (its ports and
// VIP) and normalises them: no backend is the VIP, no backend appears twice.
func backendsOn(vs *edgelbv1.VirtualService, field string, bs []*edgelbv1.Backend) error {
	if err := Distinct(vs, field, bs); err != nil {
		return err
	}
	NormalizeBackends(vs, bs)
	return nil
}

// Distinct checks, without changing them, that backends bs of vs are not its
// VIP and that no two of them are the same backend under two spellings.
func Distinct(vs *edgelbv1.VirtualService, field string, bs []*edgelbv1.Backend) error {
	type id struct{ addr, ports string }
	seen := make(map[id]int, len(bs))
	def := effectivePorts(vs, 0) // the same for every backend without a port: the FSM runs this on every write
	for i, b := range bs {
		if b == nil {
			continue
		}
		f := func() string { return fmt.Sprintf("%s[%d]", field, i) }
		if vs.Vip != "" && b.Address == vs.Vip {
			return invalidR(errinfo.BackendIsVIP, f()+".address", "%s is the service's own VIP; traffic sent there would come back to the load balancer: name the address of a real server", b.Address)
		}
		k := id{b.Address, def}
		if b.Port != 0 {
			k.ports = strconv.FormatUint(uint64(b.Port), 10)
		}
		if j, dup := seen[k]; dup {
			return invalidR(errinfo.DuplicateBackend, f(), "%s is the same backend as %s[%d] (%s): the service's ports send to port %s either way; list it once",
				BackendKey(b.Address, b.Port), field, j, BackendKey(bs[j].Address, bs[j].Port), k.ports)
		}
		seen[k] = i
	}
	// Entries that differ as a whole may still send one port's traffic to
	// the same destination (10.0.0.11 and 10.0.0.11:30080 under ports
	// 80:30080 and 443:30443): IPVS holds one destination per address and
	// port in a service, and the last entry would silently win.
	if len(vs.Ports) > 1 {
		_, dr := shape(vs)
		type dest struct {
			port int
			addr string
			to   uint32
		}
		at := map[dest]int{}
		for i, b := range bs {
			if b == nil {
				continue
			}
			for pi, p := range vs.Ports {
				if p == nil {
					continue
				}
				to := b.Port
				switch {
				case dr:
					to = p.Port
				case to == 0 && p.BackendPort != 0:
					to = p.BackendPort
				case to == 0:
					to = p.Port
				}
				k := dest{pi, b.Address, to}
				if j, dup := at[k]; dup {
					return invalidR(errinfo.DuplicateBackend, fmt.Sprintf("%s[%d]", field, i), "%s and %s[%d] (%s) both send port %d's traffic to %s; list one, or give them ports that differ",
						BackendKey(b.Address, b.Port), field, j, BackendKey(bs[j].Address, bs[j].Port), p.Port, BackendKey(b.Address, to))
				}
				at[k] = i
			}
		}
	}
	return nil
}

// BackendsOf checks a whole backend list for the stored service vs (SetBackends).
func BackendsOf(field string, bs []*edgelbv1.Backend, vs *edgelbv1.VirtualService, lim Limits) error {
	want6, dr := shape(vs)
	if err := Backends(field, bs, want6, dr, lim); err != nil {
		return err
	}
	return backendsOn(vs, field, bs)
}

// BackendOf checks one backend to be added to the stored service vs and
// normalises it. Whether it is already there is the FSM's check.
func BackendOf(field string, b *edgelbv1.Backend, vs *edgelbv1.VirtualService) error {
	want6, dr := shape(vs)
	if err := Backend(field, b, want6, dr); err != nil {
		return err
	}
	return backendsOn(vs, field, []*edgelbv1.Backend{b})
}

func shape(vs *edgelbv1.VirtualService) (want6, dr bool) {
	return vs.IpFamily == edgelbv1.IPFamily_IP_FAMILY_IPV6 || strings.Contains(vs.Vip, ":"),
		vs.ForwardingMode == edgelbv1.ForwardingMode_FORWARDING_MODE_DR
}

// CeilingLimits are the limits the FSM holds stored objects to. They are
// constants of the release, not a member's configuration, so every member
// decides alike: a member's API may refuse earlier with smaller limits.
var CeilingLimits = DefaultLimits

// Stored checks a service as the FSM is about to store it: the rules of lvl,
// and the form the validators leave behind (defaults filled in, addresses
// canonical). Only that form is "well formed": the FSM, the data plane and
// lbctl rely on explicit values (a tenant, a scheduler, a backend port), and
// a command that did not come through a validator — a raw PeerService call, a
// hand-made log entry — is refused rather than completed. The old validators
// produced the same form, so entries of older binaries pass at Legacy.
// Owner, generation, times and backend health are the FSM's own and not
// checked.
func Stored(vs *edgelbv1.VirtualService, lvl Level) error {
	if vs == nil {
		return invalidR(errinfo.MalformedCommand, "service", "is required")
	}
	if storedFast(vs, lvl) {
		return nil
	}
	return storedSlow(vs, lvl)
}

// storedSlow is Stored without the fast path: it also says what differs.
func storedSlow(vs *edgelbv1.VirtualService, lvl Level) error {
	got := proto.Clone(vs).(*edgelbv1.VirtualService)
	got.Owner, got.Generation, got.CreateTime, got.UpdateTime = "", 0, nil, nil
	for _, b := range got.Backends {
		if b != nil {
			b.Health = nil
		}
	}
	want := proto.Clone(got).(*edgelbv1.VirtualService)
	if err := virtualServiceAt(lvl, want, CeilingLimits); err != nil {
		return err
	}
	if proto.Equal(got, want) {
		return nil
	}
	if f := firstDiff(got, want); f != "" {
		return invalidR(errinfo.MalformedCommand, "service."+f, "is not in the form the API stores (defaults filled in, addresses and ranges canonical, one spelling per backend): %v; send it through the API", describe(got, want, f))
	}
	return nil
}

// storedFast is Stored's answer for the common case, a service already in
// the stored form, with one copy instead of two (every member checks every
// command it applies, so this is on each write's path three times): it
// validates a copy without the FSM's own fields, gives the copy back vs's
// values of those, and compares it with vs. false means "not shown": Stored
// then decides (and explains) as before. It says true only when Stored
// would: the validation left the FSM's fields unset on the copy, so
// setting them on both sides changes neither side's comparison.
func storedFast(vs *edgelbv1.VirtualService, lvl Level) bool {
	want := proto.Clone(vs).(*edgelbv1.VirtualService)
	want.Owner, want.Generation, want.CreateTime, want.UpdateTime = "", 0, nil, nil
	for _, b := range want.Backends {
		if b != nil {
			b.Health = nil
		}
	}
	if virtualServiceAt(lvl, want, CeilingLimits) != nil || len(want.Backends) != len(vs.Backends) ||
		want.Owner != "" || want.Generation != 0 || want.CreateTime != nil || want.UpdateTime != nil {
		return false
	}
	for i, b := range want.Backends {
		if b == nil || vs.Backends[i] == nil || b.Health != nil {
			return false
		}
		b.Health = vs.Backends[i].Health
	}
	want.Owner, want.Generation, want.CreateTime, want.UpdateTime = vs.Owner, vs.Generation, vs.CreateTime, vs.UpdateTime
	return proto.Equal(vs, want)
}

// StoredPool checks an address pool as the FSM is about to store it.
func StoredPool(p *edgelbv1.AddressPool, lvl Level) error {
	if p == nil {
		return invalidR(errinfo.MalformedCommand, "pool", "is required")
	}
	got := proto.Clone(p).(*edgelbv1.AddressPool)
	got.CreateTime = nil
	want := proto.Clone(got).(*edgelbv1.AddressPool)
	if err := addressPoolAt(lvl, want, CeilingLimits); err != nil {
		return err
	}
	if f := firstDiff(got, want); f != "" {
		return invalidR(errinfo.MalformedCommand, "pool."+f, "is not in the form the API stores: %v; send it through the API", describe(got, want, f))
	}
	return nil
}

// firstDiff names the first top-level field in which a and b differ.
func firstDiff(a, b proto.Message) string {
	ra, rb := a.ProtoReflect(), b.ProtoReflect()
	fds := ra.Descriptor().Fields()
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		if ra.Has(fd) != rb.Has(fd) || ra.Has(fd) && !ra.Get(fd).Equal(rb.Get(fd)) {
			return string(fd.Name())
		}
	}
	return ""
}

func describe(got, want proto.Message, f string) string {
	fd := got.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(f))
	g, w := got.ProtoReflect().Get(fd), want.ProtoReflect().Get(fd)
	if fd.IsList() {
		gl, wl := g.List(), w.List()
		for i := 0; i < min(gl.Len(), wl.Len()); i++ {
			if !gl.Get(i).Equal(wl.Get(i)) {
				return fmt.Sprintf("[%d] is %s, where the API stores %s", i, text(gl.Get(i)), text(wl.Get(i)))
			}
		}
		return fmt.Sprintf("%d entries, where the API stores %d", gl.Len(), wl.Len())
	}
	if fd.IsMap() || fd.Kind() == protoreflect.MessageKind {
		return "it differs from its normalised form"
	}
	return fmt.Sprintf("%q, where the API stores %q", trunc(fmt.Sprint(g.Interface())), trunc(fmt.Sprint(w.Interface())))
}

// Placed checks what needs the service's VIP, known only once the FSM has
// placed it (an allocated address): from Strict on, no backend is the VIP.
func Placed(vs *edgelbv1.VirtualService, lvl Level) error {
	if lvl < Strict {
		return nil
	}
	for i, b := range vs.Backends {
		if b != nil && b.Address == vs.Vip {
			return invalidR(errinfo.BackendIsVIP, fmt.Sprintf("service.backends[%d].address", i),
				"%s is the service's own VIP; traffic sent there would come back to the load balancer: name the address of a real server", b.Address)
		}
	}
	return nil
}

func text(v protoreflect.Value) string {
	if m, ok := v.Interface().(protoreflect.Message); ok {
		return "{" + trunc(prototext.MarshalOptions{}.Format(m.Interface())) + "}"
	}
	return fmt.Sprintf("%q", trunc(fmt.Sprint(v.Interface())))
}

// RefName checks a name that refers to an existing object (a service to get,
// delete or change the backends of; a pool, a member, a tenant to filter by).
// It holds it to the rules every release enforced (Legacy), not today's: an
// object an older release stored under a name since refused ("a..b") must
// stay reachable, if only to be deleted.
func RefName(field, s string, max int) error { return nameAt(Legacy, field, s, max) }

// RefTenant is RefName for a tenant; empty means DefaultTenant.
func RefTenant(field string, t *string) error { return tenantAt(Legacy, field, t) }

// MaxOrphanedServices is the most virtual service names one tenant heartbeat
// may report orphaned: a cluster with more gone Services than this has a
// problem an operator sees anyway, and the list lives in every member's
// memory and snapshot. A constant, so every member replaying the log decides
// alike: raise it in a release, never lower it.
const MaxOrphanedServices = 1000

// OrphanedServices checks the names a heartbeat reports orphaned. They name
// stored services, which may predate today's rules, so they are checked as
// references (Legacy), like RefName.
func OrphanedServices(field string, names []string) error {
	if len(names) > MaxOrphanedServices {
		return invalid(field, "reports %d services; the limit is %d (send the first %d, sorted)", len(names), MaxOrphanedServices, MaxOrphanedServices)
	}
	for i, n := range names {
		if err := nameAt(Legacy, fmt.Sprintf("%s[%d]", field, i), n, 253); err != nil {
			return err
		}
	}
	return nil
}
