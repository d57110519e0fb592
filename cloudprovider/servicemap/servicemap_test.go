package servicemap

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgelb/edgelb/cloudprovider/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func cfg(t *testing.T) *config.Resolved {
	r, err := config.Parse([]byte("endpoints: [127.0.0.1:1]\ndefaultPool: main"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func svc() *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "0D7A5B2C-1111-2222-3333-444455556666", Annotations: map[string]string{}},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeLoadBalancer,
			Ports: []v1.ServicePort{
				{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, NodePort: 30080},
				{Name: "dns", Protocol: v1.ProtocolUDP, Port: 53, NodePort: 30053},
				{Name: "sig", Protocol: v1.ProtocolSCTP, Port: 3868, NodePort: 30868},
			},
			IPFamilies:            []v1.IPFamily{v1.IPv4Protocol},
			ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyCluster,
		},
	}
}

func node(name string, labels map[string]string, addrs ...string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	for _, a := range addrs {
		typ := v1.NodeInternalIP
		if strings.HasPrefix(a, "ext:") {
			typ, a = v1.NodeExternalIP, strings.TrimPrefix(a, "ext:")
		}
		n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: typ, Address: a})
	}
	return n
}

func TestDesiredBasic(t *testing.T) {
	nodes := []*v1.Node{
		node("n2", nil, "10.0.0.2", "fd00::2"),
		node("n1", nil, "10.0.0.1"),
		node("n3", map[string]string{LabelExcludeLB: ""}, "10.0.0.3"),
		node("n4", nil, "ext:192.0.2.4"),
		node("n5", nil, "10.0.0.1"), // duplicate address
	}
	vss, err := Desired(cfg(t), "c1", svc(), nodes)
	if err != nil {
		t.Fatal(err)
	}
	if len(vss) != 1 {
		t.Fatalf("want one VirtualService, got %d", len(vss))
	}
	vs := vss[0]
	if vs.Name != "k8s-0d7a5b2c-1111-2222-3333-444455556666-ipv4" || vs.Tenant != "c1" || vs.Pool != "main" || vs.Vip != "" {
		t.Errorf("identity: %v", vs)
	}
	wantPorts := []*edgelbv1.Port{
		{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080, Name: "http"},
		{Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: 53, BackendPort: 30053, Name: "dns"},
		{Protocol: edgelbv1.Protocol_PROTOCOL_SCTP, Port: 3868, BackendPort: 30868, Name: "sig"},
	}
	for i, p := range wantPorts {
		if !proto.Equal(p, vs.Ports[i]) {
			t.Errorf("port %d = %v, want %v", i, vs.Ports[i], p)
		}
	}
	var addrs []string
	for _, b := range vs.Backends {
		addrs = append(addrs, b.Address)
	}
	if got := strings.Join(addrs, ","); got != "10.0.0.1,10.0.0.2,192.0.2.4" {
		t.Errorf("backends = %s", got)
	}
	hc := vs.HealthCheck
	if hc.Type != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP || hc.Port != 30080 {
		t.Errorf("Cluster policy health check = %v, want TCP on the first TCP NodePort", hc)
	}
	if vs.Labels[LabelNamespace] != "shop" || vs.Labels[LabelName] != "web" || vs.Labels[LabelUID] != string(svc().UID) {
		t.Errorf("labels = %v", vs.Labels)
	}
	if vs.Persistence != nil || vs.SourceRanges != nil || vs.SharingKey != "" {
		t.Errorf("unexpected options: %v", vs)
	}
}

func TestDesiredOptions(t *testing.T) {
	s := svc()
	s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	s.Spec.HealthCheckNodePort = 32000
	s.Spec.SessionAffinity = v1.ServiceAffinityClientIP
	to := int32(600)
	s.Spec.SessionAffinityConfig = &v1.SessionAffinityConfig{ClientIP: &v1.ClientIPConfig{TimeoutSeconds: &to}}
	s.Spec.LoadBalancerSourceRanges = []string{"203.0.113.7/24", "2001:db8::/32"}
	s.Spec.IPFamilies = []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}
	s.Annotations[AnnotationIPs] = "10.250.0.9, 2001:db8::9"
	s.Annotations[AnnotationSharedIP] = "team-a"
	s.Annotations[AnnotationPool] = "other"
	vss, err := Desired(cfg(t), "c1", s, []*v1.Node{node("n1", nil, "10.0.0.1", "fd00::1")})
	if err != nil {
		t.Fatal(err)
	}
	if len(vss) != 2 || vss[0].IpFamily != edgelbv1.IPFamily_IP_FAMILY_IPV6 || vss[1].IpFamily != edgelbv1.IPFamily_IP_FAMILY_IPV4 {
		t.Fatalf("want an IPv6 then an IPv4 VirtualService, got %v", vss)
	}
	v6, v4 := vss[0], vss[1]
	if v6.Vip != "2001:db8::9" || v4.Vip != "10.250.0.9" || v4.Pool != "other" || v4.SharingKey != "team-a" {
		t.Errorf("addresses: %v / %v", v6, v4)
	}
	if v6.Backends[0].Address != "fd00::1" || v4.Backends[0].Address != "10.0.0.1" {
		t.Errorf("backends by family: %v / %v", v6.Backends, v4.Backends)
	}
	if v4.SourceRanges[0] != "203.0.113.0/24" || v6.SourceRanges[0] != "2001:db8::/32" || len(v4.SourceRanges) != 1 {
		t.Errorf("source ranges: %v / %v", v4.SourceRanges, v6.SourceRanges)
	}
	if v4.Persistence.GetTimeoutSeconds() != 600 {
		t.Errorf("persistence = %v", v4.Persistence)
	}
	hc := v4.HealthCheck
	if hc.Type != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP || hc.Port != 32000 || hc.Path != "/healthz" {
		t.Errorf("Local policy health check = %v", hc)
	}
	if v4.Name == v6.Name {
		t.Error("families share a name")
	}
}

// Issue 23: each family gets its own ranges; a family the ranges leave out
// is denied, never opened, and the other family's VIP is still restricted
// (not refused along with it). No ranges at all leave both open.
func TestDesiredSourceRangesPerFamilyFailClosed(t *testing.T) {
	dual := func(ranges ...string) (v4, v6 *edgelbv1.VirtualService) {
		t.Helper()
		s := svc()
		s.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
		s.Spec.LoadBalancerSourceRanges = ranges
		vss, err := Desired(cfg(t), "c1", s, []*v1.Node{node("n1", nil, "10.0.0.1", "fd00::1")})
		if err != nil {
			t.Fatalf("ranges %v: %v", ranges, err)
		}
		return vss[0], vss[1]
	}
	v4, v6 := dual("203.0.113.0/24")
	if !slices.Equal(v4.SourceRanges, []string{"203.0.113.0/24"}) || v4.DenyAllSources {
		t.Errorf("IPv4 VIP: ranges %v deny-all %v; want restricted to 203.0.113.0/24", v4.SourceRanges, v4.DenyAllSources)
	}
	if len(v6.SourceRanges) != 0 || !v6.DenyAllSources {
		t.Errorf("IPv6 VIP: ranges %v deny-all %v; want every client denied", v6.SourceRanges, v6.DenyAllSources)
	}
	v4, v6 = dual("2001:db8::/32")
	if !v4.DenyAllSources || len(v4.SourceRanges) != 0 || v6.DenyAllSources || !slices.Equal(v6.SourceRanges, []string{"2001:db8::/32"}) {
		t.Errorf("IPv6 range only: %v/%v, %v/%v; want IPv4 denied, IPv6 restricted", v4.SourceRanges, v4.DenyAllSources, v6.SourceRanges, v6.DenyAllSources)
	}
	v4, v6 = dual()
	if v4.DenyAllSources || v6.DenyAllSources || v4.SourceRanges != nil || v6.SourceRanges != nil {
		t.Errorf("no ranges: %v / %v; want both open", v4, v6)
	}
	// The annotation form is read the same way, single-stack too.
	s := svc()
	s.Annotations[v1.AnnotationLoadBalancerSourceRangesKey] = "2001:db8::/32"
	vss, err := Desired(cfg(t), "c1", s, nil)
	if err != nil || !vss[0].DenyAllSources {
		t.Errorf("IPv4 Service with an IPv6 range annotation: %v, %v; want it denied", vss, err)
	}
	// Going from denied to allowed is a change the CCM writes.
	v4, _ = dual("203.0.113.0/24", "2001:db8::/32")
	if Equal(v4, func() *edgelbv1.VirtualService { x, _ := dual("2001:db8::/32"); return x }()) {
		t.Error("a denied VIP compares equal to a restricted one")
	}
}

func TestDesiredRequestedVIPWithoutPoolAnnotationNamesNoPool(t *testing.T) {
	s := svc()
	s.Spec.LoadBalancerIP = "10.250.0.5"
	vss, err := Desired(cfg(t), "c1", s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if vss[0].Vip != "10.250.0.5" || vss[0].Pool != "" {
		t.Errorf("got vip %q pool %q", vss[0].Vip, vss[0].Pool)
	}
}

func TestDesiredUDPOnlyChecksKubeProxy(t *testing.T) {
	s := svc()
	s.Spec.Ports = s.Spec.Ports[1:2]
	vss, err := Desired(cfg(t), "c1", s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hc := vss[0].HealthCheck; hc.Type != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP || hc.Port != 10256 {
		t.Errorf("health check = %v, want kube-proxy /healthz", hc)
	}
}

// Issue 23: an SCTP-only Cluster Service is checked with an SCTP
// association of its SCTP NodePort; a Local one keeps healthCheckNodePort.
func TestDesiredSCTPOnlyChecksSCTP(t *testing.T) {
	s := svc()
	s.Spec.Ports = s.Spec.Ports[1:3] // UDP and SCTP
	vss, err := Desired(cfg(t), "c1", s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hc := vss[0].HealthCheck; hc.Type != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_SCTP || hc.Port != 30868 || hc.Path != "" {
		t.Errorf("health check = %v, want an SCTP association with NodePort 30868", hc)
	}
	s.Spec.ExternalTrafficPolicy, s.Spec.HealthCheckNodePort = v1.ServiceExternalTrafficPolicyLocal, 32000
	vss, _ = Desired(cfg(t), "c1", s, nil)
	if hc := vss[0].HealthCheck; hc.Type != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP || hc.Port != 32000 {
		t.Errorf("Local: health check = %v, want healthCheckNodePort", hc)
	}
}

func TestDesiredErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		mod  func(*v1.Service)
		want string
	}{
		"no nodePort":       {func(s *v1.Service) { s.Spec.Ports[0].NodePort = 0 }, "allocateLoadBalancerNodePorts"},
		"bad ip":            {func(s *v1.Service) { s.Spec.LoadBalancerIP = "10.0.0.300" }, "not an IP"},
		"wrong family":      {func(s *v1.Service) { s.Annotations[AnnotationIPs] = "2001:db8::1" }, "ipFamilies"},
		"two of one family": {func(s *v1.Service) { s.Annotations[AnnotationIPs] = "10.0.0.1,10.0.0.2" }, "at most one per family"},
		"bad pool":          {func(s *v1.Service) { s.Annotations[AnnotationPool] = "No Pool" }, "pool name"},
		"bad range":         {func(s *v1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"nope"} }, "CIDR"},
		"annotation and loadBalancerIP both": {func(s *v1.Service) {
			s.Annotations[AnnotationIPs] = "10.250.0.1"
			s.Spec.LoadBalancerIP = "10.250.0.1" // even when they agree: one source of truth
		}, "both annotation " + AnnotationIPs},
		"sharing key too long":     {func(s *v1.Service) { s.Annotations[AnnotationSharedIP] = strings.Repeat("k", 254) }, "annotation " + AnnotationSharedIP + " is 254 characters long"},
		"sharing key control char": {func(s *v1.Service) { s.Annotations[AnnotationSharedIP] = "a\x01b" }, "annotation " + AnnotationSharedIP},
		"bad ip-mode":              {func(s *v1.Service) { s.Annotations[AnnotationIPMode] = "proxy" }, AnnotationIPMode},
	} {
		s := svc()
		tc.mod(s)
		if _, err := Desired(cfg(t), "c1", s, nil); err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "service.sharing_key") {
			t.Errorf("%s: err = %v, want it to mention %q (and no lbd field)", name, err, tc.want)
		}
	}
}

func TestEqualIgnoresServerDefaults(t *testing.T) {
	vss, err := Desired(cfg(t), "c1", svc(), []*v1.Node{node("n1", nil, "10.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	d := vss[0]
	stored := proto.Clone(d).(*edgelbv1.VirtualService)
	stored.Vip, stored.Generation, stored.Owner = "10.250.0.1", 7, "lb-1"
	stored.Scheduler = edgelbv1.Scheduler_SCHEDULER_MH
	stored.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
	stored.Backends[0].Health = &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY}
	if !Equal(d, stored) {
		t.Fatal("stored copy with server defaults should equal desired")
	}
	stored.Backends = nil
	if Equal(d, stored) {
		t.Fatal("a lost backend must be seen as a difference")
	}
	d2 := proto.Clone(d).(*edgelbv1.VirtualService)
	d2.Pool = "elsewhere"
	stored = proto.Clone(d).(*edgelbv1.VirtualService)
	stored.Vip = "10.250.0.1"
	if Equal(d2, stored) {
		t.Fatal("a changed pool must be seen as a difference")
	}
}

func TestIngressIPMode(t *testing.T) {
	nat, dr := edgelbv1.ForwardingMode_FORWARDING_MODE_NAT, edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	for name, tc := range map[string]struct {
		annotation string
		mode       edgelbv1.ForwardingMode
		want       v1.LoadBalancerIPMode
	}{
		"nat: packets reach the node addressed to the node": {"", nat, v1.LoadBalancerIPModeProxy},
		"unspecified is lbd's default, nat":                 {"", edgelbv1.ForwardingMode_FORWARDING_MODE_UNSPECIFIED, v1.LoadBalancerIPModeProxy},
		"dr: packets reach the node addressed to the VIP":   {"", dr, v1.LoadBalancerIPModeVIP},
		"annotation VIP overrides nat":                      {"VIP", nat, v1.LoadBalancerIPModeVIP},
		"annotation Proxy overrides dr":                     {"Proxy", dr, v1.LoadBalancerIPModeProxy},
	} {
		s := svc()
		if tc.annotation != "" {
			s.Annotations[AnnotationIPMode] = tc.annotation
		}
		st := Ingress(s, []*edgelbv1.VirtualService{{Vip: "10.0.0.1", ForwardingMode: tc.mode}, {Vip: "10.0.0.1", ForwardingMode: tc.mode}, {Vip: "2001:db8::1", ForwardingMode: tc.mode}})
		if len(st.Ingress) != 2 || st.Ingress[0].IP != "10.0.0.1" || *st.Ingress[0].IPMode != tc.want || *st.Ingress[1].IPMode != tc.want {
			t.Errorf("%s: ingress = %+v, want ipMode %s", name, st.Ingress, tc.want)
		}
	}
}

func TestExcludeLabelReadAsUpstream(t *testing.T) {
	// The rule of k8s.io/cloud-provider's nodeIncludedPredicate: a bool, and
	// anything that is not one excludes.
	for v, excluded := range map[string]bool{"false": false, "False": false, "0": false, "f": false,
		"true": true, "True": true, "1": true, "": true, "yes": true, "no": true} {
		n := node("n", map[string]string{LabelExcludeLB: v}, "10.0.0.1")
		if Excluded(n) != excluded {
			t.Errorf("label %q: excluded = %v, want %v", v, !excluded, excluded)
		}
		if got := len(Backends([]*v1.Node{n}, false)); got != map[bool]int{true: 0, false: 1}[excluded] {
			t.Errorf("label %q: %d backends", v, got)
		}
	}
	if Excluded(node("n", nil, "10.0.0.1")) {
		t.Error("a node without the label is excluded")
	}
}

func TestEmptyPoolAnnotationIsUnset(t *testing.T) {
	for _, v := range []string{"", "  "} {
		s := svc()
		s.Annotations[AnnotationPool] = v
		vss, err := Desired(cfg(t), "c1", s, nil)
		if err != nil || vss[0].Pool != "main" {
			t.Errorf("pool annotation %q: %v, %v; want the default pool", v, vss, err)
		}
		s.Spec.LoadBalancerIP = "10.250.0.5"
		// A requested VIP without a pool may come from any pool: the empty
		// annotation must not pin it to the default one.
		if vss, err := Desired(cfg(t), "c1", s, nil); err != nil || vss[0].Pool != "" {
			t.Errorf("pool annotation %q with a VIP: %v, %v; want no pool", v, vss, err)
		}
	}
}

// Issue 23: externalTrafficPolicy: Local keeps the client's address through
// dr where the cloud-config says dr is possible; the annotation overrides
// both ways; dr keeps the Service's port (no NodePort needed) and still
// probes healthCheckNodePort; ipMode follows the mode unless overridden.
func TestForwardingMode(t *testing.T) {
	drCfg, err := config.Parse([]byte("endpoints: [127.0.0.1:1]\ndirectRouting: true"))
	if err != nil {
		t.Fatal(err)
	}
	local := func(ann string) *v1.Service {
		s := svc()
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		s.Spec.HealthCheckNodePort = 32100
		if ann != "" {
			s.Annotations[AnnotationForwarding] = ann
		}
		return s
	}
	cluster := func(ann string) *v1.Service {
		s := local(ann)
		s.Spec.ExternalTrafficPolicy, s.Spec.HealthCheckNodePort = v1.ServiceExternalTrafficPolicyCluster, 0
		return s
	}
	const nat, dr = edgelbv1.ForwardingMode_FORWARDING_MODE_NAT, edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	for name, tc := range map[string]struct {
		cfg  *config.Resolved
		svc  *v1.Service
		want edgelbv1.ForwardingMode
	}{
		"Local, dr off (default)":  {cfg(t), local(""), nat},
		"Local, dr possible":       {drCfg, local(""), dr},
		"Cluster, dr possible":     {drCfg, cluster(""), nat},
		"Local, annotation nat":    {drCfg, local("nat"), nat},
		"Cluster, annotation dr":   {cfg(t), cluster("dr"), dr},
		"Local, dr off, annotated": {cfg(t), local(" dr "), dr},
	} {
		vss, err := Desired(tc.cfg, "c1", tc.svc, []*v1.Node{node("n1", nil, "10.0.0.1")})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		vs := vss[0]
		if vs.ForwardingMode != tc.want {
			t.Errorf("%s: mode %v, want %v", name, vs.ForwardingMode, tc.want)
			continue
		}
		wantIP := v1.LoadBalancerIPModeProxy
		if tc.want == dr {
			wantIP = v1.LoadBalancerIPModeVIP
			for _, p := range vs.Ports {
				if p.BackendPort != p.Port {
					t.Errorf("%s: dr port %d → %d; dr cannot change the port", name, p.Port, p.BackendPort)
				}
			}
		} else if vs.Ports[0].BackendPort != 30080 {
			t.Errorf("%s: nat port 80 → %d, want the NodePort 30080", name, vs.Ports[0].BackendPort)
		}
		if tc.svc.Spec.HealthCheckNodePort != 0 && vs.HealthCheck.Port != 32100 {
			t.Errorf("%s: health check %v, want healthCheckNodePort 32100", name, vs.HealthCheck)
		}
		vs.Vip = "10.0.0.9"
		if m := *Ingress(tc.svc, vss).Ingress[0].IPMode; m != wantIP {
			t.Errorf("%s: ipMode %s, want %s", name, m, wantIP)
		}
	}
	// dr needs no NodePort (allocateLoadBalancerNodePorts: false).
	s := local("")
	for i := range s.Spec.Ports {
		s.Spec.Ports[i].NodePort = 0
	}
	if _, err := Desired(drCfg, "c1", s, nil); err != nil {
		t.Errorf("dr without NodePorts: %v", err)
	}
	// The ipMode override is kept in dr.
	s = local("")
	s.Annotations[AnnotationIPMode] = "Proxy"
	vss, _ := Desired(drCfg, "c1", s, nil)
	vss[0].Vip = "10.0.0.9"
	if m := *Ingress(s, vss).Ingress[0].IPMode; m != v1.LoadBalancerIPModeProxy {
		t.Errorf("ipMode override in dr: %s", m)
	}
	// A bad value is refused, naming the annotation, before anything is written.
	for _, bad := range []string{"DR", "direct", "nat,dr"} {
		if _, err := Desired(drCfg, "c1", local(bad), nil); err == nil || !strings.Contains(err.Error(), AnnotationForwarding) {
			t.Errorf("annotation %q: err %v, want a refusal naming %s", bad, err, AnnotationForwarding)
		}
	}
}

// A VIP that goes to a bgp pool is served by every edge at once: lbd takes
// only mh and dr there, so they are chosen (ports map to the Service's own,
// as dr needs), however the pool is known: the default pool, the annotated
// one, the pool of a requested VIP, or every pool an allocation could come
// from. An annotated nat is kept, for lbd to refuse visibly; an l2 pool, or
// a mix lbd could allocate from, keeps the l2 choice (nat here).
func TestDesiredInBGPPool(t *testing.T) {
	bgp := func(name, rng string, tenants ...string) *edgelbv1.AddressPool {
		return &edgelbv1.AddressPool{Name: name, Ranges: []string{rng}, Tenants: tenants, AnnounceMode: edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP}
	}
	l2 := func(name, rng string) *edgelbv1.AddressPool {
		return &edgelbv1.AddressPool{Name: name, Ranges: []string{rng}}
	}
	manual := l2("manual", "203.0.113.0/28")
	manual.Manual = true
	noDefault, err := config.Parse([]byte("endpoints: [127.0.0.1:1]"))
	if err != nil {
		t.Fatal(err)
	}
	const (
		mh    = edgelbv1.Scheduler_SCHEDULER_MH
		unset = edgelbv1.Scheduler_SCHEDULER_UNSPECIFIED
		nat   = edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
		dr    = edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	)
	for _, c := range []struct {
		what   string
		cfg    *config.Resolved
		pools  []*edgelbv1.AddressPool
		annot  map[string]string
		sched  edgelbv1.Scheduler
		mode   edgelbv1.ForwardingMode
		toPort uint32 // backend port of the Service's port 80
	}{
		{"default pool is bgp", cfg(t), []*edgelbv1.AddressPool{bgp("main", "198.51.100.0/28")}, nil, mh, dr, 80},
		{"default pool is l2", cfg(t), []*edgelbv1.AddressPool{l2("main", "192.0.2.0/28"), bgp("rack", "198.51.100.0/28")}, nil, unset, nat, 30080},
		{"annotated bgp pool", cfg(t), []*edgelbv1.AddressPool{l2("main", "192.0.2.0/28"), bgp("rack", "198.51.100.0/28")},
			map[string]string{AnnotationPool: "rack"}, mh, dr, 80},
		{"requested VIP of a bgp pool", cfg(t), []*edgelbv1.AddressPool{l2("main", "192.0.2.0/28"), bgp("rack", "198.51.100.0/28")},
			map[string]string{AnnotationIPs: "198.51.100.7"}, mh, dr, 80},
		{"requested VIP of an l2 pool", cfg(t), []*edgelbv1.AddressPool{l2("main", "192.0.2.0/28"), bgp("rack", "198.51.100.0/28")},
			map[string]string{AnnotationIPs: "192.0.2.7"}, unset, nat, 30080},
		{"allocation: every candidate bgp", noDefault, []*edgelbv1.AddressPool{bgp("rack", "198.51.100.0/28"), manual, bgp("other", "100.64.0.0/28", "someone-else"), l2("six", "2001:db8::/120")}, nil, mh, dr, 80},
		{"allocation: l2 and bgp candidates", noDefault, []*edgelbv1.AddressPool{bgp("rack", "198.51.100.0/28"), l2("lan", "192.0.2.0/28")}, nil, unset, nat, 30080},
		{"allocation: no pools known", noDefault, nil, nil, unset, nat, 30080},
		{"annotated nat in a bgp pool is kept", cfg(t), []*edgelbv1.AddressPool{bgp("main", "198.51.100.0/28")},
			map[string]string{AnnotationForwarding: "nat"}, mh, nat, 30080},
	} {
		s := svc()
		for k, v := range c.annot {
			s.Annotations[k] = v
		}
		vss, err := DesiredIn(c.cfg, "c1", s, nil, c.pools)
		if err != nil {
			t.Errorf("%s: %v", c.what, err)
			continue
		}
		vs := vss[0]
		if vs.Scheduler != c.sched || vs.ForwardingMode != c.mode || vs.Ports[0].Port != 80 || vs.Ports[0].BackendPort != c.toPort {
			t.Errorf("%s: %v/%v, port 80 to %d; want %v/%v to %d", c.what, vs.Scheduler, vs.ForwardingMode, vs.Ports[0].BackendPort, c.sched, c.mode, c.toPort)
		}
	}
	// Desired knows no pools: as before.
	vss, err := Desired(cfg(t), "c1", svc(), nil)
	if err != nil || vss[0].ForwardingMode != nat || vss[0].Scheduler != unset {
		t.Errorf("Desired: %v %v", vss, err)
	}
}
