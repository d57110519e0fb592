package server

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/lbd/ownership"
	"github.com/edgelb/edgelb/lbd/validate"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/fsm"
)

// MoveVIP hands every service on an address to another member. The assigner
// keeps it there (ownership is sticky) while the member stays eligible.
func (s *Server) MoveVIP(ctx context.Context, req *edgelbv1.MoveVIPRequest) (*edgelbv1.MoveVIPResponse, error) {
	addr, err := validate.VIP("vip", req.Vip)
	if err != nil {
		return nil, err
	}
	if err := validate.RefName("member", req.Member, 63); err != nil {
		return nil, err
	}
	m, ok := s.fsm.Member(req.Member)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "member %s not found (lbctl member list)", req.Member)
	}
	if m.State != edgelbv1.MemberState_MEMBER_STATE_ACTIVE {
		return nil, status.Errorf(codes.FailedPrecondition, "member %s is %s; only an active member can take a VIP (lbctl member drain %s --undo)",
			m.Id, stateName(m.State), m.Id)
	}
	vss, _ := s.fsm.Shared(fsm.Filter{VIP: addr.String()})
	if len(vss) == 0 {
		return nil, status.Errorf(codes.NotFound, "no virtual service uses VIP %s (lbctl vip list)", addr)
	}
	if p, _, _, ok := s.fsm.Pool(vss[0].Pool); ok && vss[0].Pool != "" && p.GetAnnounceMode() == edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP {
		return nil, errinfo.New(codes.FailedPrecondition, errinfo.BgpVIPNotMovable, map[string]string{"vip": addr.String(), "pool": p.Name},
			fmt.Sprintf("VIP %s is from bgp pool %s: it has no owner, every eligible member advertises it; drain a member (lbctl member drain) to take that member out of its paths", addr, p.Name))
	}
	var as []*raftv1.Assignment
	for _, vs := range vss {
		if vs.PinnedMember != "" && vs.PinnedMember != req.Member {
			return nil, status.Errorf(codes.FailedPrecondition, "%s/%s is pinned to member %s; change its pin (lbctl vip update --pin) instead of moving it",
				vs.Tenant, vs.Name, vs.PinnedMember)
		}
		as = append(as, ownership.Assign(vs, req.Member, ownership.ReasonMoved))
	}
	if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_SetOwners{SetOwners: &raftv1.SetOwners{Assignments: as}}}); err != nil {
		return nil, err
	}
	out, _ := s.fsm.List(fsm.Filter{VIP: addr.String()})
	return &edgelbv1.MoveVIPResponse{Services: out}, nil
}

func stateName(st edgelbv1.MemberState) string {
	switch st {
	case edgelbv1.MemberState_MEMBER_STATE_ACTIVE:
		return "active"
	case edgelbv1.MemberState_MEMBER_STATE_DRAINING:
		return "draining"
	case edgelbv1.MemberState_MEMBER_STATE_LEFT:
		return "left"
	}
	return "unknown"
}

// DrainMember marks a member draining (or active again). The assigner moves a
// draining member's VIPs to others and gives it no new ones.
func (s *Server) DrainMember(ctx context.Context, req *edgelbv1.DrainMemberRequest) (*edgelbv1.DrainMemberResponse, error) {
	if err := validate.RefName("id", req.Id, 63); err != nil {
		return nil, err
	}
	m, ok := s.fsm.Member(req.Id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "member %s not found (lbctl member list)", req.Id)
	}
	want := edgelbv1.MemberState_MEMBER_STATE_DRAINING
	if req.Undrain {
		want = edgelbv1.MemberState_MEMBER_STATE_ACTIVE
	}
	if m.State == want {
		return &edgelbv1.DrainMemberResponse{Member: m}, nil
	}
	if !req.Undrain {
		active := 0
		for _, o := range s.fsm.Members() {
			if o.State == edgelbv1.MemberState_MEMBER_STATE_ACTIVE {
				active++
			}
		}
		if active <= 1 {
			return nil, status.Errorf(codes.FailedPrecondition, "member %s is the last active member; draining it would leave its VIPs without an owner", req.Id)
		}
	}
	n := proto.Clone(m).(*edgelbv1.Member)
	n.State, n.Suffrage = want, ""
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_PutMember{PutMember: &raftv1.PutMember{Member: n}}})
	if err != nil {
		return nil, err
	}
	return &edgelbv1.DrainMemberResponse{Member: res.Member}, nil
}

// HandOff moves every VIP member owns to the member that would inherit it if
// member failed now (ownership.Successors, whose health checks already run),
// as one planned move: a member stopping cleanly calls it for itself, so a
// rolling restart moves VIPs the way `lbctl vip move` does instead of
// waiting for the grace to run out. A VIP pinned to member, or with no other
// active member to go to, stays. It returns the VIPs moved.
func (s *Server) HandOff(ctx context.Context, member string) ([]string, error) {
	all, _ := s.fsm.All()
	pinnedHere := map[string]bool{}
	for _, vs := range all {
		if vs.PinnedMember == member {
			pinnedHere[vs.Vip] = true
		}
	}
	succ := ownership.Successors(all, s.fsm.Members())
	var as []*raftv1.Assignment
	var vips []string
	seen := map[string]bool{}
	for _, vs := range all {
		if vs.Owner != member || pinnedHere[vs.Vip] {
			continue
		}
		to := succ[vs.Vip]
		if to == "" || to == member {
			continue
		}
		as = append(as, ownership.Assign(vs, to, ownership.ReasonHandOff))
		if !seen[vs.Vip] {
			seen[vs.Vip] = true
			vips = append(vips, vs.Vip)
		}
	}
	if len(as) == 0 {
		return nil, nil
	}
	if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_SetOwners{SetOwners: &raftv1.SetOwners{Assignments: as}}}); err != nil {
		return nil, fmt.Errorf("hand %d VIPs of %s over: %w", len(vips), member, err)
	}
	return vips, nil
}
