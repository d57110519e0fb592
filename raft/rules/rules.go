// Package rules holds the stateless rules every stored object obeys. The API
// (lbd/validate) checks requests with them before they become raft commands,
// filling in defaults so that what is stored is explicit; the FSM (raft/fsm)
// checks every command with the same functions, so a command that did not come
// through the API (a raw PeerService call, a hand-made log entry) cannot store
// what the API would refuse. It lives beside the FSM, not in lbd, because the
// FSM must not depend on the daemon.
//
// Every error is a gRPC InvalidArgument status whose message names the field
// and says what to fix, with a google.rpc.ErrorInfo detail (domain edgelb.io)
// whose reason a client can act on without reading the text.
//
// Checks that need the replicated state (duplicates against stored objects,
// pools, generations) are not here: they run in the FSM, where they see the
// state the command applies to.
package rules

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/ipam"
)

// MaxBackends is the most backends one virtual service may hold. The API
// refuses first (Limits.MaxBackends, by default this); the FSM checks too,
// since an AddBackend carries one backend and only the state it applies to
// knows how many the service has, and concurrent adds race past any earlier
// check. A constant, not configuration, so every member decides alike, also
// when it replays old entries: raise it in a release, never lower it.
const MaxBackends = 5000

// Limits bound what one request may carry, so one client cannot make every
// member's kernel and memory pay for an oversized service. MaxBackends also
// bounds a service grown one AddBackend at a time; the FSM refuses more than
// MaxBackends whatever the limit here.
type Limits struct {
	MaxPorts         int
	MaxBackends      int
	MaxSourceRanges  int
	MaxLabels        int
	MaxPersistenceS  uint32
	MaxPoolRanges    int
	MaxPoolTenants   int
	MaxExpectedCodes int
}

// DefaultLimits are generous for Kubernetes clusters of a few thousand nodes.
var DefaultLimits = Limits{
	MaxPorts:         100,
	MaxBackends:      MaxBackends,
	MaxSourceRanges:  1000,
	MaxLabels:        64,
	MaxPersistenceS:  86400,
	MaxPoolRanges:    256,
	MaxPoolTenants:   1000,
	MaxExpectedCodes: 32,
}

// DefaultTenant is used when a request names none.
const DefaultTenant = "default"

var (
	nameRE  = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)
	labelRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$`)
	valueRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?)?$`)
)

func invalid(field, format string, args ...any) error {
	return invalidR(errinfo.InvalidField, field, format, args...)
}

// invalidR is invalid with a more specific reason than INVALID_FIELD.
func invalidR(reason, field, format string, args ...any) error {
	return errinfo.Errorf(codes.InvalidArgument, reason, map[string]string{"field": field}, "%s: %s", field, fmt.Sprintf(format, args...))
}

// Name checks a name of a service, pool, tenant or member: lowercase letters,
// digits, '-' and '.', starting and ending with a letter or digit, no "..".
func Name(field, s string, max int) error { return nameAt(Current, field, s, max) }

func nameAt(lvl Level, field, s string, max int) error {
	if s == "" {
		return invalid(field, "is required")
	}
	if len(s) > max {
		return invalid(field, "%q is %d characters long; the limit is %d", trunc(s), len(s), max)
	}
	if !nameRE.MatchString(s) {
		return invalid(field, "%q is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit", trunc(s))
	}
	// Names become DNS-like labels, metric labels and file names; an empty
	// label between two dots is none of those.
	if lvl >= Strict && strings.Contains(s, "..") {
		return invalid(field, "%q has an empty part between two dots; use a single '.' (e.g. %s)", trunc(s), trunc(dots.ReplaceAllString(s, ".")))
	}
	return nil
}

var dots = regexp.MustCompile(`\.\.+`)

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Tenant normalizes and checks a tenant name; empty means DefaultTenant.
func Tenant(field string, t *string) error { return tenantAt(Current, field, t) }

func tenantAt(lvl Level, field string, t *string) error {
	if *t == "" {
		*t = DefaultTenant
	}
	return nameAt(lvl, field, *t, 63)
}

// VIP parses a VIP address: a unicast IPv4 or IPv6 address without a zone.
func VIP(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, invalid(field, "%q is not an IP address (want e.g. 192.0.2.10 or 2001:db8::10)", trunc(s))
	}
	return a, checkUnicast(field, a, s)
}

func checkUnicast(field string, a netip.Addr, s string) error {
	switch {
	case a.Zone() != "":
		return invalid(field, "%q has a zone; use an address without %%zone", trunc(s))
	case a.Is4In6():
		return invalid(field, "%q is IPv4-mapped IPv6; write it as IPv4 (%s)", s, a.Unmap())
	case a.IsUnspecified():
		return invalid(field, "%q is the unspecified address", s)
	case a.IsLoopback():
		return invalid(field, "%q is a loopback address; use an address on the data network", s)
	case a.IsMulticast():
		return invalid(field, "%q is a multicast address", s)
	case a.IsLinkLocalUnicast():
		return invalid(field, "%q is link-local; use a routable address", s)
	case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return invalid(field, "%q is the broadcast address", s)
	}
	return nil
}

// Backend address: like a VIP, but loopback backends are refused too.
func backendAddr(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, invalid(field, "%q is not an IP address", trunc(s))
	}
	return a, checkUnicast(field, a, s)
}

func port(field string, p uint32, allowZero bool) error {
	if p == 0 && allowZero {
		return nil
	}
	if p < 1 || p > 65535 {
		return invalid(field, "%d is out of range; use 1-65535", p)
	}
	return nil
}

// VirtualService checks vs, fills in defaults and clears output-only fields.
// It is called on create and update alike.
func VirtualService(vs *edgelbv1.VirtualService, lim Limits) error {
	return virtualServiceAt(Current, vs, lim)
}

// VirtualServiceIn is VirtualService for a service the API knows will be
// placed in pool (nil: not known, or no pool): its defaults depend on the
// pool's announce mode (defaultModes), and a bgp pool refuses modes it cannot
// serve (BGPPoolModes).
func VirtualServiceIn(vs *edgelbv1.VirtualService, lim Limits, pool *edgelbv1.AddressPool) error {
	return virtualServiceIn(Current, vs, lim, pool)
}

func virtualServiceAt(lvl Level, vs *edgelbv1.VirtualService, lim Limits) error {
	return virtualServiceIn(lvl, vs, lim, nil)
}

func virtualServiceIn(lvl Level, vs *edgelbv1.VirtualService, lim Limits, pool *edgelbv1.AddressPool) error {
	if vs == nil {
		return invalid("service", "is required")
	}
	if err := tenantAt(lvl, "service.tenant", &vs.Tenant); err != nil {
		return err
	}
	if err := nameAt(lvl, "service.name", vs.Name, 253); err != nil {
		return err
	}
	// Output-only fields: the server owns them.
	vs.Owner, vs.Generation, vs.CreateTime, vs.UpdateTime = "", 0, nil, nil

	var vip netip.Addr
	if vs.Vip != "" {
		var err error
		if vip, err = VIP("service.vip", vs.Vip); err != nil {
			return err
		}
		vs.Vip = vip.String()
		fam := edgelbv1.IPFamily_IP_FAMILY_IPV4
		if vip.Is6() {
			fam = edgelbv1.IPFamily_IP_FAMILY_IPV6
		}
		if vs.IpFamily != edgelbv1.IPFamily_IP_FAMILY_UNSPECIFIED && vs.IpFamily != fam {
			return invalid("service.ip_family", "is %s but vip %s is %s; drop one or make them agree", vs.IpFamily, vs.Vip, fam)
		}
		vs.IpFamily = fam
	}
	switch vs.IpFamily {
	case edgelbv1.IPFamily_IP_FAMILY_UNSPECIFIED:
		vs.IpFamily = edgelbv1.IPFamily_IP_FAMILY_IPV4
	case edgelbv1.IPFamily_IP_FAMILY_IPV4, edgelbv1.IPFamily_IP_FAMILY_IPV6:
	default:
		return invalid("service.ip_family", "unknown family %d; use IPV4 or IPV6", vs.IpFamily)
	}
	want6 := vs.IpFamily == edgelbv1.IPFamily_IP_FAMILY_IPV6

	if vs.Pool != "" {
		if err := nameAt(lvl, "service.pool", vs.Pool, 63); err != nil {
			return err
		}
	}
	bgp := IsBGP(pool)
	defaultModes(vs, bgp)
	switch vs.Scheduler {
	case edgelbv1.Scheduler_SCHEDULER_MH, edgelbv1.Scheduler_SCHEDULER_RR, edgelbv1.Scheduler_SCHEDULER_WRR,
		edgelbv1.Scheduler_SCHEDULER_LC, edgelbv1.Scheduler_SCHEDULER_WLC, edgelbv1.Scheduler_SCHEDULER_SH:
	default:
		return invalid("service.scheduler", "unknown scheduler %d; use mh, rr, wrr, lc, wlc or sh", vs.Scheduler)
	}
	switch vs.ForwardingMode {
	case edgelbv1.ForwardingMode_FORWARDING_MODE_NAT, edgelbv1.ForwardingMode_FORWARDING_MODE_DR:
	default:
		return invalid("service.forwarding_mode", "unknown mode %d; use nat or dr", vs.ForwardingMode)
	}
	if bgp {
		if err := BGPPoolModes(vs, pool.Name); err != nil {
			return err
		}
	}
	dr := vs.ForwardingMode == edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	drFix := "use nat mode or the same port"
	if bgp {
		drFix = "a bgp pool serves with direct routing only: use the same port, or a pool in l2 mode"
	}

	if len(vs.Ports) == 0 {
		return invalid("service.ports", "at least one port is required (e.g. tcp/80)")
	}
	if len(vs.Ports) > lim.MaxPorts {
		return invalid("service.ports", "%d ports; the limit is %d", len(vs.Ports), lim.MaxPorts)
	}
	type pkey struct {
		p    edgelbv1.Protocol
		port uint32
	}
	seen := map[pkey]int{}
	for i, p := range vs.Ports {
		f := fmt.Sprintf("service.ports[%d]", i)
		if p == nil {
			return invalid(f, "is empty")
		}
		switch p.Protocol {
		case edgelbv1.Protocol_PROTOCOL_UNSPECIFIED:
			p.Protocol = edgelbv1.Protocol_PROTOCOL_TCP
		case edgelbv1.Protocol_PROTOCOL_TCP, edgelbv1.Protocol_PROTOCOL_UDP, edgelbv1.Protocol_PROTOCOL_SCTP:
		default:
			return invalid(f+".protocol", "unknown protocol %d; use TCP, UDP or SCTP", p.Protocol)
		}
		if err := port(f+".port", p.Port, false); err != nil {
			return err
		}
		if err := port(f+".backend_port", p.BackendPort, true); err != nil {
			return err
		}
		if p.BackendPort == 0 {
			p.BackendPort = p.Port
		}
		if dr && p.BackendPort != p.Port {
			return invalid(f+".backend_port", "is %d but direct routing cannot change the port (%d); %s", p.BackendPort, p.Port, drFix)
		}
		if len(p.Name) > 63 {
			return invalid(f+".name", "is longer than 63 characters")
		}
		if lvl >= Strict {
			if err := printable(f+".name", p.Name); err != nil {
				return err
			}
		}
		k := pkey{p.Protocol, p.Port}
		if j, dup := seen[k]; dup {
			return invalid(f, "%s/%d is already service.ports[%d]; each protocol and port may appear once", protoName(p.Protocol), p.Port, j)
		}
		seen[k] = i
	}

	if bgp {
		for i, b := range vs.Backends {
			if b != nil && b.Port != 0 {
				return invalid(fmt.Sprintf("service.backends[%d].port", i), "direct routing cannot change the port; leave it 0 (%s)", drFix)
			}
		}
	}
	if err := backendsAt(lvl, "service.backends", vs.Backends, want6, dr, lim); err != nil {
		return err
	}
	if lvl >= Strict {
		if err := backendsOn(vs, "service.backends", vs.Backends); err != nil {
			return err
		}
	}

	if vs.Persistence != nil && vs.Persistence.TimeoutSeconds > lim.MaxPersistenceS {
		return invalid("service.persistence.timeout_seconds", "%d is above the limit of %d", vs.Persistence.TimeoutSeconds, lim.MaxPersistenceS)
	}
	if vs.Persistence != nil && vs.Persistence.TimeoutSeconds == 0 {
		vs.Persistence = nil
	}
	if err := HealthCheck("service.health_check", vs.HealthCheck, lim); err != nil {
		return err
	}
	if lvl >= Strict && vs.HealthCheck != nil {
		// Sent in the request line of every HTTP probe.
		if err := printable("service.health_check.path", vs.HealthCheck.Path); err != nil {
			return err
		}
	}
	if vs.DenyAllSources && len(vs.SourceRanges) > 0 {
		// Both would leave it to the reader which one wins.
		return invalid("service.deny_all_sources", "is set together with %d source ranges; clear the ranges to deny every client, or the flag to allow the ranges", len(vs.SourceRanges))
	}
	if len(vs.SourceRanges) > lim.MaxSourceRanges {
		return invalid("service.source_ranges", "%d ranges; the limit is %d", len(vs.SourceRanges), lim.MaxSourceRanges)
	}
	for i, s := range vs.SourceRanges {
		f := fmt.Sprintf("service.source_ranges[%d]", i)
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return invalid(f, "%q is not a CIDR (want e.g. 203.0.113.0/24)", trunc(s))
		}
		if p != p.Masked() {
			return invalid(f, "%q has host bits set; did you mean %s?", s, p.Masked())
		}
		if p.Addr().Is6() != want6 {
			return invalid(f, "%q is not of the VIP's family (%s)", s, vs.IpFamily)
		}
		vs.SourceRanges[i] = p.String()
	}
	if err := Labels("service.labels", vs.Labels, lim); err != nil {
		return err
	}
	if len(vs.SharingKey) > 253 {
		return invalid("service.sharing_key", "is longer than 253 characters")
	}
	if lvl >= Strict {
		if err := printable("service.sharing_key", vs.SharingKey); err != nil {
			return err
		}
	}
	if vs.PinnedMember != "" {
		if err := nameAt(lvl, "service.pinned_member", vs.PinnedMember, 63); err != nil {
			return err
		}
	}
	return nil
}

// Backends checks a backend list and fills in default weights. Where the
// service is known, BackendsOf checks more.
func Backends(field string, bs []*edgelbv1.Backend, want6, dr bool, lim Limits) error {
	return backendsAt(Current, field, bs, want6, dr, lim)
}

func backendsAt(_ Level, field string, bs []*edgelbv1.Backend, want6, dr bool, lim Limits) error {
	if len(bs) > lim.MaxBackends {
		return invalid(field, "%d backends; the limit is %d", len(bs), lim.MaxBackends)
	}
	type bkey struct {
		a netip.Addr
		p uint32
	}
	seen := map[bkey]int{}
	for i, b := range bs {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := Backend(f, b, want6, dr); err != nil {
			return err
		}
		a := netip.MustParseAddr(b.Address)
		k := bkey{a, b.Port}
		if j, dup := seen[k]; dup {
			return invalidR(errinfo.DuplicateBackend, f, "%s is already %s[%d]; list it once", BackendKey(b.Address, b.Port), field, j)
		}
		seen[k] = i
	}
	return nil
}

// Backend checks one backend and fills in its default weight.
func Backend(field string, b *edgelbv1.Backend, want6, dr bool) error {
	if b == nil {
		return invalid(field, "is empty")
	}
	a, err := backendAddr(field+".address", b.Address)
	if err != nil {
		return err
	}
	if a.Is6() != want6 {
		fam := "IPv4"
		if want6 {
			fam = "IPv6"
		}
		return invalid(field+".address", "%s is not %s like the VIP; add it to a VIP of its own family", b.Address, fam)
	}
	b.Address = a.String()
	if err := port(field+".port", b.Port, true); err != nil {
		return err
	}
	if dr && b.Port != 0 {
		return invalid(field+".port", "direct routing cannot change the port; leave it 0")
	}
	if b.Weight > 65535 {
		return invalid(field+".weight", "%d is out of range; use 1-65535 (drain instead of weight 0)", b.Weight)
	}
	if b.Weight == 0 {
		b.Weight = 1
	}
	b.Health = nil
	return nil
}

// BackendKey names a backend in messages: "10.0.0.1" or "10.0.0.1:8080".
func BackendKey(addr string, port uint32) string {
	if port == 0 {
		return addr
	}
	return netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(port)).String()
}

// HealthCheck checks a health check spec (nil is allowed: defaults apply).
func HealthCheck(field string, hc *edgelbv1.HealthCheck, lim Limits) error {
	if hc == nil {
		return nil
	}
	switch hc.Type {
	case edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_UNSPECIFIED, edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP,
		edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTPS,
		edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_NONE, edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_SCTP:
	default:
		return invalid(field+".type", "unknown type %d; use tcp, sctp, http, https or none", hc.Type)
	}
	if err := port(field+".port", hc.Port, true); err != nil {
		return err
	}
	http := hc.Type == edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP || hc.Type == edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTPS
	if hc.Path != "" {
		if !http {
			return invalid(field+".path", "is set but the check is not HTTP(S)")
		}
		if !strings.HasPrefix(hc.Path, "/") || len(hc.Path) > 1024 || strings.ContainsAny(hc.Path, " \r\n\t") {
			return invalid(field+".path", "%q must start with '/', contain no spaces, and be at most 1024 characters", trunc(hc.Path))
		}
	}
	if len(hc.ExpectedCodes) > lim.MaxExpectedCodes {
		return invalid(field+".expected_codes", "%d codes; the limit is %d", len(hc.ExpectedCodes), lim.MaxExpectedCodes)
	}
	for i, c := range hc.ExpectedCodes {
		if c < 100 || c > 599 {
			return invalid(fmt.Sprintf("%s.expected_codes[%d]", field, i), "%d is not an HTTP status code (100-599)", c)
		}
	}
	var interval, timeout time.Duration
	if hc.Interval != nil {
		if err := hc.Interval.CheckValid(); err != nil {
			return invalid(field+".interval", "%v", err)
		}
		interval = hc.Interval.AsDuration()
		if interval < 100*time.Millisecond || interval > time.Hour {
			return invalid(field+".interval", "%s is out of range; use 100ms-1h", interval)
		}
	}
	if hc.Timeout != nil {
		if err := hc.Timeout.CheckValid(); err != nil {
			return invalid(field+".timeout", "%v", err)
		}
		timeout = hc.Timeout.AsDuration()
		if timeout < 10*time.Millisecond || timeout > time.Minute {
			return invalid(field+".timeout", "%s is out of range; use 10ms-1m", timeout)
		}
	}
	if interval > 0 && timeout > interval {
		return invalid(field+".timeout", "%s is longer than the interval %s", timeout, interval)
	}
	if hc.Rise > 100 || hc.Fall > 100 {
		return invalid(field, "rise and fall must be at most 100 (got %d/%d)", hc.Rise, hc.Fall)
	}
	return nil
}

// Labels checks label keys and values (Kubernetes syntax).
func Labels(field string, l map[string]string, lim Limits) error {
	if len(l) > lim.MaxLabels {
		return invalid(field, "%d labels; the limit is %d", len(l), lim.MaxLabels)
	}
	for k, v := range l {
		if len(k) > 317 || !labelRE.MatchString(k) {
			return invalid(field, "key %q is not a valid label key (e.g. app or example.com/app)", trunc(k))
		}
		if len(v) > 63 || !valueRE.MatchString(v) {
			return invalid(field, "value %q of %q is not a valid label value (at most 63 letters, digits, '-', '_', '.')", trunc(v), trunc(k))
		}
	}
	return nil
}

// AddressPool checks a pool and normalizes its ranges.
func AddressPool(p *edgelbv1.AddressPool, lim Limits) error { return addressPoolAt(Current, p, lim) }

func addressPoolAt(lvl Level, p *edgelbv1.AddressPool, lim Limits) error {
	if p == nil {
		return invalid("pool", "is required")
	}
	if err := nameAt(lvl, "pool.name", p.Name, 63); err != nil {
		return err
	}
	if len(p.Ranges) == 0 {
		return invalid("pool.ranges", "at least one range is required (e.g. 192.0.2.0/24 or 192.0.2.10-192.0.2.20)")
	}
	if len(p.Ranges) > lim.MaxPoolRanges {
		return invalid("pool.ranges", "%d ranges; the limit is %d", len(p.Ranges), lim.MaxPoolRanges)
	}
	for i := range p.Ranges {
		p.Ranges[i] = strings.TrimSpace(p.Ranges[i])
	}
	pool, err := ipam.ParsePool(p.Ranges)
	if err != nil {
		return invalid("pool", "%v", err)
	}
	for i, r := range pool.Ranges {
		if err := poolRange(fmt.Sprintf("pool.ranges[%d]", i), r); err != nil {
			return err
		}
	}
	if len(p.Tenants) > lim.MaxPoolTenants {
		return invalid("pool.tenants", "%d tenants; the limit is %d", len(p.Tenants), lim.MaxPoolTenants)
	}
	for i, t := range p.Tenants {
		if err := nameAt(lvl, fmt.Sprintf("pool.tenants[%d]", i), t, 63); err != nil {
			return err
		}
	}
	if err := poolAnnounce(p); err != nil {
		return err
	}
	p.CreateTime = nil
	return nil
}

// poolRange refuses a range that holds addresses no VIP may have.
func poolRange(f string, r ipam.Range) error {
	if err := checkUnicast(f, r.First, r.First.String()); err != nil {
		return err
	}
	if err := checkUnicast(f, r.Last, r.Last.String()); err != nil {
		return err
	}
	// The ends may be fine while the middle spans loopback, multicast or
	// link-local addresses; VIPs allocated there would be refused.
	for _, sp := range special {
		if r.Overlaps(sp.r) {
			return invalid(f, "%s includes %s (%s), which cannot be a VIP; split the range around it", r, sp.r, sp.what)
		}
	}
	return nil
}

// UpdateAddressPool checks a pool update and trims its ranges. Whether the
// removed ranges exist, and what the pool looks like afterwards, is for the
// FSM to decide against the state the change applies to.
func UpdateAddressPool(req *edgelbv1.UpdateAddressPoolRequest, lim Limits) error {
	if err := RefName("name", req.Name, 63); err != nil {
		return err
	}
	if len(req.AddRanges) == 0 && len(req.RemoveRanges) == 0 && !req.SetTenants && req.Manual == nil && req.AllowHostAddresses == nil {
		return invalid("update", "changes nothing; give ranges to add or remove, tenants, manual or allow_host_addresses")
	}
	if len(req.AddRanges) > lim.MaxPoolRanges || len(req.RemoveRanges) > lim.MaxPoolRanges {
		return invalid("add_ranges", "more than %d ranges in one update", lim.MaxPoolRanges)
	}
	for i := range req.AddRanges {
		req.AddRanges[i] = strings.TrimSpace(req.AddRanges[i])
		f := fmt.Sprintf("add_ranges[%d]", i)
		r, err := ipam.ParseRange(req.AddRanges[i])
		if err != nil {
			return invalid(f, "%v", err)
		}
		if err := poolRange(f, r); err != nil {
			return err
		}
	}
	for i := range req.RemoveRanges {
		req.RemoveRanges[i] = strings.TrimSpace(req.RemoveRanges[i])
		if _, err := ipam.ParseRange(req.RemoveRanges[i]); err != nil {
			return invalid(fmt.Sprintf("remove_ranges[%d]", i), "%v", err)
		}
	}
	if len(req.Tenants) > 0 && !req.SetTenants {
		return invalid("tenants", "set set_tenants to replace the pool's tenants")
	}
	if len(req.Tenants) > lim.MaxPoolTenants {
		return invalid("tenants", "%d tenants; the limit is %d", len(req.Tenants), lim.MaxPoolTenants)
	}
	for i, t := range req.Tenants {
		if err := Name(fmt.Sprintf("tenants[%d]", i), t, 63); err != nil {
			return err
		}
	}
	return nil
}

var special = func() []struct {
	r    ipam.Range
	what string
} {
	var out []struct {
		r    ipam.Range
		what string
	}
	for _, x := range []struct{ cidr, what string }{
		{"0.0.0.0/32", "unspecified"}, {"127.0.0.0/8", "loopback"}, {"169.254.0.0/16", "link-local"},
		{"224.0.0.0/4", "multicast"}, {"255.255.255.255/32", "broadcast"},
		{"::/128", "unspecified"}, {"::1/128", "loopback"}, {"fe80::/10", "link-local"},
		{"ff00::/8", "multicast"}, {"::ffff:0:0/96", "IPv4-mapped"},
	} {
		p := netip.MustParsePrefix(x.cidr)
		out = append(out, struct {
			r    ipam.Range
			what string
		}{ipam.Range{First: p.Addr(), Last: prefixLast(p)}, x.what})
	}
	return out
}()

func prefixLast(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// HostPort checks a host:port address of a member.
func HostPort(field, s string) error {
	ap, err := netip.ParseAddrPort(s)
	if err == nil {
		if ap.Port() == 0 {
			return invalid(field, "%q needs a non-zero port", s)
		}
		// netip takes zones net.Dial cannot take apart ("[::%]]:1", a zone of "]").
		if _, _, err := net.SplitHostPort(s); err != nil {
			return invalid(field, "%q has no valid host", trunc(s))
		}
		return nil
	}
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return invalid(field, "%q is not host:port (e.g. 10.0.0.1:7701)", trunc(s))
	}
	var p int
	if _, err := fmt.Sscanf(s[i+1:], "%d", &p); err != nil || p < 1 || p > 65535 || fmt.Sprint(p) != s[i+1:] {
		return invalid(field, "%q has no valid port", trunc(s))
	}
	if !nameRE.MatchString(strings.ToLower(s[:i])) {
		return invalid(field, "%q has no valid host", trunc(s))
	}
	return nil
}

// Member checks a member being added.
func Member(m *edgelbv1.Member) error {
	if m == nil {
		return invalid("member", "is required")
	}
	if err := Name("member.id", m.Id, 63); err != nil {
		return err
	}
	if err := HostPort("member.raft_address", m.RaftAddress); err != nil {
		return err
	}
	if err := HostPort("member.api_address", m.ApiAddress); err != nil {
		return err
	}
	if len(m.DataInterface) > 15 {
		return invalid("member.data_interface", "%q is longer than an interface name can be (15)", m.DataInterface)
	}
	for _, l := range []struct {
		name string
		list []string
	}{{"member.interface_addresses", m.InterfaceAddresses}, {"member.gateways", m.Gateways}, {"member.bgp_peers_down", m.BgpPeersDown}} {
		if len(l.list) > MaxMemberAddresses {
			return invalid(l.name, "%d addresses; the limit is %d", len(l.list), MaxMemberAddresses)
		}
		for i, a := range l.list {
			ad, err := netip.ParseAddr(a)
			if err != nil || ad.Zone() != "" || ad.String() != a {
				return invalid(fmt.Sprintf("%s[%d]", l.name, i), "%q is not an IP address in canonical form", a)
			}
		}
	}
	return printable("member.data_interface", m.DataInterface)
}

// MaxMemberAddresses bounds the interface addresses and the gateways one
// member reports (a data interface with more is not an edge host's).
const MaxMemberAddresses = 64

func protoName(p edgelbv1.Protocol) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PROTOCOL_"))
}
