package cloudprovider

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/edgelb/edgelb/cloudprovider/config"
	"github.com/edgelb/edgelb/cloudprovider/lbclient"
	"github.com/edgelb/edgelb/cloudprovider/servicemap"
	"github.com/edgelb/edgelb/lbd/lbdtest"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

type env struct {
	c   *lbdtest.Cluster
	lb  *LoadBalancer
	ctx context.Context
	// vs reads lbd's state as an admin, whatever tenant the CCM is.
	vs edgelbv1.VirtualServiceServiceClient
}

// newEnv runs a real lbd with the pools the tests allocate from: a for
// cluster-a, b for cluster-b, v6 for everyone. The CCM connects as admin, so
// one provider can act for both clusters (a deployed CCM's cloud-provider
// certificate binds it to one tenant: TestInitCloudProviderAfterRegister
// runs so).
func newEnv(t *testing.T, cfgExtra string) *env {
	c := lbdtest.StartCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	admin := c.Admin(t)
	pools := edgelbv1.NewAddressPoolServiceClient(admin)
	for _, p := range []*edgelbv1.AddressPool{
		{Name: "a", Ranges: []string{"10.250.0.0/29"}, Tenants: []string{"cluster-a"}},
		{Name: "b", Ranges: []string{"10.251.0.0/24"}, Tenants: []string{"cluster-b"}},
		{Name: "v6", Ranges: []string{"2001:db8::/120"}},
	} {
		if _, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: p}); err != nil {
			t.Fatalf("creating pool %s: %v", p.Name, err)
		}
	}
	return newEnvOn(t, c, c.ClientFiles(t, "admin", "ccm"), cfgExtra)
}

// newEnvOn is a provider on lbd cluster c with the client certificate files.
func newEnvOn(t *testing.T, c *lbdtest.Cluster, f lbdtest.Files, cfgExtra string) *env {
	cfgText := fmt.Sprintf("endpoints: [%s]\ntls: {caFile: %s, certFile: %s, keyFile: %s}\n%s", strings.Join(c.Endpoints(), ", "), f.CA, f.Cert, f.Key, cfgExtra)
	cfg, err := config.Parse([]byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := lbclient.New(lbclient.Options{Endpoints: cfg.Endpoints, CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	lb, _ := New(cfg, cl).LoadBalancer()
	return &env{c: c, lb: lb.(*LoadBalancer), ctx: ctx, vs: edgelbv1.NewVirtualServiceServiceClient(c.Admin(t))}
}

// lookup is lbd's stored service, or nil when there is none.
func (e *env) lookup(t *testing.T, tenant, name string) *edgelbv1.VirtualService {
	t.Helper()
	r, err := e.vs.GetVirtualService(e.ctx, &edgelbv1.GetVirtualServiceRequest{Tenant: tenant, Name: name})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		t.Fatalf("reading %s/%s from lbd: %v", tenant, name, err)
	}
	return r.Service
}

// all lists every tenant's services.
func (e *env) all(t *testing.T) ([]*edgelbv1.VirtualService, error) {
	t.Helper()
	r, err := e.vs.ListVirtualServices(e.ctx, &edgelbv1.ListVirtualServicesRequest{})
	if err != nil {
		t.Fatalf("listing lbd's services: %v", err)
	}
	return r.Services, nil
}

// countWrites counts, from now until t ends, the calls that create or
// update a virtual service. (Deletes are not counted: the CCM deletes the
// VirtualService of a family the Service does not ask for on every sync,
// which changes nothing when there is none.)
func (e *env) countWrites(t *testing.T) *atomic.Int32 {
	var n atomic.Int32
	e.c.Inject(t, func(_ context.Context, method string) error {
		if strings.HasSuffix(method, "/CreateVirtualService") || strings.HasSuffix(method, "/UpdateVirtualService") {
			n.Add(1)
		}
		return nil
	})
	return &n
}

func service(uid string, ports ...int32) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "svc-" + uid, UID: types.UID(uid + "-0000-0000-0000-000000000000"), Annotations: map[string]string{}},
		Spec: v1.ServiceSpec{
			Type: v1.ServiceTypeLoadBalancer, IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
			ExternalTrafficPolicy: v1.ServiceExternalTrafficPolicyCluster,
		},
	}
	for i, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Protocol: v1.ProtocolTCP, Port: p, NodePort: 30000 + int32(i) + p})
	}
	return s
}

func nodes(addrs ...string) []*v1.Node {
	var out []*v1.Node
	for _, a := range addrs {
		out = append(out, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n-" + a},
			Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: a}}}})
	}
	return out
}

func backends(vs *edgelbv1.VirtualService) string {
	var s []string
	for _, b := range vs.GetBackends() {
		s = append(s, b.Address)
	}
	return strings.Join(s, ",")
}

func TestEnsureCreatesThenIsIdempotent(t *testing.T) {
	e := newEnv(t, "")
	s := service("aaaaaaaa", 80, 443)
	st, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.2", "10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Ingress) != 1 || st.Ingress[0].IP != "10.250.0.1" || *st.Ingress[0].IPMode != v1.LoadBalancerIPModeProxy { // nat: packets reach the node addressed to the node
		t.Fatalf("status = %+v", st)
	}
	vs := e.lookup(t, "cluster-a", servicemap.Name(s, v1.IPv4Protocol))
	if vs == nil || len(vs.Ports) != 2 || vs.Ports[1].BackendPort != 30444 || backends(vs) != "10.0.0.1,10.0.0.2" {
		t.Fatalf("stored = %v", vs)
	}
	writes := e.countWrites(t)
	for range 3 {
		if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.1", "10.0.0.2")); err != nil {
			t.Fatal(err)
		}
		if err := e.lb.UpdateLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.2", "10.0.0.1")); err != nil {
			t.Fatal(err)
		}
	}
	if n := writes.Load(); n != 0 {
		t.Fatalf("unchanged Service caused %d writes", n)
	}
	if now := e.lookup(t, "cluster-a", servicemap.Name(s, v1.IPv4Protocol)); now.GetGeneration() != vs.Generation {
		t.Fatalf("unchanged Service moved the generation from %d to %d", vs.Generation, now.GetGeneration())
	}
	st2, exists, err := e.lb.GetLoadBalancer(e.ctx, "cluster-a", s)
	if err != nil || !exists || st2.Ingress[0].IP != "10.250.0.1" {
		t.Fatalf("GetLoadBalancer = %v %v %v", st2, exists, err)
	}
}

func TestUpdateFollowsNodesAndPolicy(t *testing.T) {
	e := newEnv(t, "")
	s := service("bbbbbbbb", 80)
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	name := servicemap.Name(s, v1.IPv4Protocol)
	ns := nodes("10.0.0.1", "10.0.0.2", "10.0.0.3")
	if err := e.lb.UpdateLoadBalancer(e.ctx, "cluster-a", s, ns); err != nil {
		t.Fatal(err)
	}
	if got := backends(e.lookup(t, "cluster-a", name)); got != "10.0.0.1,10.0.0.2,10.0.0.3" {
		t.Fatalf("after add: %s", got)
	}
	ns[1].Labels = map[string]string{servicemap.LabelExcludeLB: "true"}
	if err := e.lb.UpdateLoadBalancer(e.ctx, "cluster-a", s, ns[:2]); err != nil {
		t.Fatal(err)
	}
	vs := e.lookup(t, "cluster-a", name)
	if got := backends(vs); got != "10.0.0.1" {
		t.Fatalf("after removing one and excluding one: %s", got)
	}
	if vs.Vip != "10.250.0.1" {
		t.Fatalf("VIP moved to %s on a node change", vs.Vip)
	}
	s.Spec.ExternalTrafficPolicy, s.Spec.HealthCheckNodePort = v1.ServiceExternalTrafficPolicyLocal, 31999
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, ns[:1]); err != nil {
		t.Fatal(err)
	}
	if hc := e.lookup(t, "cluster-a", name).HealthCheck; hc.Type != edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP || hc.Port != 31999 || hc.Path != "/healthz" {
		t.Fatalf("Local health check = %v", hc)
	}
}

func TestRefusedVIPSaysWhy(t *testing.T) {
	e := newEnv(t, "")
	s := service("cccccccc", 80)
	s.Spec.LoadBalancerIP = "10.251.0.7" // cluster-b's pool
	_, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.1"))
	if !IsRefusal(err) {
		t.Fatalf("err = %v, want a refusal", err)
	}
	for _, want := range []string{"10.251.0.7", "cluster-a", "spec.loadBalancerIP", "default/svc-cccccccc", "pending"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not mention %q", err, want)
		}
	}
	if _, exists, _ := e.lb.GetLoadBalancer(e.ctx, "cluster-a", s); exists {
		t.Error("a refused Service got a load balancer")
	}
}

func TestPoolExhausted(t *testing.T) {
	e := newEnv(t, "")
	var err error
	for i := range 8 { // pool a holds 10.250.0.1-7
		_, err = e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", service(strings.Repeat(string(rune('a'+i)), 8), 80), nodes("10.0.0.1"))
	}
	if !IsRefusal(err) || err.(*RefusalError).Code != codes.ResourceExhausted || !strings.Contains(err.Error(), "pool is full") {
		t.Fatalf("8th Service: err = %v, want pool exhausted", err)
	}
}

func TestSharedIP(t *testing.T) {
	e := newEnv(t, "")
	s1, s2, s3 := service("dddddddd", 80), service("eeeeeeee", 443), service("ffffffff", 80)
	for _, s := range []*v1.Service{s1, s2, s3} {
		s.Annotations[servicemap.AnnotationSharedIP] = "web"
	}
	st1, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s1, nodes("10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	s2.Spec.LoadBalancerIP = st1.Ingress[0].IP
	st2, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s2, nodes("10.0.0.1"))
	if err != nil || st2.Ingress[0].IP != st1.Ingress[0].IP {
		t.Fatalf("second Service: %v %v, want the shared %s", st2, err, st1.Ingress[0].IP)
	}
	s3.Spec.LoadBalancerIP = st1.Ingress[0].IP
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s3, nodes("10.0.0.1")); !IsRefusal(err) || !strings.Contains(err.Error(), "port") {
		t.Fatalf("port clash: err = %v", err)
	}
}

func TestTenantsAreSeparate(t *testing.T) {
	e := newEnv(t, "")
	s := service("abababab", 80)
	st, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	// The same Service UID in another cluster is another VirtualService.
	if _, exists, _ := e.lb.GetLoadBalancer(e.ctx, "cluster-b", s); exists {
		t.Fatal("cluster-b sees cluster-a's load balancer")
	}
	other := service("cdcdcdcd", 80)
	other.Spec.LoadBalancerIP = st.Ingress[0].IP
	other.Annotations[servicemap.AnnotationPool] = "a"
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-b", other, nodes("10.0.0.1")); !IsRefusal(err) {
		t.Fatalf("cluster-b took cluster-a's VIP: %v", err)
	}
	if err := e.lb.EnsureLoadBalancerDeleted(e.ctx, "cluster-b", s); err != nil {
		t.Fatal(err)
	}
	if e.lookup(t, "cluster-a", servicemap.Name(s, v1.IPv4Protocol)) == nil {
		t.Fatal("cluster-b deleted cluster-a's VirtualService")
	}
}

func TestDualStackAndDelete(t *testing.T) {
	e := newEnv(t, "")
	s := service("12121212", 53)
	s.Spec.Ports[0].Protocol = v1.ProtocolUDP
	s.Spec.IPFamilies = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}
	ns := nodes("10.0.0.1", "fd00::1")
	st, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Ingress) != 2 || st.Ingress[1].IP != "2001:db8::1" {
		t.Fatalf("status = %+v", st.Ingress)
	}
	if got := backends(e.lookup(t, "cluster-a", servicemap.Name(s, v1.IPv6Protocol))); got != "fd00::1" {
		t.Fatalf("IPv6 backends = %s", got)
	}
	// Back to single-stack: the IPv6 VIP is released.
	s.Spec.IPFamilies = s.Spec.IPFamilies[:1]
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, ns); err != nil {
		t.Fatal(err)
	}
	if e.lookup(t, "cluster-a", servicemap.Name(s, v1.IPv6Protocol)) != nil {
		t.Fatal("IPv6 VirtualService kept after the family was dropped")
	}
	for range 2 { // deleting twice is fine
		if err := e.lb.EnsureLoadBalancerDeleted(e.ctx, "cluster-a", s); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := e.all(t); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func TestConfiguredTenantAndBadClusterName(t *testing.T) {
	e := newEnv(t, "tenant: cluster-b")
	s := service("34343434", 80)
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "ignored-cluster-name", s, nil); err != nil {
		t.Fatal(err)
	}
	if e.lookup(t, "cluster-b", servicemap.Name(s, v1.IPv4Protocol)) == nil {
		t.Fatal("configured tenant not used")
	}
	e2 := newEnv(t, "")
	if _, err := e2.lb.EnsureLoadBalancer(e2.ctx, "Bad Name!", s, nil); err == nil || !strings.Contains(err.Error(), "--cluster-name") {
		t.Fatalf("err = %v", err)
	}
}

func TestInstancesV2(t *testing.T) {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "w1", Annotations: map[string]string{providedNodeIPAnnotation: "10.0.0.9"}}}
	md, err := Instances{}.InstanceMetadata(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	if md.ProviderID != "edgelb://w1" || len(md.NodeAddresses) != 2 || md.NodeAddresses[0].Address != "10.0.0.9" {
		t.Fatalf("metadata = %+v", md)
	}
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.8"}}
	n.Spec.ProviderID = "edgelb://kept"
	md, _ = Instances{}.InstanceMetadata(context.Background(), n)
	if md.ProviderID != "edgelb://kept" || md.NodeAddresses[0].Address != "10.0.0.8" {
		t.Fatalf("metadata = %+v", md)
	}
	if ok, _ := (Instances{}).InstanceExists(context.Background(), n); !ok {
		t.Fatal("node reported gone")
	}
}

func TestRequestedVIPChangeMovesIt(t *testing.T) {
	e := newEnv(t, "")
	s := service("56565656", 80)
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	s.Spec.LoadBalancerIP = "10.250.0.5"
	st, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.1"))
	if err != nil || st.Ingress[0].IP != "10.250.0.5" {
		t.Fatalf("status %v, err %v; want the requested 10.250.0.5", st, err)
	}
}

// staleGets answers NotFound to the first Get although the object exists, as
// when an earlier Create got through but its answer was lost.
type staleGets struct {
	VirtualServices
	n int
}

func (s *staleGets) Get(ctx context.Context, tenant, name string) (*edgelbv1.VirtualService, error) {
	if s.n++; s.n == 1 {
		return nil, status.Error(codes.NotFound, "stale")
	}
	return s.VirtualServices.Get(ctx, tenant, name)
}

func TestCreateAlreadyExistsMeansCompare(t *testing.T) {
	e := newEnv(t, "")
	s := service("78787878", 80)
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	lb := &LoadBalancer{cfg: e.lb.cfg, c: &staleGets{VirtualServices: e.lb.c}}
	st, err := lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.1", "10.0.0.2"))
	if err != nil || st.Ingress[0].IP != "10.250.0.1" {
		t.Fatalf("status %v, err %v", st, err)
	}
	if got := backends(e.lookup(t, "cluster-a", servicemap.Name(s, v1.IPv4Protocol))); got != "10.0.0.1,10.0.0.2" {
		t.Fatalf("backends %s: the existing VirtualService was not compared and updated", got)
	}
}

// lbd answers ResourceExhausted for three unrelated things; the Event must say
// which, decided by the ErrorInfo reason (the messages are lbd's own:
// lbd/auth, lbd/server, raft/fsm; the reasons are tested where lbd attaches them).
func TestResourceExhaustedSaysWhich(t *testing.T) {
	s := service("e1e1e1e1", 80)
	d := &edgelbv1.VirtualService{Tenant: "cluster-a", Name: "k8s-e1e1e1e1-ipv4", Pool: "a"}
	// As lbclient returns them: wrapped with what it was doing.
	wrapped := func(reason, msg string) error {
		return fmt.Errorf("creating virtual service cluster-a/k8s-e1e1e1e1-ipv4: %w", errinfo.New(codes.ResourceExhausted, reason, nil, msg))
	}
	for _, c := range []struct {
		name, reason, msg string
		refusal           bool
		want              []string
		not               []string
	}{
		{"pool full", errinfo.PoolExhausted, "no free IPv4 address in pools a open to tenant cluster-a; add a range to a pool or free a VIP",
			true, []string{"pool is full", "no free IPv4 address", "edgelb.io/address-pool"}, nil},
		{"tenant cap", errinfo.TenantServiceLimit, "tenant cluster-a already has 3 virtual services, the limit; delete unused ones or raise auth.maxServicesPerTenant",
			true, []string{"tenant cluster-a is at its limit", "auth.maxServicesPerTenant", "already has 3"}, []string{"pool is full"}},
		{"write rate", errinfo.RateLimited, "cloud-provider/cluster-a exceeds 500 writes/s; slow down and retry",
			false, []string{"rate-limiting", "500 writes/s", "retried"}, []string{"pool is full", "edgelb refused"}},
		{"something else", "", "grpc: received message larger than max",
			true, []string{"out of a resource", "larger than max"}, []string{"pool is full"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := (&LoadBalancer{}).refusal(context.Background(), s, d, wrapped(c.reason, c.msg))
			if IsRefusal(err) != c.refusal {
				t.Errorf("IsRefusal = %v, want %v (%v)", !c.refusal, c.refusal, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
			for _, w := range c.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("%q says %q", err, w)
				}
			}
		})
	}
}

// A full pool is recognised by its ErrorInfo reason, whatever the message says.
func TestPoolExhaustedByReason(t *testing.T) {
	s := service("e1e1e1e1", 80)
	d := &edgelbv1.VirtualService{Tenant: "cluster-a", Name: "k8s-e1e1e1e1-ipv4", Pool: "a"}
	err := (&LoadBalancer{}).refusal(context.Background(), s, d, fmt.Errorf("creating virtual service: %w",
		errinfo.New(codes.ResourceExhausted, errinfo.PoolExhausted, nil, "pool a has nothing left")))
	if !IsRefusal(err) || !strings.Contains(err.Error(), "pool is full") || !strings.Contains(err.Error(), "lbctl pool update") {
		t.Errorf("refusal by reason: %v", err)
	}
}

// A write-rate limit that passes is absorbed by the client's retries: the
// Service gets its VIP on the first sync, so the controller records no Event.
func TestRateLimitIsRetriedWithoutError(t *testing.T) {
	e := newEnv(t, "")
	// lbd's limiter answers so when an identity writes faster than
	// auth.writeRate; injected here, where waiting for it would be slow.
	e.c.Inject(t, lbdtest.FailNext(2, "/edgelb.v1.VirtualServiceService/",
		errinfo.Retry(codes.ResourceExhausted, errinfo.RateLimited, nil, 10*time.Millisecond, "cloud-provider/cluster-a exceeds 500 writes/s; slow down and retry")))
	st, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", service("e2e2e2e2", 80), nodes("10.0.0.1"))
	if err != nil {
		t.Fatalf("EnsureLoadBalancer under a passing rate limit: %v", err)
	}
	if len(st.Ingress) != 1 {
		t.Fatalf("ingress %v", st.Ingress)
	}
}

// A ResourceExhausted without a reason (an lbd older than the reasons, or
// gRPC's own message-size limit) is never taken for a rate limit or a full
// pool, whatever its words: the CCM decides by reason only.
func TestResourceExhaustedWithoutReason(t *testing.T) {
	s := service("e1e1e1e1", 80)
	d := &edgelbv1.VirtualService{Tenant: "cluster-a", Name: "k8s-e1e1e1e1-ipv4", Pool: "a"}
	err := (&LoadBalancer{}).refusal(context.Background(), s, d, status.Error(codes.ResourceExhausted, "cloud-provider/a exceeds 500 writes/s; slow down and retry; no free IPv4 address"))
	if !IsRefusal(err) || !strings.Contains(err.Error(), "out of a resource") {
		t.Errorf("refusal without a reason: %v", err)
	}
}

// A VIP conflict names the Kubernetes Service that holds the address, not
// lbd's tenant/k8s-<uid> key, for both kinds of conflict.
func TestConflictNamesTheKubernetesService(t *testing.T) {
	e := newEnv(t, "")
	holder := service("c4c4c4c4", 80)
	holder.Name = "c4-a"
	holder.Annotations[servicemap.AnnotationSharedIP] = "web"
	st, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", holder, nodes("10.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	vip := st.Ingress[0].IP
	for name, tc := range map[string]struct {
		key  string
		port int32
		want string
	}{
		"no sharing key":  {"", 443, "VIP " + vip + " is in use by Service default/c4-a"},
		"same key, clash": {"web", 80, "port 80/TCP is already used on it by Service default/c4-a"},
	} {
		s := service("c5c5c5c5", tc.port)
		s.Spec.LoadBalancerIP = vip
		if tc.key != "" {
			s.Annotations[servicemap.AnnotationSharedIP] = tc.key
		}
		_, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", s, nodes("10.0.0.1"))
		if !IsRefusal(err) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "k8s-c4c4c4c4") {
			t.Errorf("%s: %v; want it to say %q and not lbd's name", name, err, tc.want)
		}
	}
}

// A network or broadcast address is said to be one (lbd's ErrorInfo reason
// RESERVED_ADDRESS), not "not in any address pool".
func TestReservedAddressSaysSo(t *testing.T) {
	s := service("e2e2e2e2", 80)
	s.Spec.LoadBalancerIP = "10.250.0.255"
	d := &edgelbv1.VirtualService{Tenant: "cluster-a", Name: "k8s-e2e2e2e2-ipv4", Vip: "10.250.0.255"}
	lbdErr := errinfo.New(codes.FailedPrecondition, errinfo.ReservedAddress,
		map[string]string{"vip": "10.250.0.255", "pool": "a", "range": "10.250.0.0/24", "kind": "broadcast address"}, "reworded at will")
	err := (&LoadBalancer{}).refusal(context.Background(), s, d, fmt.Errorf("creating virtual service: %w", lbdErr))
	for _, want := range []string{"10.250.0.255 is the broadcast address of 10.250.0.0/24 in address pool a", "request another address of the pool", "default/svc-e2e2e2e2"} {
		if !IsRefusal(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want it to say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "may use") {
		t.Errorf("%v: a reserved address is no permission problem", err)
	}
}

// lbd's INVALID_FIELD names its own field; the refusal adds the Service's.
func TestInvalidFieldNamesTheServiceField(t *testing.T) {
	s := service("e3e3e3e3", 80)
	d := &edgelbv1.VirtualService{Tenant: "cluster-a", Name: "k8s-e3e3e3e3-ipv4"}
	lbdErr := errinfo.New(codes.InvalidArgument, "INVALID_FIELD", map[string]string{"field": "service.sharing_key"}, "service.sharing_key: is longer than 253 characters")
	err := (&LoadBalancer{}).refusal(context.Background(), s, d, lbdErr)
	if !IsRefusal(err) || !strings.Contains(err.Error(), "Service field: annotation "+servicemap.AnnotationSharedIP) {
		t.Errorf("%v: want the annotation named", err)
	}
}
