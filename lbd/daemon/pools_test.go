package daemon

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

func poolClient(t testing.TB, addr string) edgelbv1.AddressPoolServiceClient {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return edgelbv1.NewAddressPoolServiceClient(cc)
}

// TestPoolErrorsThroughFollower: a write a follower forwards to the leader
// fails with the same code and ErrorInfo as one sent to the leader.
func TestPoolErrorsThroughFollower(t *testing.T) {
	ds := startCluster(t, 3)
	_, f := leaderAndFollower(t, ds)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pools, vips := poolClient(t, f.Addr()), client(t, f.Addr())
	if _, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/30"}}}); err != nil {
		t.Fatal(err)
	}
	port := []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80}}
	_, err := vips.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
		Name: "six", Ports: port, IpFamily: edgelbv1.IPFamily_IP_FAMILY_IPV6}})
	if status.Code(err) != codes.FailedPrecondition || errinfo.Reason(err) != errinfo.NoPoolForFamily {
		t.Fatalf("IPv6 without an IPv6 pool, through a follower: %v (reason %q)", err, errinfo.Reason(err))
	}
	if _, err := vips.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{Name: "a", Ports: port}}); err != nil {
		t.Fatal(err)
	}
	_, err = pools.UpdateAddressPool(ctx, &edgelbv1.UpdateAddressPoolRequest{Name: "p", RemoveRanges: []string{"192.0.2.0/30"}})
	if ei, ok := errinfo.Of(err); status.Code(err) != codes.FailedPrecondition || !ok || ei.Reason != errinfo.PoolRangeInUse || ei.Metadata["vips"] != "192.0.2.1" {
		t.Fatalf("remove a range in use, through a follower: %v %v", err, ei)
	}
	resp, err := pools.UpdateAddressPool(ctx, &edgelbv1.UpdateAddressPoolRequest{Name: "p", AddRanges: []string{"2001:db8:1::/112"}, ExpectedGeneration: 1})
	if err != nil || resp.Pool.Generation != 2 {
		t.Fatalf("grow: %v %v", resp, err)
	}
	// The follower answers its reads from its own replica: the change is there.
	got, err := pools.GetAddressPool(ctx, &edgelbv1.GetAddressPoolRequest{Name: "p"})
	if err != nil || len(got.Pool.Ranges) != 2 {
		t.Fatalf("read back: %v %v", got, err)
	}
	six, err := vips.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
		Name: "six", Ports: port, IpFamily: edgelbv1.IPFamily_IP_FAMILY_IPV6}})
	if err != nil || six.Service.Vip != "2001:db8:1::1" {
		t.Fatalf("first IPv6 VIP: %v %v", six, err)
	}
}
