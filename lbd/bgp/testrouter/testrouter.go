// Package testrouter is an embedded GoBGP playing an edge's router in tests:
// it accepts sessions from lbd members on a loopback address and shows the
// routes each sent. Tests only; it uses no BFD (GoBGP's BFD binds UDP 3784
// on every address, so two speakers in one network namespace cannot share it).
package testrouter

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gbgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/edgelb/edgelb/internal/freeport"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/raft/rules"
)

// ASN is the router's AS.
const ASN = 65000

// Router is a GoBGP listening on Addr:Port.
type Router struct {
	Addr string
	Port int
	srv  *server.BgpServer
}

// Start runs a router on addr (a loopback address) that accepts the given
// neighbours (address → ASN); it stops when the test ends.
func Start(t testing.TB, addr string, neighbours map[string]uint32) *Router {
	t.Helper()
	r := &Router{Addr: addr, Port: freeport.Loopback(t), srv: server.NewBgpServer()}
	go r.srv.Serve()
	t.Cleanup(r.srv.Stop)
	ctx := context.Background()
	if err := r.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: ASN, RouterId: "10.255.0.1", ListenPort: int32(r.Port), ListenAddresses: []string{addr}}}); err != nil {
		t.Fatal(err)
	}
	for n, asn := range neighbours {
		if err := r.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf:      &api.PeerConf{NeighborAddress: n, PeerAsn: asn},
			Transport: &api.Transport{PassiveMode: true, LocalAddress: addr},
			AfiSafis: []*api.AfiSafi{
				{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
				{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
			},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// Path is a route as the router received it.
type Path struct {
	Communities []uint32
	Large       []rules.LargeCommunity
	LocalPref   uint32
	NextHop     netip.Addr
}

// Received is what neighbour sent of family v6 or v4, by prefix.
func (r *Router) Received(t testing.TB, neighbour string, v6 bool) map[netip.Prefix]Path {
	t.Helper()
	fam := gbgp.RF_IPv4_UC
	if v6 {
		fam = gbgp.RF_IPv6_UC
	}
	out := map[netip.Prefix]Path{}
	err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_IN, Name: neighbour, Family: fam}, func(prefix gbgp.NLRI, paths []*apiutil.Path) {
		p, err := netip.ParsePrefix(prefix.String())
		if err != nil {
			t.Errorf("router got NLRI %s", prefix)
			return
		}
		for _, path := range paths {
			if path.Withdrawal {
				continue
			}
			var rx Path
			for _, a := range path.Attrs {
				switch v := a.(type) {
				case *gbgp.PathAttributeCommunities:
					rx.Communities = slices.Clone(v.Value)
				case *gbgp.PathAttributeLargeCommunities:
					for _, l := range v.Values {
						rx.Large = append(rx.Large, rules.LargeCommunity{Global: l.ASN, Local1: l.LocalData1, Local2: l.LocalData2})
					}
				case *gbgp.PathAttributeLocalPref:
					rx.LocalPref = v.Value
				case *gbgp.PathAttributeNextHop:
					rx.NextHop = v.Value
				case *gbgp.PathAttributeMpReachNLRI:
					rx.NextHop = v.Nexthop
				}
			}
			out[p] = rx
		}
	})
	if err != nil {
		t.Fatalf("router ListPath: %v", err)
	}
	return out
}

// Peer is the lbd peer config of a member that speaks to r from local. BFD
// is off: the router runs none.
func (r *Router) Peer(local string) config.BGPPeer {
	off := false
	return config.BGPPeer{Address: r.Addr, ASN: ASN, Port: r.Port, LocalAddress: local, BFD: config.BFD{Enabled: &off}}
}

// DeadPeer is Peer with the router's address replaced by addr, where nobody
// listens: a session that stays down.
func (r *Router) DeadPeer(local, addr string) config.BGPPeer {
	p := r.Peer(local)
	p.Address = addr
	return p
}
