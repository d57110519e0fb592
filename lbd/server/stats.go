package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgelb/edgelb/lbd/validate"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// GetServiceStats reads a service's live IPVS counters. Every member programs
// every service (hot standby), but only the owner carries its traffic, so the
// owner's kernel is read unless the request names another member; a member
// that is not the one asked for forwards the call to it.
func (s *Server) GetServiceStats(ctx context.Context, req *edgelbv1.GetServiceStatsRequest) (*edgelbv1.GetServiceStatsResponse, error) {
	k, vs, err := s.lookup(ctx, req.Tenant, req.Name)
	if err != nil {
		return nil, err
	}
	target := req.Member
	if target == "" {
		target = vs.Owner
	}
	if target == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "virtual service %s has no owner yet, so no member carries its traffic (lbctl status)", k)
	}
	if target != s.opts.Self.Id {
		if err := validate.RefName("member", target, 63); err != nil {
			return nil, err
		}
		m, ok := s.fsm.Member(target)
		if !ok {
			return nil, status.Errorf(codes.NotFound, "member %s not found (lbctl member list)", target)
		}
		conn, err := s.peer(m.ApiAddress)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "connect to member %s at %s: %v", m.Id, m.ApiAddress, err)
		}
		resp, err := edgelbv1.NewVirtualServiceServiceClient(conn).GetServiceStats(ctx,
			&edgelbv1.GetServiceStatsRequest{Tenant: k.Tenant, Name: k.Name, Member: target})
		if err != nil {
			st := status.Convert(err)
			return nil, status.Errorf(st.Code(), "member %s at %s: %s", m.Id, m.ApiAddress, st.Message())
		}
		return resp, nil
	}
	if s.opts.ServiceStats == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "member %s runs without a data plane (%s): it has no kernel counters", s.opts.Self.Id, s.opts.DataPlane)
	}
	ports, err := s.opts.ServiceStats(ctx, vs)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read IPVS counters of %s on %s: %v", k, s.opts.Self.Id, err)
	}
	return &edgelbv1.GetServiceStatsResponse{Member: s.opts.Self.Id, Time: timestamppb.Now(), Ports: ports}, nil
}
