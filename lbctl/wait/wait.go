// Package wait blocks until a virtual service is served: until the leader
// has given it an owner that programs it into its kernel.
package wait

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrTimeout is returned when the owner did not appear in time.
var ErrTimeout = errors.New("timed out")

// ForOwner follows the Watch stream until tenant/name has an owner and
// returns the service as last seen. Progress goes to progress. If the
// server does not implement Watch it polls Get instead.
func ForOwner(ctx context.Context, vs edgelbv1.VirtualServiceServiceClient, w edgelbv1.WatchServiceClient,
	tenant, name string, timeout time.Duration, progress io.Writer) (*edgelbv1.VirtualService, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fmt.Fprintf(progress, "waiting up to %s for %s/%s to get an owner...\n", timeout, tenant, name)
	got, err := watch(ctx, w, tenant, name)
	if status.Code(err) == codes.Unimplemented {
		got, err = poll(ctx, vs, tenant, name)
	}
	if err != nil {
		// The server ends the stream at the same deadline (it travels with
		// the call) and its cancel can arrive before the client's own timer.
		if c := status.Code(err); ctx.Err() == context.DeadlineExceeded || c == codes.DeadlineExceeded || c == codes.Canceled {
			return nil, fmt.Errorf("%w after %s waiting for %s/%s to get an owner; it was saved, check `lbctl vip get %s` and `lbctl member status`",
				ErrTimeout, timeout, tenant, name, name)
		}
		return nil, err
	}
	fmt.Fprintf(progress, "%s/%s is served by %s at %s\n", tenant, name, got.GetOwner(), got.GetVip())
	return got, nil
}

func watch(ctx context.Context, w edgelbv1.WatchServiceClient, tenant, name string) (*edgelbv1.VirtualService, error) {
	// Resume revision 0 replays the current state first, so an owner set
	// before the stream opened is not missed.
	stream, err := w.Watch(ctx, &edgelbv1.WatchRequest{Tenant: tenant})
	if err != nil {
		return nil, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if err == io.EOF {
				return nil, errors.New("watch stream ended before the service got an owner")
			}
			return nil, err
		}
		for _, ev := range resp.GetEvents() {
			v := ev.GetVirtualService()
			if v == nil || v.GetTenant() != tenant || v.GetName() != name {
				continue
			}
			if ev.GetType() == edgelbv1.EventType_EVENT_TYPE_DELETE {
				return nil, status.Errorf(codes.NotFound, "%s/%s was deleted while waiting for an owner", tenant, name)
			}
			if v.GetOwner() != "" {
				return v, nil
			}
		}
	}
}

func poll(ctx context.Context, vs edgelbv1.VirtualServiceServiceClient, tenant, name string) (*edgelbv1.VirtualService, error) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		resp, err := vs.GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Tenant: tenant, Name: name})
		if err != nil {
			return nil, err
		}
		if resp.GetService().GetOwner() != "" {
			return resp.GetService(), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}
