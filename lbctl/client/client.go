// Package client connects lbctl to the cluster: it tries each endpoint in
// order and keeps the first that answers. Any member will do, since
// followers forward writes to the leader themselves.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/edgelb/edgelb/internal/apimd"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// perEndpointCap bounds the wait for an endpoint that is not the last one.
const perEndpointCap = 3 * time.Second

// Options says where and how to connect.
type Options struct {
	Endpoints []string
	// ConnectTimeout bounds the wait for each endpoint.
	ConnectTimeout time.Duration
	// TLS: with any of these set the connection uses TLS (mutual TLS when a
	// certificate is given); with none it is plaintext.
	CAFile, CertFile, KeyFile, ServerName string
	// Stale asks members to answer reads from their own replica even when
	// they cannot vouch for it (no leader, removed, not caught up). OnStale,
	// if set, is called once per call that asked, with what the member
	// said about its replica.
	Stale   bool
	OnStale func(StaleInfo)
}

// StaleInfo is what a member answers about a stale read.
type StaleInfo struct {
	Member   string
	Revision string
	// Reason is why the member could not vouch for its replica; empty when
	// it could (it had a leader and had caught up).
	Reason string
}

// TLS reports whether o asks for TLS.
func (o Options) TLS() bool {
	return o.CAFile != "" || o.CertFile != "" || o.KeyFile != "" || o.ServerName != ""
}

// Conn is a connection to one member with a client for every service.
type Conn struct {
	Endpoint string
	cc       *grpc.ClientConn
	failover *failover

	VirtualServices edgelbv1.VirtualServiceServiceClient
	Pools           edgelbv1.AddressPoolServiceClient
	Cluster         edgelbv1.ClusterServiceClient
	Watch           edgelbv1.WatchServiceClient
	Tenants         edgelbv1.TenantServiceClient
}

// Close releases the connection (and those opened to other endpoints).
func (c *Conn) Close() error {
	if c.failover != nil {
		c.failover.close()
	}
	return c.cc.Close()
}

// Dial returns a connection to the first endpoint that answers. When none
// does, the error has code Unavailable and names each endpoint's failure.
func Dial(ctx context.Context, o Options) (*Conn, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("no endpoints given (--endpoints host:port)")
	}
	tlsCfg, err := tlsConfig(o)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	var failures []error
	for i, ep := range o.Endpoints {
		// A member that is down should not eat the whole budget when others
		// remain to be tried; the last one gets the full timeout.
		timeout := o.ConnectTimeout
		if i < len(o.Endpoints)-1 && (timeout <= 0 || timeout > perEndpointCap) {
			timeout = perEndpointCap
		}
		fo := &failover{o: o, self: ep, creds: creds}
		conn, connected, err := dialOne(ctx, ep, creds, timeout, append(o.callOptions(), grpc.WithChainUnaryInterceptor(fo.unary))...)
		if err == nil {
			conn.failover = fo
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if connected {
			// TCP worked and gRPC did not: find out whether TLS was why.
			if te := diagnose(ctx, ep, o, tlsCfg); te != nil {
				failures = append(failures, te)
				continue
			}
		}
		failures = append(failures, fmt.Errorf("%s: %w", ep, err))
	}
	return nil, &DialError{Failures: failures}
}

// DialError is the failure of every endpoint. Its code is Unauthenticated
// (lbctl exit 7) when any endpoint failed on TLS, since that is a setting to
// fix and no retry helps; otherwise Unavailable (exit 8).
type DialError struct{ Failures []error }

func (e *DialError) Error() string {
	msgs := make([]string, len(e.Failures))
	for i, f := range e.Failures {
		msgs[i] = f.Error()
	}
	if e.code() == codes.Unauthenticated {
		return "cannot connect to the cluster: " + strings.Join(msgs, "; ")
	}
	return "cannot reach the cluster: " + strings.Join(msgs, "; ")
}

func (e *DialError) Unwrap() []error { return e.Failures }

func (e *DialError) GRPCStatus() *status.Status { return status.New(e.code(), e.Error()) }

func (e *DialError) code() codes.Code {
	for _, f := range e.Failures {
		var te *TLSError
		if errors.As(f, &te) {
			return codes.Unauthenticated
		}
	}
	return codes.Unavailable
}

// dialOne connects to ep; connected reports whether a TCP connection was
// made, i.e. whether a failure happened above TCP (TLS or HTTP/2).
func dialOne(ctx context.Context, ep string, creds credentials.TransportCredentials, timeout time.Duration, extra ...grpc.DialOption) (_ *Conn, connected bool, _ error) {
	// Remember the last dial error: gRPC only reports a connectivity state,
	// and "connection refused" is what an operator needs to see.
	var mu sync.Mutex
	var dialErr error
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		mu.Lock()
		dialErr = err
		connected = connected || err == nil
		mu.Unlock()
		return c, err
	}
	cc, err := grpc.NewClient("passthrough:///"+ep, append([]grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(dialer),
	}, extra...)...)
	if err != nil {
		return nil, false, fmt.Errorf("invalid endpoint: %w", err)
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		if s == connectivity.Ready {
			return &Conn{
				Endpoint:        ep,
				cc:              cc,
				VirtualServices: edgelbv1.NewVirtualServiceServiceClient(cc),
				Pools:           edgelbv1.NewAddressPoolServiceClient(cc),
				Cluster:         edgelbv1.NewClusterServiceClient(cc),
				Watch:           edgelbv1.NewWatchServiceClient(cc),
				Tenants:         edgelbv1.NewTenantServiceClient(cc),
			}, true, nil
		}
		if s == connectivity.TransientFailure || s == connectivity.Shutdown {
			break
		}
		if !cc.WaitForStateChange(wctx, s) {
			cc.Close()
			// A member that accepts TCP and then says nothing is hung or
			// overloaded, not misconfigured: no TLS diagnosis (connected
			// false), which would only add its own wait.
			return nil, false, fmt.Errorf("no answer within %s", timeout)
		}
	}
	cc.Close()
	mu.Lock()
	defer mu.Unlock()
	if dialErr != nil {
		return nil, connected, dialErr
	}
	return nil, connected, errors.New("connection failed after connecting (TLS handshake or protocol mismatch? check --ca-file/--cert-file/--server-name)")
}

// tlsConfig is nil for a plaintext connection.
func tlsConfig(o Options) (*tls.Config, error) {
	if !o.TLS() {
		return nil, nil
	}
	cfg := &tls.Config{ServerName: o.ServerName, MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read --ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s holds no PEM certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("--cert-file and --key-file must be given together")
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// callOptions add the stale-read request to every call, and hand what the
// member answers about it to OnStale.
func (o Options) callOptions() []grpc.DialOption {
	if !o.Stale {
		return nil
	}
	report := func(md metadata.MD) {
		if o.OnStale == nil || len(md.Get(apimd.Revision)) == 0 {
			return // not a read of the replicated state: nothing to say
		}
		first := func(k string) string {
			if v := md.Get(k); len(v) > 0 {
				return v[0]
			}
			return ""
		}
		reason, err := url.QueryUnescape(first(apimd.StaleReason))
		if err != nil {
			reason = first(apimd.StaleReason)
		}
		o.OnStale(StaleInfo{Member: first(apimd.Member), Revision: first(apimd.Revision), Reason: reason})
	}
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		var hdr metadata.MD
		err := invoker(metadata.AppendToOutgoingContext(ctx, apimd.Stale, "1"), method, req, reply, cc, append(opts, grpc.Header(&hdr))...)
		if err == nil {
			report(hdr)
		}
		return err
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(metadata.AppendToOutgoingContext(ctx, apimd.Stale, "1"), desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &staleStream{ClientStream: cs, report: report}, nil
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary), grpc.WithChainStreamInterceptor(stream)}
}

// staleStream reports the stale-read headers once the first message has
// arrived (headers come before it).
type staleStream struct {
	grpc.ClientStream
	report func(metadata.MD)
	once   sync.Once
}

func (s *staleStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.once.Do(func() {
			if md, herr := s.Header(); herr == nil {
				s.report(md)
			}
		})
	}
	return err
}

// RefusedReason is the ErrorInfo reason a member gave for refusing to answer
// from its replica (errinfo.NoLeader, NotCaughtUp, RemovedMember), or ""
// when err is not such a refusal. It reads the error's details, never its
// message.
func RefusedReason(err error) string {
	if errinfo.Is(err, errinfo.NoLeader, errinfo.NotCaughtUp, errinfo.RemovedMember) {
		return errinfo.Reason(err)
	}
	return ""
}

// failover sends a read that the connected member refused, because it
// cannot vouch for its replica, to the other endpoints in order: with
// several endpoints, one member cut off from its quorum must not make the
// cluster unreadable. Only reads (apimd.ReplicaReads) move: they change
// nothing, so trying another member is always safe. Streams (watch,
// snapshot save) report the refusal instead.
type failover struct {
	o     Options
	self  string
	creds credentials.TransportCredentials

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (f *failover) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if !apimd.ReplicaReads[method] || RefusedReason(err) == "" {
		return err
	}
	for _, ep := range f.o.Endpoints {
		if ep == f.self || ctx.Err() != nil {
			continue
		}
		other, cerr := f.conn(ep)
		if cerr != nil {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, perEndpointCap)
		e := other.Invoke(actx, method, req, reply, opts...)
		cancel()
		if e == nil {
			return nil
		}
		switch status.Code(e) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
			continue // down, or refusing too: the next one may answer
		}
		if RefusedReason(e) != "" {
			continue
		}
		return e // an answer about the request itself (NotFound, ...)
	}
	return err // what the first member said: why it could not answer
}

func (f *failover) conn(ep string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[ep]; ok {
		return c, nil
	}
	c, err := grpc.NewClient("passthrough:///"+ep, append([]grpc.DialOption{grpc.WithTransportCredentials(f.creds)}, f.o.callOptions()...)...)
	if err != nil {
		return nil, err
	}
	if f.conns == nil {
		f.conns = map[string]*grpc.ClientConn{}
	}
	f.conns[ep] = c
	return c, nil
}

func (f *failover) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ep, c := range f.conns {
		c.Close()
		delete(f.conns, ep)
	}
}
