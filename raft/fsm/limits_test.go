package fsm

import (
	"fmt"
	"net/netip"
	"testing"

	"google.golang.org/grpc/codes"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// manyBackends returns n distinct IPv4 backends.
func manyBackends(n int) []*edgelbv1.Backend {
	bs := make([]*edgelbv1.Backend, n)
	a := netip.MustParseAddr("10.1.0.1")
	for i := range bs {
		bs[i] = backend(a.String(), 8080)
		a = a.Next()
	}
	return bs
}

// One backend at a time must not grow a service past MaxBackends: the API
// checks each AddBackend alone, so only the FSM sees the whole list.
func TestBackendLimit(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "192.0.2.0/28")))
	h.ok(create(withBackends(svc("t1", "s", ""), manyBackends(MaxBackends)...)))

	h.refused(&raftv1.AddBackend{Tenant: "t1", Name: "s", Backend: backend("10.2.0.1", 80)}, codes.InvalidArgument,
		"backends:", "t1/s", fmt.Sprintf("already has %d backends", MaxBackends), "lbctl backend remove")

	over := manyBackends(MaxBackends + 1)
	want := fmt.Sprintf("%d backends; the limit is %d", MaxBackends+1, MaxBackends)
	h.refused(&raftv1.SetBackends{Tenant: "t1", Name: "s", Backends: over}, codes.InvalidArgument, "t1/s", want)
	h.refused(&raftv1.UpdateVirtualService{Service: withBackends(svc("t1", "s", ""), over...)}, codes.InvalidArgument, "t1/s", want)
	h.refused(create(withBackends(svc("t1", "big", ""), over...)), codes.InvalidArgument, "t1/big", want)

	// Below the limit again, an add is taken.
	h.ok(&raftv1.RemoveBackend{Tenant: "t1", Name: "s", Address: "10.1.0.1", Port: 8080})
	h.ok(&raftv1.AddBackend{Tenant: "t1", Name: "s", Backend: backend("10.2.0.1", 80)})
	if n, _ := h.f.BackendCount(Key{"t1", "s"}); n != MaxBackends {
		t.Errorf("BackendCount = %d, want %d", n, MaxBackends)
	}
}
