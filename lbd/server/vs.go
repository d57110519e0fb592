package server

import (
	"context"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/ownership"
	"github.com/edgelb/edgelb/lbd/validate"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/rules"
)

// serviceKey validates a service reference and applies the caller's tenant
// binding: a cloud provider names its own tenant or none.
func serviceKey(ctx context.Context, tenant, name string) (fsm.Key, error) {
	tenant, err := auth.TenantScope(ctx, tenant)
	if err != nil {
		return fsm.Key{}, err
	}
	if err := validate.RefTenant("tenant", &tenant); err != nil {
		return fsm.Key{}, err
	}
	if err := validate.RefName("name", name, 253); err != nil {
		return fsm.Key{}, err
	}
	return fsm.Key{Tenant: tenant, Name: name}, nil
}

// CreateVirtualService validates the service and commits it. The FSM allocates
// the VIP (when none is requested) and refuses duplicates.
func (s *Server) CreateVirtualService(ctx context.Context, req *edgelbv1.CreateVirtualServiceRequest) (*edgelbv1.CreateVirtualServiceResponse, error) {
	vs, err := s.checkedService(ctx, req.GetService(), false)
	if err != nil {
		return nil, err
	}
	if max := s.opts.MaxServicesPerTenant; max > 0 {
		if n := s.fsm.TenantServices(vs.Tenant); n >= max {
			return nil, errinfo.Errorf(codes.ResourceExhausted, errinfo.TenantServiceLimit, map[string]string{"tenant": vs.Tenant, "limit": strconv.Itoa(max)},
				"tenant %s already has %d virtual services, the limit; delete unused ones or raise auth.maxServicesPerTenant", vs.Tenant, n)
		}
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_CreateVirtualService{
		// The owner is decided on the leader, just before it proposes (commit).
		CreateVirtualService: &raftv1.CreateVirtualService{Service: vs},
	}})
	if err != nil {
		return nil, err
	}
	return &edgelbv1.CreateVirtualServiceResponse{Service: res.Service}, nil
}

// decideOwner is the leader's one decision of a new service's owner
// (ownership.Decide), made from what only the leader knows: which members
// answer its heartbeats.
func (s *Server) decideOwner(vs *edgelbv1.VirtualService) ownership.Decision {
	silence := s.node.PeerSilence()
	c := ownership.Candidates{
		Self: s.node.ID(), Members: s.fsm.Members(), Load: s.fsm.OwnerLoad(),
		Alive: func(id string) bool { _, failing := silence[id]; return !failing },
	}
	if vs.Vip != "" {
		c.Sharing, _ = s.fsm.Shared(fsm.Filter{VIP: vs.Vip})
	}
	return ownership.Decide(vs, c)
}

// checkedService copies a request's service (of a create, or an update),
// applies the caller's tenant binding and validates it, filling in defaults.
// Some defaults depend on the pool the FSM will place the service in (a bgp
// pool defaults to dr, and refuses modes it cannot serve: rules.defaultModes,
// rules.BGPPoolModes), so the pool is previewed on this member's replica. A
// stale replica can only misjudge towards a refusal: the FSM checks the
// pool it actually places the service in.
func (s *Server) checkedService(ctx context.Context, in *edgelbv1.VirtualService, update bool) (*edgelbv1.VirtualService, error) {
	var vs *edgelbv1.VirtualService
	if in != nil {
		vs = proto.Clone(in).(*edgelbv1.VirtualService)
	}
	if err := scopeService(ctx, vs); err != nil {
		return nil, err
	}
	scoped := proto.Clone(vs)
	// First with the defaults of no pool: the placement needs the
	// service's canonical address and family, and those defaults are the
	// most permissive, so what fails here fails in any pool.
	if err := validate.VirtualService(vs, s.opts.Limits); err != nil {
		return nil, err
	}
	pool := s.fsm.PlacementPool(vs, update)
	if !rules.IsBGP(pool) {
		return vs, nil
	}
	vs = scoped.(*edgelbv1.VirtualService)
	if err := validate.VirtualServiceIn(vs, s.opts.Limits, pool); err != nil {
		return nil, err
	}
	return vs, nil
}

// scopeService applies the caller's tenant binding to a service in a request.
func scopeService(ctx context.Context, vs *edgelbv1.VirtualService) error {
	if vs == nil {
		return nil
	}
	t, err := auth.TenantScope(ctx, vs.Tenant)
	if err != nil {
		return err
	}
	vs.Tenant = t
	return nil
}

// readCurrent brings the local replica up to the cluster's state before a
// read, so that reads are linearizable: it commits an empty SetOwners entry
// through the leader (it changes nothing and emits no event) and waits until
// this member has applied everything committed before it. A read that follows
// sees every write acknowledged before it began, also one acknowledged
// through another member, and a member that is cut off from the leader, or a
// deposed leader that has not noticed yet, answers Unavailable rather than an
// old state. List stays a read of the local replica: lbctl status reads it on
// a member without a leader to say what that member holds.
func (s *Server) readCurrent(ctx context.Context) error {
	_, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_SetOwners{SetOwners: &raftv1.SetOwners{}}})
	return err
}

func (s *Server) GetVirtualService(ctx context.Context, req *edgelbv1.GetVirtualServiceRequest) (*edgelbv1.GetVirtualServiceResponse, error) {
	if _, err := serviceKey(ctx, req.Tenant, req.Name); err != nil {
		return nil, err
	}
	if err := s.readCurrent(ctx); err != nil {
		return nil, err
	}
	_, vs, err := s.lookup(ctx, req.Tenant, req.Name)
	if err != nil {
		return nil, err
	}
	return &edgelbv1.GetVirtualServiceResponse{Service: vs}, nil
}

// lookup finds a service the caller may see, or says how to find it.
func (s *Server) lookup(ctx context.Context, tenant, name string) (fsm.Key, *edgelbv1.VirtualService, error) {
	k, err := serviceKey(ctx, tenant, name)
	if err != nil {
		return k, nil, err
	}
	vs, ok := s.fsm.Service(k)
	if !ok {
		return k, nil, status.Errorf(codes.NotFound, "virtual service %s not found (lbctl vip list --tenant %s)", k, k.Tenant)
	}
	return k, vs, nil
}

func (s *Server) ListVirtualServices(ctx context.Context, req *edgelbv1.ListVirtualServicesRequest) (*edgelbv1.ListVirtualServicesResponse, error) {
	tenant, err := auth.TenantScope(ctx, req.Tenant)
	if err != nil {
		return nil, err
	}
	if tenant != "" {
		if err := validate.RefName("tenant", tenant, 63); err != nil {
			return nil, err
		}
	}
	if req.Vip != "" {
		if _, err := validate.VIP("vip", req.Vip); err != nil {
			return nil, err
		}
	}
	vss, rev := s.fsm.List(fsm.Filter{Tenant: tenant, Labels: req.Labels, Pool: req.Pool, VIP: req.Vip})
	return &edgelbv1.ListVirtualServicesResponse{Services: vss, Revision: rev}, nil
}

func (s *Server) UpdateVirtualService(ctx context.Context, req *edgelbv1.UpdateVirtualServiceRequest) (*edgelbv1.UpdateVirtualServiceResponse, error) {
	vs, err := s.checkedService(ctx, req.GetService(), true)
	if err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_UpdateVirtualService{
		UpdateVirtualService: &raftv1.UpdateVirtualService{Service: vs, ExpectedGeneration: req.ExpectedGeneration},
	}})
	if err != nil {
		return nil, err
	}
	return &edgelbv1.UpdateVirtualServiceResponse{Service: res.Service}, nil
}

func (s *Server) DeleteVirtualService(ctx context.Context, req *edgelbv1.DeleteVirtualServiceRequest) (*edgelbv1.DeleteVirtualServiceResponse, error) {
	k, err := serviceKey(ctx, req.Tenant, req.Name)
	if err != nil {
		return nil, err
	}
	if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_DeleteVirtualService{
		DeleteVirtualService: &raftv1.DeleteVirtualService{Tenant: k.Tenant, Name: k.Name, ExpectedGeneration: req.ExpectedGeneration},
	}}); err != nil {
		return nil, err
	}
	return &edgelbv1.DeleteVirtualServiceResponse{}, nil
}

func (s *Server) SetBackends(ctx context.Context, req *edgelbv1.SetBackendsRequest) (*edgelbv1.SetBackendsResponse, error) {
	k, err := serviceKey(ctx, req.Tenant, req.Name)
	if err != nil {
		return nil, err
	}
	bs := make([]*edgelbv1.Backend, len(req.Backends))
	for i, b := range req.Backends {
		if b != nil {
			bs[i] = proto.Clone(b).(*edgelbv1.Backend)
		}
	}
	// The family and DR rules depend on the stored VIP; the FSM re-checks them
	// against the state the command applies to.
	if vs, ok := s.fsm.Service(k); ok {
		// Normalised against the stored service (one form per backend); the
		// FSM checks again against the service the command applies to.
		if err := validate.BackendsOf("backends", bs, vs, s.opts.Limits); err != nil {
			return nil, err
		}
	} else {
		want6, dr := s.shape(k, bs)
		if err := validate.Backends("backends", bs, want6, dr, s.opts.Limits); err != nil {
			return nil, err
		}
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_SetBackends{
		SetBackends: &raftv1.SetBackends{Tenant: k.Tenant, Name: k.Name, Backends: bs, ExpectedGeneration: req.ExpectedGeneration},
	}})
	if err != nil {
		return nil, err
	}
	return &edgelbv1.SetBackendsResponse{Service: res.Service}, nil
}

// shape returns the family and DR-ness of a stored service, or, when it is not
// known here, that of the first backend (so validation does not refuse on a guess).
func (s *Server) shape(k fsm.Key, bs []*edgelbv1.Backend) (want6, dr bool) {
	if vs, ok := s.fsm.Service(k); ok {
		return isV6(vs.Vip), vs.ForwardingMode == edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	}
	if len(bs) > 0 && bs[0] != nil {
		return isV6(bs[0].Address), false
	}
	return false, false
}

func (s *Server) AddBackend(ctx context.Context, req *edgelbv1.AddBackendRequest) (*edgelbv1.AddBackendResponse, error) {
	k, err := serviceKey(ctx, req.Tenant, req.Name)
	if err != nil {
		return nil, err
	}
	if req.Backend == nil {
		return nil, status.Error(codes.InvalidArgument, "backend: is required (address and optional port, weight)")
	}
	b := proto.Clone(req.Backend).(*edgelbv1.Backend)
	if vs, ok := s.fsm.Service(k); ok {
		if err := validate.BackendOf("backend", b, vs); err != nil {
			return nil, err
		}
	} else {
		want6, dr := s.shape(k, []*edgelbv1.Backend{b})
		if err := validate.Backend("backend", b, want6, dr); err != nil {
			return nil, err
		}
	}
	// The limit is on the service's whole list, which the request does not
	// carry. The FSM checks again on the state the add applies to, since
	// concurrent adds all pass here.
	if n, _ := s.fsm.BackendCount(k); n >= s.opts.Limits.MaxBackends {
		return nil, status.Errorf(codes.InvalidArgument, "backends: virtual service %s already has %d backends, the limit (%d); remove one first (lbctl backend remove %s ADDR) or spread them over more virtual services",
			k, n, s.opts.Limits.MaxBackends, k.Name)
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_AddBackend{
		AddBackend: &raftv1.AddBackend{Tenant: k.Tenant, Name: k.Name, Backend: b},
	}})
	if err != nil {
		return nil, err
	}
	return &edgelbv1.AddBackendResponse{Service: res.Service}, nil
}

func backendRef(addr string, port uint32) (string, error) {
	a, err := validate.VIP("address", addr)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "address: %q is not an IP address; name the backend as listed by lbctl vip get", addr)
	}
	if port > 65535 {
		return "", status.Errorf(codes.InvalidArgument, "port: %d is out of range 0-65535", port)
	}
	return a.String(), nil
}

func (s *Server) RemoveBackend(ctx context.Context, req *edgelbv1.RemoveBackendRequest) (*edgelbv1.RemoveBackendResponse, error) {
	k, err := serviceKey(ctx, req.Tenant, req.Name)
	if err != nil {
		return nil, err
	}
	addr, err := backendRef(req.Address, req.Port)
	if err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_RemoveBackend{
		RemoveBackend: &raftv1.RemoveBackend{Tenant: k.Tenant, Name: k.Name, Address: addr, Port: req.Port},
	}})
	if err != nil {
		return nil, err
	}
	return &edgelbv1.RemoveBackendResponse{Service: res.Service}, nil
}

func (s *Server) DrainBackend(ctx context.Context, req *edgelbv1.DrainBackendRequest) (*edgelbv1.DrainBackendResponse, error) {
	k, err := serviceKey(ctx, req.Tenant, req.Name)
	if err != nil {
		return nil, err
	}
	addr, err := backendRef(req.Address, req.Port)
	if err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_DrainBackend{
		DrainBackend: &raftv1.DrainBackend{Tenant: k.Tenant, Name: k.Name, Address: addr, Port: req.Port, Drained: req.Drained},
	}})
	if err != nil {
		return nil, err
	}
	return &edgelbv1.DrainBackendResponse{Service: res.Service}, nil
}
