package wait

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pollOnly answers Get with an owner from the third call on, and has no Watch.
type pollOnly struct {
	edgelbv1.VirtualServiceServiceClient
	calls atomic.Int32
	owner string
}

func (p *pollOnly) GetVirtualService(context.Context, *edgelbv1.GetVirtualServiceRequest, ...grpc.CallOption) (*edgelbv1.GetVirtualServiceResponse, error) {
	vs := &edgelbv1.VirtualService{Name: "web", Tenant: "default", Vip: "192.0.2.1"}
	if p.calls.Add(1) >= 3 {
		vs.Owner = p.owner
	}
	return &edgelbv1.GetVirtualServiceResponse{Service: vs}, nil
}

type noWatch struct{ edgelbv1.WatchServiceClient }

func (noWatch) Watch(context.Context, *edgelbv1.WatchRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[edgelbv1.WatchResponse], error) {
	return nil, status.Error(codes.Unimplemented, "no watch")
}

func TestPollFallbackAndTimeout(t *testing.T) {
	var progress bytes.Buffer
	vs, err := ForOwner(context.Background(), &pollOnly{owner: "lb2"}, noWatch{}, "default", "web", 5*time.Second, &progress)
	if err != nil || vs.GetOwner() != "lb2" || !strings.Contains(progress.String(), "served by lb2") {
		t.Fatalf("poll fallback: %v %v %q", vs, err, progress.String())
	}
	_, err = ForOwner(context.Background(), &pollOnly{}, noWatch{}, "default", "web", 200*time.Millisecond, &progress)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("want timeout, got %v", err)
	}
}
