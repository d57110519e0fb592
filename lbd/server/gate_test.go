package server

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/internal/apimd"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

func reason(t *testing.T, err error) string {
	t.Helper()
	return errinfo.Reason(err)
}

// TestReadGate: the interceptor refuses gated reads while the replica is not
// caught up (Unavailable, NOT_CAUGHT_UP), lets status reads through, and
// serves a read that asks for stale data with the headers that say so.
func TestReadGate(t *testing.T) {
	caughtUp := false
	s := newServer(t, Options{CaughtUp: func() bool { return caughtUp }})
	list := &grpc.UnaryServerInfo{FullMethod: edgelbv1.VirtualServiceService_ListVirtualServices_FullMethodName}
	st := &grpc.UnaryServerInfo{FullMethod: edgelbv1.ClusterService_GetMemberStatus_FullMethodName}
	called := 0
	var gotReason string
	handler := func(ctx context.Context, _ any) (any, error) { called++; gotReason = StaleReason(ctx); return nil, nil }

	_, err := s.UnaryReadGate(admin, nil, list, handler)
	if status.Code(err) != codes.Unavailable || reason(t, err) != errinfo.NotCaughtUp || called != 0 {
		t.Fatalf("list while not caught up: %v (reason %q, handler called %d); want Unavailable NOT_CAUGHT_UP", err, reason(t, err), called)
	}
	if _, err := s.UnaryReadGate(admin, nil, st, handler); err != nil || called != 1 {
		t.Fatalf("member status while not caught up: %v; want it served", err)
	}
	// A stale read is served; the handler learns why it is stale.
	ctx := metadata.NewIncomingContext(admin, metadata.Pairs(apimd.Stale, "1"))
	ctx = grpc.NewContextWithServerTransportStream(ctx, &headerStream{})
	if _, err := s.UnaryReadGate(ctx, nil, list, handler); err != nil || called != 2 || gotReason == "" {
		t.Fatalf("stale list: %v, called %d, reason %q", err, called, gotReason)
	}
	caughtUp = true
	if _, err := s.UnaryReadGate(admin, nil, list, handler); err != nil || called != 3 {
		t.Fatalf("list once caught up: %v", err)
	}
	// Every read of the replicated state is gated.
	for _, m := range []string{
		edgelbv1.VirtualServiceService_GetVirtualService_FullMethodName, edgelbv1.AddressPoolService_GetAddressPool_FullMethodName,
		edgelbv1.AddressPoolService_ListAddressPools_FullMethodName, edgelbv1.WatchService_Watch_FullMethodName,
		edgelbv1.ClusterService_SaveSnapshot_FullMethodName,
	} {
		if !gatedReads[m] {
			t.Errorf("%s is not gated", m)
		}
	}
}

// headerStream is the transport stream grpc.SetHeader needs outside a server.
type headerStream struct{ md metadata.MD }

func (h *headerStream) Method() string                  { return "" }
func (h *headerStream) SetHeader(md metadata.MD) error  { h.md = metadata.Join(h.md, md); return nil }
func (h *headerStream) SendHeader(md metadata.MD) error { return h.SetHeader(md) }
func (h *headerStream) SetTrailer(metadata.MD) error    { return nil }
