package daemon

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/bgp/testrouter"
	"github.com/edgelb/edgelb/lbd/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// A bgp-pool VIP has no owner, so the raft leader checks its backends and
// publishes their health; the member advertises the VIP while a backend is
// healthy and withdraws it when none is.
func TestLeaderChecksBGPVIPBackends(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a raft member")
	}
	onLoopback(t)
	r := testrouter.Start(t, "127.0.0.3", map[string]uint32{"127.0.0.2": 65001})
	l := serve(t, "127.0.0.1:0")
	port := l.Addr().(*net.TCPAddr).Port
	ds := startCluster(t, 1, func(c *config.Config) {
		c.Health.Enabled, c.Health.WithoutDataPlane = true, true
		c.BGP.ASN = 65001
		c.BGP.Peers = []config.BGPPeer{r.Peer("127.0.0.2")}
	})
	ctx := context.Background()
	if _, err := poolClient(t, ds[0].Addr()).CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{
		Name: "rack", Ranges: []string{"198.51.100.0/28"}, AnnounceMode: edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP}}); err != nil {
		t.Fatal(err)
	}
	c := client(t, ds[0].Addr())
	vs := checkedWeb(backendIP, port)
	vs.Pool = "rack"
	// A bgp pool serves with dr (mh and dr are its defaults), which keeps
	// the port: the check probes the backend's listener instead.
	vs.Ports[0].BackendPort = 0
	vs.HealthCheck.Port = uint32(port)
	created, err := c.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: vs})
	if err != nil {
		t.Fatal(err)
	}
	host := netip.PrefixFrom(netip.MustParseAddr(created.Service.Vip), 32)
	until := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("never: %s", what)
			}
		}
	}
	state := func() edgelbv1.BackendHealthState {
		got, err := c.GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		if got.Service.Owner != "" {
			t.Fatalf("bgp VIP has owner %q", got.Service.Owner)
		}
		return got.Service.Backends[0].GetHealth().GetState()
	}
	advertised := func() bool { _, ok := r.Received(t, "127.0.0.2", false)[host]; return ok }
	until("backend published healthy", func() bool { return state() == edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY })
	until("VIP advertised", advertised)
	l.Close()
	until("backend published unhealthy", func() bool { return state() == edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY })
	until("VIP withdrawn with no healthy backend", func() bool { return !advertised() })
	l2 := serve(t, l.Addr().String())
	defer l2.Close()
	until("VIP advertised again", advertised)
}
