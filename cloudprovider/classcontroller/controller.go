// Package classcontroller serves Services whose spec.loadBalancerClass is one
// of edgelb's configured classes. The upstream service controller skips every
// Service with a class, so classed Services need a controller of their own;
// this one drives the same LoadBalancer implementation, with its own finalizer
// (the upstream one would make the upstream controller delete the VIP).
package classcontroller

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	k8scloud "k8s.io/cloud-provider"
	"k8s.io/klog/v2"
)

// Finalizer keeps a classed Service until its VIP is released.
const Finalizer = "edgelb.io/load-balancer-cleanup"

// Controller reconciles classed LoadBalancer Services.
type Controller struct {
	cs       kubernetes.Interface
	lb       k8scloud.LoadBalancer
	cluster  string
	classes  []string
	services corelisters.ServiceLister
	nodes    corelisters.NodeLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
	bc       record.EventBroadcaster
}

// New wires the controller to informers from f; call f.Start and Run afterwards.
func New(cs kubernetes.Interface, f informers.SharedInformerFactory, lb k8scloud.LoadBalancer, clusterName string, classes []string) *Controller {
	bc := record.NewBroadcaster()
	c := &Controller{
		cs: cs, lb: lb, cluster: clusterName, classes: classes,
		services: f.Core().V1().Services().Lister(),
		nodes:    f.Core().V1().Nodes().Lister(),
		synced:   []cache.InformerSynced{f.Core().V1().Services().Informer().HasSynced, f.Core().V1().Nodes().Informer().HasSynced},
		queue:    workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		bc:       bc,
		recorder: bc.NewRecorder(scheme.Scheme, v1.EventSource{Component: "edgelb-class-controller"}),
	}
	enqueue := func(obj any) {
		if s, ok := obj.(*v1.Service); ok && (c.ours(s) || slices.Contains(s.Finalizers, Finalizer)) {
			if k, err := cache.MetaNamespaceKeyFunc(s); err == nil {
				c.queue.Add(k)
			}
		}
	}
	f.Core().V1().Services().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }, DeleteFunc: enqueue,
	})
	// Any node change may change every classed Service's backends; sync
	// compares and writes only what differs, so resyncing all is cheap.
	all := func(any) { c.enqueueAll() }
	f.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: all, DeleteFunc: all,
		UpdateFunc: func(o, n any) {
			on, nn := o.(*v1.Node), n.(*v1.Node)
			if !reflect.DeepEqual(on.Labels, nn.Labels) || !reflect.DeepEqual(on.Status.Addresses, nn.Status.Addresses) {
				c.enqueueAll()
			}
		},
	})
	return c
}

func (c *Controller) ours(s *v1.Service) bool {
	return s.Spec.Type == v1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerClass != nil && slices.Contains(c.classes, *s.Spec.LoadBalancerClass)
}

func (c *Controller) enqueueAll() {
	svcs, _ := c.services.List(labels.Everything())
	for _, s := range svcs {
		if c.ours(s) {
			c.queue.Add(s.Namespace + "/" + s.Name)
		}
	}
}

// Run processes the queue until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	defer c.queue.ShutDown()
	c.bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.cs.CoreV1().Events("")})
	defer c.bc.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return
	}
	klog.InfoS("edgelb class controller started", "classes", c.classes)
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		for c.next(ctx) {
		}
	}, time.Second)
	<-ctx.Done()
}

func (c *Controller) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	if err := c.sync(ctx, key); err != nil {
		klog.ErrorS(err, "syncing classed Service, will retry", "service", key)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// Requeue syncs the Service now, ahead of any backoff it is waiting out
// (the provider calls it when lbd answers again after an outage).
func (c *Controller) Requeue(key string) { c.queue.Add(key) }

// Sync reconciles one Service by key (exported for tests).
func (c *Controller) Sync(ctx context.Context, key string) error { return c.sync(ctx, key) }

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	if _, err := c.services.Services(ns).Get(name); apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	// Decide on the Service as the apiserver has it, not on the informer's
	// copy: the cache can lag behind a deletion, and an ensure made from it
	// after the cleanup re-creates the VIP of a Service that is gone (seen
	// in the tests under load: the VIP outlived its Service).
	svc, err := c.cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the Service: %w", err)
	}
	if svc.DeletionTimestamp != nil || !c.ours(svc) {
		return c.cleanup(ctx, svc)
	}
	if !slices.Contains(svc.Finalizers, Finalizer) {
		svc.Finalizers = append(svc.Finalizers, Finalizer)
		if svc, err = c.cs.CoreV1().Services(ns).Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("adding finalizer: %w", err)
		}
	}
	nodes, err := c.eligibleNodes()
	if err != nil {
		return err
	}
	st, err := c.lb.EnsureLoadBalancer(ctx, c.cluster, svc, nodes)
	if err != nil {
		c.recorder.Eventf(svc, v1.EventTypeWarning, "SyncLoadBalancerFailed", "Error syncing load balancer: %v", err)
		return err
	}
	if !reflect.DeepEqual(svc.Status.LoadBalancer, *st) {
		svc.Status.LoadBalancer = *st
		if _, err := c.cs.CoreV1().Services(ns).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("setting status: %w", err)
		}
		c.recorder.Event(svc, v1.EventTypeNormal, "EnsuredLoadBalancer", "Ensured load balancer")
	}
	return nil
}

// cleanup releases the VIP of a Service that is going away or no longer ours.
func (c *Controller) cleanup(ctx context.Context, svc *v1.Service) error {
	if !slices.Contains(svc.Finalizers, Finalizer) {
		return nil
	}
	if err := c.lb.EnsureLoadBalancerDeleted(ctx, c.cluster, svc); err != nil {
		c.recorder.Eventf(svc, v1.EventTypeWarning, "DeleteLoadBalancerFailed", "Error deleting load balancer: %v", err)
		return err
	}
	if svc.DeletionTimestamp == nil && len(svc.Status.LoadBalancer.Ingress) > 0 {
		svc.Status.LoadBalancer = v1.LoadBalancerStatus{}
		s, err := c.cs.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, svc, metav1.UpdateOptions{})
		if err != nil {
			return fmt.Errorf("clearing status: %w", err)
		}
		svc = s
	}
	svc.Finalizers = slices.DeleteFunc(svc.Finalizers, func(f string) bool { return f == Finalizer })
	if _, err := c.cs.CoreV1().Services(svc.Namespace).Update(ctx, svc, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing finalizer: %w", err)
	}
	c.recorder.Event(svc, v1.EventTypeNormal, "DeletedLoadBalancer", "Deleted load balancer")
	return nil
}

// eligibleNodes is every node not being deleted, like upstream's stable node
// set: readiness is left to the health checks, so a flapping kubelet does not
// rewrite every VIP. The exclusion label is applied by the mapping.
func (c *Controller) eligibleNodes() ([]*v1.Node, error) {
	all, err := c.nodes.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(slices.Clone(all), func(n *v1.Node) bool { return n.DeletionTimestamp != nil }), nil
}
