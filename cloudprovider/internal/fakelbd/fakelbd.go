// Package fakelbd is an in-memory VirtualServiceService for tests: it follows
// lbd's rules that the provider depends on (tenant scoping, pools open to
// tenants, VIP sharing by key on distinct ports, generations, defaults) and
// serves them over real gRPC on 127.0.0.1.
package fakelbd

import (
	"cmp"
	"context"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// Pool is an address pool: a prefix, open to Tenants (empty: everyone).
type Pool struct {
	Name    string
	Prefix  netip.Prefix
	Tenants []string
}

// Server is the fake.
type Server struct {
	edgelbv1.UnimplementedVirtualServiceServiceServer
	mu     sync.Mutex
	pools  []Pool
	vss    map[string]*edgelbv1.VirtualService
	Writes int // creates, updates and deletes that changed something
	// FailNext makes the next n calls fail with Unavailable (a member going away).
	FailNext int
	// FailWith is the error of those calls (nil: Unavailable).
	FailWith error
	Calls    int
	// isolated is what GetMemberStatus reports as each member's
	// isolated_services ("tenant/name: why").
	isolated map[string][]string
}

// New returns a fake with the given pools.
func New(pools ...Pool) *Server {
	return &Server{pools: pools, vss: map[string]*edgelbv1.VirtualService{}}
}

// Start serves s on 127.0.0.1:0 until the test ends and returns the address.
func Start(t testing.TB, s *Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go Serve(lis, s)
	t.Cleanup(func() { lis.Close() })
	return lis.Addr().String()
}

func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, "/edgelb.v1.ClusterService/") {
		// Not counted and never failed: Counts and FailNext describe the
		// virtual-service and pool calls the tests are about; the
		// member-status read after a sync is advisory.
		return h(ctx, req)
	}
	s.mu.Lock()
	s.Calls++
	if s.FailNext > 0 {
		s.FailNext--
		err := s.FailWith
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return nil, status.Error(codes.Unavailable, "fake: member unavailable")
	}
	s.mu.Unlock()
	return h(ctx, req)
}

// Counts returns how many calls were served and how many of them changed something.
func (s *Server) Counts() (calls, writes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Calls, s.Writes
}

// SetFailNext makes the next n calls fail with Unavailable.
func (s *Server) SetFailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.FailNext, s.FailWith = n, nil
}

// SetFailNextWith makes the next n calls fail with err (a gRPC status error,
// e.g. lbd's write-rate limit).
func (s *Server) SetFailNextWith(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.FailNext, s.FailWith = n, err
}

// All returns copies of every stored service, sorted by tenant/name.
func (s *Server) All() []*edgelbv1.VirtualService {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*edgelbv1.VirtualService
	for _, v := range s.vss {
		out = append(out, proto.Clone(v).(*edgelbv1.VirtualService))
	}
	sort.Slice(out, func(i, j int) bool { return key(out[i].Tenant, out[i].Name) < key(out[j].Tenant, out[j].Name) })
	return out
}

// Lookup returns a copy of one service, or nil.
func (s *Server) Lookup(tenant, name string) *edgelbv1.VirtualService {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.vss[key(tenant, name)]; ok {
		return proto.Clone(v).(*edgelbv1.VirtualService)
	}
	return nil
}

func key(t, n string) string { return t + "/" + n }

func defaults(v *edgelbv1.VirtualService) {
	if v.Scheduler == 0 {
		v.Scheduler = edgelbv1.Scheduler_SCHEDULER_MH
	}
	if v.ForwardingMode == 0 {
		v.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
	}
	for _, b := range v.Backends {
		if b.Weight == 0 {
			b.Weight = 1
		}
	}
	v.Owner, v.Generation = "", 0
}

func (s *Server) CreateVirtualService(_ context.Context, r *edgelbv1.CreateVirtualServiceRequest) (*edgelbv1.CreateVirtualServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := proto.Clone(r.Service).(*edgelbv1.VirtualService)
	if v.Name == "" || len(v.Ports) == 0 {
		return nil, status.Error(codes.InvalidArgument, "service.name and ports are required")
	}
	if _, ok := s.vss[key(v.Tenant, v.Name)]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "virtual service %s already exists", key(v.Tenant, v.Name))
	}
	defaults(v)
	if err := s.place(v, nil); err != nil {
		return nil, err
	}
	v.Generation, v.Owner = 1, "fake-1"
	s.vss[key(v.Tenant, v.Name)] = v
	s.Writes++
	return &edgelbv1.CreateVirtualServiceResponse{Service: proto.Clone(v).(*edgelbv1.VirtualService)}, nil
}

func (s *Server) GetVirtualService(_ context.Context, r *edgelbv1.GetVirtualServiceRequest) (*edgelbv1.GetVirtualServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.vss[key(r.Tenant, r.Name)]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "virtual service %s not found", key(r.Tenant, r.Name))
	}
	return &edgelbv1.GetVirtualServiceResponse{Service: proto.Clone(v).(*edgelbv1.VirtualService)}, nil
}

func (s *Server) ListVirtualServices(_ context.Context, r *edgelbv1.ListVirtualServicesRequest) (*edgelbv1.ListVirtualServicesResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := &edgelbv1.ListVirtualServicesResponse{}
	for _, v := range s.vss {
		if r.Tenant != "" && v.Tenant != r.Tenant || r.Vip != "" && v.Vip != r.Vip {
			continue
		}
		match := true
		for k, want := range r.Labels {
			match = match && v.Labels[k] == want
		}
		if match {
			out.Services = append(out.Services, proto.Clone(v).(*edgelbv1.VirtualService))
		}
	}
	return out, nil
}

func (s *Server) UpdateVirtualService(_ context.Context, r *edgelbv1.UpdateVirtualServiceRequest) (*edgelbv1.UpdateVirtualServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := proto.Clone(r.Service).(*edgelbv1.VirtualService)
	old, ok := s.vss[key(v.Tenant, v.Name)]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "virtual service %s not found", key(v.Tenant, v.Name))
	}
	if r.ExpectedGeneration != 0 && r.ExpectedGeneration != old.Generation {
		return nil, status.Errorf(codes.Aborted, "generation %d, not %d", old.Generation, r.ExpectedGeneration)
	}
	defaults(v)
	if v.Vip == "" && (v.Pool == "" || v.Pool == old.Pool) {
		v.Vip, v.Pool = old.Vip, old.Pool
	}
	if err := s.place(v, old); err != nil {
		return nil, err
	}
	v.Generation, v.Owner = old.Generation+1, old.Owner
	s.vss[key(v.Tenant, v.Name)] = v
	s.Writes++
	return &edgelbv1.UpdateVirtualServiceResponse{Service: proto.Clone(v).(*edgelbv1.VirtualService)}, nil
}

func (s *Server) DeleteVirtualService(_ context.Context, r *edgelbv1.DeleteVirtualServiceRequest) (*edgelbv1.DeleteVirtualServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.vss[key(r.Tenant, r.Name)]; !ok {
		return nil, status.Errorf(codes.NotFound, "virtual service %s not found", key(r.Tenant, r.Name))
	}
	delete(s.vss, key(r.Tenant, r.Name))
	s.Writes++
	return &edgelbv1.DeleteVirtualServiceResponse{}, nil
}

func open(p Pool, tenant string) bool {
	if len(p.Tenants) == 0 {
		return true
	}
	for _, t := range p.Tenants {
		if t == tenant {
			return true
		}
	}
	return false
}

// place checks a requested VIP or allocates one, with lbd's sharing rules.
func (s *Server) place(v, old *edgelbv1.VirtualService) error {
	want6 := v.IpFamily == edgelbv1.IPFamily_IP_FAMILY_IPV6
	if v.Vip != "" {
		a, err := netip.ParseAddr(v.Vip)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "service.vip: %q is not an IP address", v.Vip)
		}
		for _, p := range s.pools {
			if (v.Pool == "" || v.Pool == p.Name) && open(p, v.Tenant) && p.Prefix.Contains(a) {
				v.Pool = p.Name
				return s.share(v, a, old)
			}
		}
		return status.Errorf(codes.FailedPrecondition, "vip %s is not in any address pool open to tenant %s; pick an address from one (lbctl pool list) or create a pool that holds it", v.Vip, v.Tenant)
	}
	if v.SharingKey != "" {
		for _, o := range s.vss {
			if o.Tenant == v.Tenant && o.SharingKey == v.SharingKey && (old == nil || o.Name != old.Name) && (v.Pool == "" || v.Pool == o.Pool) {
				if s.share(v, netip.MustParseAddr(o.Vip), old) == nil {
					v.Vip, v.Pool = o.Vip, o.Pool
					return nil
				}
			}
		}
	}
	var tried []string
	for _, p := range s.pools {
		if v.Pool != "" && v.Pool != p.Name || !open(p, v.Tenant) || p.Prefix.Addr().Is6() != want6 {
			continue
		}
		tried = append(tried, p.Name)
		for a := p.Prefix.Addr().Next(); p.Prefix.Contains(a); a = a.Next() {
			if !s.used(a) {
				v.Vip, v.Pool = a.String(), p.Name
				return nil
			}
		}
	}
	if len(tried) == 0 {
		return status.Errorf(codes.FailedPrecondition, "no address pool is open to tenant %s", v.Tenant)
	}
	return errinfo.Errorf(codes.ResourceExhausted, errinfo.PoolExhausted, map[string]string{"tenant": v.Tenant, "pools": strings.Join(tried, ",")}, "no free address in pools %s open to tenant %s; add a range with lbctl pool update NAME --add-range, or free a VIP", strings.Join(tried, ", "), v.Tenant)
}

func (s *Server) used(a netip.Addr) bool {
	for _, o := range s.vss {
		if o.Vip == a.String() {
			return true
		}
	}
	return false
}

func (s *Server) share(v *edgelbv1.VirtualService, a netip.Addr, old *edgelbv1.VirtualService) error {
	for k, o := range s.vss {
		if o.Vip != a.String() || old != nil && k == key(old.Tenant, old.Name) {
			continue
		}
		if o.Tenant != v.Tenant {
			return status.Errorf(codes.AlreadyExists, "vip %s is in use by another tenant; request another address", a)
		}
		if v.SharingKey == "" || o.SharingKey != v.SharingKey {
			return status.Errorf(codes.AlreadyExists, "vip %s is in use by %s; to share it, give both the same sharing key and distinct ports", a, k)
		}
		for _, p := range v.Ports {
			for _, q := range o.Ports {
				if p.Protocol == q.Protocol && p.Port == q.Port {
					return status.Errorf(codes.AlreadyExists, "port %d on vip %s is already used by %s; pick another port", p.Port, a, k)
				}
			}
		}
	}
	return nil
}

// Pools implements the AddressPoolService calls tests use.
type Pools struct {
	edgelbv1.UnimplementedAddressPoolServiceServer
	S *Server
}

// CreateAddressPool adds a pool; each range must be a CIDR in the fake.
func (p Pools) CreateAddressPool(_ context.Context, r *edgelbv1.CreateAddressPoolRequest) (*edgelbv1.CreateAddressPoolResponse, error) {
	p.S.mu.Lock()
	defer p.S.mu.Unlock()
	for _, x := range p.S.pools {
		if x.Name == r.GetPool().GetName() {
			return nil, status.Errorf(codes.AlreadyExists, "address pool %s already exists", x.Name)
		}
	}
	for _, rg := range r.GetPool().GetRanges() {
		pf, err := netip.ParsePrefix(rg)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "fake lbd takes CIDR ranges only: %v", err)
		}
		p.S.pools = append(p.S.pools, Pool{Name: r.Pool.Name, Prefix: pf.Masked(), Tenants: r.Pool.Tenants})
	}
	return &edgelbv1.CreateAddressPoolResponse{Pool: r.Pool}, nil
}

// SetIsolated makes GetMemberStatus of member report entries ("tenant/name:
// why") as the services its data plane cannot program.
func (s *Server) SetIsolated(member string, entries ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.isolated == nil {
		s.isolated = map[string][]string{}
	}
	s.isolated[member] = entries
}

// Members serves the ClusterService's GetMemberStatus of a fake; every member
// id is known (the fake's owner is "fake-1").
type Members struct {
	edgelbv1.UnimplementedClusterServiceServer
	S *Server
}

func (m Members) GetMemberStatus(_ context.Context, r *edgelbv1.GetMemberStatusRequest) (*edgelbv1.GetMemberStatusResponse, error) {
	m.S.mu.Lock()
	defer m.S.mu.Unlock()
	id := cmp.Or(r.Id, "fake-1")
	return &edgelbv1.GetMemberStatusResponse{Status: &edgelbv1.MemberStatus{
		Member: &edgelbv1.Member{Id: id}, IsolatedServices: append([]string(nil), m.S.isolated[id]...),
	}}, nil
}

// Serve serves s (virtual services, pools, member status) on lis until it fails.
func Serve(lis net.Listener, s *Server, opts ...grpc.ServerOption) error {
	g := grpc.NewServer(append(opts, grpc.UnaryInterceptor(s.intercept))...)
	edgelbv1.RegisterVirtualServiceServiceServer(g, s)
	edgelbv1.RegisterAddressPoolServiceServer(g, Pools{S: s})
	edgelbv1.RegisterClusterServiceServer(g, Members{S: s})
	return g.Serve(lis)
}
