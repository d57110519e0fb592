package bgp

import (
	"net/netip"
	"testing"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/rules"
)

func TestDecideTable(t *testing.T) {
	ok := Member{LeaseValid: true, DataPlaneHealthy: true, DrainWait: 30 * time.Second}
	vip := VIP{Addr: netip.MustParseAddr("198.51.100.7"), Pool: "rack", Healthy: true}
	host := netip.MustParsePrefix("198.51.100.7/32")
	for _, tc := range []struct {
		name    string
		m       func(Member) Member
		v       func(VIP) VIP
		want    bool // advertised
		gs      bool // with GRACEFUL_SHUTDOWN
		recheck time.Duration
	}{
		{"eligible", nil, nil, true, false, 0},
		{"lease lapsed", func(m Member) Member { m.LeaseValid = false; return m }, nil, false, false, 0},
		{"data plane unhealthy", func(m Member) Member { m.DataPlaneHealthy = false; return m }, nil, false, false, 0},
		{"no healthy backend", nil, func(v VIP) VIP { v.Healthy = false; return v }, false, false, 0},
		{"drain begins", func(m Member) Member { m.Draining = true; return m }, nil, true, true, 30 * time.Second},
		{"drain midway", func(m Member) Member { m.Draining, m.DrainElapsed = true, 20*time.Second; return m }, nil, true, true, 10 * time.Second},
		{"drain over", func(m Member) Member { m.Draining, m.DrainElapsed = true, 30*time.Second; return m }, nil, false, false, 0},
		{"drain without wait", func(m Member) Member { m.Draining, m.DrainWait = true, 0; return m }, nil, false, false, 0},
		// Quorum loss during a drain withdraws at once: the lease rules all.
		{"drain and lease lapsed", func(m Member) Member { m.Draining, m.LeaseValid = true, false; return m }, nil, false, false, 0},
		{"invalid address", nil, func(v VIP) VIP { v.Addr = netip.Addr{}; return v }, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, v := ok, vip
			if tc.m != nil {
				m = tc.m(m)
			}
			if tc.v != nil {
				v = tc.v(v)
			}
			d := Decide(m, []VIP{v})
			if got := len(d.Routes) == 1; got != tc.want {
				t.Fatalf("advertised = %v (%v), want %v", got, d.Routes, tc.want)
			}
			if tc.want && (d.Routes[0].Prefix != host || d.Routes[0].GracefulShutdown() != tc.gs) {
				t.Errorf("route %+v, want %s with graceful shutdown %v", d.Routes[0], host, tc.gs)
			}
			if d.Recheck != tc.recheck {
				t.Errorf("recheck %s, want %s", d.Recheck, tc.recheck)
			}
		})
	}
}

func TestDecideAttributesAndAggregation(t *testing.T) {
	lp := uint32(200)
	a := &edgelbv1.BgpAttributes{Communities: []string{"65000:200", "65000:100"}, LargeCommunities: []string{"65000:1:2"}, LocalPreference: &lp}
	agg := &edgelbv1.BgpAttributes{AggregationLength: 24, AggregationLengthV6: 64, Communities: []string{"1:1"}}
	m := Member{LeaseValid: true, DataPlaneHealthy: true, Draining: true, DrainWait: time.Minute}
	d := Decide(m, []VIP{
		{Addr: netip.MustParseAddr("2001:db8::5"), Pool: "v6", Attrs: a, Healthy: true},
		{Addr: netip.MustParseAddr("192.0.2.9"), Pool: "b-agg", Attrs: agg, Healthy: true},
		{Addr: netip.MustParseAddr("192.0.2.10"), Pool: "b-agg", Attrs: agg, Healthy: false},
		{Addr: netip.MustParseAddr("192.0.2.11"), Pool: "a-agg", Attrs: agg, Healthy: true},
		{Addr: netip.MustParseAddr("2001:db8:1::7"), Pool: "b-agg", Attrs: agg, Healthy: true},
		{Addr: netip.MustParseAddr("::ffff:198.51.100.1"), Pool: "v4", Healthy: true},
	})
	want := []string{"192.0.2.0/24", "198.51.100.1/32", "2001:db8::5/128", "2001:db8:1::/64"}
	if len(d.Routes) != len(want) {
		t.Fatalf("routes %+v, want %v", d.Routes, want)
	}
	for i, w := range want {
		if d.Routes[i].Prefix.String() != w {
			t.Errorf("route %d = %s, want %s", i, d.Routes[i].Prefix, w)
		}
	}
	// Two pools aggregated into one prefix: the first by name gives the attributes.
	if d.Routes[0].Pool != "a-agg" {
		t.Errorf("aggregate from pool %s, want a-agg", d.Routes[0].Pool)
	}
	r := d.Routes[2]
	c100, _ := rules.ParseCommunity("65000:100")
	c200, _ := rules.ParseCommunity("65000:200")
	if len(r.Communities) != 3 || r.Communities[0] != c100 || r.Communities[1] != c200 || r.Communities[2] != rules.GracefulShutdown ||
		!r.HasLocalPref || r.LocalPref != 200 || len(r.LargeCommunities) != 1 || r.LargeCommunities[0] != (rules.LargeCommunity{Global: 65000, Local1: 1, Local2: 2}) {
		t.Errorf("attributes: %+v", r)
	}
	if d.Routes[1].HasLocalPref || len(d.Routes[1].Communities) != 1 {
		t.Errorf("pool without attributes: %+v, want only GRACEFUL_SHUTDOWN", d.Routes[1])
	}
	if !r.Equal(r) || r.Equal(d.Routes[3]) {
		t.Error("Equal")
	}
}

func TestVIPsOf(t *testing.T) {
	pools := Pools([]*edgelbv1.AddressPool{
		{Name: "lan"},
		{Name: "rack", AnnounceMode: edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP, Bgp: &edgelbv1.BgpAttributes{Communities: []string{"1:1"}}},
	})
	up := &edgelbv1.Backend{Address: "10.0.0.1"}
	down := &edgelbv1.Backend{Address: "10.0.0.2", Health: &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY}}
	drained := &edgelbv1.Backend{Address: "10.0.0.3", Drained: true}
	vss := []*edgelbv1.VirtualService{
		{Name: "a", Vip: "192.0.2.1", Pool: "lan", Owner: "m1", Backends: []*edgelbv1.Backend{up}},
		{Name: "b", Vip: "198.51.100.1", Pool: "rack", Backends: []*edgelbv1.Backend{down, drained}},
		{Name: "c", Vip: "198.51.100.1", Pool: "rack", Backends: []*edgelbv1.Backend{up}}, // same VIP, another port
		{Name: "d", Vip: "198.51.100.2", Pool: "rack", Backends: []*edgelbv1.Backend{down}},
		{Name: "e", Vip: "198.51.100.3", Pool: "rack"},
		{Name: "f", Vip: "203.0.113.1", Pool: ""},
	}
	got := VIPsOf(vss, pools)
	want := map[string]bool{"198.51.100.1": true, "198.51.100.2": false, "198.51.100.3": false}
	if len(got) != len(want) {
		t.Fatalf("VIPsOf = %+v", got)
	}
	for _, v := range got {
		if h, ok := want[v.Addr.String()]; !ok || h != v.Healthy || v.Pool != "rack" || v.Attrs.GetCommunities()[0] != "1:1" {
			t.Errorf("%+v, want healthy %v", v, h)
		}
	}
	l2 := WithoutBGP(vss, pools)
	if len(l2) != 2 || l2[0].Name != "a" || l2[1].Name != "f" {
		t.Errorf("WithoutBGP kept %v", l2)
	}
	if !Mode(vss[1], pools) || Mode(vss[0], pools) || Mode(vss[5], pools) {
		t.Error("Mode")
	}
}
