package cloudprovider

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgelb/edgelb/cloudprovider/servicemap"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// A Service whose pool is a bgp pool (read from lbd's pool list) gets mh and
// dr, with its own ports: the only modes every edge can serve it with. One
// annotated edgelb.io/forwarding: nat is refused by lbd, and the upstream
// service controller turns the refusal into a Warning Event that says what
// to change.
func TestBGPPoolServiceModes(t *testing.T) {
	e := newEnv(t, "")
	if _, err := edgelbv1.NewAddressPoolServiceClient(e.c.Admin(t)).CreateAddressPool(e.ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{
		Name: "rack", Ranges: []string{"198.51.100.0/28"}, Tenants: []string{"cluster-a"}, AnnounceMode: edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP,
	}}); err != nil {
		t.Fatal(err)
	}
	good := service("0c0c0c0c", 80)
	good.Annotations[servicemap.AnnotationPool] = "rack"
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", good, nodes("10.0.0.1")); err != nil {
		t.Fatalf("Service in the bgp pool: %v", err)
	}
	vs := e.lookup(t, "cluster-a", servicemap.Name(good, v1.IPv4Protocol))
	if vs.GetScheduler() != edgelbv1.Scheduler_SCHEDULER_MH || vs.GetForwardingMode() != edgelbv1.ForwardingMode_FORWARDING_MODE_DR ||
		vs.GetPool() != "rack" || vs.GetPorts()[0].GetBackendPort() != 80 {
		t.Errorf("stored %v", vs)
	}
	// Nothing to write on the next sync: what it asks for is what is stored.
	writes := e.countWrites(t)
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", good, nodes("10.0.0.1")); err != nil || writes.Load() != 0 {
		t.Errorf("resync: %v, %d writes", err, writes.Load())
	}

	bad := service("0d0d0d0d", 80)
	bad.Annotations[servicemap.AnnotationPool] = "rack"
	bad.Annotations[servicemap.AnnotationForwarding] = "nat"
	_, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", bad, nodes("10.0.0.1"))
	var r *RefusalError
	if !errors.As(err, &r) || r.Code != codes.FailedPrecondition || errinfo.Reason(err) != errinfo.BgpPoolNeedsMhDr ||
		!strings.Contains(r.Msg, servicemap.AnnotationForwarding) || !strings.Contains(r.Msg, "l2 mode") {
		t.Fatalf("nat in a bgp pool: %v, want a refusal naming the annotation", err)
	}

	// Through the upstream controller: a Warning Event on the Service.
	ctx, cs := runUpstreamController(t, e, nodes("10.0.0.1")[0])
	if _, err := cs.CoreV1().Services(bad.Namespace).Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		evs, _ := cs.CoreV1().Events(bad.Namespace).List(ctx, metav1.ListOptions{})
		for _, ev := range evs.Items {
			if ev.InvolvedObject.Name == bad.Name && ev.Reason == "SyncLoadBalancerFailed" {
				if ev.Type != v1.EventTypeWarning || !strings.Contains(ev.Message, "announces by BGP") || !strings.Contains(ev.Message, servicemap.AnnotationForwarding) {
					t.Fatalf("Event %s %q", ev.Type, ev.Message)
				}
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no SyncLoadBalancerFailed Event for %s", bad.Name)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
