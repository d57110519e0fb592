package rules

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

func web(bs ...*edgelbv1.Backend) *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{Name: "web", Vip: "192.0.2.10",
		Ports: []*edgelbv1.Port{{Port: 80, BackendPort: 30080}}, Backends: bs}
}

// Each bad input of issue 18 is refused with InvalidArgument, a message that
// says what to fix, and an ErrorInfo reason.
func TestIssue18BadInputs(t *testing.T) {
	for name, c := range map[string]struct {
		vs     *edgelbv1.VirtualService
		reason string
		frag   string
	}{
		"NUL in port name":   {func() *edgelbv1.VirtualService { v := web(); v.Ports[0].Name = "a\x00b"; return v }(), errinfo.ControlCharacter, "control character (U+0000)"},
		"ESC in port name":   {func() *edgelbv1.VirtualService { v := web(); v.Ports[0].Name = "\x1b[31m"; return v }(), errinfo.ControlCharacter, "control character (U+001B)"},
		"name a..b":          {func() *edgelbv1.VirtualService { v := web(); v.Name = "a..b"; return v }(), errinfo.InvalidField, "(e.g. a.b)"},
		"ESC in sharing key": {func() *edgelbv1.VirtualService { v := web(); v.SharingKey = "k\x1b"; return v }(), errinfo.ControlCharacter, "control character"},
		"NUL in check path": {func() *edgelbv1.VirtualService {
			v := web()
			v.HealthCheck = &edgelbv1.HealthCheck{Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, Path: "/a\x00"}
			return v
		}(), errinfo.ControlCharacter, "control character"},
		"backend is VIP": {web(&edgelbv1.Backend{Address: "192.0.2.10"}), errinfo.BackendIsVIP, "own VIP"},
		"two spellings":  {web(&edgelbv1.Backend{Address: "10.0.0.11"}, &edgelbv1.Backend{Address: "10.0.0.11", Port: 30080}), errinfo.DuplicateBackend, "same backend as service.backends[0] (10.0.0.11)"},
		"deny all with ranges": {func() *edgelbv1.VirtualService {
			v := web()
			v.DenyAllSources, v.SourceRanges = true, []string{"10.0.0.0/8"}
			return v
		}(), errinfo.InvalidField, "clear the ranges to deny every client"},
		"twice": {web(&edgelbv1.Backend{Address: "10.0.0.11"}, &edgelbv1.Backend{Address: "10.0.0.11"}), errinfo.DuplicateBackend, "list it once"},
	} {
		err := VirtualService(c.vs, DefaultLimits)
		if status.Code(err) != codes.InvalidArgument || errinfo.Reason(err) != c.reason || !strings.Contains(status.Convert(err).Message(), c.frag) {
			t.Errorf("%s: %v (reason %q); want InvalidArgument %s mentioning %q", name, err, errinfo.Reason(err), c.reason, c.frag)
		}
		if ei, ok := errinfo.Of(err); !ok || ei.Domain != errinfo.Domain || ei.Metadata["field"] == "" {
			t.Errorf("%s: ErrorInfo %v; want domain %s and a field", name, ei, errinfo.Domain)
		}
	}
}

// A VIP that denies all sources, with no ranges, is accepted.
func TestDenyAllSourcesAccepted(t *testing.T) {
	v := web(&edgelbv1.Backend{Address: "10.0.0.11"})
	v.DenyAllSources = true
	if err := VirtualService(v, DefaultLimits); err != nil {
		t.Fatal(err)
	}
}

// For a port tcp/80:30080, 10.0.0.11:30080 is stored as 10.0.0.11; another
// port is another backend.
func TestBackendNormalisedBeforeRaft(t *testing.T) {
	vs := web(&edgelbv1.Backend{Address: "10.0.0.11", Port: 30080}, &edgelbv1.Backend{Address: "10.0.0.12", Port: 8080})
	if err := VirtualService(vs, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if vs.Backends[0].Port != 0 || vs.Backends[1].Port != 8080 {
		t.Errorf("backends %v; want 10.0.0.11 (port 0) and 10.0.0.12:8080", vs.Backends)
	}
	if err := Stored(vs, Current); err != nil {
		t.Errorf("the normalised service is not in stored form: %v", err)
	}
	// Legacy keeps both spellings, as older binaries stored them.
	old := web(&edgelbv1.Backend{Address: "10.0.0.11", Weight: 1}, &edgelbv1.Backend{Address: "10.0.0.11", Port: 30080, Weight: 1})
	old.Tenant, old.IpFamily, old.Scheduler, old.ForwardingMode = "default", edgelbv1.IPFamily_IP_FAMILY_IPV4, edgelbv1.Scheduler_SCHEDULER_MH, edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
	old.Ports[0].Protocol = edgelbv1.Protocol_PROTOCOL_TCP
	if err := Stored(old, Legacy); err != nil {
		t.Errorf("a legacy entry: %v", err)
	}
	if err := Stored(old, Strict); errinfo.Reason(err) != errinfo.DuplicateBackend {
		t.Errorf("the same at Strict: %v; want %s", err, errinfo.DuplicateBackend)
	}
}

// With two ports, 10.0.0.11 and 10.0.0.11:30080 differ as a whole but both
// send port 80's traffic to 10.0.0.11:30080, where IPVS has room for one.
func TestBackendsShareADestination(t *testing.T) {
	vs := web(&edgelbv1.Backend{Address: "10.0.0.11"}, &edgelbv1.Backend{Address: "10.0.0.11", Port: 30080})
	vs.Ports = append(vs.Ports, &edgelbv1.Port{Port: 443, BackendPort: 30443})
	err := VirtualService(vs, DefaultLimits)
	if errinfo.Reason(err) != errinfo.DuplicateBackend || !strings.Contains(status.Convert(err).Message(), "both send port 80's traffic to 10.0.0.11:30080") {
		t.Errorf("got %v", err)
	}
	ok := web(&edgelbv1.Backend{Address: "10.0.0.11"}, &edgelbv1.Backend{Address: "10.0.0.11", Port: 8080})
	ok.Ports = append(ok.Ports, &edgelbv1.Port{Port: 443, BackendPort: 30443})
	if err := VirtualService(ok, DefaultLimits); err != nil {
		t.Errorf("distinct destinations refused: %v", err)
	}
}
