package cloudprovider

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1 "k8s.io/api/core/v1"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/tools/cache"
	k8scloud "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	cloudcontrollerconfig "k8s.io/cloud-provider/app/config"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	controllermanagerapp "k8s.io/controller-manager/app"
	"k8s.io/controller-manager/controller"
	"k8s.io/klog/v2"
)

// Why this file: the service controllers retry a failed Service with
// exponential backoff (upstream: 5 s doubling to 300 s; the class controller:
// up to 1000 s). A Service that failed because lbd could not be reached is
// then retried long after lbd is back — 46.6 s in the trial, up to
// five minutes. lbdWatch remembers such Services, probes lbd while any are
// remembered, and re-queues them in their controller as soon as lbd answers.
// Refusals are not remembered: lbd's return does not change its answer.

// probeInterval is how often lbd is probed while Services wait for it.
const probeInterval = time.Second

// probeName is a VirtualService name that is never created (it is not a
// k8s-<uid> name): its Get answers NotFound from a working lbd.
const probeName = "edgelb-ccm-probe"

// lbdWatch tracks Services whose last sync failed because lbd was unreachable.
type lbdWatch struct {
	mu      sync.Mutex
	waiting map[string]string // namespace/name → tenant
	requeue []func(namespace, name string)
	wake    chan struct{}
	// gap is the least time between two releases; it doubles while
	// re-queued Services keep failing unreachable (lbd answering the probe
	// but not the syncs, e.g. reads served while writes time out) and is
	// reset by any successful sync, so a half-working lbd is not hammered
	// once a second for every waiting Service.
	gap         time.Duration
	lastRelease time.Time
}

// maxReleaseGap caps the gap: still far below upstream's 300 s backoff.
const maxReleaseGap = 30 * time.Second

func newLbdWatch() *lbdWatch {
	return &lbdWatch{waiting: map[string]string{}, wake: make(chan struct{}, 1)}
}

// onReturn registers f to re-queue a Service when lbd answers again.
func (w *lbdWatch) onReturn(f func(namespace, name string)) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.requeue = append(w.requeue, f)
}

// record notes the outcome of one sync of svc: unreachable lbd → wait for its
// return; anything else (success or a refusal) → no longer waiting.
func (w *lbdWatch) record(svc *v1.Service, tenant string, err error) {
	if w == nil || svc == nil {
		return
	}
	key := svc.Namespace + "/" + svc.Name
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil || !unreachable(err) {
		delete(w.waiting, key)
		if err == nil {
			w.gap = 0
		}
		return
	}
	if _, ok := w.waiting[key]; !ok {
		klog.V(2).InfoS("lbd unreachable; the Service is re-queued as soon as lbd answers", "service", klog.KObj(svc))
	}
	w.waiting[key] = tenant
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// unreachable reports errors that say lbd (every endpoint) could not be
// reached or did not answer in time — as opposed to lbd's answer.
func unreachable(err error) bool {
	if IsRefusal(err) {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// run probes lbd while Services wait and re-queues them when it answers.
func (w *lbdWatch) run(ctx context.Context, c VirtualServices) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		for w.pending() > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(probeInterval):
			}
			tenant, ok := w.anyTenant()
			if !ok {
				break
			}
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := c.Get(pctx, tenant, probeName)
			cancel()
			if err != nil && unreachable(err) {
				continue
			}
			if !w.due(time.Now()) {
				continue
			}
			w.release()
		}
	}
}

// due reports whether a release may happen at now, and if so books it:
// the next one must wait twice as long unless a sync succeeds meanwhile.
func (w *lbdWatch) due(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.lastRelease) < w.gap {
		return false
	}
	w.lastRelease = now
	w.gap = min(max(2*w.gap, probeInterval), maxReleaseGap)
	return true
}

func (w *lbdWatch) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.waiting)
}

func (w *lbdWatch) anyTenant() (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range w.waiting {
		return t, true
	}
	return "", false
}

// release re-queues every waiting Service in every registered controller
// (each ignores Services that are not its own).
func (w *lbdWatch) release() {
	w.mu.Lock()
	keys := make([]string, 0, len(w.waiting))
	for k := range w.waiting {
		keys = append(keys, k)
	}
	clear(w.waiting)
	fs := append([]func(string, string){}, w.requeue...)
	w.mu.Unlock()
	klog.InfoS("lbd answers again; re-queueing the Services that failed while it was unreachable", "services", len(keys), "controllers", len(fs))
	for _, k := range keys {
		ns, name, err := cache.SplitMetaNamespaceKey(k)
		if err != nil {
			continue
		}
		for _, f := range fs {
			f(ns, name)
		}
	}
}

// StartServiceController is upstream's service-lb-controller init
// (k8s.io/cloud-provider/app startServiceController) with one change: the
// Service informer handed to it records the event handlers the controller
// registers, so that a Service can be re-queued by replaying an add event
// (the controller's queue is private). main.go installs it in place of
// app.StartServiceControllerWrapper.
func StartServiceController(initContext app.ControllerInitContext, completed *cloudcontrollerconfig.CompletedConfig, cloud k8scloud.Interface) app.InitFunc {
	return func(ctx context.Context, cctx controllermanagerapp.ControllerContext) (controller.Interface, bool, error) {
		services := &replayingServiceInformer{ServiceInformer: completed.SharedInformers.Core().V1().Services()}
		sc, err := servicecontroller.New(cloud,
			completed.ClientBuilder.ClientOrDie(initContext.ClientName),
			services,
			completed.SharedInformers.Core().V1().Nodes(),
			completed.ComponentConfig.KubeCloudShared.ClusterName,
			utilfeature.DefaultFeatureGate)
		if err != nil {
			// As upstream: logged, not fatal.
			klog.Errorf("Failed to start service controller: %v", err)
			return nil, false, nil
		}
		if c, ok := cloud.(*Cloud); ok && c.watch != nil {
			c.watch.onReturn(services.Replay)
		}
		if c, ok := cloud.(*Cloud); ok {
			// With the service controller, so that it runs where Services
			// are synced: in the CCM that holds the leader lease.
			if err := c.startSweeper(ctx, completed.ClientBuilder.ClientOrDie(initContext.ClientName), completed.ComponentConfig.KubeCloudShared.ClusterName); err != nil {
				klog.ErrorS(err, "edgelb orphan sweep and heartbeat not started")
			}
		}
		go sc.Run(ctx, int(completed.ComponentConfig.ServiceController.ConcurrentServiceSyncs), cctx.ControllerManagerMetrics)
		return nil, true, nil
	}
}

// replayingServiceInformer passes everything to the shared Service informer
// and keeps the handlers registered through it.
type replayingServiceInformer struct {
	coreinformers.ServiceInformer
	mu       sync.Mutex
	handlers []cache.ResourceEventHandler
}

func (r *replayingServiceInformer) Informer() cache.SharedIndexInformer {
	return &replayingIndexInformer{SharedIndexInformer: r.ServiceInformer.Informer(), r: r}
}

func (r *replayingServiceInformer) keep(h cache.ResourceEventHandler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handlers = append(r.handlers, h)
}

// Replay hands the cached Service to the recorded handlers as an add event:
// the upstream controller's AddFunc enqueues it at once (bypassing the
// backoff it is waiting out) when it wants a load balancer or cleanup.
func (r *replayingServiceInformer) Replay(namespace, name string) {
	svc, err := r.ServiceInformer.Lister().Services(namespace).Get(name)
	if err != nil {
		return // gone: nothing to retry
	}
	r.mu.Lock()
	hs := append([]cache.ResourceEventHandler{}, r.handlers...)
	r.mu.Unlock()
	for _, h := range hs {
		h.OnAdd(svc, false)
	}
}

type replayingIndexInformer struct {
	cache.SharedIndexInformer
	r *replayingServiceInformer
}

func (i *replayingIndexInformer) AddEventHandler(h cache.ResourceEventHandler) (cache.ResourceEventHandlerRegistration, error) {
	i.r.keep(h)
	return i.SharedIndexInformer.AddEventHandler(h)
}

func (i *replayingIndexInformer) AddEventHandlerWithResyncPeriod(h cache.ResourceEventHandler, p time.Duration) (cache.ResourceEventHandlerRegistration, error) {
	i.r.keep(h)
	return i.SharedIndexInformer.AddEventHandlerWithResyncPeriod(h, p)
}

func (i *replayingIndexInformer) AddEventHandlerWithOptions(h cache.ResourceEventHandler, o cache.HandlerOptions) (cache.ResourceEventHandlerRegistration, error) {
	i.r.keep(h)
	return i.SharedIndexInformer.AddEventHandlerWithOptions(h, o)
}
