// Package cloudprovider is edgelb's Kubernetes cloud provider: it implements
// k8s.io/cloud-provider's Interface so that an external
// cloud-controller-manager turns Services of type LoadBalancer into edgelb
// VirtualServices (see servicemap for the mapping, lbclient for the transport).
package cloudprovider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	k8scloud "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/edgelb/edgelb/cloudprovider/classcontroller"
	"github.com/edgelb/edgelb/cloudprovider/config"
	"github.com/edgelb/edgelb/cloudprovider/lbclient"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// ProviderName is the --cloud-provider value.
const ProviderName = "edgelb"

// VirtualServices is what the provider needs from lbd (lbclient.Client implements it).
type VirtualServices interface {
	Get(ctx context.Context, tenant, name string) (*edgelbv1.VirtualService, error)
	List(ctx context.Context, tenant string, labels map[string]string) ([]*edgelbv1.VirtualService, error)
	Create(ctx context.Context, vs *edgelbv1.VirtualService) (*edgelbv1.VirtualService, error)
	Update(ctx context.Context, vs *edgelbv1.VirtualService, expectedGeneration uint64) (*edgelbv1.VirtualService, error)
	Delete(ctx context.Context, tenant, name string) error
	// Pools lists the address pools open to the tenant: their announce
	// modes decide the modes of a VIP (servicemap.DesiredIn).
	Pools(ctx context.Context) ([]*edgelbv1.AddressPool, error)
}

// Cloud implements k8scloud.Interface.
type Cloud struct {
	cfg   *config.Resolved
	lb    *LoadBalancer
	watch *lbdWatch
}

var _ k8scloud.Interface = (*Cloud)(nil)

// Register makes the provider available to the CCM under ProviderName.
func Register() {
	k8scloud.RegisterCloudProvider(ProviderName, func(r io.Reader) (k8scloud.Interface, error) {
		if r == nil {
			return nil, errors.New("edgelb: --cloud-config is required (it lists the lbd endpoints)")
		}
		data, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("edgelb: reading --cloud-config: %w", err)
		}
		cfg, err := config.Parse(data)
		if err != nil {
			return nil, fmt.Errorf("edgelb: %w", err)
		}
		c, err := lbclient.New(lbclient.Options{
			Endpoints: cfg.Endpoints, CAFile: cfg.TLS.CAFile, CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile,
			ServerName: cfg.TLS.ServerName, AttemptTimeout: cfg.RequestTimeoutD,
		})
		if err != nil {
			return nil, fmt.Errorf("edgelb: %w", err)
		}
		return New(cfg, c), nil
	})
}

// New builds the provider over an lbd client.
func New(cfg *config.Resolved, c VirtualServices) *Cloud {
	w := newLbdWatch()
	return &Cloud{cfg: cfg, lb: &LoadBalancer{cfg: cfg, c: c, watch: w}, watch: w}
}

// Initialize starts the class controller when loadBalancerClasses are
// configured: the upstream service controller skips every Service with
// spec.loadBalancerClass set.
func (c *Cloud) Initialize(b k8scloud.ControllerClientBuilder, stop <-chan struct{}) {
	klog.InfoS("edgelb cloud provider initialized", "endpoints", c.cfg.Endpoints, "tenant", c.cfg.Tenant, "defaultPool", c.cfg.DefaultPool, "classes", c.cfg.LoadBalancerClasses)
	wctx, wcancel := context.WithCancel(context.Background())
	go func() { <-stop; wcancel() }()
	if c.watch != nil {
		go c.watch.run(wctx, c.lb.c)
	}
	// Events for VirtualServices lbd stored but a member cannot program (see
	// reportIsolated): the service controller records only sync errors.
	bc := record.NewBroadcaster()
	bc.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: b.ClientOrDie("edgelb-cloud-provider").CoreV1().Events("")})
	go func() { <-stop; bc.Shutdown() }()
	c.lb.events = bc.NewRecorder(scheme.Scheme, v1.EventSource{Component: "edgelb-cloud-provider"})
	if len(c.cfg.LoadBalancerClasses) == 0 {
		return
	}
	cs := b.ClientOrDie("edgelb-class-controller")
	f := informers.NewSharedInformerFactory(cs, classResync)
	// The tenant is required with classes (config check): Initialize is not told --cluster-name.
	ctrl := classcontroller.New(cs, f, c.lb, c.cfg.Tenant, c.cfg.LoadBalancerClasses)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-stop; cancel() }()
	if c.watch != nil {
		c.watch.onReturn(func(ns, name string) { ctrl.Requeue(ns + "/" + name) })
	}
	f.Start(stop)
	go ctrl.Run(ctx)
}

// startSweeper starts the orphan sweep and the heartbeat of the tenant (the
// configured one, else the cluster name).
func (c *Cloud) startSweeper(ctx context.Context, kube kubernetes.Interface, clusterName string) error {
	t, err := tenant(c.cfg, clusterName)
	if err != nil {
		return err
	}
	s := &orphanSweeper{tenant: t, kube: kube, lbd: c.lb.c, sweepEvery: c.cfg.OrphanSweepD,
		heartbeatEvery: c.cfg.HeartbeatD, timeout: max(c.cfg.RequestTimeoutD*3, 10*time.Second)}
	go s.run(ctx)
	return nil
}

// classResync re-checks classed Services now and then, so a refused one is
// retried even when nothing in Kubernetes changes (a freed address in lbd).
const classResync = 5 * time.Minute

// LoadBalancer is supported.
func (c *Cloud) LoadBalancer() (k8scloud.LoadBalancer, bool) { return c.lb, true }

// Instances (v1) is not: InstancesV2 replaces it for external providers.
func (c *Cloud) Instances() (k8scloud.Instances, bool) { return nil, false }

// InstancesV2 is supported from the Node objects alone.
func (c *Cloud) InstancesV2() (k8scloud.InstancesV2, bool) { return Instances{}, true }

// Zones is not supported (InstancesV2 reports no zone).
func (c *Cloud) Zones() (k8scloud.Zones, bool) { return nil, false }

// Clusters is not supported.
func (c *Cloud) Clusters() (k8scloud.Clusters, bool) { return nil, false }

// Routes is not supported: edgelb forwards to NodePorts, pod routing is the CNI's job.
func (c *Cloud) Routes() (k8scloud.Routes, bool) { return nil, false }

// ProviderName returns "edgelb".
func (c *Cloud) ProviderName() string { return ProviderName }

// HasClusterID is true: the cluster name is the tenant that scopes every VIP.
func (c *Cloud) HasClusterID() bool { return true }

// tenant is the configured tenant, else the cluster name (--cluster-name).
func tenant(cfg *config.Resolved, clusterName string) (string, error) {
	if cfg.Tenant != "" {
		return cfg.Tenant, nil
	}
	t := strings.ToLower(clusterName)
	if !config.ValidName(t) {
		return "", fmt.Errorf("edgelb: cluster name %q is not a valid tenant name (lowercase letters, digits, '-', '.', at most 63); set --cluster-name or tenant in the cloud config", clusterName)
	}
	return t, nil
}
