package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/dataplane"
	"github.com/edgelb/edgelb/lbd/metrics"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// ops is lbd's operability side: Prometheus metrics and the HTTP listener
// for /metrics, /healthz and /readyz. Start calls startOps once the
// raft member and the API server exist, before the gRPC server is built (its
// interceptors come from here); Stop calls stopOps first.
type ops struct {
	m        *metrics.Metrics
	http     *metrics.Server // nil when disabled
	stop     chan struct{}
	stopOnce sync.Once
}

// startOps creates the metrics, instruments the data plane, and starts the
// metrics listener on cfg.MetricsAddr.
//
// A member started with the default address on a host where it is taken
// (several lbd on one machine, as in tests and the sandbox) logs a warning and
// runs without the listener; an address set explicitly must bind, or lbd does
// not start.
func (d *Daemon) startOps() error {
	o := &ops{m: metrics.New(Version), stop: make(chan struct{})}
	if err := o.m.RegisterNode(d.node, d.cfg.ID); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	o.m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "edgelb", Subsystem: "ownership", Name: "in_contact",
		Help: "1 while this member holds its quorum lease (a majority of voters answered its probes within ownership.lease, or, right after a restart, what was left of the lease it held before); 0: it withholds its VIPs. Kept beside edgelb_ownership_lease_valid for existing dashboards.",
	}, func() float64 {
		if d.lease.Valid() {
			return 1
		}
		return 0
	}))
	if err := o.m.RegisterLiveness(metrics.Liveness{Heard: d.live.Reachable, LeaseRemaining: d.lease.Remaining}); err != nil {
		return fmt.Errorf("register liveness metrics: %w", err)
	}
	o.m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "edgelb", Name: "ready",
		Help: "1 when /readyz answers 200: a raft leader is known, this member is registered and caught up with the leader.",
	}, func() float64 {
		if ok, _ := d.ready(); ok {
			return 1
		}
		return 0
	}))
	if d.kernel != nil {
		if err := o.m.RegisterIPVS(ipvsStats{k: d.kernel, f: d.node.FSM}); err != nil {
			return fmt.Errorf("register IPVS metrics: %w", err)
		}
		d.kernel.SetObserver(o.m)
		if err := o.m.RegisterSourceRanges(d.kernel); err != nil {
			return fmt.Errorf("register source-range metrics: %w", err)
		}
	} else if s, ok := d.dp.(metrics.IPVSStats); ok {
		if err := o.m.RegisterIPVS(s); err != nil {
			return fmt.Errorf("register IPVS metrics: %w", err)
		}
	}
	d.dp = &instrumentedDataPlane{DataPlane: d.dp, m: o.m, served: d.feed.served}
	d.node.OnLeaderChange(func(string) { o.m.RaftLeaderChanges.Inc() })
	o.m.ObserveOwnership(d.node.FSM, o.stop)

	if d.cfg.MetricsAddr != "" {
		srv, err := metrics.Listen(d.cfg.MetricsAddr)
		switch {
		case err == nil:
			srv.Serve(o.m.Handler(d.ready), d.log)
			o.http = srv
			d.log.Info("metrics listening", "addr", srv.Addr(), "paths", "/metrics /healthz /readyz")
		case d.cfg.MetricsAddr == config.DefaultMetricsAddr && errors.Is(err, syscall.EADDRINUSE):
			d.log.Warn("the default metrics address is taken (another lbd on this host?); running without /metrics — set --metrics-addr", "addr", d.cfg.MetricsAddr)
		default:
			return fmt.Errorf("listen for metrics on %s: %w (set --metrics-addr, or empty to disable)", d.cfg.MetricsAddr, err)
		}
	}
	d.ops = o
	return nil
}

// opsServerOptions are the gRPC metric interceptors, to run before
// authorisation so refused calls are counted with their code.
func (d *Daemon) opsServerOptions() []grpc.ServerOption {
	if d.ops == nil {
		return nil
	}
	return d.ops.m.ServerOptions()
}

func (d *Daemon) stopOps() {
	if d.ops == nil {
		return
	}
	d.ops.stopOnce.Do(func() {
		close(d.ops.stop)
		if d.ops.http != nil {
			d.ops.http.Close()
		}
	})
}

// Metrics returns this member's metrics, for connecting what reports into them
// (the data plane's DataPlaneObserver, the health checker's HealthObserver).
func (d *Daemon) Metrics() *metrics.Metrics {
	if d.ops == nil {
		return nil
	}
	return d.ops.m
}

// MetricsAddr is the address the metrics listener is bound to, or "" when there is none.
func (d *Daemon) MetricsAddr() string {
	if d.ops == nil || d.ops.http == nil {
		return ""
	}
	return d.ops.http.Addr()
}

// ready is the condition of /readyz and of the gRPC health service (see
// healthLoop): a leader is known, and this member is in the member table (or
// leads, and is about to register itself).
func (d *Daemon) ready() (bool, string) {
	if !d.srv.Ready() {
		if r, ok := d.lease.Removed(); ok {
			return false, fmt.Sprintf("removed from the cluster: member %s's configuration (log index %d) leaves it out; rejoin it with an empty data dir", r.By, r.Index)
		}
		return false, "no raft leader known"
	}
	if _, ok := d.node.FSM.Member(d.cfg.ID); !ok && !d.node.IsLeader() {
		return false, "this member is not registered in the member table yet (joining?)"
	}
	if !d.caughtUp.Load() {
		return false, "not caught up with the leader yet (replaying or receiving the raft log)"
	}
	return true, ""
}

// instrumentedDataPlane times every reconcile pass.
type instrumentedDataPlane struct {
	DataPlane
	m *metrics.Metrics
	// served counts the VIPs and services owner serves, for a pass that
	// was given only the changed services.
	served func(owner string) (vips, services int)
}

// ReconcileChanged is the incremental pass, when the data plane has one
// (changedReconcilerOf checks).
func (p *instrumentedDataPlane) ReconcileChanged(ctx context.Context, changed map[dataplane.ServiceKey]*edgelbv1.VirtualService, owner string) error {
	start := time.Now()
	err := p.DataPlane.(changedReconciler).ReconcileChanged(ctx, changed, owner)
	vips, owned := p.served(owner)
	p.m.ObserveReconcile(time.Since(start), vips, owned, err)
	return err
}

func (p *instrumentedDataPlane) Withdraw(ctx context.Context) error {
	err := p.DataPlane.Withdraw(ctx)
	if err == nil {
		p.m.VIPsServed.Set(0)
		p.m.ServicesServed.Set(0)
	}
	return err
}

func (p *instrumentedDataPlane) Reconcile(ctx context.Context, all []*edgelbv1.VirtualService, owner string) error {
	start := time.Now()
	err := p.DataPlane.Reconcile(ctx, all, owner)
	vips := map[string]struct{}{}
	owned := 0
	for _, vs := range all {
		if owner != "" && vs.Owner == owner {
			vips[vs.Vip] = struct{}{}
			owned++
		}
	}
	p.m.ObserveReconcile(time.Since(start), len(vips), owned, err)
	return err
}
