package server

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/validate"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/rules"
)

// tenantRef applies the caller's tenant binding (a cloud provider names its
// own tenant or none) and checks the name.
func tenantRef(ctx context.Context, tenant string) (string, error) {
	t, err := auth.TenantScope(ctx, tenant)
	if err != nil {
		return "", err
	}
	if err := validate.RefTenant("tenant", &t); err != nil {
		return "", err
	}
	return t, nil
}

// RenewTenantHeartbeat records that the tenant's cloud provider is alive. The
// time is the proposer's clock, stamped once on the command, so every member
// stores the same.
func (s *Server) RenewTenantHeartbeat(ctx context.Context, req *edgelbv1.RenewTenantHeartbeatRequest) (*edgelbv1.RenewTenantHeartbeatResponse, error) {
	t, err := tenantRef(ctx, req.Tenant)
	if err != nil {
		return nil, err
	}
	// Checked here with the FSM's own rule, so a bad report fails before a
	// proposal; sorted and distinct, as the FSM stores it.
	if err := rules.OrphanedServices("orphaned_services", req.OrphanedServices); err != nil {
		return nil, err
	}
	orphans := slices.Compact(slices.Sorted(slices.Values(req.OrphanedServices)))
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_RenewTenantHeartbeat{RenewTenantHeartbeat: &raftv1.RenewTenantHeartbeat{Tenant: t, OrphanedServices: orphans}}})
	if err != nil {
		return nil, err
	}
	return &edgelbv1.RenewTenantHeartbeatResponse{LastSeen: res.LastSeen}, nil
}

// ListTenants reads the local replica, like ListVirtualServices: lbctl status
// reads it on a member without a leader too.
func (s *Server) ListTenants(ctx context.Context, _ *edgelbv1.ListTenantsRequest) (*edgelbv1.ListTenantsResponse, error) {
	own, err := auth.TenantScope(ctx, "")
	if err != nil {
		return nil, err
	}
	ts, rev := s.fsm.Tenants()
	out := &edgelbv1.ListTenantsResponse{ServerTime: timestamppb.Now(), Revision: rev}
	for _, t := range ts {
		if own != "" && t.Name != own {
			continue
		}
		out.Tenants = append(out.Tenants, tenantProto(t))
	}
	return out, nil
}

func tenantProto(t fsm.TenantInfo) *edgelbv1.Tenant {
	p := &edgelbv1.Tenant{Name: t.Name, VirtualServices: uint32(t.Services), Pools: t.Pools, OrphanedServices: t.Orphaned}
	if !t.LastSeen.IsZero() {
		p.LastSeen = timestamppb.New(t.LastSeen)
	}
	return p
}

// DeleteTenantServices removes a gone cluster's services in one raft command
// rather than one delete per service: the FSM checks the silence against the
// state the command applies to, so a cloud provider that comes back (its
// heartbeat committed first) keeps every service, and no half-deleted tenant
// is left when the operator's connection drops midway.
func (s *Server) DeleteTenantServices(ctx context.Context, req *edgelbv1.DeleteTenantServicesRequest) (*edgelbv1.DeleteTenantServicesResponse, error) {
	t, err := tenantRef(ctx, req.Tenant)
	if err != nil {
		return nil, err
	}
	if req.Tenant == "" {
		return nil, errinfo.Errorf(codes.InvalidArgument, errinfo.InvalidField, map[string]string{"field": "tenant"},
			"tenant: is required (lbctl tenant list shows them)")
	}
	var silentFor time.Duration
	if req.SilentFor != nil {
		if err := req.SilentFor.CheckValid(); err != nil || req.SilentFor.AsDuration() < 0 {
			return nil, errinfo.Errorf(codes.InvalidArgument, errinfo.InvalidField, map[string]string{"field": "silent_for"},
				"silent_for: must be a non-negative duration, e.g. 10m")
		}
		silentFor = req.SilentFor.AsDuration()
	}
	if silentFor == 0 && !req.Force {
		return nil, errinfo.Errorf(codes.InvalidArgument, errinfo.InvalidField, map[string]string{"field": "silent_for"},
			"silent_for: say how long the tenant must have been silent (e.g. 10m), or set force")
	}
	if err := s.readCurrent(ctx); err != nil {
		return nil, err
	}
	if s.fsm.TenantServices(t) == 0 && s.fsm.LastSeen(t).IsZero() {
		return nil, s.unknownTenant(t)
	}
	if req.DryRun {
		vss, r := s.fsm.TenantGC(t, time.Now(), silentFor, req.Force)
		if r != nil {
			return nil, r.Err()
		}
		out := &edgelbv1.DeleteTenantServicesResponse{Services: vss, Revision: s.fsm.Revision()}
		if ls := s.fsm.LastSeen(t); !ls.IsZero() {
			out.LastSeen = timestamppb.New(ls)
		}
		return out, nil
	}
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_DeleteTenantServices{DeleteTenantServices: &raftv1.DeleteTenantServices{
		Tenant: t, SilentFor: durationpb.New(silentFor), Force: req.Force, RequestedBy: identityOf(ctx),
	}}})
	if err != nil {
		return nil, err
	}
	s.log.Warn("deleted a tenant's virtual services", "tenant", t, "services", len(res.Services), "force", req.Force, "by", identityOf(ctx))
	return &edgelbv1.DeleteTenantServicesResponse{Services: res.Services, LastSeen: res.LastSeen, Revision: res.Revision}, nil
}

// unknownTenant is NotFound naming the tenants there are, so a typo is
// seen at once.
func (s *Server) unknownTenant(t string) error {
	ts, _ := s.fsm.Tenants()
	var names []string
	for _, x := range ts {
		names = append(names, x.Name)
	}
	hint := "there are none"
	switch {
	case len(names) > 10:
		hint = "lbctl tenant list shows them"
	case len(names) > 0:
		hint = "known tenants: " + strings.Join(names, ", ")
	}
	return errinfo.Errorf(codes.NotFound, errinfo.TenantNotFound, map[string]string{"tenant": t},
		"tenant %s has no virtual services and never sent a heartbeat (%s)", t, hint)
}
