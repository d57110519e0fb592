// Package spec parses and formats the command-line syntax of API values:
// ports ("tcp/80:30080"), backends ("10.0.0.5:30080,weight=2,drained"),
// labels ("k=v"), address ranges and enum names. Every function is pure, so
// the syntax can be table-tested and fuzzed without a server.
package spec

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Syntax reminders, repeated in flag help and in every parse error so a
// mistyped flag tells the operator what to type instead.
const (
	PortSyntax    = "PROTO/PORT[:BACKEND_PORT] (PROTO tcp|udp|sctp, ports 1-65535), e.g. tcp/80 or tcp/443:30443"
	BackendSyntax = "ADDR[:PORT][,weight=N][,drained], e.g. 10.0.0.5:30080,weight=2 or [2001:db8::5]:30080,drained"
	AddrSyntax    = "ADDR[:PORT], e.g. 10.0.0.5, 10.0.0.5:30080 or [2001:db8::5]:30080"
	LabelSyntax   = "KEY=VALUE[,KEY=VALUE...], e.g. app=web,env=prod"
	RangeSyntax   = "CIDR or FIRST-LAST, e.g. 192.0.2.0/24 or 192.0.2.10-192.0.2.20"
)

var protocols = map[string]edgelbv1.Protocol{
	"tcp":  edgelbv1.Protocol_PROTOCOL_TCP,
	"udp":  edgelbv1.Protocol_PROTOCOL_UDP,
	"sctp": edgelbv1.Protocol_PROTOCOL_SCTP,
}

// ParsePort parses PROTO/PORT[:BACKEND_PORT]. A bare PORT[:BACKEND_PORT] means tcp.
func ParsePort(s string) (*edgelbv1.Port, error) {
	bad := func(why string) (*edgelbv1.Port, error) {
		return nil, fmt.Errorf("invalid port %q: %s; want %s", s, why, PortSyntax)
	}
	proto := edgelbv1.Protocol_PROTOCOL_TCP
	rest := s
	if p, r, ok := strings.Cut(s, "/"); ok {
		pr, known := protocols[strings.ToLower(p)]
		if !known {
			return bad(fmt.Sprintf("unknown protocol %q", p))
		}
		proto, rest = pr, r
	}
	front, back, hasBack := strings.Cut(rest, ":")
	port, err := parsePortNumber(front)
	if err != nil {
		return bad(err.Error())
	}
	out := &edgelbv1.Port{Protocol: proto, Port: port}
	if hasBack {
		bp, err := parsePortNumber(back)
		if err != nil {
			return bad("backend " + err.Error())
		}
		out.BackendPort = bp
	}
	return out, nil
}

func parsePortNumber(s string) (uint32, error) {
	if s == "" {
		return 0, fmt.Errorf("port number missing")
	}
	// ParseUint rejects signs and spaces, which Atoi would partly accept.
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q is not a number in 1-65535", s)
	}
	return uint32(n), nil
}

// FormatPort is the inverse of ParsePort: "tcp/80" or "tcp/80:30080".
func FormatPort(p *edgelbv1.Port) string {
	s := ProtocolName(p.GetProtocol()) + "/" + strconv.FormatUint(uint64(p.GetPort()), 10)
	if p.GetBackendPort() != 0 && p.GetBackendPort() != p.GetPort() {
		s += ":" + strconv.FormatUint(uint64(p.GetBackendPort()), 10)
	}
	return s
}

// ProtocolName is the lower-case name used on the command line.
func ProtocolName(p edgelbv1.Protocol) string {
	for name, v := range protocols {
		if v == p {
			return name
		}
	}
	return "tcp" // unspecified is served as TCP
}

// ParseAddrPort parses ADDR[:PORT] where ADDR is IPv4 or IPv6; an IPv6
// address with a port must be bracketed. Port 0 means "not given".
// The address is returned in canonical form.
func ParseAddrPort(s string) (string, uint32, error) {
	bad := func(why string) (string, uint32, error) {
		return "", 0, fmt.Errorf("invalid backend address %q: %s; want %s", s, why, AddrSyntax)
	}
	// A bare IP (including unbracketed IPv6) has no port.
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return bad("zones are not allowed")
		}
		return a.String(), 0, nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() && a.Zone() == "" {
			return a.String(), 0, nil
		}
		return bad("not an IPv6 address")
	}
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return bad("not an IP address")
	}
	host, portStr := s[:i], s[i+1:]
	bracketed := strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]")
	if bracketed {
		host = host[1 : len(host)-1]
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return bad("not an IP address")
	}
	if a.Is6() && !bracketed {
		return bad("an IPv6 address with a port must be in brackets")
	}
	if a.Is4() && bracketed {
		return bad("only IPv6 addresses take brackets")
	}
	port, err := parsePortNumber(portStr)
	if err != nil {
		return bad(err.Error())
	}
	return a.String(), port, nil
}

// FormatAddrPort is the inverse of ParseAddrPort.
func FormatAddrPort(addr string, port uint32) string {
	if port == 0 {
		return addr
	}
	return netJoin(addr, port)
}

func netJoin(addr string, port uint32) string {
	if strings.Contains(addr, ":") {
		return "[" + addr + "]:" + strconv.FormatUint(uint64(port), 10)
	}
	return addr + ":" + strconv.FormatUint(uint64(port), 10)
}

// ParseBackend parses ADDR[:PORT][,weight=N][,drained].
func ParseBackend(s string) (*edgelbv1.Backend, error) {
	parts := strings.Split(s, ",")
	addr, port, err := ParseAddrPort(parts[0])
	if err != nil {
		return nil, fmt.Errorf("invalid backend %q: %w", s, err)
	}
	b := &edgelbv1.Backend{Address: addr, Port: port}
	seen := map[string]bool{}
	for _, opt := range parts[1:] {
		key, val, hasVal := strings.Cut(opt, "=")
		if seen[key] {
			return nil, fmt.Errorf("invalid backend %q: option %q given twice; want %s", s, key, BackendSyntax)
		}
		seen[key] = true
		switch {
		case key == "weight" && hasVal:
			w, err := ParseWeight(val)
			if err != nil {
				return nil, fmt.Errorf("invalid backend %q: %w", s, err)
			}
			b.Weight = w
		case key == "drained" && !hasVal:
			b.Drained = true
		default:
			return nil, fmt.Errorf("invalid backend %q: unknown option %q; want %s", s, opt, BackendSyntax)
		}
	}
	return b, nil
}

// ParseWeight parses an IPVS weight, 1-65535. Zero is refused on purpose:
// a weight of 0 is what draining does, and the API reads 0 as "default".
func ParseWeight(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("weight %q is not a number in 1-65535 (to stop new connections, drain the backend instead)", s)
	}
	return uint32(n), nil
}

// FormatBackend is the inverse of ParseBackend.
func FormatBackend(b *edgelbv1.Backend) string {
	s := FormatAddrPort(b.GetAddress(), b.GetPort())
	if b.GetWeight() != 0 {
		s += ",weight=" + strconv.FormatUint(uint64(b.GetWeight()), 10)
	}
	if b.GetDrained() {
		s += ",drained"
	}
	return s
}

// ParseLabel parses one KEY=VALUE pair. The value may be empty; the key may
// not, and neither may contain '=', ',' or white space.
func ParseLabel(s string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("invalid label %q: missing '='; want %s", s, LabelSyntax)
	}
	if k == "" {
		return "", "", fmt.Errorf("invalid label %q: empty key; want %s", s, LabelSyntax)
	}
	if len(k) > 253 || len(v) > 253 {
		return "", "", fmt.Errorf("invalid label %q: key and value are limited to 253 characters", s)
	}
	if strings.ContainsAny(v, "=,") || !printableNoSpace(k) || !printableNoSpace(v) {
		return "", "", fmt.Errorf("invalid label %q: key and value may not contain '=', ',' or white space; want %s", s, LabelSyntax)
	}
	return k, v, nil
}

func printableNoSpace(s string) bool {
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == ',' || r == '=' || r > 0x7e {
			return false
		}
	}
	return true
}

// ParseLabels parses repeated and comma-separated KEY=VALUE pairs into a map.
func ParseLabels(in []string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range in {
		for _, pair := range strings.Split(item, ",") {
			k, v, err := ParseLabel(pair)
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
	}
	return out, nil
}

// ParseRange parses an address pool range: a CIDR or FIRST-LAST (same
// family, FIRST <= LAST). It returns the canonical text.
func ParseRange(s string) (string, error) {
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err1 := netip.ParseAddr(first)
		b, err2 := netip.ParseAddr(last)
		if err1 != nil || err2 != nil || a.Zone() != "" || b.Zone() != "" {
			return "", fmt.Errorf("invalid range %q: both ends must be IP addresses; want %s", s, RangeSyntax)
		}
		if a.Is4() != b.Is4() {
			return "", fmt.Errorf("invalid range %q: both ends must be the same family; want %s", s, RangeSyntax)
		}
		if b.Less(a) {
			return "", fmt.Errorf("invalid range %q: first address is after the last", s)
		}
		return a.String() + "-" + b.String(), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return "", fmt.Errorf("invalid range %q: want %s", s, RangeSyntax)
	}
	return p.String(), nil
}

// ParsePersistence parses a client-affinity timeout: a Go duration ("3h",
// "90m") or a number of seconds; 0 disables persistence.
func ParsePersistence(s string) (uint32, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d%time.Second != 0 || d/time.Second > math.MaxUint32 {
		return 0, fmt.Errorf("invalid persistence %q: want a duration in whole seconds (e.g. 3h, 90m) or a number of seconds; 0 disables", s)
	}
	return uint32(d / time.Second), nil
}

// enumSyntax maps command-line names to enum values for one enum type.
type enumSyntax[T ~int32] struct {
	what  string
	names []string
	vals  []T
}

func (e enumSyntax[T]) parse(s string) (T, error) {
	for i, n := range e.names {
		if strings.EqualFold(n, s) {
			return e.vals[i], nil
		}
	}
	var zero T
	return zero, fmt.Errorf("invalid %s %q: want one of %s", e.what, s, strings.Join(e.names, "|"))
}

func (e enumSyntax[T]) name(v T) string {
	for i, x := range e.vals {
		if x == v {
			return e.names[i]
		}
	}
	return ""
}

var (
	schedulers = enumSyntax[edgelbv1.Scheduler]{"scheduler",
		[]string{"mh", "rr", "wrr", "lc", "wlc", "sh"},
		[]edgelbv1.Scheduler{edgelbv1.Scheduler_SCHEDULER_MH, edgelbv1.Scheduler_SCHEDULER_RR, edgelbv1.Scheduler_SCHEDULER_WRR,
			edgelbv1.Scheduler_SCHEDULER_LC, edgelbv1.Scheduler_SCHEDULER_WLC, edgelbv1.Scheduler_SCHEDULER_SH}}
	modes = enumSyntax[edgelbv1.ForwardingMode]{"forwarding mode",
		[]string{"nat", "dr"},
		[]edgelbv1.ForwardingMode{edgelbv1.ForwardingMode_FORWARDING_MODE_NAT, edgelbv1.ForwardingMode_FORWARDING_MODE_DR}}
	families = enumSyntax[edgelbv1.IPFamily]{"IP family",
		[]string{"ipv4", "ipv6"},
		[]edgelbv1.IPFamily{edgelbv1.IPFamily_IP_FAMILY_IPV4, edgelbv1.IPFamily_IP_FAMILY_IPV6}}
	checks = enumSyntax[edgelbv1.HealthCheckType]{"health check",
		[]string{"tcp", "http", "https", "none", "sctp"},
		[]edgelbv1.HealthCheckType{edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP, edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP,
			edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTPS, edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_NONE, edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_SCTP}}
)

// ParseScheduler parses mh|rr|wrr|lc|wlc|sh.
func ParseScheduler(s string) (edgelbv1.Scheduler, error) { return schedulers.parse(s) }

// SchedulerName names a scheduler; unspecified is the server default, mh.
func SchedulerName(v edgelbv1.Scheduler) string {
	if n := schedulers.name(v); n != "" {
		return n
	}
	return "mh"
}

// ParseMode parses nat|dr.
func ParseMode(s string) (edgelbv1.ForwardingMode, error) { return modes.parse(s) }

// ModeName names a forwarding mode; unspecified is the server default, nat.
func ModeName(v edgelbv1.ForwardingMode) string {
	if n := modes.name(v); n != "" {
		return n
	}
	return "nat"
}

// ParseFamily parses ipv4|ipv6.
func ParseFamily(s string) (edgelbv1.IPFamily, error) { return families.parse(s) }

// ParseHealthCheck parses tcp|http|https|none.
func ParseHealthCheck(s string) (edgelbv1.HealthCheckType, error) { return checks.parse(s) }

// HealthCheckName names a check type; unspecified is the server default, tcp.
func HealthCheckName(v edgelbv1.HealthCheckType) string {
	if n := checks.name(v); n != "" {
		return n
	}
	return "tcp"
}
