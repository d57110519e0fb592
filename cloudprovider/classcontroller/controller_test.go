package classcontroller_test

import (
	"context"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgelb/edgelb/cloudprovider"
	"github.com/edgelb/edgelb/cloudprovider/classcontroller"
	"github.com/edgelb/edgelb/cloudprovider/config"
	"github.com/edgelb/edgelb/cloudprovider/lbclient"
	"github.com/edgelb/edgelb/lbd/lbdtest"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func svc(name string, class *string) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("00000000-0000-0000-0000-" + name)},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, LoadBalancerClass: class, IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
			Ports: []v1.ServicePort{{Protocol: v1.ProtocolTCP, Port: 80, NodePort: 30080}}},
	}
}

func TestServesOnlyConfiguredClass(t *testing.T) {
	lbd := lbdtest.StartCluster(t, 1)
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	if _, err := edgelbv1.NewAddressPoolServiceClient(lbd.Admin(t)).CreateAddressPool(pctx,
		&edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.250.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	f := lbd.ClientFiles(t, "cloud-provider", "c1")
	cfg, err := config.Parse([]byte("endpoints: [" + lbd.Members[0].Addr + "]\ntenant: c1\nloadBalancerClasses: [edgelb.io/lb]"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := lbclient.New(lbclient.Options{Endpoints: cfg.Endpoints, CAFile: f.CA, CertFile: f.Cert, KeyFile: f.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lb, _ := cloudprovider.New(cfg, c).LoadBalancer()

	ours, other := "edgelb.io/lb", "someone.else/lb"
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "10.0.0.1"}}}}
	cs := fake.NewClientset(node, svc("classed", &ours), svc("other", &other), svc("plain", nil))
	inf := informers.NewSharedInformerFactory(cs, 0)
	ctrl := classcontroller.New(cs, inf, lb, "c1", cfg.LoadBalancerClasses)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inf.Start(ctx.Done())
	go ctrl.Run(ctx)

	admin := edgelbv1.NewVirtualServiceServiceClient(lbd.Admin(t))
	stored := func() int {
		r, err := admin.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return len(r.Services)
	}
	get := func(name string) *v1.Service {
		s, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for len(get("classed").Status.LoadBalancer.Ingress) == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("classed Service got no ingress")
		case <-time.After(20 * time.Millisecond):
		}
	}
	s := get("classed")
	if s.Status.LoadBalancer.Ingress[0].IP != "10.250.0.1" || !slices.Contains(s.Finalizers, classcontroller.Finalizer) {
		t.Fatalf("classed: %+v finalizers %v", s.Status.LoadBalancer, s.Finalizers)
	}
	for _, n := range []string{"other", "plain"} {
		if s := get(n); len(s.Status.LoadBalancer.Ingress) > 0 || len(s.Finalizers) > 0 {
			t.Errorf("%s was touched: %+v", n, s)
		}
	}
	if n := stored(); n != 1 {
		t.Fatalf("lbd holds %d VirtualServices, want 1", n)
	}

	// Deleting: the finalizer holds the Service until the VIP is released.
	now := metav1.Now()
	s.DeletionTimestamp = &now
	if _, err := cs.CoreV1().Services("default").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for slices.Contains(get("classed").Finalizers, classcontroller.Finalizer) || stored() != 0 {
		// The fake clientset has no optimistic concurrency: a controller
		// write from a copy read before the deletion mark can erase it (a
		// real apiserver answers that write with a conflict). Mark again.
		if cur := get("classed"); cur.DeletionTimestamp == nil {
			cur.DeletionTimestamp = &now
			if _, err := cs.CoreV1().Services("default").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("finalizer %v, lbd holds %d VirtualServices", get("classed").Finalizers, stored())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
