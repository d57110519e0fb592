package lbclient

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/lbdtest"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// deadAddr is a loopback port with nothing listening.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// newClient is a client for tenant t's cloud-provider identity of cluster c,
// as a deployed CCM has, on the given endpoints.
func newClient(t *testing.T, c *lbdtest.Cluster, o Options) *Client {
	t.Helper()
	f := c.ClientFiles(t, "cloud-provider", "t")
	o.CAFile, o.CertFile, o.KeyFile = f.CA, f.Cert, f.Key
	cl, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// calls counts the client calls that reach lbd on c, from now until t ends.
func calls(t *testing.T, c *lbdtest.Cluster) *atomic.Int32 {
	var n atomic.Int32
	c.Inject(t, func(context.Context, string) error { n.Add(1); return nil })
	return &n
}

func TestFailsOverToWorkingEndpoint(t *testing.T) {
	lbd := lbdtest.StartCluster(t, 1)
	c := newClient(t, lbd, Options{Endpoints: []string{deadAddr(t), lbd.Members[0].Addr}, AttemptTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Get(ctx, "t", "x"); status.Code(err) != codes.NotFound {
		t.Fatalf("Get = %v, want NotFound from the live endpoint", err)
	}
	// The client now sticks to the endpoint that answered.
	n := calls(t, lbd)
	if _, err := c.List(ctx, "t", nil); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 1 {
		t.Errorf("want one call on the live endpoint, got %d", n.Load())
	}
}

func TestRetriesUnavailable(t *testing.T) {
	lbd := lbdtest.StartCluster(t, 1)
	lbd.Inject(t, lbdtest.FailNext(2, "", status.Error(codes.Unavailable, "injected: member going away")))
	c := newClient(t, lbd, Options{Endpoints: lbd.Endpoints()})
	if _, err := c.List(context.Background(), "t", nil); err != nil {
		t.Fatalf("List after two Unavailable = %v, want success on the third try", err)
	}
}

func TestDoesNotRetryRefusals(t *testing.T) {
	lbd := lbdtest.StartCluster(t, 1) // no pools: every create is refused
	c := newClient(t, lbd, Options{Endpoints: lbd.Endpoints()})
	n := calls(t, lbd)
	_, err := c.Create(context.Background(), &edgelbv1.VirtualService{Tenant: "t", Name: "x", Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80}}})
	if status.Code(err) != codes.FailedPrecondition || n.Load() != 1 {
		t.Fatalf("Create = %v after %d calls, want one FailedPrecondition", err, n.Load())
	}
}

func TestHonoursDeadline(t *testing.T) {
	// A listener that accepts and never speaks HTTP/2: calls hang until the deadline.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	c, err := New(Options{Endpoints: []string{l.Addr().String()}, AttemptTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Get(ctx, "t", "x")
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("Get = %v after %s, want an error near the 300ms deadline", err, time.Since(start))
	}
}

// lbd's write-rate limit is retried with backoff on the same endpoint (the
// member is fine; the limit is per identity), while other ResourceExhausted
// answers (a full pool, a tenant's cap) are the caller's to report.
func TestRateLimitRetriedOnSameEndpoint(t *testing.T) {
	// Two separate lbd clusters, so each endpoint's calls can be told apart;
	// in plaintext, so that the client could reach either (two clusters have
	// two CAs).
	first, second := lbdtest.StartCluster(t, 1, lbdtest.Plaintext()), lbdtest.StartCluster(t, 1, lbdtest.Plaintext())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, lbd := range []*lbdtest.Cluster{first, second} {
		_, err := edgelbv1.NewAddressPoolServiceClient(lbd.Admin(t)).CreateAddressPool(ctx,
			&edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.0.0.0/29"}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	vs := func(name string) *edgelbv1.VirtualService {
		return &edgelbv1.VirtualService{Tenant: "t", Name: name, Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}}}
	}
	c, err := New(Options{Endpoints: []string{first.Members[0].Addr, second.Members[0].Addr}, AttemptTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rate := errinfo.Retry(codes.ResourceExhausted, errinfo.RateLimited, nil, 20*time.Millisecond, "cloud-provider/t exceeds 500 writes/s; slow down and retry")
	if !RateLimited(rate) || !RateLimited(fmt.Errorf("creating: %w", rate)) {
		t.Fatal("lbd's write-rate refusal (reason RATE_LIMITED) is not recognised")
	}
	// Decided by the reason, not the words: the same text without it is not a rate limit.
	if RateLimited(status.Error(codes.ResourceExhausted, "cloud-provider/t exceeds 500 writes/s; slow down and retry")) {
		t.Fatal("a ResourceExhausted without reason RATE_LIMITED is taken for a rate limit")
	}
	firstCalls, secondCalls := calls(t, first), calls(t, second)
	first.Inject(t, lbdtest.FailNext(2, "", rate))
	if _, err := c.Create(ctx, vs("x")); err != nil {
		t.Fatalf("Create after two rate-limited tries = %v, want success", err)
	}
	if n := firstCalls.Load(); n != 3 {
		t.Errorf("first endpoint: %d calls; want 3", n)
	}
	if n := secondCalls.Load(); n != 0 {
		t.Errorf("a rate limit moved the client to the second endpoint (%d calls)", n)
	}

	full := errinfo.New(codes.ResourceExhausted, errinfo.PoolExhausted, nil, "no free IPv4 address in pools a open to tenant t; add a range to a pool or free a VIP")
	if RateLimited(full) {
		t.Fatal("a full pool is taken for a rate limit")
	}
	// A real full pool: p (10.0.0.0/29) has six usable addresses, x has one.
	for i := range 5 {
		if _, err := c.Create(ctx, vs(fmt.Sprintf("fill-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	before := firstCalls.Load()
	_, err = c.Create(ctx, vs("y"))
	if status.Code(err) != codes.ResourceExhausted || errinfo.Reason(err) != errinfo.PoolExhausted || RateLimited(err) {
		t.Fatalf("Create into a full pool = %v, want ResourceExhausted with reason %s", err, errinfo.PoolExhausted)
	}
	if after := firstCalls.Load(); after != before+1 {
		t.Errorf("a full pool was tried %d times, want once", after-before)
	}
}

// TestRetryableRemovedMember: a removed member's refusal sends the client to
// the next endpoint; other FailedPreconditions (conflicts) do not.
func TestRetryableRemovedMember(t *testing.T) {
	removed, err := status.New(codes.FailedPrecondition, "removed member").WithDetails(&errdetails.ErrorInfo{Reason: errinfo.RemovedMember, Domain: errinfo.Domain})
	if err != nil {
		t.Fatal(err)
	}
	if !retryable(removed.Err()) {
		t.Error("a removed member's refusal is not retried on another endpoint")
	}
	if retryable(status.Error(codes.FailedPrecondition, "pool in use")) {
		t.Error("a conflict is retried")
	}
}
