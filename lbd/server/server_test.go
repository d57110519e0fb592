package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/validate"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node/nodetest"
)

var quiet = slog.New(slog.DiscardHandler)

// newServer starts a real one-member raft cluster on loopback and the API
// over it, called directly (no gRPC): writes go through raft and the FSM as in lbd.
func newServer(t *testing.T, opts Options) *Server {
	t.Helper()
	n, raftAddr := nodetest.Leader(t)
	opts.Self = &edgelbv1.Member{Id: "m1", RaftAddress: raftAddr, ApiAddress: "127.0.0.1:1"}
	opts.Logger = quiet
	s := New(n, opts)
	t.Cleanup(s.Close)
	return s
}

func limits(maxBackends int) validate.Limits {
	l := validate.DefaultLimits
	l.MaxBackends = maxBackends
	return l
}

var admin = auth.WithIdentity(context.Background(), auth.Identity{Role: auth.RoleAdmin, Name: "alice"})

func mustPool(t *testing.T, s *Server, name, cidr string, tenants ...string) {
	t.Helper()
	if _, err := s.CreateAddressPool(admin, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: name, Ranges: []string{cidr}, Tenants: tenants}}); err != nil {
		t.Fatal(err)
	}
}

func mustService(t *testing.T, s *Server, ctx context.Context, tenant, name string, backends ...string) *edgelbv1.VirtualService {
	t.Helper()
	vs := &edgelbv1.VirtualService{Tenant: tenant, Name: name, Ports: []*edgelbv1.Port{{Port: 80}}}
	for _, b := range backends {
		vs.Backends = append(vs.Backends, &edgelbv1.Backend{Address: b})
	}
	res, err := s.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: vs})
	if err != nil {
		t.Fatal(err)
	}
	return res.Service
}

// wantCode fails unless err has code and its message holds every fragment.
func wantCode(t *testing.T, what string, err error, code codes.Code, fragments ...string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Errorf("%s: %v, want %v", what, err, code)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(st.Message(), f) {
			t.Errorf("%s: message %q does not mention %q", what, st.Message(), f)
		}
	}
}

// AddBackend carries one backend; it must still not grow a service past the
// backends limit, which is on the whole list.
func TestAddBackendLimit(t *testing.T) {
	s := newServer(t, Options{Limits: limits(3)})
	mustPool(t, s, "p", "192.0.2.0/28")
	mustService(t, s, admin, "t", "n", "10.0.0.1", "10.0.0.2")
	add := func(addr string) error {
		_, err := s.AddBackend(admin, &edgelbv1.AddBackendRequest{Tenant: "t", Name: "n", Backend: &edgelbv1.Backend{Address: addr}})
		return err
	}
	if err := add("10.0.0.3"); err != nil {
		t.Fatalf("third backend (the limit is 3): %v", err)
	}
	wantCode(t, "fourth backend", add("10.0.0.4"), codes.InvalidArgument,
		"backends:", "t/n", "already has 3 backends", "limit (3)", "lbctl backend remove")
	if n, _ := s.fsm.BackendCount(fsm.Key{Tenant: "t", Name: "n"}); n != 3 {
		t.Errorf("service has %d backends after the refusal, want 3", n)
	}
	// SetBackends is checked as a whole list, as before.
	_, err := s.SetBackends(admin, &edgelbv1.SetBackendsRequest{Tenant: "t", Name: "n", Backends: []*edgelbv1.Backend{
		{Address: "10.0.0.1"}, {Address: "10.0.0.2"}, {Address: "10.0.0.3"}, {Address: "10.0.0.4"}}})
	wantCode(t, "set of 4", err, codes.InvalidArgument, "4 backends; the limit is 3")
}

// fakeWatch is a Watch stream that keeps the first response and then ends the call.
type fakeWatch struct {
	edgelbv1.WatchService_WatchServer
	ctx    context.Context
	cancel context.CancelFunc
	got    *edgelbv1.WatchResponse
}

func (w *fakeWatch) Context() context.Context { return w.ctx }

func (w *fakeWatch) Send(r *edgelbv1.WatchResponse) error {
	if w.got == nil {
		w.got = r
	}
	w.cancel()
	return nil
}

// watchSnapshot returns the names of the pools and services in the first
// Watch response the caller in ctx gets.
func watchSnapshot(t *testing.T, s *Server, ctx context.Context) (pools, services []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w := &fakeWatch{ctx: ctx, cancel: cancel}
	if err := s.Watch(&edgelbv1.WatchRequest{}, w); status.Code(err) != codes.Canceled {
		t.Fatalf("watch: %v", err)
	}
	if w.got == nil || !w.got.Snapshot {
		t.Fatalf("watch sent no snapshot: %v", w.got)
	}
	for _, e := range w.got.Events {
		if p := e.GetAddressPool(); p != nil {
			pools = append(pools, p.Name)
		}
		if vs := e.GetVirtualService(); vs != nil {
			services = append(services, vs.Tenant+"/"+vs.Name)
		}
	}
	return pools, services
}

// A cloud-provider identity sees nothing of other tenants: not their VIPs in a
// member's status, not pools closed to it by name, not those pools in a watch.
func TestTenantSeesOnlyItsOwn(t *testing.T) {
	s := newServer(t, Options{})
	mustPool(t, s, "a", "192.0.2.0/28", "tenant-a")
	mustPool(t, s, "b", "198.51.100.0/28", "tenant-b")
	mustPool(t, s, "shared", "203.0.113.0/28")
	ctxA := auth.WithIdentity(context.Background(), auth.Identity{Role: auth.RoleCloudProvider, Name: "tenant-a", Tenant: "tenant-a"})
	ctxB := auth.WithIdentity(context.Background(), auth.Identity{Role: auth.RoleCloudProvider, Name: "tenant-b", Tenant: "tenant-b"})
	vipA := mustService(t, s, ctxA, "", "web").Vip
	vipB := mustService(t, s, ctxB, "", "web").Vip

	owned := func(ctx context.Context) string {
		t.Helper()
		resp, err := s.GetMemberStatus(ctx, &edgelbv1.GetMemberStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(resp.Status.OwnedVips, ",")
	}
	if got, want := owned(admin), vipA+","+vipB; got != want {
		t.Fatalf("admin: owned VIPs %q, want %q (the member owns both services)", got, want)
	}
	if got := owned(ctxA); got != vipA {
		t.Errorf("tenant-a: owned VIPs %q, want only its own %q", got, vipA)
	}

	for _, name := range []string{"a", "shared"} {
		if _, err := s.GetAddressPool(ctxA, &edgelbv1.GetAddressPoolRequest{Name: name}); err != nil {
			t.Errorf("tenant-a getting pool %s, open to it: %v", name, err)
		}
	}
	_, err := s.GetAddressPool(ctxA, &edgelbv1.GetAddressPoolRequest{Name: "b"})
	wantCode(t, "tenant-a getting pool b", err, codes.NotFound, "address pool b not found")
	if _, err := s.GetAddressPool(admin, &edgelbv1.GetAddressPoolRequest{Name: "b"}); err != nil {
		t.Errorf("admin getting pool b: %v", err)
	}
	list, err := s.ListAddressPools(ctxA, &edgelbv1.ListAddressPoolsRequest{})
	if err != nil || len(list.Pools) != 2 {
		t.Errorf("tenant-a listing pools: %v, %v; want a and shared", list, err)
	}

	pools, services := watchSnapshot(t, s, ctxA)
	if got := strings.Join(pools, ","); got != "a,shared" {
		t.Errorf("tenant-a's watch shows pools %q, want a,shared", got)
	}
	if got := strings.Join(services, ","); got != "tenant-a/web" {
		t.Errorf("tenant-a's watch shows services %q, want tenant-a/web", got)
	}
	if pools, services := watchSnapshot(t, s, admin); len(pools) != 3 || len(services) != 2 {
		t.Errorf("admin's watch shows pools %v and services %v, want all", pools, services)
	}
}

// Pool events after the snapshot are filtered alike: a tenant does not learn of
// a pool created for another.
func TestFilterTenantPools(t *testing.T) {
	ev := func(p *edgelbv1.AddressPool) *edgelbv1.Event {
		return &edgelbv1.Event{Object: &edgelbv1.Event_AddressPool{AddressPool: p}}
	}
	evs := []*edgelbv1.Event{
		ev(&edgelbv1.AddressPool{Name: "mine", Tenants: []string{"x", "a"}}),
		ev(&edgelbv1.AddressPool{Name: "theirs", Tenants: []string{"b"}}),
		ev(&edgelbv1.AddressPool{Name: "open"}),
	}
	name := func(evs []*edgelbv1.Event) string {
		var n []string
		for _, e := range evs {
			n = append(n, e.GetAddressPool().Name)
		}
		return strings.Join(n, ",")
	}
	if got := name(filterTenant(evs, "a", "a")); got != "mine,open" {
		t.Errorf("bound to a: %s", got)
	}
	// An admin narrowing its watch to a tenant still sees every pool.
	if got := name(filterTenant(evs, "a", "")); got != "mine,theirs,open" {
		t.Errorf("admin watching tenant a: %s", got)
	}
}
