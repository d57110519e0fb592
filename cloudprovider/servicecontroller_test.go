package cloudprovider

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	"k8s.io/component-base/metrics/prometheus/controllers"
)

// TestUpstreamServiceController runs the real upstream service controller over
// the fake clientset with this provider: the Service gets its ingress, and a
// refusal becomes a SyncLoadBalancerFailed Event carrying our message.
func TestUpstreamServiceController(t *testing.T) {
	e := newEnv(t, "")
	ctx, cs := runUpstreamController(t, e, nodes("10.0.0.1", "10.0.0.2")[0], nodes("10.0.0.2")[0])

	ok, bad := service("0a0a0a0a", 80), service("0b0b0b0b", 80)
	bad.Spec.LoadBalancerIP = "10.251.0.3" // cluster-b's pool
	for _, s := range []*v1.Service{ok, bad} {
		if _, err := cs.CoreV1().Services(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		s, _ := cs.CoreV1().Services(ok.Namespace).Get(ctx, ok.Name, metav1.GetOptions{})
		evs, _ := cs.CoreV1().Events(bad.Namespace).List(ctx, metav1.ListOptions{})
		var refusal string
		for _, ev := range evs.Items {
			if ev.InvolvedObject.Name == bad.Name && ev.Reason == "SyncLoadBalancerFailed" {
				refusal = ev.Message
			}
		}
		if len(s.Status.LoadBalancer.Ingress) > 0 && refusal != "" {
			if s.Status.LoadBalancer.Ingress[0].IP != "10.250.0.1" || !strings.Contains(refusal, "edgelb refused") || !strings.Contains(refusal, "10.251.0.3") {
				t.Fatalf("ingress %v, refusal Event %q", s.Status.LoadBalancer.Ingress, refusal)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ingress %v, refusal Event %q", s.Status.LoadBalancer.Ingress, refusal)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// runUpstreamController runs the upstream service controller for cluster-a
// over a fake clientset holding nodes, with a Cloud on e's lbd. The context
// ends 30 s on (the test's bound) or with the test.
func runUpstreamController(t *testing.T, e *env, nodes ...*v1.Node) (context.Context, *fake.Clientset) {
	t.Helper()
	objs := make([]runtime.Object, len(nodes))
	for i, n := range nodes {
		objs[i] = n
	}
	cs := fake.NewClientset(objs...)
	inf := informers.NewSharedInformerFactory(cs, 0)
	ctrl, err := servicecontroller.New(&Cloud{cfg: e.lb.cfg, lb: e.lb}, cs, inf.Core().V1().Services(), inf.Core().V1().Nodes(), "cluster-a", utilfeature.DefaultFeatureGate)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	inf.Start(ctx.Done())
	go ctrl.Run(ctx, 1, controllers.NewControllerManagerMetrics("test"))
	return ctx, cs
}
