package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// A new service's owner is decided once, by the leader, whether the create
// reaches it directly or through a follower that forwards it; the event
// that records the owner says why, as an OwnershipReason (what lbctl status
// and the metrics read), and an operator's move says so too. A pinned
// service goes to its pin although neither the leader nor the follower is
// it; one joining its address goes where the address is.
func TestOwnerDecidedByLeader(t *testing.T) {
	c, apis := startCluster(t, 3)
	eps := c.endpoints()
	leader := c.leader(t, eps)
	via := c.follower(leader)
	var pin *member // neither the leader nor the follower the write goes through
	for _, m := range c.members {
		if m != leader && m != via {
			pin = m
		}
	}
	waitFor(t, 30*time.Second, "every member registered", func(ctx context.Context) error {
		r, err := apis[leader.id].cl.ListMembers(ctx, &edgelbv1.ListMembersRequest{})
		if err != nil {
			return err
		}
		if len(r.Members) != 3 {
			return fmt.Errorf("%d members registered", len(r.Members))
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	web := newService("web")
	web.PinnedMember, web.SharingKey = pin.id, "k"
	got, err := apis[via.id].vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: web})
	if err != nil {
		t.Fatalf("create through follower %s: %v", via.id, err)
	}
	vip := got.Service.Vip
	dns := newService("dns")
	dns.Vip, dns.SharingKey = vip, "k"
	dns.Ports[0].Protocol, dns.Ports[0].Port = edgelbv1.Protocol_PROTOCOL_UDP, 53
	if _, err := apis[leader.id].vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: dns}); err != nil {
		t.Fatalf("create on the leader: %v", err)
	}
	api, err := apis[via.id].vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: newService("api")})
	if err != nil {
		t.Fatalf("create through follower %s: %v", via.id, err)
	}
	first := api.Service.Owner
	if first == "" {
		t.Fatal("a new service committed without an owner while every member is up")
	}
	to := leader.id
	if to == first {
		to = via.id
	}
	if _, err := apis[via.id].vs.MoveVIP(ctx, &edgelbv1.MoveVIPRequest{Vip: api.Service.Vip, Member: to}); err != nil {
		t.Fatalf("move %s to %s: %v", api.Service.Vip, to, err)
	}

	// Every member applies the same events: read them from the third one.
	cc, err := grpc.NewClient(pin.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := edgelbv1.NewWatchServiceClient(cc).Watch(ctx, &edgelbv1.WatchRequest{ResumeRevision: 1})
	if err != nil {
		t.Fatal(err)
	}
	type change struct {
		owner string
		why   edgelbv1.OwnershipReason
	}
	want := []struct {
		name string
		change
	}{
		{"web", change{pin.id, edgelbv1.OwnershipReason_OWNERSHIP_REASON_PINNED}},
		{"dns", change{pin.id, edgelbv1.OwnershipReason_OWNERSHIP_REASON_SHARED_VIP}},
		{"api", change{first, edgelbv1.OwnershipReason_OWNERSHIP_REASON_ASSIGNED}},
		{"api", change{to, edgelbv1.OwnershipReason_OWNERSHIP_REASON_MOVED}},
	}
	var seen []string
	for len(seen) < len(want) {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("watch after %v: %v", seen, err)
		}
		if resp.Snapshot {
			t.Fatal("the history no longer holds revision 1")
		}
		for _, e := range resp.Events {
			vs := e.GetVirtualService()
			if vs == nil || e.OwnershipReason == edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED {
				continue
			}
			i := len(seen)
			seen = append(seen, fmt.Sprintf("%s→%s(%v)", vs.Name, vs.Owner, e.OwnershipReason))
			if i < len(want) && (vs.Name != want[i].name || vs.Owner != want[i].owner || e.OwnershipReason != want[i].why) {
				t.Errorf("ownership change %d: %s, want %s→%s(%v)", i, seen[i], want[i].name, want[i].owner, want[i].why)
			}
		}
	}
}
