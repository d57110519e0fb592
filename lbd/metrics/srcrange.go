package metrics

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SourceRangeDrops reads, per VIP with source ranges, the packets dropped
// because their source was outside the ranges (the data plane implements it).
type SourceRangeDrops interface {
	SourceRangeDrops(ctx context.Context) (map[netip.Addr]uint64, error)
}

// srcRangeCollector reads the kernel's rule counters at scrape time: the
// count is the kernel's own, and a member nobody scrapes starts no process.
type srcRangeCollector struct {
	src     SourceRangeDrops
	timeout time.Duration
	dropped *prometheus.Desc
	up      *prometheus.Desc
}

// RegisterSourceRanges adds a collector for src to m's registry.
func (m *Metrics) RegisterSourceRanges(src SourceRangeDrops) error {
	return m.Registry.Register(&srcRangeCollector{
		src: src, timeout: 5 * time.Second,
		dropped: prometheus.NewDesc(prometheus.BuildFQName(ns, "source_range", "dropped_packets_total"),
			"Packets to the VIP dropped because their source is outside the source ranges of the service on that port (counted on every member; only the owner receives traffic).", []string{"vip"}, nil),
		up: prometheus.NewDesc(prometheus.BuildFQName(ns, "source_range", "up"),
			"1 when the last read of the source-range rule counters succeeded.", nil, nil),
	})
}

func (c *srcRangeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.dropped
	ch <- c.up
}

func (c *srcRangeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	drops, err := c.src.SourceRangeDrops(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for a, n := range drops {
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(n), a.String())
	}
}
