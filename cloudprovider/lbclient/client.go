// Package lbclient is the CCM's gRPC client for lbd: several endpoints, fail
// over to the next on connection-level errors, bounded retries with backoff
// (also, on the same endpoint, when lbd rate-limits this client's writes), and
// a deadline on every attempt.
//
// Every call here is safe to retry: reads are idempotent; a repeated Create
// comes back AlreadyExists, a repeated Delete NotFound, and a repeated Update
// with expected_generation Aborted — callers treat each of those as "read
// again and compare".
package lbclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/edgelb/edgelb/internal/backoff"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// Options configures a Client.
type Options struct {
	Endpoints []string
	// CAFile, CertFile, KeyFile: mutual TLS when set; plaintext when all are empty.
	CAFile, CertFile, KeyFile, ServerName string
	// AttemptTimeout bounds one RPC attempt (default 5s).
	AttemptTimeout time.Duration
	// Attempts is how many tries a call gets in all, across endpoints (default 2 per endpoint, at least 3).
	Attempts int
}

// Client talks to an lbd cluster.
type Client struct {
	opts  Options
	conns []*grpc.ClientConn
	mu    sync.Mutex
	cur   int // the endpoint that answered last
}

// New dials lazily (grpc.NewClient does not connect until the first call).
func New(o Options) (*Client, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("lbclient: no lbd endpoints")
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 5 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = max(3, 2*len(o.Endpoints))
	}
	creds := insecure.NewCredentials()
	if o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" {
		tc, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	c := &Client{opts: o}
	for _, ep := range o.Endpoints {
		cc, err := grpc.NewClient(ep, grpc.WithTransportCredentials(creds))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("lbclient: endpoint %s: %w", ep, err)
		}
		c.conns = append(c.conns, cc)
	}
	return c, nil
}

func tlsConfig(o Options) (*tls.Config, error) {
	pem, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("lbclient: reading CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("lbclient: no certificate in CA file %s", o.CAFile)
	}
	// Load the key pair on every handshake so rotated files are picked up without a restart.
	getCert := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading client certificate: %w", err)
		}
		return &c, nil
	}
	if _, err := getCert(nil); err != nil {
		return nil, fmt.Errorf("lbclient: %w", err)
	}
	return &tls.Config{RootCAs: pool, GetClientCertificate: getCert, ServerName: o.ServerName, MinVersion: tls.VersionTLS12}, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// retryable reports errors that say nothing about the request itself: the
// member is down, restarting, has no leader yet, or was removed from the
// cluster (FailedPrecondition with ErrorInfo REMOVED_MEMBER: an endpoint
// list that still names it is out of date, the other members can answer).
// Another try (on the next endpoint) may succeed.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Unknown, codes.Internal:
		return true
	case codes.FailedPrecondition:
		return errinfo.Reason(err) == errinfo.RemovedMember
	}
	return false
}

// RateLimited reports whether err is lbd's per-identity write limit
// (ResourceExhausted with ErrorInfo RATE_LIMITED): the request was refused
// before it was looked at, so trying again later is safe. A full pool
// (POOL_EXHAUSTED) or a tenant's cap (TENANT_SERVICE_LIMIT) is not.
func RateLimited(err error) bool {
	return status.Code(err) == codes.ResourceExhausted && errinfo.Reason(err) == errinfo.RateLimited
}

// retry paces the attempts of one call.
var retry = backoff.Policy{First: 50 * time.Millisecond, Max: time.Second}

// do runs f against the current endpoint, moving to the next on retryable
// errors, until it succeeds, fails for good, or ctx ends. Not gRPC's
// service-config retryPolicy: that retries on the same channel (one member
// here), cannot honour lbd's RetryInfo, and cannot tell a refused write
// (safe to repeat) from one that may have been applied; the schedule is
// internal/backoff's, like every other retry loop.
func do[T any](ctx context.Context, c *Client, what string, f func(context.Context, *grpc.ClientConn) (T, error)) (T, error) {
	var zero T
	var last error
	for attempt := 0; attempt < c.opts.Attempts; attempt++ {
		c.mu.Lock()
		i := c.cur
		c.mu.Unlock()
		actx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
		r, err := f(actx, c.conns[i])
		cancel()
		if err == nil {
			return r, nil
		}
		last = err
		if RateLimited(err) && ctx.Err() == nil {
			// The member is fine; this client writes too fast. Wait and try
			// the same endpoint again (the limit is per identity, not per member).
			// lbd's RetryInfo says when a token is back: wait that, but no
			// less than our own backoff and no more than its longest wait.
			wait := retry.Delay(attempt)
			if d, ok := errinfo.RetryDelay(err); ok {
				wait = min(max(wait, d), retry.Max)
			}
			klog.V(2).InfoS("lbd rate-limits our writes, waiting", "call", what, "endpoint", c.opts.Endpoints[i], "backoff", wait)
			if !backoff.Wait(ctx, wait) {
				return zero, fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), last)
			}
			continue
		}
		if !retryable(err) || ctx.Err() != nil {
			break
		}
		klog.V(2).InfoS("lbd call failed, trying again", "call", what, "endpoint", c.opts.Endpoints[i], "err", err)
		c.mu.Lock()
		if c.cur == i {
			c.cur = (i + 1) % len(c.conns)
		}
		c.mu.Unlock()
		if !backoff.Wait(ctx, retry.Delay(attempt)) {
			return zero, fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), last)
		}
	}
	return zero, fmt.Errorf("%s: %w", what, last)
}

func vs(cc *grpc.ClientConn) edgelbv1.VirtualServiceServiceClient {
	return edgelbv1.NewVirtualServiceServiceClient(cc)
}

// Get returns the stored VirtualService (NotFound when there is none).
func (c *Client) Get(ctx context.Context, tenant, name string) (*edgelbv1.VirtualService, error) {
	return do(ctx, c, "getting virtual service "+tenant+"/"+name, func(ctx context.Context, cc *grpc.ClientConn) (*edgelbv1.VirtualService, error) {
		r, err := vs(cc).GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Tenant: tenant, Name: name})
		return r.GetService(), err
	})
}

// List returns the tenant's VirtualServices that carry every label given.
func (c *Client) List(ctx context.Context, tenant string, labels map[string]string) ([]*edgelbv1.VirtualService, error) {
	return do(ctx, c, "listing virtual services of tenant "+tenant, func(ctx context.Context, cc *grpc.ClientConn) ([]*edgelbv1.VirtualService, error) {
		r, err := vs(cc).ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{Tenant: tenant, Labels: labels})
		return r.GetServices(), err
	})
}

// Pools returns the address pools the caller may allocate from (a
// cloud-provider identity sees those open to its tenant).
func (c *Client) Pools(ctx context.Context) ([]*edgelbv1.AddressPool, error) {
	return do(ctx, c, "listing address pools", func(ctx context.Context, cc *grpc.ClientConn) ([]*edgelbv1.AddressPool, error) {
		r, err := edgelbv1.NewAddressPoolServiceClient(cc).ListAddressPools(ctx, &edgelbv1.ListAddressPoolsRequest{})
		return r.GetPools(), err
	})
}

// Create creates v; AlreadyExists is returned as is for the caller to compare.
func (c *Client) Create(ctx context.Context, v *edgelbv1.VirtualService) (*edgelbv1.VirtualService, error) {
	return do(ctx, c, "creating virtual service "+v.Tenant+"/"+v.Name, func(ctx context.Context, cc *grpc.ClientConn) (*edgelbv1.VirtualService, error) {
		r, err := vs(cc).CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: v})
		return r.GetService(), err
	})
}

// Update replaces v's spec if the stored generation is still gen (Aborted otherwise).
func (c *Client) Update(ctx context.Context, v *edgelbv1.VirtualService, gen uint64) (*edgelbv1.VirtualService, error) {
	return do(ctx, c, "updating virtual service "+v.Tenant+"/"+v.Name, func(ctx context.Context, cc *grpc.ClientConn) (*edgelbv1.VirtualService, error) {
		r, err := vs(cc).UpdateVirtualService(ctx, &edgelbv1.UpdateVirtualServiceRequest{Service: v, ExpectedGeneration: gen})
		return r.GetService(), err
	})
}

// Delete deletes a VirtualService; one that is already gone is not an error.
func (c *Client) Delete(ctx context.Context, tenant, name string) error {
	_, err := do(ctx, c, "deleting virtual service "+tenant+"/"+name, func(ctx context.Context, cc *grpc.ClientConn) (struct{}, error) {
		_, err := vs(cc).DeleteVirtualService(ctx, &edgelbv1.DeleteVirtualServiceRequest{Tenant: tenant, Name: name})
		return struct{}{}, err
	})
	if status.Code(errors.Unwrap(err)) == codes.NotFound || status.Code(err) == codes.NotFound {
		return nil
	}
	return err
}

// RenewHeartbeat renews the tenant's heartbeat (a cloud-provider identity:
// its own tenant; tenant may be empty then), reporting the tenant's
// VirtualServices whose Service no longer exists (replacing its last report).
func (c *Client) RenewHeartbeat(ctx context.Context, tenant string, orphaned []string) error {
	_, err := do(ctx, c, "renewing the heartbeat of tenant "+tenant, func(ctx context.Context, cc *grpc.ClientConn) (struct{}, error) {
		_, err := edgelbv1.NewTenantServiceClient(cc).RenewTenantHeartbeat(ctx, &edgelbv1.RenewTenantHeartbeatRequest{Tenant: tenant, OrphanedServices: orphaned})
		return struct{}{}, err
	})
	return err
}

// MemberStatus returns member id's status (lbd asks that member); a caller bound
// to a tenant sees only its own tenant's owned VIPs and isolated services.
func (c *Client) MemberStatus(ctx context.Context, id string) (*edgelbv1.MemberStatus, error) {
	return do(ctx, c, "reading the status of member "+id, func(ctx context.Context, cc *grpc.ClientConn) (*edgelbv1.MemberStatus, error) {
		r, err := edgelbv1.NewClusterServiceClient(cc).GetMemberStatus(ctx, &edgelbv1.GetMemberStatusRequest{Id: id})
		return r.GetStatus(), err
	})
}
