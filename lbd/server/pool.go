package server

import (
	"context"
	"net/netip"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/validate"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
)

func isV6(addr string) bool {
	a, err := netip.ParseAddr(addr)
	return err == nil && a.Is6()
}

func (s *Server) CreateAddressPool(ctx context.Context, req *edgelbv1.CreateAddressPoolRequest) (*edgelbv1.CreateAddressPoolResponse, error) {
	var p *edgelbv1.AddressPool
	if req.Pool != nil {
		p = proto.Clone(req.Pool).(*edgelbv1.AddressPool)
	}
	if err := validate.AddressPool(p, s.opts.Limits); err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_CreateAddressPool{
		CreateAddressPool: &raftv1.CreateAddressPool{Pool: p},
	}})
	if err != nil {
		return nil, err
	}
	return &edgelbv1.CreateAddressPoolResponse{Pool: res.Pool}, nil
}

// UpdateAddressPool changes a pool through raft: the FSM decides against the
// state the change applies to whether every allocated VIP stays inside.
func (s *Server) UpdateAddressPool(ctx context.Context, req *edgelbv1.UpdateAddressPoolRequest) (*edgelbv1.UpdateAddressPoolResponse, error) {
	req = proto.Clone(req).(*edgelbv1.UpdateAddressPoolRequest)
	if err := validate.UpdateAddressPool(req, s.opts.Limits); err != nil {
		return nil, err
	}
	// The range limit counts the pool as this replica holds it; a concurrent
	// update may pass it by a few, like the per-tenant service limit.
	if p, _, _, ok := s.fsm.Pool(req.Name); ok {
		if n := len(p.Ranges) + len(req.AddRanges) - len(req.RemoveRanges); n > s.opts.Limits.MaxPoolRanges {
			return nil, status.Errorf(codes.InvalidArgument, "add_ranges: address pool %s would have %d ranges; the limit is %d", req.Name, n, s.opts.Limits.MaxPoolRanges)
		}
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_UpdateAddressPool{
		UpdateAddressPool: &raftv1.UpdateAddressPool{
			Name: req.Name, AddRanges: req.AddRanges, RemoveRanges: req.RemoveRanges,
			Tenants: req.Tenants, SetTenants: req.SetTenants, Manual: req.Manual,
			ExpectedGeneration: req.ExpectedGeneration, AllowHostAddresses: req.AllowHostAddresses,
		},
	}})
	if err != nil {
		return nil, err
	}
	return &edgelbv1.UpdateAddressPoolResponse{Pool: res.Pool}, nil
}

func (s *Server) GetAddressPool(ctx context.Context, req *edgelbv1.GetAddressPoolRequest) (*edgelbv1.GetAddressPoolResponse, error) {
	if err := validate.RefName("name", req.Name, 63); err != nil {
		return nil, err
	}
	p, used, size, ok := s.fsm.Pool(req.Name)
	// A pool not open to a tenant-bound caller is hidden: the same answer as
	// for no pool at all, so its name, ranges and tenants do not leak.
	if !ok || !openTo(p, callerTenant(ctx)) {
		return nil, status.Errorf(codes.NotFound, "address pool %s not found (lbctl pool list)", req.Name)
	}
	return &edgelbv1.GetAddressPoolResponse{Pool: p, Used: used, Size: size}, nil
}

func (s *Server) ListAddressPools(ctx context.Context, req *edgelbv1.ListAddressPoolsRequest) (*edgelbv1.ListAddressPoolsResponse, error) {
	pools := s.fsm.Pools()
	// A tenant-bound caller sees only the pools it may allocate from.
	if tenant := callerTenant(ctx); tenant != "" {
		open := pools[:0]
		for _, p := range pools {
			if openTo(p, tenant) {
				open = append(open, p)
			}
		}
		pools = open
	}
	return &edgelbv1.ListAddressPoolsResponse{Pools: pools}, nil
}

// callerTenant is the tenant the caller is bound to, "" when it sees every tenant.
func callerTenant(ctx context.Context) string {
	t, _ := auth.TenantScope(ctx, "") // naming no tenant is never refused
	return t
}

// openTo reports whether a caller bound to tenant ("" for none) may see pool p:
// the pools it may allocate from.
func openTo(p *edgelbv1.AddressPool, tenant string) bool {
	return tenant == "" || fsm.PoolOpenTo(p, tenant)
}

func (s *Server) DeleteAddressPool(ctx context.Context, req *edgelbv1.DeleteAddressPoolRequest) (*edgelbv1.DeleteAddressPoolResponse, error) {
	if err := validate.RefName("name", req.Name, 63); err != nil {
		return nil, err
	}
	if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_DeleteAddressPool{
		DeleteAddressPool: &raftv1.DeleteAddressPool{Name: req.Name},
	}}); err != nil {
		return nil, err
	}
	return &edgelbv1.DeleteAddressPoolResponse{}, nil
}
