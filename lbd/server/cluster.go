package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/internal/backoff"
	"github.com/edgelb/edgelb/lbd/validate"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node"
)

// onLeader runs local when this member leads, else call on the leader's
// ClusterService. Membership changes go through raft's configuration, which
// only the leader can change, so they are forwarded as whole calls.
func onLeader[T any](ctx context.Context, s *Server, local func(context.Context) (T, error), remote func(context.Context, edgelbv1.ClusterServiceClient) (T, error)) (T, error) {
	var zero T
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultWriteTimeout)
		defer cancel()
	}
	var noLeader time.Time
	for attempt := 0; ; attempt++ {
		if s.node.IsLeader() {
			res, err := local(ctx)
			if !errors.Is(err, errLeaderMoved) {
				return res, err
			}
			continue // handed leadership over: the new leader finishes the call
		}
		id, addr := s.leaderAPI()
		if addr != "" {
			conn, err := s.peer(addr)
			if err != nil {
				return zero, status.Errorf(codes.Unavailable, "connect to leader %s at %s: %v", id, addr, err)
			}
			return remote(ctx, edgelbv1.NewClusterServiceClient(conn))
		}
		if st := s.noLeaderFor(ctx, &noLeader, writeHint); st != nil {
			return zero, st.Err()
		}
		if !backoff.Wait(ctx, leaderRetry.Delay(attempt)) {
			return zero, status.Error(codes.Unavailable, "no raft leader known; check that a majority of members is up")
		}
	}
}

func (s *Server) ListMembers(ctx context.Context, req *edgelbv1.ListMembersRequest) (*edgelbv1.ListMembersResponse, error) {
	servers, err := s.node.Servers()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "read raft configuration: %v", err)
	}
	byID := map[string]*edgelbv1.Member{}
	for _, m := range s.fsm.Members() {
		m.Suffrage = "removed"
		byID[m.Id] = m
	}
	for _, sv := range servers {
		m, ok := byID[sv.ID]
		if !ok {
			// In raft but not yet registered (joining).
			m = &edgelbv1.Member{Id: sv.ID, RaftAddress: sv.Address}
			byID[sv.ID] = m
		}
		m.Suffrage = "voter"
		if !sv.Voter {
			m.Suffrage = "nonvoter"
		}
	}
	out := make([]*edgelbv1.Member, 0, len(byID))
	for _, m := range byID {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	leader, _ := s.node.Leader()
	return &edgelbv1.ListMembersResponse{Members: out, LeaderId: leader}, nil
}

func (s *Server) memberOrStub(id string) *edgelbv1.Member {
	if m, ok := s.fsm.Member(id); ok {
		return m
	}
	if id == s.opts.Self.Id {
		return proto.Clone(s.opts.Self).(*edgelbv1.Member)
	}
	_, addr := s.node.Leader()
	return &edgelbv1.Member{Id: id, RaftAddress: addr}
}

func (s *Server) GetLeader(ctx context.Context, req *edgelbv1.GetLeaderRequest) (*edgelbv1.GetLeaderResponse, error) {
	id, _ := s.node.Leader()
	if id == "" {
		return nil, status.Error(codes.Unavailable, "no leader elected; check that a majority of members is up")
	}
	return &edgelbv1.GetLeaderResponse{Leader: s.memberOrStub(id), Term: s.node.Status().Term}, nil
}

func (s *Server) TransferLeadership(ctx context.Context, req *edgelbv1.TransferLeadershipRequest) (*edgelbv1.TransferLeadershipResponse, error) {
	if req.TargetId != "" {
		if err := validate.RefName("target_id", req.TargetId, 63); err != nil {
			return nil, err
		}
	}
	return onLeader(ctx, s, func(ctx context.Context) (*edgelbv1.TransferLeadershipResponse, error) {
		if req.TargetId == s.opts.Self.Id {
			return &edgelbv1.TransferLeadershipResponse{Leader: s.memberOrStub(req.TargetId)}, nil
		}
		if req.TargetId != "" {
			// An unknown target is the caller's to fix, told as such
			// (raft's own error would say it only in words).
			servers, err := s.node.Servers()
			if err != nil {
				return nil, status.Errorf(codes.Unavailable, "transfer leadership: reading the raft configuration: %v", err)
			}
			if !slices.ContainsFunc(servers, func(sv node.Server) bool { return sv.ID == req.TargetId }) {
				return nil, errinfo.Errorf(codes.NotFound, errinfo.UnknownMember, map[string]string{"member": req.TargetId},
					"transfer leadership: %s is not a member of this cluster; lbctl member list shows who is", req.TargetId)
			}
		}
		if err := s.node.TransferLeadership(req.TargetId); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "transfer leadership to %q: %v", req.TargetId, err)
		}
		// Wait for this member to learn the new leader, so the answer names it.
		for ctx.Err() == nil {
			if id, _ := s.node.Leader(); id != "" && id != s.opts.Self.Id {
				return &edgelbv1.TransferLeadershipResponse{Leader: s.memberOrStub(id)}, nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return nil, status.Error(codes.DeadlineExceeded, "leadership transfer started but no new leader was seen in time")
	}, func(ctx context.Context, c edgelbv1.ClusterServiceClient) (*edgelbv1.TransferLeadershipResponse, error) {
		return c.TransferLeadership(ctx, req)
	})
}

// GetMemberStatus answers for this member, or asks the named member. A caller
// bound to a tenant sees only that tenant's owned VIPs: the full list would
// tell it which addresses other tenants use.
func (s *Server) GetMemberStatus(ctx context.Context, req *edgelbv1.GetMemberStatusRequest) (*edgelbv1.GetMemberStatusResponse, error) {
	resp, err := s.memberStatus(ctx, req)
	if err != nil {
		return nil, err
	}
	if tenant := callerTenant(ctx); tenant != "" && resp.Status != nil {
		resp.Status.OwnedVips = s.tenantVIPs(tenant, resp.Status.OwnedVips)
		var own []string
		for _, x := range resp.Status.IsolatedServices {
			if strings.HasPrefix(x, tenant+"/") {
				own = append(own, x)
			}
		}
		resp.Status.IsolatedServices = own
	}
	return resp, nil
}

// tenantVIPs returns the VIPs in vips that belong to tenant's services (VIPs
// are never shared between tenants).
func (s *Server) tenantVIPs(tenant string, vips []string) []string {
	mine := map[string]bool{}
	s.fsm.View(fsm.Filter{Tenant: tenant}, func(vs *edgelbv1.VirtualService) { mine[vs.Vip] = true })
	var out []string
	for _, v := range vips {
		if mine[v] {
			out = append(out, v)
		}
	}
	return out
}

func (s *Server) memberStatus(ctx context.Context, req *edgelbv1.GetMemberStatusRequest) (*edgelbv1.GetMemberStatusResponse, error) {
	if req.Id == "" || req.Id == s.opts.Self.Id {
		return &edgelbv1.GetMemberStatusResponse{Status: s.localStatus()}, nil
	}
	return askMember(s, req.Id, func(c edgelbv1.ClusterServiceClient) (*edgelbv1.GetMemberStatusResponse, error) {
		return c.GetMemberStatus(ctx, &edgelbv1.GetMemberStatusRequest{Id: req.Id})
	})
}

// askMember asks the member named id what only it knows (its own status,
// its BGP sessions): call runs against that member's API, and its errors
// keep their code and say which member answered.
func askMember[R any](s *Server, id string, call func(edgelbv1.ClusterServiceClient) (R, error)) (R, error) {
	var zero R
	if err := validate.RefName("id", id, 63); err != nil {
		return zero, err
	}
	m, ok := s.fsm.Member(id)
	if !ok {
		return zero, status.Errorf(codes.NotFound, "member %s not found (lbctl member list)", id)
	}
	conn, err := s.peer(m.ApiAddress)
	if err != nil {
		return zero, status.Errorf(codes.Unavailable, "connect to member %s at %s: %v", m.Id, m.ApiAddress, err)
	}
	resp, err := call(edgelbv1.NewClusterServiceClient(conn))
	if err != nil {
		st := status.Convert(err)
		return zero, status.Errorf(st.Code(), "member %s at %s: %s", m.Id, m.ApiAddress, st.Message())
	}
	return resp, nil
}

func (s *Server) localStatus() *edgelbv1.MemberStatus {
	st := s.node.Status()
	leader, _ := s.node.Leader()
	var owned, isolated []string
	if s.opts.Isolated != nil {
		isolated = s.opts.Isolated()
	}
	if s.opts.OwnedVIPs != nil {
		owned = s.opts.OwnedVIPs()
	} else {
		vss, _ := s.fsm.Shared(fsm.Filter{Owner: s.opts.Self.Id})
		seen := map[string]bool{}
		for _, vs := range vss {
			if !seen[vs.Vip] {
				seen[vs.Vip] = true
				owned = append(owned, vs.Vip)
			}
		}
	}
	return &edgelbv1.MemberStatus{
		Member:           s.memberOrStub(s.opts.Self.Id),
		RaftState:        st.State,
		Term:             st.Term,
		LastAppliedIndex: st.LastApplied,
		CommitIndex:      st.CommitIndex,
		LastLogIndex:     st.LastLogIndex,
		LeaderId:         leader,
		OwnedVips:        owned,
		Revision:         s.fsm.Revision(),
		DataPlane:        s.opts.DataPlane,
		Version:          s.opts.Version,
		IsolatedServices: isolated,
		ClusterId:        s.fsm.ClusterID(),
		NotReadyReason:   s.notReadyReason(),
		Warnings:         s.fsm.HostConflicts(s.opts.Self.Id),
	}
}

// notReadyReason is why this member is not ready, "" when it is.
func (s *Server) notReadyReason() string {
	if s.opts.Ready != nil {
		if ok, why := s.opts.Ready(); !ok {
			return why
		}
		return ""
	}
	if !s.Ready() {
		return "no raft leader known"
	}
	return ""
}

// RegisterSelf puts this member into the member table; the leader calls it on
// taking office so a bootstrapped or restarted member is listed with its API address.
func (s *Server) RegisterSelf(ctx context.Context) error {
	want := proto.Clone(s.opts.Self).(*edgelbv1.Member)
	if m, ok := s.fsm.Member(s.opts.Self.Id); ok {
		// Keep the state (a draining member re-registering stays drained)
		// and the BGP peers down (SetBGPPeersDown reports those).
		want.State, want.BgpPeersDown = m.State, m.BgpPeersDown
		if proto.Equal(m, want) {
			return nil
		}
	}
	_, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_PutMember{PutMember: &raftv1.PutMember{Member: want}}})
	if err != nil {
		return fmt.Errorf("register member %s: %w", s.opts.Self.Id, err)
	}
	s.warnHostConflicts(s.opts.Self.Id)
	return nil
}

// UpdateSelf rewrites this member's record when it differs from what the
// member reports now, keeping its state. A member not in the table is left
// alone: it joins through AddMember, and a removed one must not come back
// by itself.
func (s *Server) UpdateSelf(ctx context.Context) error {
	m, ok := s.fsm.Member(s.opts.Self.Id)
	if !ok {
		return nil
	}
	want := proto.Clone(s.opts.Self).(*edgelbv1.Member)
	want.State, want.BgpPeersDown = m.State, m.BgpPeersDown
	if proto.Equal(m, want) {
		return nil
	}
	if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_PutMember{PutMember: &raftv1.PutMember{Member: want}}}); err != nil {
		return fmt.Errorf("update member %s: %w", s.opts.Self.Id, err)
	}
	s.log.Info("member record updated", "id", want.Id, "interface_addresses", want.InterfaceAddresses, "gateways", want.Gateways)
	s.warnHostConflicts(s.opts.Self.Id)
	return nil
}

// warnHostConflicts logs every pool that holds an address member id
// reported. Registration is not refused for it: the pool exists already, and
// a member that cannot register cannot serve; the operator fixes the pool.
func (s *Server) warnHostConflicts(id string) {
	for _, w := range s.fsm.HostConflicts(id) {
		s.log.Warn("address pool holds an address of this member", "member", id, "problem", w)
	}
}

// SetBGPPeersDown records, in this member's record, the BGP peers whose
// session is down (sorted addresses; none when all are up), so every change
// is a member event in Watch. A member not in the table yet reports nothing.
func (s *Server) SetBGPPeersDown(ctx context.Context, down []string) error {
	m, ok := s.fsm.Member(s.opts.Self.Id)
	if !ok {
		return nil
	}
	if slices.Equal(m.BgpPeersDown, down) {
		return nil
	}
	want := proto.Clone(m).(*edgelbv1.Member)
	want.BgpPeersDown = down
	if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_PutMember{PutMember: &raftv1.PutMember{Member: want}}}); err != nil {
		return fmt.Errorf("record BGP peers down for member %s: %w", s.opts.Self.Id, err)
	}
	return nil
}
