package bgp_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/bgp/testrouter"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/lbdtest"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/rules"
)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 60*time.Second; time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("never: %s", what)
}

// Two real lbd members peer with a router: both advertise a bgp-pool VIP
// (no owner is assigned), GetBgpStatus shows the sessions, and draining one
// member re-advertises its route with GRACEFUL_SHUTDOWN, then withdraws it,
// while the other keeps advertising.
func TestMembersAdvertiseBGPVIP(t *testing.T) {
	addrs := map[string]string{"m1": "127.0.0.2", "m2": "127.0.0.4"}
	r := testrouter.Start(t, "127.0.0.3", map[string]uint32{addrs["m1"]: 65001, addrs["m2"]: 65001})
	c := lbdtest.StartCluster(t, 2, lbdtest.Plaintext(), lbdtest.Named("m1", "m2"), lbdtest.WithConfig(func(cfg *config.Config) {
		cfg.BGP.ASN = 65001
		cfg.BGP.DrainWait.Duration = 2 * time.Second
		cfg.BGP.Peers = []config.BGPPeer{r.Peer(addrs[cfg.ID])}
	}))
	ctx := context.Background()
	conn := c.Admin(t)
	if _, err := edgelbv1.NewAddressPoolServiceClient(conn).CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{
		Name: "rack", Ranges: []string{"198.51.100.0/28"}, AnnounceMode: edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP,
		Bgp: &edgelbv1.BgpAttributes{Communities: []string{"65000:100"}},
	}}); err != nil {
		t.Fatal(err)
	}
	vsc := edgelbv1.NewVirtualServiceServiceClient(conn)
	created, err := vsc.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
		Name: "web", Tenant: "t", Pool: "rack",
		Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80}},
		// mh and dr, a bgp pool's defaults: dr keeps the port.
		Backends: []*edgelbv1.Backend{{Address: "10.0.0.21"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	host := netip.PrefixFrom(netip.MustParseAddr(created.Service.Vip), 32)
	c100, _ := rules.ParseCommunity("65000:100")
	from := func(id string) (testrouter.Path, bool) {
		p, ok := r.Received(t, addrs[id], false)[host]
		return p, ok
	}
	eventually(t, "both members advertise "+host.String(), func() bool {
		p1, ok1 := from("m1")
		p2, ok2 := from("m2")
		return ok1 && ok2 && slices.Equal(p1.Communities, []uint32{c100}) && slices.Equal(p2.Communities, []uint32{c100})
	})
	got, err := vsc.GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Tenant: "t", Name: "web"})
	if err != nil || got.Service.Owner != "" {
		t.Errorf("bgp VIP owner = %q (%v), want none: every member serves it", got.GetService().GetOwner(), err)
	}

	// There is no owner to move.
	_, err = vsc.MoveVIP(ctx, &edgelbv1.MoveVIPRequest{Vip: created.Service.Vip, Member: "m2"})
	if status.Code(err) != codes.FailedPrecondition || errinfo.Reason(err) != errinfo.BgpVIPNotMovable {
		t.Errorf("MoveVIP of a bgp VIP: %v (reason %q), want FailedPrecondition %s", err, errinfo.Reason(err), errinfo.BgpVIPNotMovable)
	}

	cl := edgelbv1.NewClusterServiceClient(conn)
	for _, id := range []string{"m1", "m2"} {
		st, err := cl.GetBgpStatus(ctx, &edgelbv1.GetBgpStatusRequest{Id: id})
		if err != nil {
			t.Fatalf("GetBgpStatus(%s): %v", id, err)
		}
		s := st.Status
		if s.MemberId != id || !s.Enabled || s.LocalAsn != 65001 || len(s.Peers) != 1 || s.Peers[0].SessionState != "established" ||
			s.Peers[0].BfdState != "off" || s.Peers[0].EstablishedTime == nil || !slices.Equal(s.AdvertisedPrefixes, []string{host.String()}) {
			t.Errorf("GetBgpStatus(%s) = %v", id, s)
		}
	}
	if _, err := cl.GetBgpStatus(ctx, &edgelbv1.GetBgpStatusRequest{Id: "nobody"}); err == nil {
		t.Error("GetBgpStatus of an unknown member succeeded")
	}

	if _, err := cl.DrainMember(ctx, &edgelbv1.DrainMemberRequest{Id: "m2"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "m2 re-advertises with GRACEFUL_SHUTDOWN", func() bool {
		p, ok := from("m2")
		return ok && slices.Contains(p.Communities, rules.GracefulShutdown) && slices.Contains(p.Communities, c100)
	})
	if p, ok := from("m1"); !ok || slices.Contains(p.Communities, rules.GracefulShutdown) {
		t.Errorf("m1's route during m2's drain: %+v %v", p, ok)
	}
	st, err := cl.GetBgpStatus(ctx, &edgelbv1.GetBgpStatusRequest{Id: "m2"})
	if err != nil || !st.Status.GracefulShutdown {
		t.Errorf("GetBgpStatus(m2) while draining: %v %v", st, err)
	}
	eventually(t, "m2 withdraws after drainWait", func() bool { _, ok := from("m2"); return !ok })
	if _, ok := from("m1"); !ok {
		t.Error("m1 stopped advertising when m2 drained")
	}
	// Undrained, m2 advertises again, without the community.
	if _, err := cl.DrainMember(ctx, &edgelbv1.DrainMemberRequest{Id: "m2", Undrain: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "m2 advertises again after undrain", func() bool {
		p, ok := from("m2")
		return ok && !slices.Contains(p.Communities, rules.GracefulShutdown)
	})
	// A stopped member's routes leave with its session.
	c.Members[1].Stop()
	eventually(t, "a stopped member's route is gone", func() bool { _, ok := from("m2"); return !ok })
}

// A member records its BGP peers down in its member record, so a session
// change reaches Watch as a member event ("bgp peers down: …").
func TestPeersDownInWatch(t *testing.T) {
	r := testrouter.Start(t, "127.0.0.3", map[string]uint32{"127.0.0.2": 65001})
	c := lbdtest.StartCluster(t, 1, lbdtest.Plaintext(), lbdtest.WithConfig(func(cfg *config.Config) {
		cfg.BGP.ASN = 65001
		cfg.BGP.Peers = []config.BGPPeer{r.Peer("127.0.0.2"), r.DeadPeer("127.0.0.2", "127.0.0.5")}
	}))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := c.Admin(t)
	// From revision 1: the events since the cluster began, then new ones.
	stream, err := edgelbv1.NewWatchServiceClient(conn).Watch(ctx, &edgelbv1.WatchRequest{ResumeRevision: 1})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("no member event with only 127.0.0.5 down: %v", err)
		}
		for _, ev := range resp.Events {
			m := ev.GetMember()
			if m != nil && slices.Equal(m.BgpPeersDown, []string{"127.0.0.5"}) && ev.Reason == "bgp peers down: 127.0.0.5" {
				members, err := edgelbv1.NewClusterServiceClient(conn).ListMembers(ctx, &edgelbv1.ListMembersRequest{})
				if err != nil || !slices.Equal(members.Members[0].BgpPeersDown, []string{"127.0.0.5"}) {
					t.Errorf("ListMembers: %v %v", members, err)
				}
				return
			}
		}
	}
}
