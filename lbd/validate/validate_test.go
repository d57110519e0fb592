package validate

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// wantInvalid checks that err is InvalidArgument, that its message starts with
// the field path, and that it holds every fragment.
func wantInvalid(t *testing.T, err error, field string, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want InvalidArgument on %s", field)
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		t.Fatalf("err = %v, want InvalidArgument", err)
	}
	if !strings.HasPrefix(st.Message(), field+": ") {
		t.Errorf("message %q does not name the field %s", st.Message(), field)
	}
	for _, f := range fragments {
		if !strings.Contains(st.Message(), f) {
			t.Errorf("message %q does not say %q", st.Message(), f)
		}
	}
}

func TestName(t *testing.T) {
	for _, ok := range []string{"a", "web", "a-b.c", "0", "x1", strings.Repeat("a", 63)} {
		if err := Name("f", ok, 63); err != nil {
			t.Errorf("Name(%q) = %v", ok, err)
		}
	}
	for _, tc := range []struct{ in, frag string }{
		{"", "is required"},
		{strings.Repeat("a", 64), "limit is 63"},
		{"Web", "not a valid name"},
		{"-a", "not a valid name"},
		{"a-", "not a valid name"},
		{"a_b", "not a valid name"},
		{"a b", "not a valid name"},
		{"a/b", "not a valid name"},
		{"é", "not a valid name"},
	} {
		t.Run(tc.in, func(t *testing.T) { wantInvalid(t, Name("thing.name", tc.in, 63), "thing.name", tc.frag) })
	}
	// Long names are shown truncated.
	err := Name("f", strings.Repeat("B", 500), 1000)
	if st, _ := status.FromError(err); len(st.Message()) > 300 {
		t.Errorf("message for a 500-character name is %d long; want it truncated", len(st.Message()))
	}
}

func TestTenantDefault(t *testing.T) {
	tn := ""
	if err := Tenant("tenant", &tn); err != nil || tn != DefaultTenant {
		t.Errorf("Tenant(\"\") = %q, %v; want %q", tn, err, DefaultTenant)
	}
	tn = "Bad"
	wantInvalid(t, Tenant("req.tenant", &tn), "req.tenant")
}

func TestVIP(t *testing.T) {
	for _, ok := range []string{"192.0.2.10", "10.0.0.1", "2001:db8::10", "2001:DB8::A"} {
		if _, err := VIP("vip", ok); err != nil {
			t.Errorf("VIP(%q) = %v", ok, err)
		}
	}
	for _, tc := range []struct{ in, frag string }{
		{"", "not an IP address"},
		{"192.0.2.300", "not an IP address"},
		{"192.0.2.0/24", "not an IP address"},
		{"fe80::1%eth0", "zone"},
		{"::ffff:192.0.2.1", "IPv4-mapped"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"127.0.0.1", "loopback"},
		{"::1", "loopback"},
		{"224.0.0.1", "multicast"},
		{"ff02::1", "multicast"},
		{"169.254.1.1", "link-local"},
		{"fe80::1", "link-local"},
		{"255.255.255.255", "broadcast"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := VIP("service.vip", tc.in)
			wantInvalid(t, err, "service.vip", tc.frag)
		})
	}
}

func minimal() *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{Name: "web", Ports: []*edgelbv1.Port{{Port: 80}}}
}

func TestVirtualServiceDefaults(t *testing.T) {
	vs := minimal()
	vs.Owner, vs.Generation = "m1", 7
	vs.CreateTime, vs.UpdateTime = timestamppb.Now(), timestamppb.Now()
	vs.Backends = []*edgelbv1.Backend{{Address: "192.0.2.1", Port: 30080, Health: &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY}}}
	vs.Persistence = &edgelbv1.Persistence{}
	vs.SourceRanges = []string{" 203.0.113.0/24 "}
	if err := VirtualService(vs, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	want := &edgelbv1.VirtualService{
		Name: "web", Tenant: DefaultTenant,
		IpFamily:       edgelbv1.IPFamily_IP_FAMILY_IPV4,
		Scheduler:      edgelbv1.Scheduler_SCHEDULER_MH,
		ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_NAT,
		Ports:          []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 80}},
		Backends:       []*edgelbv1.Backend{{Address: "192.0.2.1", Port: 30080, Weight: 1}},
		SourceRanges:   []string{"203.0.113.0/24"},
	}
	if !proto.Equal(vs, want) {
		t.Errorf("after defaults:\n got %v\nwant %v", vs, want)
	}

	// A VIP sets the family and is written canonically.
	vs = minimal()
	vs.Vip = "2001:DB8::0:A"
	if err := VirtualService(vs, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if vs.Vip != "2001:db8::a" || vs.IpFamily != edgelbv1.IPFamily_IP_FAMILY_IPV6 {
		t.Errorf("VIP %q family %v, want 2001:db8::a IPV6", vs.Vip, vs.IpFamily)
	}
	// Explicit choices are kept.
	vs = minimal()
	vs.Scheduler, vs.ForwardingMode = edgelbv1.Scheduler_SCHEDULER_WRR, edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	vs.IpFamily = edgelbv1.IPFamily_IP_FAMILY_IPV6
	vs.Ports[0].Protocol = edgelbv1.Protocol_PROTOCOL_SCTP
	vs.Backends = []*edgelbv1.Backend{{Address: "2001:db8::5", Weight: 9, Drained: true}}
	vs.Persistence = &edgelbv1.Persistence{TimeoutSeconds: 300}
	if err := VirtualService(vs, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if vs.Scheduler != edgelbv1.Scheduler_SCHEDULER_WRR || vs.ForwardingMode != edgelbv1.ForwardingMode_FORWARDING_MODE_DR ||
		vs.Ports[0].Protocol != edgelbv1.Protocol_PROTOCOL_SCTP || vs.Backends[0].Weight != 9 || !vs.Backends[0].Drained ||
		vs.Persistence.GetTimeoutSeconds() != 300 || vs.IpFamily != edgelbv1.IPFamily_IP_FAMILY_IPV6 {
		t.Errorf("explicit settings changed: %v", vs)
	}
}

func TestVirtualServiceRefusals(t *testing.T) {
	lim := DefaultLimits
	lim.MaxPorts, lim.MaxBackends, lim.MaxSourceRanges, lim.MaxLabels = 2, 2, 1, 1
	ports := func(ps ...*edgelbv1.Port) func(*edgelbv1.VirtualService) {
		return func(vs *edgelbv1.VirtualService) { vs.Ports = ps }
	}
	bes := func(bs ...*edgelbv1.Backend) func(*edgelbv1.VirtualService) {
		return func(vs *edgelbv1.VirtualService) { vs.Backends = bs }
	}
	hc := func(h *edgelbv1.HealthCheck) func(*edgelbv1.VirtualService) {
		return func(vs *edgelbv1.VirtualService) { vs.HealthCheck = h }
	}
	dr := func(vs *edgelbv1.VirtualService) { vs.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_DR }
	for _, tc := range []struct {
		name   string
		change []func(*edgelbv1.VirtualService)
		field  string
		frag   string
	}{
		{"bad tenant", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.Tenant = "Team A" }}, "service.tenant", "not a valid name"},
		{"no name", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.Name = "" }}, "service.name", "required"},
		{"bad vip", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.Vip = "10.0.0" }}, "service.vip", "not an IP address"},
		{"loopback vip", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.Vip = "127.0.0.5" }}, "service.vip", "loopback"},
		{"family disagrees with vip", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) {
			vs.Vip, vs.IpFamily = "192.0.2.1", edgelbv1.IPFamily_IP_FAMILY_IPV6
		}}, "service.ip_family", "192.0.2.1"},
		{"unknown family", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.IpFamily = 9 }}, "service.ip_family", "unknown family"},
		{"bad pool", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.Pool = "Pool_1" }}, "service.pool", "not a valid name"},
		{"unknown scheduler", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.Scheduler = 42 }}, "service.scheduler", "mh, rr"},
		{"unknown mode", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.ForwardingMode = 3 }}, "service.forwarding_mode", "nat or dr"},
		{"no ports", []func(*edgelbv1.VirtualService){ports()}, "service.ports", "at least one port"},
		{"too many ports", []func(*edgelbv1.VirtualService){ports(&edgelbv1.Port{Port: 1}, &edgelbv1.Port{Port: 2}, &edgelbv1.Port{Port: 3})}, "service.ports", "limit is 2"},
		{"nil port", []func(*edgelbv1.VirtualService){ports(&edgelbv1.Port{Port: 1}, nil)}, "service.ports[1]", "empty"},
		{"port 0", []func(*edgelbv1.VirtualService){ports(&edgelbv1.Port{Port: 0})}, "service.ports[0].port", "1-65535"},
		{"port too big", []func(*edgelbv1.VirtualService){ports(&edgelbv1.Port{Port: 65536})}, "service.ports[0].port", "65536"},
		{"backend port too big", []func(*edgelbv1.VirtualService){ports(&edgelbv1.Port{Port: 80, BackendPort: 70000})}, "service.ports[0].backend_port", "70000"},
		{"unknown protocol", []func(*edgelbv1.VirtualService){ports(&edgelbv1.Port{Port: 80, Protocol: 7})}, "service.ports[0].protocol", "TCP, UDP or SCTP"},
		{"duplicate port", []func(*edgelbv1.VirtualService){ports(&edgelbv1.Port{Port: 80}, &edgelbv1.Port{Port: 80, Protocol: edgelbv1.Protocol_PROTOCOL_TCP})}, "service.ports[1]", "tcp/80"},
		{"long port name", []func(*edgelbv1.VirtualService){ports(&edgelbv1.Port{Port: 80, Name: strings.Repeat("x", 64)})}, "service.ports[0].name", "63"},
		{"dr changes port", []func(*edgelbv1.VirtualService){dr, ports(&edgelbv1.Port{Port: 80, BackendPort: 8080})}, "service.ports[0].backend_port", "direct routing"},
		{"too many backends", []func(*edgelbv1.VirtualService){bes(&edgelbv1.Backend{Address: "192.0.2.1"}, &edgelbv1.Backend{Address: "192.0.2.2"}, &edgelbv1.Backend{Address: "192.0.2.3"})}, "service.backends", "limit is 2"},
		{"nil backend", []func(*edgelbv1.VirtualService){bes(nil)}, "service.backends[0]", "empty"},
		{"bad backend", []func(*edgelbv1.VirtualService){bes(&edgelbv1.Backend{Address: "node-1"})}, "service.backends[0].address", "not an IP address"},
		{"v6 backend on v4", []func(*edgelbv1.VirtualService){bes(&edgelbv1.Backend{Address: "2001:db8::1"})}, "service.backends[0].address", "IPv4"},
		{"backend port", []func(*edgelbv1.VirtualService){bes(&edgelbv1.Backend{Address: "192.0.2.1", Port: 65536})}, "service.backends[0].port", "1-65535"},
		{"backend weight", []func(*edgelbv1.VirtualService){bes(&edgelbv1.Backend{Address: "192.0.2.1", Weight: 65536})}, "service.backends[0].weight", "drain"},
		{"dr backend port", []func(*edgelbv1.VirtualService){dr, bes(&edgelbv1.Backend{Address: "192.0.2.1", Port: 80})}, "service.backends[0].port", "direct routing"},
		{"duplicate backend", []func(*edgelbv1.VirtualService){bes(&edgelbv1.Backend{Address: "192.0.2.1", Port: 80}, &edgelbv1.Backend{Address: "192.0.2.1", Port: 80})}, "service.backends[1]", "192.0.2.1:80"},
		{"persistence", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.Persistence = &edgelbv1.Persistence{TimeoutSeconds: 86401} }}, "service.persistence.timeout_seconds", "86400"},
		{"hc type", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{Type: 9})}, "service.health_check.type", "tcp, sctp, http"},
		{"hc port", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{Port: 70000})}, "service.health_check.port", "1-65535"},
		{"hc path on tcp", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP, Path: "/healthz"})}, "service.health_check.path", "not HTTP"},
		{"hc relative path", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, Path: "healthz"})}, "service.health_check.path", "start with '/'"},
		{"hc path with space", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, Path: "/a b"})}, "service.health_check.path", "no spaces"},
		{"hc code", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{ExpectedCodes: []uint32{200, 600}})}, "service.health_check.expected_codes[1]", "600"},
		{"hc interval", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{Interval: durationpb.New(10 * time.Millisecond)})}, "service.health_check.interval", "100ms-1h"},
		{"hc bad duration", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{Interval: &durationpb.Duration{Seconds: 1, Nanos: -1}})}, "service.health_check.interval", ""},
		{"hc timeout", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{Timeout: durationpb.New(2 * time.Minute)})}, "service.health_check.timeout", "10ms-1m"},
		{"hc timeout over interval", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{Interval: durationpb.New(time.Second), Timeout: durationpb.New(2 * time.Second)})}, "service.health_check.timeout", "longer than the interval"},
		{"hc rise", []func(*edgelbv1.VirtualService){hc(&edgelbv1.HealthCheck{Rise: 101})}, "service.health_check", "rise"},
		{"too many source ranges", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.SourceRanges = []string{"10.0.0.0/8", "11.0.0.0/8"} }}, "service.source_ranges", "limit is 1"},
		{"source range not cidr", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.SourceRanges = []string{"10.0.0.1"} }}, "service.source_ranges[0]", "not a CIDR"},
		{"source range host bits", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.SourceRanges = []string{"10.0.0.1/8"} }}, "service.source_ranges[0]", "10.0.0.0/8"},
		{"source range family", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.SourceRanges = []string{"2001:db8::/32"} }}, "service.source_ranges[0]", "family"},
		{"too many labels", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.Labels = map[string]string{"a": "1", "b": "2"} }}, "service.labels", "limit is 1"},
		{"label key", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.Labels = map[string]string{"-a": "1"} }}, "service.labels", "-a"},
		{"label value", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.Labels = map[string]string{"app": "a b"} }}, "service.labels", "app"},
		{"sharing key", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.SharingKey = strings.Repeat("k", 254) }}, "service.sharing_key", "253"},
		{"pinned member", []func(*edgelbv1.VirtualService){func(vs *edgelbv1.VirtualService) { vs.PinnedMember = "Node_1" }}, "service.pinned_member", "not a valid name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vs := minimal()
			for _, c := range tc.change {
				c(vs)
			}
			wantInvalid(t, VirtualService(vs, lim), tc.field, tc.frag)
		})
	}
	wantInvalid(t, VirtualService(nil, lim), "service", "required")
}

func TestVirtualServiceAccepts(t *testing.T) {
	vs := &edgelbv1.VirtualService{
		Name: "web.example-1", Tenant: "cluster-a", Vip: "192.0.2.10", Pool: "lan",
		Ports: []*edgelbv1.Port{{Port: 80, BackendPort: 30080, Name: "http"}, {Port: 80, Protocol: edgelbv1.Protocol_PROTOCOL_UDP}},
		Backends: []*edgelbv1.Backend{
			{Address: "10.1.0.1", Port: 30080, Weight: 65535},
			{Address: "10.1.0.1", Port: 30081}, // same node, other port
		},
		HealthCheck: &edgelbv1.HealthCheck{
			Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, Port: 10256, Path: "/healthz",
			ExpectedCodes: []uint32{200, 204}, Interval: durationpb.New(time.Second), Timeout: durationpb.New(500 * time.Millisecond), Rise: 2, Fall: 3,
		},
		SourceRanges: []string{"0.0.0.0/0"},
		Labels:       map[string]string{"app": "web", "example.com/team": "edge", "empty": ""},
		SharingKey:   "shared-1", PinnedMember: "edge-1",
	}
	if err := VirtualService(vs, DefaultLimits); err != nil {
		t.Fatal(err)
	}
}

func TestBackendsAndBackend(t *testing.T) {
	bs := []*edgelbv1.Backend{{Address: "2001:DB8::1"}, {Address: "2001:db8::2", Port: 8080, Weight: 5}}
	if err := Backends("backends", bs, true, false, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if bs[0].Address != "2001:db8::1" || bs[0].Weight != 1 || bs[1].Weight != 5 {
		t.Errorf("normalised backends: %v", bs)
	}
	// Duplicates are found after normalisation.
	err := Backends("backends", []*edgelbv1.Backend{{Address: "2001:db8::1"}, {Address: "2001:DB8:0::1"}}, true, false, DefaultLimits)
	wantInvalid(t, err, "backends[1]", "backends[0]")

	wantInvalid(t, Backend("backend", nil, false, false), "backend", "empty")
	wantInvalid(t, Backend("backend", &edgelbv1.Backend{Address: "127.0.0.1"}, false, false), "backend.address", "loopback")
	wantInvalid(t, Backend("backend", &edgelbv1.Backend{Address: "10.0.0.1"}, true, false), "backend.address", "IPv6")
	b := &edgelbv1.Backend{Address: "10.0.0.1", Health: &edgelbv1.BackendHealth{}}
	if err := Backend("backend", b, false, true); err != nil || b.Health != nil || b.Weight != 1 {
		t.Errorf("Backend: %v, health %v weight %d; want health cleared (status, not spec) and weight 1", err, b.Health, b.Weight)
	}
	if got := BackendKey("2001:db8::1", 80); got != "[2001:db8::1]:80" {
		t.Errorf("BackendKey = %q", got)
	}
	if got := BackendKey("10.0.0.1", 0); got != "10.0.0.1" {
		t.Errorf("BackendKey = %q", got)
	}
}

func TestHealthCheckDefaultsAllowed(t *testing.T) {
	for _, hc := range []*edgelbv1.HealthCheck{
		nil,
		{},
		{Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_NONE},
		{Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTPS, Path: "/ready?x=1"},
		{Interval: durationpb.New(time.Hour), Timeout: durationpb.New(time.Minute), Rise: 100, Fall: 100},
	} {
		if err := HealthCheck("hc", hc, DefaultLimits); err != nil {
			t.Errorf("HealthCheck(%v) = %v", hc, err)
		}
	}
}

func TestLabels(t *testing.T) {
	long := strings.Repeat("v", 64)
	wantInvalid(t, Labels("labels", map[string]string{"app": long}, DefaultLimits), "labels", "63")
	wantInvalid(t, Labels("labels", map[string]string{"a/b/c": "x"}, DefaultLimits), "labels", "a/b/c")
	wantInvalid(t, Labels("labels", map[string]string{"": "x"}, DefaultLimits), "labels", "key")
	if err := Labels("labels", map[string]string{"k8s.io/app_name": "My.App-1"}, DefaultLimits); err != nil {
		t.Error(err)
	}
}

func TestAddressPool(t *testing.T) {
	p := &edgelbv1.AddressPool{Name: "lan", Ranges: []string{" 192.0.2.0/24 ", "2001:db8::/120"}, Tenants: []string{"a"}, CreateTime: timestamppb.Now()}
	if err := AddressPool(p, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if p.Ranges[0] != "192.0.2.0/24" || p.CreateTime != nil {
		t.Errorf("normalised pool: %v; want ranges trimmed and create_time cleared", p)
	}

	lim := DefaultLimits
	lim.MaxPoolRanges, lim.MaxPoolTenants = 2, 1
	for _, tc := range []struct {
		name  string
		p     *edgelbv1.AddressPool
		field string
		frag  string
	}{
		{"nil", nil, "pool", "required"},
		{"no name", &edgelbv1.AddressPool{Ranges: []string{"192.0.2.0/24"}}, "pool.name", "required"},
		{"bad name", &edgelbv1.AddressPool{Name: "LAN", Ranges: []string{"192.0.2.0/24"}}, "pool.name", "not a valid name"},
		{"no ranges", &edgelbv1.AddressPool{Name: "lan"}, "pool.ranges", "at least one range"},
		{"too many ranges", &edgelbv1.AddressPool{Name: "lan", Ranges: []string{"10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"}}, "pool.ranges", "limit is 2"},
		{"bad range", &edgelbv1.AddressPool{Name: "lan", Ranges: []string{"192.0.2.0/24", "192.0.2.x"}}, "pool", "ranges[1]"},
		{"reversed", &edgelbv1.AddressPool{Name: "lan", Ranges: []string{"192.0.2.9-192.0.2.1"}}, "pool", "before the first"},
		{"overlap", &edgelbv1.AddressPool{Name: "lan", Ranges: []string{"192.0.2.0/24", "192.0.2.7/32"}}, "pool", "overlaps"},
		{"loopback end", &edgelbv1.AddressPool{Name: "lan", Ranges: []string{"127.0.0.0/24"}}, "pool.ranges[0]", "loopback"},
		{"multicast end", &edgelbv1.AddressPool{Name: "lan", Ranges: []string{"192.0.2.0/24", "ff02::1-ff02::9"}}, "pool.ranges[1]", "multicast"},
		{"unspecified v6", &edgelbv1.AddressPool{Name: "lan", Ranges: []string{"::-::ff"}}, "pool.ranges[0]", "unspecified"},
		{"too many tenants", &edgelbv1.AddressPool{Name: "lan", Ranges: []string{"192.0.2.0/24"}, Tenants: []string{"a", "b"}}, "pool.tenants", "limit is 1"},
		{"bad tenant", &edgelbv1.AddressPool{Name: "lan", Ranges: []string{"192.0.2.0/24"}, Tenants: []string{"A"}}, "pool.tenants[0]", "not a valid name"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantInvalid(t, AddressPool(tc.p, lim), tc.field, tc.frag) })
	}
}

// A pool is where VIPs are allocated from without further checks, so it must not
// hold an address that VIP() refuses — including inside a range, not only at its ends.
func TestAddressPoolRefusesSpecialAddressesInside(t *testing.T) {
	for _, r := range []string{
		"126.255.255.0-128.0.0.1", // spans 127.0.0.0/8
		"223.255.255.0-240.0.0.1", // spans 224.0.0.0/4
		"169.252.0.0/14",          // holds 169.254.0.0/16
		"fe7f::-fec0::",           // spans fe80::/10
	} {
		t.Run(r, func(t *testing.T) {
			err := AddressPool(&edgelbv1.AddressPool{Name: "p", Ranges: []string{r}}, DefaultLimits)
			if err == nil {
				t.Fatalf("pool %s accepted, but it holds addresses VIP() refuses", r)
			}
			wantInvalid(t, err, "pool.ranges[0]")
		})
	}
}

func TestHostPort(t *testing.T) {
	for _, ok := range []string{"10.0.0.1:7701", "[2001:db8::1]:7701", "edge-1:7700", "edge-1.example.com:1", "EDGE-1:65535", "[fe80::1%eth0]:7701"} {
		if err := HostPort("f", ok); err != nil {
			t.Errorf("HostPort(%q) = %v", ok, err)
		}
	}
	for _, tc := range []struct{ in, frag string }{
		{"", "not host:port"},
		{"10.0.0.1", "not host:port"},
		{":7701", "not host:port"},
		{"edge-1:", "not host:port"},
		{"10.0.0.1:0", "non-zero port"},
		{"edge-1:0", "no valid port"},
		{"edge-1:65536", "no valid port"},
		{"edge-1:+80", "no valid port"},
		{"edge-1:080", "no valid port"},
		{"edge-1:http", "no valid port"},
		{"edge_1:80", "no valid host"},
		{"2001:db8::1:80", "no valid host"},
		{"a b:80", "no valid host"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			wantInvalid(t, HostPort("member.raft_address", tc.in), "member.raft_address", tc.frag)
		})
	}
}

func TestMember(t *testing.T) {
	good := func() *edgelbv1.Member {
		return &edgelbv1.Member{Id: "edge-1", RaftAddress: "10.0.0.1:7701", ApiAddress: "10.0.0.1:7700", DataInterface: "eth0"}
	}
	if err := Member(good()); err != nil {
		t.Fatal(err)
	}
	wantInvalid(t, Member(nil), "member", "required")
	for _, tc := range []struct {
		change func(*edgelbv1.Member)
		field  string
	}{
		{func(m *edgelbv1.Member) { m.Id = "" }, "member.id"},
		{func(m *edgelbv1.Member) { m.RaftAddress = "10.0.0.1" }, "member.raft_address"},
		{func(m *edgelbv1.Member) { m.ApiAddress = "x:y" }, "member.api_address"},
		{func(m *edgelbv1.Member) { m.DataInterface = "a-very-long-interface" }, "member.data_interface"},
	} {
		m := good()
		tc.change(m)
		wantInvalid(t, Member(m), tc.field)
	}
}
