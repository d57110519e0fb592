// Package metrics is lbd's Prometheus instrumentation: the metric families,
// the gRPC interceptors, the collectors that read raft and the replicated
// state at scrape time, and the interfaces through which the data plane and
// the health checker report what only they see.
//
// Every family is prefixed edgelb_. Each Metrics has its own registry, so
// several daemons in one test process do not mix their series; the only
// process-wide part is hashicorp/raft's go-metrics sink (see RaftSink).
package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgelb/edgelb/lbd/proc"
)

const ns = "edgelb"

// Metrics holds one lbd's metric families and their registry.
type Metrics struct {
	Registry *prometheus.Registry

	// Liveness probes (liveness.go); nil until RegisterLiveness.
	probeSeconds  *prometheus.HistogramVec
	probeFailures *prometheus.CounterVec
	// BGP session changes (bgp.go); nil until RegisterBGP.
	bgpTransitions *prometheus.CounterVec

	// gRPC API.
	GRPCRequests *prometheus.CounterVec   // method, code
	GRPCLatency  *prometheus.HistogramVec // method, type
	GRPCInFlight *prometheus.GaugeVec     // type

	// Raft: events this member saw (state and indexes are read at scrape time).
	RaftLeaderChanges prometheus.Counter

	// Reconciler: every pass that hands the owned services to the data plane.
	ReconcileSeconds  prometheus.Histogram
	ReconcileTotal    *prometheus.CounterVec // result: ok, error
	ReconcileLastOK   prometheus.Gauge       // unix seconds of the last successful pass
	VIPsServed        prometheus.Gauge       // VIPs the data plane programs after the last pass
	ServicesServed    prometheus.Gauge
	OwnershipCommits  *prometheus.CounterVec
	DataPlaneChanges  *prometheus.CounterVec // op: reported by the data plane
	IsolatedServices  prometheus.Gauge       // services the data plane cannot program (left out; the rest is programmed)
	Announcements     *prometheus.CounterVec // family, kind
	TakeoverSeconds   prometheus.Histogram
	HealthChecks      *prometheus.CounterVec   // result
	HealthLatency     *prometheus.HistogramVec // type
	HealthTransitions *prometheus.CounterVec   // to

	// Build information.
	BuildInfo *prometheus.GaugeVec
}

// Buckets for control-plane latencies: 0.5 ms to ~30 s.
var latencyBuckets = prometheus.ExponentialBuckets(0.0005, 2.5, 13)

// New creates the families and registers them with Go runtime and process
// collectors in a fresh registry.
func New(version string) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		// Made here, registered by RegisterBGP: the speaker's session
		// events may come before its registration (a race otherwise).
		bgpTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "bgp", Name: "session_transitions_total",
			Help: "BGP session changes by peer and direction (up: established; down: left established).",
		}, []string{"peer", "direction"}),
		GRPCRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "grpc", Name: "server_handled_total",
			Help: "gRPC calls completed, by full method and status code.",
		}, []string{"method", "code"}),
		GRPCLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "grpc", Name: "server_handling_seconds",
			Help:    "Time to complete a gRPC call (for streams: the stream's lifetime; Watch streams last as long as the client).",
			Buckets: latencyBuckets,
		}, []string{"method", "type"}),
		GRPCInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "grpc", Name: "server_in_flight",
			Help: "gRPC calls in progress (streams include open watches).",
		}, []string{"type"}),
		RaftLeaderChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "raft", Name: "leader_changes_total",
			Help: "Times this member saw the raft leader change (including to none).",
		}),
		ReconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "reconcile", Name: "duration_seconds",
			Help:    "Time of one data-plane reconcile pass (desired owned services → kernel).",
			Buckets: latencyBuckets,
		}),
		ReconcileTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "reconcile", Name: "total",
			Help: "Data-plane reconcile passes, by result (ok, error).",
		}, []string{"result"}),
		ReconcileLastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "reconcile", Name: "last_success_timestamp_seconds",
			Help: "Unix time of the last successful reconcile pass.",
		}),
		VIPsServed: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "ownership", Name: "vips_served",
			Help: "VIPs this member's data plane programs (after the last successful reconcile).",
		}),
		ServicesServed: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "ownership", Name: "services_served",
			Help: "Virtual services this member's data plane programs (after the last successful reconcile).",
		}),
		IsolatedServices: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: "dataplane", Name: "isolated_services",
			Help: "Virtual services this member's data plane cannot program and leaves out, after the last pass (lbctl member status lists them with the reason); every other service is programmed.",
		}),
		OwnershipCommits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "ownership", Name: "assignments_total",
			Help: "Ownership changes of virtual services applied by this member's replica, by reason (every member counts the same commits; use max() across members).",
		}, []string{"reason"}),
		DataPlaneChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "dataplane", Name: "changes_total",
			Help: "Kernel changes made by the data plane, by operation.",
		}, []string{"op"}),
		Announcements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "dataplane", Name: "announcements_total",
			Help: "Gratuitous ARPs (ipv4) and unsolicited neighbour advertisements (ipv6) sent, by kind (takeover, repeat).",
		}, []string{"family", "kind"}),
		TakeoverSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "ownership", Name: "takeover_seconds",
			Help:    "Time from the commit that gave this member a VIP to its first announcement.",
			Buckets: latencyBuckets,
		}),
		HealthChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "health", Name: "checks_total",
			Help: "Backend health probes run by this member, by type and result (ok, fail).",
		}, []string{"type", "result"}),
		HealthLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "health", Name: "check_seconds",
			Help:    "Time of one backend health probe, by type.",
			Buckets: latencyBuckets,
		}, []string{"type"}),
		HealthTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "health", Name: "transitions_total",
			Help: "Backend health verdict changes published by this member, by new state (healthy, unhealthy).",
		}, []string{"to"}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "build_info",
			Help: "Always 1; the version label says which lbd runs.",
		}, []string{"version"}),
	}
	m.BuildInfo.WithLabelValues(version).Set(1)
	for _, r := range []string{"ok", "error"} {
		m.ReconcileTotal.WithLabelValues(r)
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.GRPCRequests, m.GRPCLatency, m.GRPCInFlight,
		m.RaftLeaderChanges,
		m.ReconcileSeconds, m.ReconcileTotal, m.ReconcileLastOK, m.VIPsServed, m.ServicesServed,
		m.OwnershipCommits, m.DataPlaneChanges, m.IsolatedServices, m.Announcements, m.TakeoverSeconds,
		m.HealthChecks, m.HealthLatency, m.HealthTransitions,
		m.BuildInfo,
		// Process-wide like the process collector: lbd starts processes
		// only through package proc, which counts them.
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "dataplane", Name: "processes_started_total",
			Help: "Processes lbd has started (fence, and iptables/modprobe only on hosts without nftables or for the one-time removal of an older version's chains). Creating, moving or taking over a VIP starts none.",
		}, func() float64 { return float64(proc.Started()) }),
	)
	m.Registry.MustRegister(raftSink.collectors()...)
	return m
}

// ObserveReconcile records one reconcile pass.
func (m *Metrics) ObserveReconcile(d time.Duration, vips, services int, err error) {
	m.ReconcileSeconds.Observe(d.Seconds())
	if err != nil {
		m.ReconcileTotal.WithLabelValues("error").Inc()
		return
	}
	m.ReconcileTotal.WithLabelValues("ok").Inc()
	m.ReconcileLastOK.SetToCurrentTime()
	m.VIPsServed.Set(float64(vips))
	m.ServicesServed.Set(float64(services))
}

// The data plane and the health checker report through these interfaces, so
// they need not import Prometheus. *Metrics implements all of them; a nil
// observer is never passed (use Discard).

// DataPlaneObserver receives what only the data plane sees.
type DataPlaneObserver interface {
	// KernelChange counts one change (op: "service_add", "dest_update", "addr_add", ...).
	KernelChange(op string)
	// Announced counts n announcements of one VIP (family "ipv4"/"ipv6",
	// kind "takeover" for the burst after taking a VIP over, "repeat" after).
	Announced(family, kind string, n int)
	// TookOver records the time from the commit that assigned a VIP here to
	// its first announcement.
	TookOver(d time.Duration)
}

// HealthObserver receives what only the health checker sees.
type HealthObserver interface {
	// Checked records one probe (checkType "tcp", "http", "https").
	Checked(checkType string, ok bool, d time.Duration)
	// Transition records a published verdict change.
	Transition(healthy bool)
}

func (m *Metrics) KernelChange(op string) { m.DataPlaneChanges.WithLabelValues(op).Inc() }

// Isolated sets the number of services the data plane cannot program.
func (m *Metrics) Isolated(n int) { m.IsolatedServices.Set(float64(n)) }

func (m *Metrics) Announced(family, kind string, n int) {
	m.Announcements.WithLabelValues(family, kind).Add(float64(n))
}

func (m *Metrics) TookOver(d time.Duration) { m.TakeoverSeconds.Observe(d.Seconds()) }

func (m *Metrics) Checked(checkType string, ok bool, d time.Duration) {
	r := "fail"
	if ok {
		r = "ok"
	}
	m.HealthChecks.WithLabelValues(checkType, r).Inc()
	m.HealthLatency.WithLabelValues(checkType).Observe(d.Seconds())
}

func (m *Metrics) Transition(healthy bool) {
	to := "unhealthy"
	if healthy {
		to = "healthy"
	}
	m.HealthTransitions.WithLabelValues(to).Inc()
}

// Discard is an observer that records nothing.
var Discard discard

type discard struct{}

func (discard) KernelChange(string)                           {}
func (discard) Announced(string, string, int)                 {}
func (discard) TookOver(time.Duration)                        {}
func (discard) Checked(string, bool, time.Duration)           {}
func (discard) Transition(bool)                               {}
func (discard) Stats(context.Context) ([]ServiceStats, error) { return nil, nil }

var (
	_ DataPlaneObserver = (*Metrics)(nil)
	_ HealthObserver    = (*Metrics)(nil)
	_ DataPlaneObserver = Discard
	_ HealthObserver    = Discard
	_ IPVSStats         = Discard
)
