package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// IPVSStats reads the kernel's per-service and per-destination counters for
// the services this member programs. The data plane implements it; the
// collector calls it at scrape time, so the numbers are the kernel's own.
type IPVSStats interface {
	Stats(ctx context.Context) ([]ServiceStats, error)
}

// Counters are IPVS's cumulative counters and its rate estimates (the
// kernel's 2-second estimator) for one service or destination.
type Counters struct {
	Connections, PacketsIn, PacketsOut, BytesIn, BytesOut uint64
	CPS, PPSIn, PPSOut, BPSIn, BPSOut                     uint64
}

// ServiceStats is one IPVS virtual service (VIP, protocol, port).
type ServiceStats struct {
	// Tenant and Name of the virtual service it belongs to.
	Tenant, Name string
	VIP          string
	Protocol     string // tcp, udp, sctp
	Port         uint16
	Counters
	Backends []BackendStats
}

// BackendStats is one IPVS destination.
type BackendStats struct {
	Address string
	Port    uint16
	Weight  uint32
	// Connections by state right now.
	ActiveConns, InactiveConns uint32
	Counters
}

// ipvsCollector turns IPVSStats into Prometheus series at scrape time.
type ipvsCollector struct {
	src     IPVSStats
	timeout time.Duration

	up, scrapeSeconds                                                  *prometheus.Desc
	svcConns, svcPackets, svcBytes, svcCPS, svcPPS, svcBPS             *prometheus.Desc
	beConns, bePackets, beBytes, beActive, beInactive, beWeight, beCPS *prometheus.Desc
}

// RegisterIPVS adds a collector for src to m's registry. The daemon connects
// the data plane's kernel counters here (lbd/daemon/ipvsstats.go).
func (m *Metrics) RegisterIPVS(src IPVSStats) error {
	svc := []string{"tenant", "service", "vip", "protocol", "port"}
	be := []string{"vip", "protocol", "port", "backend"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "ipvs", name), help, labels, nil)
	}
	c := &ipvsCollector{
		src: src, timeout: 5 * time.Second,
		up:            d("up", "1 when the last read of the kernel's IPVS counters succeeded."),
		scrapeSeconds: d("scrape_seconds", "Time to read the kernel's IPVS counters."),
		svcConns:      d("service_connections_total", "Connections scheduled by the IPVS service.", svc...),
		svcPackets:    d("service_packets_total", "Packets through the IPVS service, by direction (in: from clients, out: replies).", append(svc, "direction")...),
		svcBytes:      d("service_bytes_total", "Bytes through the IPVS service, by direction.", append(svc, "direction")...),
		svcCPS:        d("service_connections_per_second", "The kernel's estimate of new connections per second.", svc...),
		svcPPS:        d("service_packets_per_second", "The kernel's estimate of packets per second, by direction.", append(svc, "direction")...),
		svcBPS:        d("service_bytes_per_second", "The kernel's estimate of bytes per second, by direction.", append(svc, "direction")...),
		beConns:       d("backend_connections_total", "Connections sent to the backend.", be...),
		bePackets:     d("backend_packets_total", "Packets to/from the backend, by direction.", append(be, "direction")...),
		beBytes:       d("backend_bytes_total", "Bytes to/from the backend, by direction.", append(be, "direction")...),
		beActive:      d("backend_active_connections", "Established connections to the backend now.", be...),
		beInactive:    d("backend_inactive_connections", "Other connections (closing, UDP) to the backend now.", be...),
		beWeight:      d("backend_weight", "IPVS weight of the backend (0: drained or unhealthy).", be...),
		beCPS:         d("backend_connections_per_second", "The kernel's estimate of new connections per second to the backend.", be...),
	}
	return m.Registry.Register(c)
}

func (c *ipvsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.scrapeSeconds, c.svcConns, c.svcPackets, c.svcBytes, c.svcCPS, c.svcPPS, c.svcBPS,
		c.beConns, c.bePackets, c.beBytes, c.beActive, c.beInactive, c.beWeight, c.beCPS} {
		ch <- d
	}
}

func (c *ipvsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	start := time.Now()
	stats, err := c.src.Stats(ctx)
	ch <- prometheus.MustNewConstMetric(c.scrapeSeconds, prometheus.GaugeValue, time.Since(start).Seconds())
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), l...)
	}
	for _, s := range stats {
		port := strconv.Itoa(int(s.Port))
		l := []string{s.Tenant, s.Name, s.VIP, s.Protocol, port}
		counter(c.svcConns, s.Connections, l...)
		counter(c.svcPackets, s.PacketsIn, append(l, "in")...)
		counter(c.svcPackets, s.PacketsOut, append(l, "out")...)
		counter(c.svcBytes, s.BytesIn, append(l, "in")...)
		counter(c.svcBytes, s.BytesOut, append(l, "out")...)
		gauge(c.svcCPS, s.CPS, l...)
		gauge(c.svcPPS, s.PPSIn, append(l, "in")...)
		gauge(c.svcPPS, s.PPSOut, append(l, "out")...)
		gauge(c.svcBPS, s.BPSIn, append(l, "in")...)
		gauge(c.svcBPS, s.BPSOut, append(l, "out")...)
		for _, b := range s.Backends {
			bl := []string{s.VIP, s.Protocol, port, hostPort(b.Address, b.Port)}
			counter(c.beConns, b.Connections, bl...)
			counter(c.bePackets, b.PacketsIn, append(bl, "in")...)
			counter(c.bePackets, b.PacketsOut, append(bl, "out")...)
			counter(c.beBytes, b.BytesIn, append(bl, "in")...)
			counter(c.beBytes, b.BytesOut, append(bl, "out")...)
			gauge(c.beActive, uint64(b.ActiveConns), bl...)
			gauge(c.beInactive, uint64(b.InactiveConns), bl...)
			gauge(c.beWeight, uint64(b.Weight), bl...)
			gauge(c.beCPS, b.CPS, bl...)
		}
	}
}

func hostPort(addr string, port uint16) string {
	for i := 0; i < len(addr); i++ {
		if addr[i] == ':' {
			return "[" + addr + "]:" + strconv.Itoa(int(port))
		}
	}
	return addr + ":" + strconv.Itoa(int(port))
}
