package lbclient

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/cloudprovider/internal/fakelbd"
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

func TestFailsOverToWorkingEndpoint(t *testing.T) {
	f := fakelbd.New()
	c, err := New(Options{Endpoints: []string{deadAddr(t), fakelbd.Start(t, f)}, AttemptTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Get(ctx, "t", "x"); status.Code(err) != codes.NotFound {
		t.Fatalf("Get = %v, want NotFound from the live endpoint", err)
	}
	// The client now sticks to the endpoint that answered.
	calls, _ := f.Counts()
	if _, err := c.List(ctx, "t", nil); err != nil {
		t.Fatal(err)
	}
	if now, _ := f.Counts(); now != calls+1 {
		t.Errorf("want one call on the live endpoint, got %d", now-calls)
	}
}

func TestRetriesUnavailable(t *testing.T) {
	f := fakelbd.New()
	f.SetFailNext(2)
	c, err := New(Options{Endpoints: []string{fakelbd.Start(t, f)}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.List(context.Background(), "t", nil); err != nil {
		t.Fatalf("List after two Unavailable = %v, want success on the third try", err)
	}
}

func TestDoesNotRetryRefusals(t *testing.T) {
	f := fakelbd.New() // no pools: every create is refused
	c, err := New(Options{Endpoints: []string{fakelbd.Start(t, f)}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Create(context.Background(), &edgelbv1.VirtualService{Tenant: "t", Name: "x", Ports: []*edgelbv1.Port{{Port: 80}}})
	if calls, _ := f.Counts(); status.Code(err) != codes.FailedPrecondition || calls != 1 {
		t.Fatalf("Create = %v after %d calls, want one FailedPrecondition", err, calls)
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
	pool := fakelbd.Pool{Name: "p", Prefix: netip.MustParsePrefix("10.0.0.0/29")}
	first, second := fakelbd.New(pool), fakelbd.New(pool)
	vs := func(name string) *edgelbv1.VirtualService {
		return &edgelbv1.VirtualService{Tenant: "t", Name: name, Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}}}
	}
	c, err := New(Options{Endpoints: []string{fakelbd.Start(t, first), fakelbd.Start(t, second)}, AttemptTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rate := errinfo.Retry(codes.ResourceExhausted, errinfo.RateLimited, nil, 20*time.Millisecond, "cloud-provider/t exceeds 500 writes/s; slow down and retry")
	if !RateLimited(rate) || !RateLimited(fmt.Errorf("creating: %w", rate)) {
		t.Fatal("lbd's write-rate refusal (reason RATE_LIMITED) is not recognised")
	}
	// Decided by the reason, not the words: the same text without it is not a rate limit.
	if RateLimited(status.Error(codes.ResourceExhausted, "cloud-provider/t exceeds 500 writes/s; slow down and retry")) {
		t.Fatal("a ResourceExhausted without reason RATE_LIMITED is taken for a rate limit")
	}
	first.SetFailNextWith(2, rate)
	if _, err := c.Create(ctx, vs("x")); err != nil {
		t.Fatalf("Create after two rate-limited tries = %v, want success", err)
	}
	if calls, writes := first.Counts(); calls != 3 || writes != 1 {
		t.Errorf("first endpoint: %d calls, %d writes; want 3 and 1", calls, writes)
	}
	if calls, _ := second.Counts(); calls != 0 {
		t.Errorf("a rate limit moved the client to the second endpoint (%d calls)", calls)
	}

	full := errinfo.New(codes.ResourceExhausted, errinfo.PoolExhausted, nil, "no free IPv4 address in pools a open to tenant t; add a range to a pool or free a VIP")
	if RateLimited(full) {
		t.Fatal("a full pool is taken for a rate limit")
	}
	first.SetFailNextWith(1, full)
	before, _ := first.Counts()
	if _, err := c.Create(ctx, vs("y")); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("Create into a full pool = %v, want ResourceExhausted", err)
	}
	if after, _ := first.Counts(); after != before+1 {
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
