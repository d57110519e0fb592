package cloudprovider

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/edgelb/edgelb/cloudprovider/servicemap"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/rules"
)

// Why this file: a Service deleted while the CCM is down (its finalizer
// removed by hand, a namespace force-deleted) never reaches
// EnsureLoadBalancerDeleted, so its VIP stayed in lbd for good. The sweep
// deletes the tenant's VirtualServices whose Service UID no longer exists —
// only after a complete, successful list of Services that is not empty (a
// real cluster always has default/kubernetes: an empty answer is a broken
// apiserver or cache, not a cluster without Services). The heartbeat tells
// lbd the cluster is alive, so an operator can find (lbctl vip list
// --orphaned) and remove (lbctl tenant gc) the VIPs of a cluster that is gone.
// The heartbeat also carries the orphans the last complete sweep found and
// could not delete yet, so lbctl shows them while the cluster is alive too.

var (
	orphansDeleted = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "edgelb", Subsystem: "ccm", Name: "orphans_deleted_total",
		Help:           "VirtualServices the CCM deleted because their Service no longer exists.",
		StabilityLevel: metrics.ALPHA,
	})
	orphanSweeps = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "edgelb", Subsystem: "ccm", Name: "orphan_sweeps_total",
		Help:           "Orphan sweeps by result: ok, lbd_failed, list_failed, empty_list (the last three delete nothing).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	heartbeats = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "edgelb", Subsystem: "ccm", Name: "heartbeats_total",
		Help:           "Tenant heartbeats by result: ok, apiserver_unreachable (not sent), lbd_failed.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	registerMetrics sync.Once
)

// errEmptyList: the Service list came back empty; nothing is deleted on it.
var errEmptyList = errors.New("the apiserver listed no Services at all (not even default/kubernetes); deleting nothing on an empty list")

// Orphans returns the VirtualServices of tenant that the CCM made
// (servicemap's managed-by and UID labels) for a Service whose UID is not
// among services. services must be a complete list; an empty one is refused
// (errEmptyList) rather than read as "every Service is gone".
func Orphans(tenant string, services []v1.Service, vss []*edgelbv1.VirtualService) ([]*edgelbv1.VirtualService, error) {
	if len(services) == 0 {
		return nil, errEmptyList
	}
	live := make(map[string]bool, len(services))
	for i := range services {
		live[string(services[i].UID)] = true
	}
	var out []*edgelbv1.VirtualService
	for _, vs := range vss {
		uid := vs.GetLabels()[servicemap.LabelUID]
		if vs.GetTenant() != tenant || vs.GetLabels()[servicemap.LabelManagedBy] != servicemap.ManagedBy || uid == "" {
			continue // not made by a CCM for this tenant: never ours to delete
		}
		if !live[uid] {
			out = append(out, vs)
		}
	}
	return out, nil
}

// heartbeater is what the heartbeat needs from lbd (lbclient.Client).
type heartbeater interface {
	RenewHeartbeat(ctx context.Context, tenant string, orphaned []string) error
}

// orphanSweeper runs the sweep and the heartbeat of one tenant.
type orphanSweeper struct {
	tenant         string
	kube           kubernetes.Interface
	lbd            VirtualServices
	sweepEvery     time.Duration
	heartbeatEvery time.Duration
	timeout        time.Duration // one step (a list, a delete, a heartbeat)

	// reported are the orphans of the last complete sweep not deleted
	// since, sorted: what each heartbeat tells lbd. A failed or empty
	// Service list leaves it as it was (never a report from an incomplete
	// list): VirtualServices are named after their Service's UID, which
	// never comes back, so a name once orphaned stays orphaned, and lbd
	// hides those deleted since.
	mu       sync.Mutex
	reported []string
}

// orphaned is the report the next heartbeat carries.
func (s *orphanSweeper) orphaned() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reported)
}

func (s *orphanSweeper) setReported(names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// lbd refuses more than it stores; the rest wait for the next sweeps.
	if len(names) > rules.MaxOrphanedServices {
		names = names[:rules.MaxOrphanedServices]
	}
	s.reported = names
}

// listServices lists every Service, page by page; any failure fails it all.
func listServices(ctx context.Context, kube kubernetes.Interface) ([]v1.Service, error) {
	var out []v1.Service
	opts := metav1.ListOptions{Limit: 500}
	for {
		l, err := kube.CoreV1().Services(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, l.Items...)
		if l.Continue == "" {
			return out, nil
		}
		opts.Continue = l.Continue
	}
}

// sweep deletes the tenant's orphaned VirtualServices and returns how many.
// The VirtualServices are listed before the Services: a VirtualService in
// that list was made for a Service that existed before the Service list
// began, so a Service created meanwhile cannot have its new VIP deleted.
func (s *orphanSweeper) sweep(ctx context.Context) (int, error) {
	lctx, cancel := context.WithTimeout(ctx, s.timeout)
	vss, err := s.lbd.List(lctx, s.tenant, map[string]string{servicemap.LabelManagedBy: servicemap.ManagedBy})
	cancel()
	if err != nil {
		orphanSweeps.WithLabelValues("lbd_failed").Inc()
		return 0, fmt.Errorf("listing the VirtualServices of tenant %s: %w", s.tenant, err)
	}
	lctx, cancel = context.WithTimeout(ctx, s.timeout)
	svcs, err := listServices(lctx, s.kube)
	cancel()
	if err != nil {
		orphanSweeps.WithLabelValues("list_failed").Inc()
		return 0, fmt.Errorf("listing Services: %w; deleting nothing", err)
	}
	dead, err := Orphans(s.tenant, svcs, vss)
	if err != nil {
		orphanSweeps.WithLabelValues("empty_list").Inc()
		return 0, err
	}
	// Reported before the deletes start, and each name dropped once its
	// delete succeeds: a delete that fails leaves its name (and those not
	// tried) for lbctl vip list --orphaned.
	left := make([]string, 0, len(dead))
	for _, vs := range dead {
		left = append(left, vs.GetName())
	}
	slices.Sort(left)
	s.setReported(slices.Clone(left))
	n := 0
	for _, vs := range dead {
		dctx, cancel := context.WithTimeout(ctx, s.timeout)
		err := s.lbd.Delete(dctx, vs.GetTenant(), vs.GetName())
		cancel()
		if err != nil {
			orphanSweeps.WithLabelValues("lbd_failed").Inc()
			return n, fmt.Errorf("deleting orphaned VirtualService %s/%s: %w", vs.GetTenant(), vs.GetName(), err)
		}
		n++
		left = slices.DeleteFunc(left, func(x string) bool { return x == vs.GetName() })
		s.setReported(slices.Clone(left))
		orphansDeleted.Inc()
		klog.InfoS("deleted orphaned VirtualService: its Service no longer exists", "tenant", vs.GetTenant(), "name", vs.GetName(), "vip", vs.GetVip(),
			"service", vs.GetLabels()[servicemap.LabelNamespace]+"/"+vs.GetLabels()[servicemap.LabelName], "uid", vs.GetLabels()[servicemap.LabelUID])
	}
	orphanSweeps.WithLabelValues("ok").Inc()
	return n, nil
}

// beat renews the heartbeat if the apiserver answers: the heartbeat says
// "this cluster is alive", which a CCM cut off from its apiserver cannot tell.
func (s *orphanSweeper) beat(ctx context.Context, hb heartbeater) error {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	_, err := s.kube.Discovery().RESTClient().Get().AbsPath("/version").Do(cctx).Raw()
	cancel()
	if err != nil {
		heartbeats.WithLabelValues("apiserver_unreachable").Inc()
		return fmt.Errorf("apiserver does not answer (%w); not renewing the heartbeat of tenant %s", err, s.tenant)
	}
	hctx, cancel := context.WithTimeout(ctx, s.timeout)
	err = hb.RenewHeartbeat(hctx, s.tenant, s.orphaned())
	cancel()
	if err != nil {
		heartbeats.WithLabelValues("lbd_failed").Inc()
		return fmt.Errorf("renewing the heartbeat of tenant %s: %w", s.tenant, err)
	}
	heartbeats.WithLabelValues("ok").Inc()
	return nil
}

// run sweeps at once and every sweepEvery, and beats every heartbeatEvery,
// until ctx ends.
func (s *orphanSweeper) run(ctx context.Context) {
	registerMetrics.Do(func() { legacyregistry.MustRegister(orphansDeleted, orphanSweeps, heartbeats) })
	klog.InfoS("edgelb orphan sweep and heartbeat started", "tenant", s.tenant, "sweepInterval", s.sweepEvery, "heartbeatInterval", s.heartbeatEvery)
	if hb, ok := s.lbd.(heartbeater); ok {
		go func() {
			failing := false
			for {
				if err := s.beat(ctx, hb); err != nil {
					if !failing {
						klog.ErrorS(err, "edgelb heartbeat failed; lbctl tenant list shows this tenant's last contact")
					}
					failing = true
				} else if failing {
					klog.InfoS("edgelb heartbeat renewed again", "tenant", s.tenant)
					failing = false
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(s.heartbeatEvery):
				}
			}
		}()
	}
	for {
		n, err := s.sweep(ctx)
		switch {
		case err != nil:
			klog.ErrorS(err, "edgelb orphan sweep deleted nothing more", "tenant", s.tenant, "deleted", n)
		case n > 0:
			klog.InfoS("edgelb orphan sweep done", "tenant", s.tenant, "deleted", n)
		default:
			klog.V(2).InfoS("edgelb orphan sweep done: no orphans", "tenant", s.tenant)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.sweepEvery):
		}
	}
}
