package server

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// GetBgpStatus answers for this member's BGP speaker, or asks the named
// member (each member has its own sessions; nothing of it is replicated).
func (s *Server) GetBgpStatus(ctx context.Context, req *edgelbv1.GetBgpStatusRequest) (*edgelbv1.GetBgpStatusResponse, error) {
	if req.Id == "" || req.Id == s.opts.Self.Id {
		st := &edgelbv1.BgpStatus{MemberId: s.opts.Self.Id}
		if s.opts.BGPStatus != nil {
			got, err := s.opts.BGPStatus(ctx)
			if err != nil {
				return nil, status.Errorf(codes.Unavailable, "read this member's BGP speaker: %v", err)
			}
			st = got
			st.MemberId = s.opts.Self.Id
		}
		return &edgelbv1.GetBgpStatusResponse{Status: st}, nil
	}
	return askMember(s, req.Id, func(c edgelbv1.ClusterServiceClient) (*edgelbv1.GetBgpStatusResponse, error) {
		return c.GetBgpStatus(ctx, &edgelbv1.GetBgpStatusRequest{Id: req.Id})
	})
}
