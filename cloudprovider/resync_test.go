package cloudprovider

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	"k8s.io/component-base/metrics/prometheus/controllers"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// outage makes every call fail as an unreachable lbd does while down is set.
type outage struct {
	VirtualServices
	down  atomic.Bool
	syncs atomic.Int32 // syncs that failed (the probe's reads not counted)
}

func (o *outage) err() error {
	if o.down.Load() {
		return status.Error(codes.Unavailable, "connection refused")
	}
	return nil
}
func (o *outage) Get(ctx context.Context, t, n string) (*edgelbv1.VirtualService, error) {
	if err := o.err(); err != nil {
		if n != probeName {
			o.syncs.Add(1)
		}
		return nil, err
	}
	return o.VirtualServices.Get(ctx, t, n)
}
func (o *outage) Create(ctx context.Context, v *edgelbv1.VirtualService) (*edgelbv1.VirtualService, error) {
	if err := o.err(); err != nil {
		return nil, err
	}
	return o.VirtualServices.Create(ctx, v)
}

func TestLbdReturnRequeuesOnlyUnreachableFailures(t *testing.T) {
	e := newEnv(t, "")
	o := &outage{VirtualServices: e.lb.c}
	w := newLbdWatch()
	lb := &LoadBalancer{cfg: e.lb.cfg, c: o, watch: w}
	var mu sync.Mutex
	var got []string
	w.onReturn(func(ns, name string) { mu.Lock(); got = append(got, ns+"/"+name); mu.Unlock() })
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	go w.run(ctx, o)

	o.down.Store(true)
	down := service("d1d1d1d1", 80)
	if _, err := lb.EnsureLoadBalancer(e.ctx, "cluster-a", down, nodes("10.0.0.1")); err == nil || IsRefusal(err) {
		t.Fatalf("during the outage: %v, want a transport error", err)
	}
	o.down.Store(false)
	refused := service("d2d2d2d2", 80)
	refused.Spec.LoadBalancerIP = "10.251.0.1" // cluster-b's: a refusal, not an outage
	if _, err := lb.EnsureLoadBalancer(e.ctx, "cluster-a", refused, nodes("10.0.0.1")); !IsRefusal(err) {
		t.Fatalf("refused: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := append([]string{}, got...)
		mu.Unlock()
		if len(n) > 0 {
			if len(n) != 1 || n[0] != "default/svc-d1d1d1d1" {
				t.Fatalf("re-queued %v, want only the Service that failed while lbd was down", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lbd answers again but nothing was re-queued")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if w.pending() != 0 {
		t.Errorf("%d still waiting", w.pending())
	}
}

// The upstream service controller, given the replaying informer as
// StartServiceController gives it, retries a Service that failed during an
// outage as soon as lbd answers — not after its 5 s, 10 s, … backoff.
func TestUpstreamControllerRetriesWhenLbdReturns(t *testing.T) {
	e := newEnv(t, "")
	o := &outage{VirtualServices: e.lb.c}
	w := newLbdWatch()
	cloud := &Cloud{cfg: e.lb.cfg, lb: &LoadBalancer{cfg: e.lb.cfg, c: o, watch: w}, watch: w}
	cs := fake.NewClientset(nodes("10.0.0.1")[0])
	inf := informers.NewSharedInformerFactory(cs, 0)
	services := &replayingServiceInformer{ServiceInformer: inf.Core().V1().Services()}
	ctrl, err := servicecontroller.New(cloud, cs, services, inf.Core().V1().Nodes(), "cluster-a", utilfeature.DefaultFeatureGate)
	if err != nil {
		t.Fatal(err)
	}
	w.onReturn(services.Replay)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	go w.run(ctx, o)
	inf.Start(ctx.Done())
	go ctrl.Run(ctx, 1, controllers.NewControllerManagerMetrics("test"))

	o.down.Store(true)
	s := service("d3d3d3d3", 80)
	if _, err := cs.CoreV1().Services(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Wait out the first backoff (5 s): after that failure the next retry
	// is 10 s away. (The first sync can run twice at once: create, then
	// the finalizer's update.)
	start := time.Now()
	for o.syncs.Load() < 2 || time.Since(start) < 5*time.Second {
		if ctx.Err() != nil {
			t.Fatalf("%d failed syncs during the outage", o.syncs.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	for n := o.syncs.Load(); o.syncs.Load() == n; time.Sleep(50 * time.Millisecond) {
		if ctx.Err() != nil {
			t.Fatal("no retry after 5 s")
		}
	}
	o.down.Store(false)
	back := time.Now()
	for {
		got, _ := cs.CoreV1().Services(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
		if len(got.Status.LoadBalancer.Ingress) > 0 {
			break
		}
		if time.Since(back) > 5*time.Second {
			t.Fatalf("no ingress %s after lbd answered again (upstream's backoff alone would wait ~10 s)", time.Since(back))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("ingress %s after lbd answered again", time.Since(back).Round(time.Millisecond))
}

// Re-queued Services that fail unreachable again are released with a
// growing gap (lbd answering the probe but not the syncs), reset by a success.
func TestReleaseGapGrowsUntilASyncSucceeds(t *testing.T) {
	w := newLbdWatch()
	t0 := time.Now()
	var at []time.Duration
	for d := time.Duration(0); d <= 70*time.Second; d += 500 * time.Millisecond {
		if w.due(t0.Add(d)) {
			at = append(at, d)
		}
	}
	want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second, 15 * time.Second, 31 * time.Second, 61 * time.Second}
	if fmt.Sprint(at) != fmt.Sprint(want) {
		t.Errorf("releases at %v, want %v (gap 1, 2, 4, 8, 16, 30 s)", at, want)
	}
	w.record(service("d4d4d4d4", 80), "cluster-a", nil)
	if !w.due(t0.Add(61*time.Second + time.Millisecond)) {
		t.Error("a successful sync did not reset the gap")
	}
}
