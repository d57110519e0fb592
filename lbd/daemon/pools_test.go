package daemon

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

func poolClient(t testing.TB, addr string) edgelbv1.AddressPoolServiceClient {
	return edgelbv1.NewAddressPoolServiceClient(dial(t, addr))
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
	_, err = vips.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{Name: "bc", Vip: "192.0.2.3", Ports: port}})
	if ei, ok := errinfo.Of(err); status.Code(err) != codes.FailedPrecondition || !ok || ei.Reason != errinfo.ReservedAddress || ei.Metadata["kind"] != "broadcast address" || ei.Metadata["pool"] != "p" {
		t.Fatalf("broadcast address as a VIP: %v %v", err, ei)
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

// TestPoolsAvoidMemberAddresses runs real members on loopback whose data
// interface addresses and gateway come from the configuration
// (control-plane-only), so no host networking is read or touched.
func TestPoolsAvoidMemberAddresses(t *testing.T) {
	ds := startCluster(t, 1, func(c *config.Config) {
		c.DataPlane.InterfaceAddresses = []string{"192.0.2.5"}
		c.DataPlane.Gateways = []string{"192.0.2.1"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pools := poolClient(t, ds[0].Addr())
	m, ok := ds[0].Node().FSM.Member("m1")
	if !ok || len(m.InterfaceAddresses) != 1 || m.InterfaceAddresses[0] != "192.0.2.5" || len(m.Gateways) != 1 {
		t.Fatalf("member record %v", m)
	}
	_, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/24"}}})
	if ei, ok := errinfo.Of(err); status.Code(err) != codes.FailedPrecondition || !ok || ei.Reason != errinfo.HostAddressInPool || ei.Metadata["member"] != "m1" {
		t.Fatalf("pool over the member's address: %v %v", err, ei)
	}
	if _, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.16/28"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = pools.UpdateAddressPool(ctx, &edgelbv1.UpdateAddressPoolRequest{Name: "p", AddRanges: []string{"192.0.2.0/30"}})
	if !strings.Contains(status.Convert(err).Message(), "192.0.2.1, the default gateway of member m1") {
		t.Fatalf("update over the gateway: %v", err)
	}
	allow := true
	if _, err := pools.UpdateAddressPool(ctx, &edgelbv1.UpdateAddressPoolRequest{Name: "p", AddRanges: []string{"192.0.2.0/30"}, AllowHostAddresses: &allow}); err != nil {
		t.Fatalf("update with allow_host_addresses: %v", err)
	}
	if _, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "q", Ranges: []string{"198.51.100.0/24"}}}); err != nil {
		t.Fatal(err)
	}

	// A member that joins with an address in an existing pool is let in
	// (refusing it would not fix the pool) and says so in its status.
	cfg := config.Default()
	cfg.ID = "m2"
	cfg.DataDir = filepath.Join(t.TempDir(), "m2")
	cfg.APIAddr, cfg.RaftAddr = freeAddr(t), freeAddr(t)
	cfg.MetricsAddr = ""
	cfg.DataPlane.Mode = "none"
	cfg.Health.Enabled = false
	cfg.DataPlane.InterfaceAddresses = []string{"198.51.100.7"}
	cfg.Join = []string{ds[0].Addr()}
	d2, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Stop() })
	cc, err := grpc.NewClient(ds[0].Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var warnings []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		st, err := edgelbv1.NewClusterServiceClient(cc).GetMemberStatus(ctx, &edgelbv1.GetMemberStatusRequest{Id: "m2"})
		if err == nil && len(st.Status.Warnings) > 0 {
			warnings = st.Status.Warnings
			break
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "address pool q") || !strings.Contains(warnings[0], "198.51.100.7") {
		t.Fatalf("m2 status warnings %v", warnings)
	}
}

// TestFollowerRefreshesItsRecord: a follower restarted with another address
// updates its member record by itself, and keeps its drained state.
func TestFollowerRefreshesItsRecord(t *testing.T) {
	ds := startCluster(t, 2)
	l, f := leaderAndFollower(t, ds)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cc, err := grpc.NewClient(l.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := edgelbv1.NewClusterServiceClient(cc).DrainMember(ctx, &edgelbv1.DrainMemberRequest{Id: f.cfg.ID}); err != nil {
		t.Fatal(err)
	}
	cfg := f.cfg
	if err := f.Stop(); err != nil {
		t.Fatal(err)
	}
	cfg.Join = nil
	cfg.DataPlane.InterfaceAddresses = []string{"192.0.2.44"}
	f2, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f2.Stop() })
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		m, ok := l.Node().FSM.Member(cfg.ID)
		if ok && len(m.InterfaceAddresses) == 1 && m.InterfaceAddresses[0] == "192.0.2.44" {
			if m.State != edgelbv1.MemberState_MEMBER_STATE_DRAINING {
				t.Fatalf("refreshing the record changed the state to %v", m.State)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader still has %v", m)
		}
	}
}
