package cloudprovider

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/edgelb/edgelb/cloudprovider/servicemap"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
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
	e.lb.reports.Wait()
	if n := len(rec.Events); n != 0 {
		t.Fatalf("%d Events for a programmed service: %v", n, <-rec.Events)
	}
	vs := e.lookup(t, "cluster-a", name)
	if vs == nil || vs.Owner == "" {
		t.Fatalf("stored %v, want an owner", vs)
	}
	// Without a kernel no member fails to program anything: the owner's
	// status says what its data plane would.
	var isolated atomic.Pointer[[]string]
	e.c.Rewrite(t, "/GetMemberStatus", func(resp any) {
		st := resp.(*edgelbv1.GetMemberStatusResponse).Status
		if l := isolated.Load(); l != nil && st.GetMember().GetId() == vs.Owner {
			st.IsolatedServices = *l
		}
	})
	isolated.Store(&[]string{
		"cluster-a/" + name + ": ipvs: add service: invalid argument",
		"cluster-a/k8s-other-v4: not this Service",
		"cluster-b/" + name + ": another tenant's service of the same name"})
	if err := e.lb.UpdateLoadBalancer(e.ctx, "cluster-a", svc, nodes("192.0.2.1", "192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	e.lb.reports.Wait()
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

	isolated.Store(nil)
	if _, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", svc, nodes("192.0.2.1", "192.0.2.2")); err != nil {
		t.Fatal(err)
	}
	e.lb.reports.Wait()
	if n := len(rec.Events); n != 0 {
		t.Errorf("%d Events after the owner programs it again: %v", n, <-rec.Events)
	}
}

// The isolation check is off the path to the status: a sync whose owner's
// status read hangs returns its status at once, and the Event still comes
// once the read answers.
func TestIsolationCheckDoesNotHoldTheStatus(t *testing.T) {
	e := newEnv(t, "")
	rec := record.NewFakeRecorder(10)
	e.lb.events = rec
	svc := service("a2", 80)
	name := servicemap.Name(svc, servicemap.Families[0])
	release := make(chan struct{})
	e.c.Rewrite(t, "/GetMemberStatus", func(resp any) {
		<-release
		resp.(*edgelbv1.GetMemberStatusResponse).Status.IsolatedServices = []string{"cluster-a/" + name + ": ipvs: add service: invalid argument"}
	})
	done := make(chan error, 1)
	go func() {
		_, err := e.lb.EnsureLoadBalancer(e.ctx, "cluster-a", svc, nodes("192.0.2.1"))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(isolationCheckTimeout - time.Second):
		close(release)
		t.Fatal("EnsureLoadBalancer waited for the owner's status read")
	}
	close(release)
	e.lb.reports.Wait()
	if n := len(rec.Events); n != 1 {
		t.Fatalf("%d Events after the read answered, want 1", n)
	}
}
