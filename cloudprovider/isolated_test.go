package cloudprovider

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/edgelb/edgelb/cloudprovider/servicemap"
)

// A VirtualService lbd stored but its owner cannot program gets a Warning
// Event naming the member and lbd's reason; other tenants' and other
// Services' isolations do not; once the owner programs it, no Event.
func TestIsolatedServiceGetsWarningEvent(t *testing.T) {
	e := newEnv(t, "")
	rec := record.NewFakeRecorder(10)
	e.lb.events = rec
	svc := service("a1", 80)
	name := servicemap.Name(svc, servicemap.Families[0])
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", svc, nodes("192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Events); n != 0 {
		t.Fatalf("%d Events for a programmed service: %v", n, <-rec.Events)
	}
	vs := e.f.Lookup("cluster-a", name)
	if vs == nil || vs.Owner == "" {
		t.Fatalf("stored %v, want an owner", vs)
	}
	e.f.SetIsolated(vs.Owner,
		"cluster-a/"+name+": ipvs: add service: invalid argument",
		"cluster-a/k8s-other-v4: not this Service",
		"cluster-b/"+name+": another tenant's service of the same name")
	if err := e.lb.UpdateLoadBalancer(e.ctx, "cluster-a", svc, nodes("192.0.2.1", "192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Events); n != 1 {
		t.Fatalf("%d Events, want 1", n)
	}
	ev := <-rec.Events
	for _, want := range []string{v1.EventTypeWarning, ReasonNotProgrammed, vs.Owner, name, vs.Vip, "ipvs: add service: invalid argument"} {
		if !strings.Contains(ev, want) {
			t.Errorf("Event %q lacks %q", ev, want)
		}
	}
	t.Logf("Event: %s", ev)

	e.f.SetIsolated(vs.Owner)
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", svc, nodes("192.0.2.1", "192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Events); n != 0 {
		t.Errorf("%d Events after the owner programs it again: %v", n, <-rec.Events)
	}
}
