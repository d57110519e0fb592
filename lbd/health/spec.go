// Package health checks backends (TCP connect, HTTP, HTTPS) on the host that
// owns their VIP, with rise/fall hysteresis, and reports transitions. One
// scheduler goroutine drives every check from a timer heap, with per-target
// jitter so thousands of checks do not fire together, and a bounded pool of
// probes in flight.
package health

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Type is the kind of probe.
type Type uint8

const (
	TCP Type = iota + 1
	HTTP
	HTTPS
	SCTP
)

func (t Type) String() string { return [...]string{"?", "tcp", "http", "https", "sctp"}[t] }

// Defaults for a service without a spec, chosen so a dead node leaves the
// rotation in about 3 s (fall 3 × 1 s) and a recovered one returns after 2 s,
// while one lost packet never flips a backend.
const (
	DefaultInterval = time.Second
	DefaultTimeout  = 900 * time.Millisecond
	DefaultRise     = 2
	DefaultFall     = 3
	DefaultPath     = "/"
	DefaultCodes    = "200-399"
)

// Spec is a check's settings. It is comparable, so identical checks of the
// same address and port (many VIPs on one node port) are run once.
type Spec struct {
	Type       Type
	Path       string
	Codes      string // canonical "200-399" or "200,204"
	Interval   time.Duration
	Timeout    time.Duration
	Rise, Fall int
}

// Key identifies one check.
type Key struct {
	Addr netip.Addr
	Port uint16
	Spec Spec
}

func (k Key) String() string {
	return fmt.Sprintf("%s://%s", k.Spec.Type, netip.AddrPortFrom(k.Addr, k.Port))
}

// SpecFromProto applies defaults to a service's health check. ok is false
// for type NONE (no checking).
func SpecFromProto(hc *edgelbv1.HealthCheck) (s Spec, ok bool) {
	s = Spec{Type: TCP, Interval: DefaultInterval, Timeout: DefaultTimeout, Rise: DefaultRise, Fall: DefaultFall}
	if hc == nil {
		return s, true
	}
	switch hc.Type {
	case edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_NONE:
		return Spec{}, false
	case edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP:
		s.Type = HTTP
	case edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTPS:
		s.Type = HTTPS
	case edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_SCTP:
		s.Type = SCTP
	}
	if hc.Interval != nil && hc.Interval.AsDuration() > 0 {
		s.Interval = hc.Interval.AsDuration()
		if hc.Timeout == nil {
			s.Timeout = min(s.Timeout, s.Interval*9/10)
		}
	}
	if hc.Timeout != nil && hc.Timeout.AsDuration() > 0 {
		s.Timeout = hc.Timeout.AsDuration()
	}
	if hc.Rise > 0 {
		s.Rise = int(hc.Rise)
	}
	if hc.Fall > 0 {
		s.Fall = int(hc.Fall)
	}
	if s.Type == HTTP || s.Type == HTTPS {
		s.Path = hc.Path
		if s.Path == "" {
			s.Path = DefaultPath
		}
		s.Codes = DefaultCodes
		if len(hc.ExpectedCodes) > 0 {
			cs := make([]int, len(hc.ExpectedCodes))
			for i, c := range hc.ExpectedCodes {
				cs[i] = int(c)
			}
			sort.Ints(cs)
			parts := make([]string, len(cs))
			for i, c := range cs {
				parts[i] = strconv.Itoa(c)
			}
			s.Codes = strings.Join(parts, ",")
		}
	}
	return s, true
}

// codeOK reports whether an HTTP status matches a canonical code list.
func codeOK(codes string, status int) bool {
	for _, part := range strings.Split(codes, ",") {
		if lo, hi, ok := strings.Cut(part, "-"); ok {
			l, _ := strconv.Atoi(lo)
			h, _ := strconv.Atoi(hi)
			if status >= l && status <= h {
				return true
			}
		} else if n, _ := strconv.Atoi(part); n == status {
			return true
		}
	}
	return false
}

// Ref names one backend of one service a check stands for.
type Ref struct {
	Tenant, Name string
	Address      string
	Port         uint32 // the backend's own port field (0: the service port's backend_port)
}

// Targets derives the checks for a set of services: per backend, the spec's
// port, else the backend's port on the service's first TCP port. A service
// with no TCP port, no spec port and no check type (or tcp, the default)
// but an SCTP port gets an SCTP association check of its first SCTP port
// instead, as a TCP connect there proves nothing; an SCTP check names that
// port too. UDP-only services without a spec port are not checked: there is
// nothing to connect to.
func Targets(vss []*edgelbv1.VirtualService) map[Key][]Ref {
	out := map[Key][]Ref{}
	for _, vs := range vss {
		spec, ok := SpecFromProto(vs.HealthCheck)
		if !ok {
			continue
		}
		var tcpPort, sctpPort *edgelbv1.Port
		for _, p := range vs.Ports {
			if p.Protocol == edgelbv1.Protocol_PROTOCOL_TCP && tcpPort == nil {
				tcpPort = p
			}
			if p.Protocol == edgelbv1.Protocol_PROTOCOL_SCTP && sctpPort == nil {
				sctpPort = p
			}
		}
		portOf := tcpPort
		if spec.Type == SCTP || spec.Type == TCP && tcpPort == nil && vs.HealthCheck.GetPort() == 0 && sctpPort != nil {
			spec.Type, portOf = SCTP, sctpPort
		}
		for _, b := range vs.Backends {
			a, err := netip.ParseAddr(b.Address)
			if err != nil {
				continue
			}
			var port uint32
			switch {
			case vs.HealthCheck.GetPort() != 0:
				port = vs.HealthCheck.GetPort()
			case b.Port != 0:
				port = b.Port
			case portOf != nil:
				port = portOf.BackendPort
				if vs.ForwardingMode == edgelbv1.ForwardingMode_FORWARDING_MODE_DR {
					port = portOf.Port
				}
			default:
				continue
			}
			k := Key{Addr: a, Port: uint16(port), Spec: spec}
			out[k] = append(out[k], Ref{Tenant: vs.Tenant, Name: vs.Name, Address: b.Address, Port: b.Port})
		}
	}
	return out
}
