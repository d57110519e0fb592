package metrics

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func TestBGPSeries(t *testing.T) {
	m := New("test")
	st := &edgelbv1.BgpStatus{Enabled: true, AdvertisedPrefixes: []string{"198.51.100.1/32", "198.51.100.2/32"}, Peers: []*edgelbv1.BgpPeerStatus{
		{Address: "10.0.0.1", SessionState: "established", BfdState: "up", PrefixesAdvertised: 2},
		{Address: "10.0.0.2", SessionState: "active", BfdState: "off"},
	}}
	if err := m.RegisterBGP(func(context.Context) (*edgelbv1.BgpStatus, error) { return st, nil }); err != nil {
		t.Fatal(err)
	}
	m.BGPSession("10.0.0.1", true)
	m.BGPSession("10.0.0.2", false)
	want := `
# HELP edgelb_bgp_session_up 1 while this member's BGP session with the peer is established.
# TYPE edgelb_bgp_session_up gauge
edgelb_bgp_session_up{peer="10.0.0.1"} 1
edgelb_bgp_session_up{peer="10.0.0.2"} 0
# HELP edgelb_bgp_bfd_up 1 while the BFD session with the peer is up (peers with BFD only).
# TYPE edgelb_bgp_bfd_up gauge
edgelb_bgp_bfd_up{peer="10.0.0.1"} 1
# HELP edgelb_bgp_prefixes_advertised Prefixes this member advertises now (bgp-mode VIPs or their aggregates).
# TYPE edgelb_bgp_prefixes_advertised gauge
edgelb_bgp_prefixes_advertised 2
# HELP edgelb_bgp_session_transitions_total BGP session changes by peer and direction (up: established; down: left established).
# TYPE edgelb_bgp_session_transitions_total counter
edgelb_bgp_session_transitions_total{direction="down",peer="10.0.0.2"} 1
edgelb_bgp_session_transitions_total{direction="up",peer="10.0.0.1"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "edgelb_bgp_session_up", "edgelb_bgp_bfd_up",
		"edgelb_bgp_prefixes_advertised", "edgelb_bgp_session_transitions_total"); err != nil {
		t.Error(err)
	}
	// Without BGP configured, no series at all.
	m2 := New("test")
	if err := m2.RegisterBGP(func(context.Context) (*edgelbv1.BgpStatus, error) { return &edgelbv1.BgpStatus{}, nil }); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(m2.Registry, "edgelb_bgp_session_up", "edgelb_bgp_prefixes_advertised"); err != nil || n != 0 {
		t.Errorf("series without BGP: %d (%v)", n, err)
	}
}
