package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

var (
	bgpSessionUpDesc = prometheus.NewDesc(ns+"_bgp_session_up",
		"1 while this member's BGP session with the peer is established.", []string{"peer"}, nil)
	bgpBFDUpDesc = prometheus.NewDesc(ns+"_bgp_bfd_up",
		"1 while the BFD session with the peer is up (peers with BFD only).", []string{"peer"}, nil)
	bgpAdvertisedDesc = prometheus.NewDesc(ns+"_bgp_prefixes_advertised",
		"Prefixes this member advertises now (bgp-mode VIPs or their aggregates).", nil, nil)
	bgpPeerAdvertisedDesc = prometheus.NewDesc(ns+"_bgp_peer_prefixes_advertised",
		"Prefixes advertised to the peer, as its session counts them.", []string{"peer"}, nil)
)

// RegisterBGP adds the BGP series, read from status at each scrape, and the
// session transition counter BGPSession feeds.
func (m *Metrics) RegisterBGP(status func(context.Context) (*edgelbv1.BgpStatus, error)) error {
	for _, c := range []prometheus.Collector{m.bgpTransitions, bgpCollector{status}} {
		if err := m.Registry.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// BGPSession counts a session change (exported once RegisterBGP has run).
func (m *Metrics) BGPSession(peer string, up bool) {
	if m == nil || m.bgpTransitions == nil {
		return
	}
	dir := "down"
	if up {
		dir = "up"
	}
	m.bgpTransitions.WithLabelValues(peer, dir).Inc()
}

type bgpCollector struct {
	status func(context.Context) (*edgelbv1.BgpStatus, error)
}

func (c bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bgpSessionUpDesc
	ch <- bgpBFDUpDesc
	ch <- bgpAdvertisedDesc
	ch <- bgpPeerAdvertisedDesc
}

func (c bgpCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := c.status(ctx)
	if err != nil || !st.GetEnabled() {
		return
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, p := range st.Peers {
		ch <- prometheus.MustNewConstMetric(bgpSessionUpDesc, prometheus.GaugeValue, b(p.SessionState == "established"), p.Address)
		if p.BfdState != "off" {
			ch <- prometheus.MustNewConstMetric(bgpBFDUpDesc, prometheus.GaugeValue, b(p.BfdState == "up"), p.Address)
		}
		ch <- prometheus.MustNewConstMetric(bgpPeerAdvertisedDesc, prometheus.GaugeValue, float64(p.PrefixesAdvertised), p.Address)
	}
	ch <- prometheus.MustNewConstMetric(bgpAdvertisedDesc, prometheus.GaugeValue, float64(len(st.AdvertisedPrefixes)))
}
