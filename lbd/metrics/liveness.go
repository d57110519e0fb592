package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Liveness is what the liveness metrics read (lbd/liveness and lbd/lease).
type Liveness struct {
	// Heard returns, per peer, how long since this member heard from it.
	Heard func() map[string]time.Duration
	// LeaseRemaining is how long this member's quorum lease stays valid
	// without another answer (≤0: not valid).
	LeaseRemaining func() time.Duration
}

// RegisterLiveness adds the member reachability and lease series, and the
// probe families ObserveProbe feeds.
func (m *Metrics) RegisterLiveness(l Liveness) error {
	m.probeSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Subsystem: "liveness", Name: "probe_seconds",
		Help:    "Round trip of liveness probes answered, by peer.",
		Buckets: latencyBuckets,
	}, []string{"peer"})
	m.probeFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Subsystem: "liveness", Name: "probe_failures_total",
		Help: "Liveness probes that got no answer within the lease, by peer.",
	}, []string{"peer"})
	for _, c := range []prometheus.Collector{m.probeSeconds, m.probeFailures, livenessCollector{l}} {
		if err := m.Registry.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// ObserveProbe records one probe's outcome (no-op before RegisterLiveness).
func (m *Metrics) ObserveProbe(peer string, rtt time.Duration, ok bool) {
	if m.probeSeconds == nil {
		return
	}
	if ok {
		m.probeSeconds.WithLabelValues(peer).Observe(rtt.Seconds())
	} else {
		m.probeFailures.WithLabelValues(peer).Inc()
	}
}

type livenessCollector struct{ l Liveness }

var (
	heardDesc = prometheus.NewDesc(ns+"_liveness_heard_seconds_ago",
		"Seconds since this member last heard from a peer (a probe or an answer); beyond ownership.grace from a majority, the peer's VIPs move.", []string{"peer"}, nil)
	leaseValidDesc = prometheus.NewDesc(ns+"_ownership_lease_valid",
		"1 while this member holds its quorum lease (a majority of voters answered its probes within ownership.lease, or, right after a restart, what was left of the lease it held before); 0: it withholds its VIPs.", nil, nil)
	leaseRemainingDesc = prometheus.NewDesc(ns+"_ownership_lease_remaining_seconds",
		"How long this member's quorum lease stays valid without another answer (0 when not valid).", nil, nil)
)

func (c livenessCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- heardDesc
	ch <- leaseValidDesc
	ch <- leaseRemainingDesc
}

func (c livenessCollector) Collect(ch chan<- prometheus.Metric) {
	for peer, d := range c.l.Heard() {
		ch <- prometheus.MustNewConstMetric(heardDesc, prometheus.GaugeValue, d.Seconds(), peer)
	}
	r := c.l.LeaseRemaining()
	valid := 0.0
	if r > 0 {
		valid = 1
	}
	ch <- prometheus.MustNewConstMetric(leaseValidDesc, prometheus.GaugeValue, valid)
	ch <- prometheus.MustNewConstMetric(leaseRemainingDesc, prometheus.GaugeValue, max(r, 0).Seconds())
}
