package cli

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeLB is an in-memory stand-in for lbd: just enough behaviour (codes,
// generations, allocation) to exercise every lbctl command.
type fakeLB struct {
	mu      sync.Mutex
	rev     uint64
	vss     map[string]*edgelbv1.VirtualService // tenant/name
	pools   map[string]*edgelbv1.AddressPool
	members []*edgelbv1.Member
	leader  string
	down    map[string]bool // members whose status cannot be fetched
	// isolated: services a member's data plane reports it cannot program.
	isolated map[string][]string
	// applied overrides a member's applied index (default 42, the commit
	// index); notReady is a member's not_ready_reason.
	applied  map[string]uint64
	notReady map[string]string
	nextIP   int

	stop             func() // stops the gRPC server
	dieAfterSnapshot bool   // Watch stops the whole server after its first response
	autoOwner        string // when set, created services get this owner shortly after
	watchOnce        bool   // Watch sends the snapshot and ends the stream
}

func startFake(t *testing.T) (*fakeLB, string) {
	t.Helper()
	f := &fakeLB{
		vss:   map[string]*edgelbv1.VirtualService{},
		pools: map[string]*edgelbv1.AddressPool{},
		members: []*edgelbv1.Member{
			{Id: "lb1", RaftAddress: "127.0.0.1:7701", ApiAddress: "127.0.0.1:7700", State: edgelbv1.MemberState_MEMBER_STATE_ACTIVE, Suffrage: "voter"},
			{Id: "lb2", RaftAddress: "127.0.0.1:7711", ApiAddress: "127.0.0.1:7710", State: edgelbv1.MemberState_MEMBER_STATE_ACTIVE, Suffrage: "voter"},
		},
		leader: "lb1",
		down:   map[string]bool{},
		nextIP: 10,
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	edgelbv1.RegisterVirtualServiceServiceServer(s, vsServer{f: f})
	edgelbv1.RegisterAddressPoolServiceServer(s, poolServer{f: f})
	edgelbv1.RegisterClusterServiceServer(s, clusterServer{f: f})
	edgelbv1.RegisterWatchServiceServer(s, watchServer{f: f})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	f.stop = s.Stop
	return f, lis.Addr().String()
}

// set changes the fake's behaviour under its lock (the server reads it concurrently).
func (f *fakeLB) set(change func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change()
}

func key(tenant, name string) string {
	if tenant == "" {
		tenant = "default"
	}
	return tenant + "/" + name
}

// get returns the stored service or NotFound. Callers hold mu.
func (f *fakeLB) get(tenant, name string) (*edgelbv1.VirtualService, error) {
	vs, ok := f.vss[key(tenant, name)]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "virtual service %q not found in tenant %q", name, tenant)
	}
	return vs, nil
}

func (f *fakeLB) bump(vs *edgelbv1.VirtualService) *edgelbv1.VirtualService {
	f.rev++
	vs.Generation++
	vs.UpdateTime = timestamppb.Now()
	return proto.Clone(vs).(*edgelbv1.VirtualService)
}

func validate(vs *edgelbv1.VirtualService) error {
	if vs.GetName() == "" {
		return status.Error(codes.InvalidArgument, "name: required")
	}
	if vs.GetVip() != "" {
		if _, err := netip.ParseAddr(vs.GetVip()); err != nil {
			return status.Errorf(codes.InvalidArgument, "vip %q: not an IP address", vs.GetVip())
		}
	}
	return nil
}

type vsServer struct {
	edgelbv1.UnimplementedVirtualServiceServiceServer
	f *fakeLB
}

func (s vsServer) CreateVirtualService(_ context.Context, r *edgelbv1.CreateVirtualServiceRequest) (*edgelbv1.CreateVirtualServiceResponse, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	vs := proto.Clone(r.GetService()).(*edgelbv1.VirtualService)
	if vs.Tenant == "" {
		vs.Tenant = "default"
	}
	if err := validate(vs); err != nil {
		return nil, err
	}
	if _, ok := f.vss[key(vs.Tenant, vs.Name)]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "virtual service %q already exists", vs.Name)
	}
	if vs.Vip == "" {
		vs.Vip = fmt.Sprintf("192.0.2.%d", f.nextIP)
		f.nextIP++
	}
	vs.CreateTime = timestamppb.New(time.Now().Add(-3 * time.Minute))
	vs.Owner = ""
	f.vss[key(vs.Tenant, vs.Name)] = vs
	out := f.bump(vs)
	if f.autoOwner != "" {
		go func() {
			time.Sleep(50 * time.Millisecond)
			f.mu.Lock()
			defer f.mu.Unlock()
			vs.Owner = f.autoOwner
			f.rev++
		}()
	}
	return &edgelbv1.CreateVirtualServiceResponse{Service: out}, nil
}

func (s vsServer) GetVirtualService(_ context.Context, r *edgelbv1.GetVirtualServiceRequest) (*edgelbv1.GetVirtualServiceResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	vs, err := s.f.get(r.Tenant, r.Name)
	if err != nil {
		return nil, err
	}
	return &edgelbv1.GetVirtualServiceResponse{Service: proto.Clone(vs).(*edgelbv1.VirtualService)}, nil
}

func (s vsServer) ListVirtualServices(_ context.Context, r *edgelbv1.ListVirtualServicesRequest) (*edgelbv1.ListVirtualServicesResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	resp := &edgelbv1.ListVirtualServicesResponse{Revision: s.f.rev}
outer:
	for _, vs := range s.f.vss {
		if (r.Tenant != "" && vs.Tenant != r.Tenant) || (r.Pool != "" && vs.Pool != r.Pool) || (r.Vip != "" && vs.Vip != r.Vip) {
			continue
		}
		for k, v := range r.Labels {
			if vs.Labels[k] != v {
				continue outer
			}
		}
		resp.Services = append(resp.Services, proto.Clone(vs).(*edgelbv1.VirtualService))
	}
	return resp, nil
}

func (s vsServer) UpdateVirtualService(_ context.Context, r *edgelbv1.UpdateVirtualServiceRequest) (*edgelbv1.UpdateVirtualServiceResponse, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, err := f.get(r.GetService().GetTenant(), r.GetService().GetName())
	if err != nil {
		return nil, err
	}
	if r.ExpectedGeneration != 0 && r.ExpectedGeneration != cur.Generation {
		return nil, status.Errorf(codes.Aborted, "generation is %d, not %d", cur.Generation, r.ExpectedGeneration)
	}
	if err := validate(r.Service); err != nil {
		return nil, err
	}
	vs := proto.Clone(r.Service).(*edgelbv1.VirtualService)
	vs.Generation, vs.CreateTime, vs.Owner = cur.Generation, cur.CreateTime, cur.Owner
	f.vss[key(vs.Tenant, vs.Name)] = vs
	return &edgelbv1.UpdateVirtualServiceResponse{Service: f.bump(vs)}, nil
}

func (s vsServer) DeleteVirtualService(_ context.Context, r *edgelbv1.DeleteVirtualServiceRequest) (*edgelbv1.DeleteVirtualServiceResponse, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, err := f.get(r.Tenant, r.Name)
	if err != nil {
		return nil, err
	}
	if r.ExpectedGeneration != 0 && r.ExpectedGeneration != cur.Generation {
		return nil, status.Errorf(codes.Aborted, "generation is %d, not %d", cur.Generation, r.ExpectedGeneration)
	}
	delete(f.vss, key(r.Tenant, r.Name))
	f.rev++
	return &edgelbv1.DeleteVirtualServiceResponse{}, nil
}

func (s vsServer) SetBackends(_ context.Context, r *edgelbv1.SetBackendsRequest) (*edgelbv1.SetBackendsResponse, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	vs, err := f.get(r.Tenant, r.Name)
	if err != nil {
		return nil, err
	}
	if r.ExpectedGeneration != 0 && r.ExpectedGeneration != vs.Generation {
		return nil, status.Errorf(codes.Aborted, "generation is %d, not %d", vs.Generation, r.ExpectedGeneration)
	}
	vs.Backends = r.Backends
	return &edgelbv1.SetBackendsResponse{Service: f.bump(vs)}, nil
}

func findBackend(vs *edgelbv1.VirtualService, addr string, port uint32) int {
	for i, b := range vs.Backends {
		if b.Address == addr && b.Port == port {
			return i
		}
	}
	return -1
}

func (s vsServer) AddBackend(_ context.Context, r *edgelbv1.AddBackendRequest) (*edgelbv1.AddBackendResponse, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	vs, err := f.get(r.Tenant, r.Name)
	if err != nil {
		return nil, err
	}
	if findBackend(vs, r.Backend.Address, r.Backend.Port) >= 0 {
		return nil, status.Errorf(codes.AlreadyExists, "backend %s already present", r.Backend.Address)
	}
	vs.Backends = append(vs.Backends, r.Backend)
	return &edgelbv1.AddBackendResponse{Service: f.bump(vs)}, nil
}

func (s vsServer) RemoveBackend(_ context.Context, r *edgelbv1.RemoveBackendRequest) (*edgelbv1.RemoveBackendResponse, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	vs, err := f.get(r.Tenant, r.Name)
	if err != nil {
		return nil, err
	}
	i := findBackend(vs, r.Address, r.Port)
	if i < 0 {
		return nil, status.Errorf(codes.NotFound, "backend %s not found", r.Address)
	}
	vs.Backends = append(vs.Backends[:i], vs.Backends[i+1:]...)
	return &edgelbv1.RemoveBackendResponse{Service: f.bump(vs)}, nil
}

func (s vsServer) DrainBackend(_ context.Context, r *edgelbv1.DrainBackendRequest) (*edgelbv1.DrainBackendResponse, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	vs, err := f.get(r.Tenant, r.Name)
	if err != nil {
		return nil, err
	}
	i := findBackend(vs, r.Address, r.Port)
	if i < 0 {
		return nil, status.Errorf(codes.NotFound, "backend %s not found", r.Address)
	}
	vs.Backends[i].Drained = r.Drained
	return &edgelbv1.DrainBackendResponse{Service: f.bump(vs)}, nil
}

type poolServer struct {
	edgelbv1.UnimplementedAddressPoolServiceServer
	f *fakeLB
}

func (s poolServer) CreateAddressPool(_ context.Context, r *edgelbv1.CreateAddressPoolRequest) (*edgelbv1.CreateAddressPoolResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if _, ok := s.f.pools[r.Pool.Name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "pool %q already exists", r.Pool.Name)
	}
	p := proto.Clone(r.Pool).(*edgelbv1.AddressPool)
	p.CreateTime = timestamppb.Now()
	s.f.pools[p.Name] = p
	return &edgelbv1.CreateAddressPoolResponse{Pool: p}, nil
}

func (s poolServer) used(name string) uint64 {
	var n uint64
	for _, vs := range s.f.vss {
		if vs.Pool == name {
			n++
		}
	}
	return n
}

func (s poolServer) GetAddressPool(_ context.Context, r *edgelbv1.GetAddressPoolRequest) (*edgelbv1.GetAddressPoolResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	p, ok := s.f.pools[r.Name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "pool %q not found", r.Name)
	}
	return &edgelbv1.GetAddressPoolResponse{Pool: p, Used: s.used(r.Name), Size: 256}, nil
}

func (s poolServer) ListAddressPools(context.Context, *edgelbv1.ListAddressPoolsRequest) (*edgelbv1.ListAddressPoolsResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	resp := &edgelbv1.ListAddressPoolsResponse{}
	for _, p := range s.f.pools {
		resp.Pools = append(resp.Pools, p)
	}
	return resp, nil
}

func (s poolServer) DeleteAddressPool(_ context.Context, r *edgelbv1.DeleteAddressPoolRequest) (*edgelbv1.DeleteAddressPoolResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if _, ok := s.f.pools[r.Name]; !ok {
		return nil, status.Errorf(codes.NotFound, "pool %q not found", r.Name)
	}
	if s.used(r.Name) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "pool %q is in use", r.Name)
	}
	delete(s.f.pools, r.Name)
	return &edgelbv1.DeleteAddressPoolResponse{}, nil
}

type clusterServer struct {
	edgelbv1.UnimplementedClusterServiceServer
	f *fakeLB
}

func (s clusterServer) member(id string) *edgelbv1.Member {
	for _, m := range s.f.members {
		if m.Id == id {
			return m
		}
	}
	return nil
}

func (s clusterServer) ListMembers(context.Context, *edgelbv1.ListMembersRequest) (*edgelbv1.ListMembersResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	return &edgelbv1.ListMembersResponse{Members: s.f.members, LeaderId: s.f.leader}, nil
}

func (s clusterServer) AddMember(_ context.Context, r *edgelbv1.AddMemberRequest) (*edgelbv1.AddMemberResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	if s.member(r.Member.Id) != nil {
		return nil, status.Errorf(codes.AlreadyExists, "member %q exists", r.Member.Id)
	}
	m := proto.Clone(r.Member).(*edgelbv1.Member)
	m.Suffrage = "voter"
	if r.Nonvoter {
		m.Suffrage = "nonvoter"
	}
	s.f.members = append(s.f.members, m)
	return &edgelbv1.AddMemberResponse{Member: m}, nil
}

func (s clusterServer) RemoveMember(_ context.Context, r *edgelbv1.RemoveMemberRequest) (*edgelbv1.RemoveMemberResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	for i, m := range s.f.members {
		if m.Id == r.Id {
			s.f.members = append(s.f.members[:i], s.f.members[i+1:]...)
			return &edgelbv1.RemoveMemberResponse{}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "member %q not found", r.Id)
}

func (s clusterServer) GetLeader(context.Context, *edgelbv1.GetLeaderRequest) (*edgelbv1.GetLeaderResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	return &edgelbv1.GetLeaderResponse{Leader: s.member(s.f.leader), Term: 7}, nil
}

func (s clusterServer) TransferLeadership(_ context.Context, r *edgelbv1.TransferLeadershipRequest) (*edgelbv1.TransferLeadershipResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	target := r.TargetId
	if target == "" {
		for _, m := range s.f.members {
			if m.Id != s.f.leader {
				target = m.Id
				break
			}
		}
	}
	m := s.member(target)
	if m == nil {
		return nil, status.Errorf(codes.NotFound, "member %q not found", target)
	}
	s.f.leader = target
	return &edgelbv1.TransferLeadershipResponse{Leader: m}, nil
}

func (s clusterServer) GetMemberStatus(_ context.Context, r *edgelbv1.GetMemberStatusRequest) (*edgelbv1.GetMemberStatusResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	id := r.Id
	if id == "" {
		id = "lb1"
	}
	m := s.member(id)
	if m == nil {
		return nil, status.Errorf(codes.NotFound, "member %q not found", id)
	}
	if s.f.down[id] {
		return nil, status.Errorf(codes.Unavailable, "member %s does not answer", id)
	}
	state := "Follower"
	if id == s.f.leader {
		state = "Leader"
	}
	var owned []string
	for _, vs := range s.f.vss {
		if vs.Owner == id {
			owned = append(owned, vs.Vip)
		}
	}
	sort.Strings(owned)
	applied := uint64(42)
	if a, ok := s.f.applied[id]; ok {
		applied = a
	}
	return &edgelbv1.GetMemberStatusResponse{Status: &edgelbv1.MemberStatus{
		Member: m, RaftState: state, Term: 7, LastAppliedIndex: applied, CommitIndex: 42, LastLogIndex: 42,
		LeaderId: s.f.leader, OwnedVips: owned, Revision: s.f.rev, DataPlane: "control-plane-only", Version: "v0.test",
		IsolatedServices: s.f.isolated[id],
		NotReadyReason:   s.f.notReady[id],
	}}, nil
}

type watchServer struct {
	edgelbv1.UnimplementedWatchServiceServer
	f *fakeLB
}

func (s watchServer) snapshot(tenant string) (*edgelbv1.WatchResponse, uint64) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	resp := &edgelbv1.WatchResponse{Snapshot: true, Revision: s.f.rev}
	keys := make([]string, 0, len(s.f.vss))
	for k := range s.f.vss {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vs := s.f.vss[k]
		if tenant != "" && vs.Tenant != tenant {
			continue
		}
		resp.Events = append(resp.Events, &edgelbv1.Event{Type: edgelbv1.EventType_EVENT_TYPE_PUT, Revision: s.f.rev,
			Object: &edgelbv1.Event_VirtualService{VirtualService: proto.Clone(vs).(*edgelbv1.VirtualService)}})
	}
	for _, m := range s.f.members {
		resp.Events = append(resp.Events, &edgelbv1.Event{Type: edgelbv1.EventType_EVENT_TYPE_PUT, Revision: s.f.rev,
			Object: &edgelbv1.Event_Member{Member: m}, Reason: "joined"})
	}
	return resp, s.f.rev
}

// Watch replays the state, then (unless watchOnce) sends the whole state
// again, as plain events, whenever the revision moves.
func (s watchServer) Watch(r *edgelbv1.WatchRequest, stream edgelbv1.WatchService_WatchServer) error {
	resp, rev := s.snapshot(r.Tenant)
	if err := stream.Send(resp); err != nil {
		return err
	}
	s.f.mu.Lock()
	once, die := s.f.watchOnce, s.f.dieAfterSnapshot
	s.f.mu.Unlock()
	if die {
		// Like a SIGKILLed member: the client sees Unavailable. The pause
		// lets the snapshot reach the client first.
		go func() { time.Sleep(100 * time.Millisecond); s.f.stop() }()
		<-stream.Context().Done()
		return nil
	}
	if once {
		return nil
	}
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-time.After(10 * time.Millisecond):
		}
		next, nrev := s.snapshot(r.Tenant)
		if nrev == rev {
			continue
		}
		rev = nrev
		next.Snapshot = false
		if err := stream.Send(next); err != nil {
			return err
		}
	}
}
