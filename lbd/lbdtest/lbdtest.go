// Package lbdtest starts real lbd members in the test's process, for the tests
// of lbd's clients (lbctl, the cloud provider): the real gRPC API, raft, FSM
// and authorisation, with data plane "none" (no kernel) on loopback. Rules
// the clients depend on are therefore lbd's own, not a copy that drifts.
//
// A cluster speaks mutual TLS with certificates issued into t.TempDir() by the
// same code as `lbd certs` (Plaintext turns it off); Admin, Tenant, Conn,
// ClientTLS and ClientFiles hand out client identities (admin, operator,
// viewer, a tenant's cloud-provider). Inject puts a fault (FailNext) or a
// delay (Delay) in front of the API's handlers, for the error paths a healthy
// lbd does not take on its own; Rewrite edits one field of an answer, for
// states a kernel-less member cannot reach.
//
// Cost: a one-member cluster is ready in about 0.2 s, three members in about
// 1 s, so a test may start its own; a member with an open Watch takes lbd's
// 3 s grace to stop.
package lbdtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/internal/freeport"
	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/certs"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/daemon"
)

// Member is one running lbd.
type Member struct {
	ID     string
	Addr   string         // the API's host:port
	D      *daemon.Daemon // nil once stopped
	Config config.Config  // what it was started with
}

// Stop shuts the member down, as a host that goes away (once; later calls do
// nothing). The cluster's cleanup stops the others.
func (m *Member) Stop() {
	if m.D != nil {
		m.D.Stop()
		m.D = nil
	}
}

// Cluster is n lbd members that have formed one raft cluster.
type Cluster struct {
	Members []*Member
	dir     string // the members' data dirs and pki/
	pki     string // ca.crt and every issued ROLE-NAME.crt/.key
	ca      *certs.CA
	opts    options
	quick   bool // short raft timers: started as one member (see start)

	mu       sync.Mutex
	faults   map[int]Fault
	rewrites map[int]rewrite
	nextID   int
	issued   map[string]bool // file base names already written
}

type options struct {
	plaintext bool
	ids       []string
	tweak     []func(*config.Config)
}

// Option changes how StartCluster configures its members.
type Option func(*options)

// Plaintext runs the members without TLS: every caller is admin. For tests
// that are about plaintext itself; the rest keep the default mutual TLS.
func Plaintext() Option { return func(o *options) { o.plaintext = true } }

// Named gives the members these ids instead of lb1, lb2, ...
func Named(ids ...string) Option { return func(o *options) { o.ids = ids } }

// WithConfig changes each member's configuration before it starts (after the
// helper's own settings: addresses, data dir, TLS, timers).
func WithConfig(f func(*config.Config)) Option {
	return func(o *options) { o.tweak = append(o.tweak, f) }
}

// StartCluster starts n members, the first bootstrapping and the others
// joining it, and returns once every member is a registered voter that serves
// reads. The members stop when t ends.
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{dir: t.TempDir(), faults: map[int]Fault{}, rewrites: map[int]rewrite{}, issued: map[string]bool{}}
	for _, f := range opts {
		f(&c.opts)
	}
	c.pki = filepath.Join(c.dir, "pki")
	c.quick = n == 1
	ca, err := certs.NewCA("lbdtest ca", 24*time.Hour)
	if err != nil {
		t.Fatalf("lbdtest: creating the CA: %v", err)
	}
	if err := ca.Save(c.pki); err != nil {
		t.Fatalf("lbdtest: saving the CA: %v", err)
	}
	c.ca = ca
	for i := range n {
		id := fmt.Sprintf("lb%d", i+1)
		if i < len(c.opts.ids) {
			id = c.opts.ids[i]
		}
		c.start(t, id)
	}
	c.waitFormed(t)
	return c
}

// Add starts one more member, id, that joins the cluster through its running
// members, and returns once it is a voter serving reads. It has the
// cluster's timers: those of a one-member start are short, which a test
// that grows such a cluster on a loaded machine should keep in mind. WithConfig options
// change this member's configuration only (after the cluster's).
func (c *Cluster) Add(t testing.TB, id string, opts ...Option) *Member {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	m := c.start(t, id, o.tweak...)
	c.waitFormed(t)
	return m
}

func (c *Cluster) start(t testing.TB, id string, tweak ...func(*config.Config)) *Member {
	t.Helper()
	cfg := config.Default()
	cfg.ID = id
	cfg.DataDir = filepath.Join(c.dir, id)
	cfg.APIAddr = fmt.Sprintf("127.0.0.1:%d", freeport.Loopback(t))
	cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", freeport.Loopback(t))
	cfg.MetricsAddr = ""
	cfg.DataPlane.Mode = "none"
	// Backends in tests are made up: probing them would only add writes.
	cfg.Health.Enabled = false
	if c.quick {
		// A lone voter has nobody to lose leadership to: short timers
		// make it lead in ~200ms instead of ~700ms. Clusters of several
		// keep config's defaults, as shorter ones let a loaded machine
		// flap leadership and a client see "no leader" mid-test.
		cfg.Raft.HeartbeatTimeout.Duration = 100 * time.Millisecond
		cfg.Raft.ElectionTimeout.Duration = 100 * time.Millisecond
		cfg.Raft.LeaderLeaseTimeout.Duration = 50 * time.Millisecond
		cfg.Ownership.Lease.Duration = 500 * time.Millisecond
		cfg.Ownership.Grace.Duration = 750 * time.Millisecond
	}
	if !c.opts.plaintext {
		files := c.issue(t, "member", id, "127.0.0.1")
		cfg.TLS = config.TLS{CAFile: files.CA, CertFile: files.Cert, KeyFile: files.Key}
	}
	cfg.Join = c.Endpoints() // none: the first member bootstraps
	for _, f := range slices.Concat(c.opts.tweak, tweak) {
		f(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := daemon.Start(context.Background(), cfg, log, daemon.WithAPIInterceptors(c.unary, c.stream))
	if err != nil {
		t.Fatalf("lbdtest: starting %s: %v", id, err)
	}
	m := &Member{ID: id, Addr: cfg.APIAddr, D: d, Config: cfg}
	t.Cleanup(m.Stop)
	c.Members = append(c.Members, m)
	return m
}

// waitFormed waits until every running member is a registered voter that
// serves reads.
func (c *Cluster) waitFormed(t testing.TB) {
	t.Helper()
	var running []*Member
	for _, m := range c.Members {
		if m.D != nil {
			running = append(running, m)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		first := running[0].D.Node()
		registered, serving := 0, 0
		for _, m := range running {
			if _, ok := first.FSM.Member(m.ID); ok {
				registered++
			}
			// A member answers reads once it has a leader and has caught up.
			if m.D.ReadsRefused(context.Background()) == nil {
				serving++
			}
		}
		voters := 0
		servers, _ := first.Servers()
		for _, s := range servers {
			for _, m := range running {
				if s.Voter && s.ID == m.ID {
					voters++
				}
			}
		}
		if voters == len(running) && registered == len(running) && serving == len(running) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lbdtest: cluster of %d did not form in 30s: %d voters, %d registered, %d serving reads", len(running), voters, registered, serving)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Endpoints are the running members' API addresses.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		if m.D != nil {
			eps = append(eps, m.Addr)
		}
	}
	return eps
}

// Leader is the running member that leads raft now (waiting up to 10s for one).
func (c *Cluster) Leader(t testing.TB) *Member {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, m := range c.Members {
			if m.D != nil && m.D.Node().IsLeader() {
				return m
			}
		}
	}
	t.Fatal("lbdtest: no leader in 10s")
	return nil
}

// Files are a client's PEM files, as lbctl's and the CCM's flags take them.
type Files struct{ CA, Cert, Key string }

// ClientFiles issues a certificate for edgelb://role/name (once per name) and
// returns its files. Roles are lbd's: admin, operator, viewer, member, and
// cloud-provider, whose name is its tenant.
func (c *Cluster) ClientFiles(t testing.TB, role, name string) Files {
	t.Helper()
	return c.issue(t, role, name)
}

func (c *Cluster) issue(t testing.TB, role, name string, hosts ...string) Files {
	t.Helper()
	base := role + "-" + name
	f := Files{CA: filepath.Join(c.pki, "ca.crt"), Cert: filepath.Join(c.pki, base+".crt"), Key: filepath.Join(c.pki, base+".key")}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.issued[base] {
		return f
	}
	is, err := c.ca.Issue(certs.Request{Role: role, Name: name, Hosts: hosts})
	if err != nil {
		t.Fatalf("lbdtest: issuing %s/%s: %v", role, name, err)
	}
	if err := is.Save(c.pki, base, false); err != nil {
		t.Fatalf("lbdtest: saving %s/%s: %v", role, name, err)
	}
	c.issued[base] = true
	return f
}

// ClientTLS is a client TLS configuration for edgelb://role/name that trusts
// the cluster's CA.
func (c *Cluster) ClientTLS(t testing.TB, role, name string) *tls.Config {
	t.Helper()
	f := c.ClientFiles(t, role, name)
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatalf("lbdtest: %v", err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		t.Fatalf("lbdtest: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// Conn is a gRPC connection to member 0 as edgelb://role/name (in Plaintext,
// as anyone), closed when t ends. Writes sent to a follower are forwarded by
// lbd itself.
func (c *Cluster) Conn(t testing.TB, role, name string) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if !c.opts.plaintext {
		creds = credentials.NewTLS(c.ClientTLS(t, role, name))
	}
	cc, err := grpc.NewClient(c.Members[0].Addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatalf("lbdtest: dialing %s: %v", c.Members[0].Addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Admin is Conn for an admin, who may do everything (pools included).
func (c *Cluster) Admin(t testing.TB) *grpc.ClientConn { return c.Conn(t, "admin", "test-admin") }

// Tenant is Conn for the cloud-provider identity of tenant: it sees and
// changes that tenant's virtual services only, as a CCM does.
func (c *Cluster) Tenant(t testing.TB, tenant string) *grpc.ClientConn {
	return c.Conn(t, "cloud-provider", tenant)
}

// Fault runs before lbd handles a client's API call (after authorisation) on
// every member; members' calls to each other pass by it, except in Plaintext,
// where every caller looks alike. method is gRPC's full name, e.g.
// "/edgelb.v1.VirtualServiceService/CreateVirtualService". A non-nil error
// is returned to the caller instead of lbd's answer; a fault may also sleep
// (honouring ctx) to delay the call.
type Fault func(ctx context.Context, method string) error

// Inject adds f until t ends. Faults run in the order they were injected;
// the first error wins.
func (c *Cluster) Inject(t testing.TB, f Fault) {
	c.mu.Lock()
	id := c.nextID
	c.nextID++
	c.faults[id] = f
	c.mu.Unlock()
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.faults, id)
	})
}

// FailNext is a Fault that returns err to the next n calls whose method
// contains match ("" matches all), then lets every call through.
func FailNext(n int, match string, err error) Fault {
	var mu sync.Mutex
	return func(_ context.Context, method string) error {
		mu.Lock()
		defer mu.Unlock()
		if n <= 0 || !strings.Contains(method, match) {
			return nil
		}
		n--
		return err
	}
}

// Delay is a Fault that holds every call whose method contains match ("":
// all) for d before lbd handles it, or until the caller gives up.
func Delay(d time.Duration, match string) Fault {
	return func(ctx context.Context, method string) error {
		if !strings.Contains(method, match) {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-time.After(d):
			return nil
		}
	}
}

func (c *Cluster) fault(ctx context.Context, method string) error {
	if id, ok := auth.FromContext(ctx); ok && id.Role == auth.RoleMember {
		// Members' calls to each other (status, joining) keep the cluster
		// whole; a fault is about what clients see.
		return nil
	}
	c.mu.Lock()
	fs := make([]Fault, 0, len(c.faults))
	for id := 0; id < c.nextID; id++ {
		if f, ok := c.faults[id]; ok {
			fs = append(fs, f)
		}
	}
	c.mu.Unlock()
	for _, f := range fs {
		if err := f(ctx, method); err != nil {
			return err
		}
	}
	return nil
}

type rewrite struct {
	method string
	edit   func(resp any)
}

// Rewrite lets edit change the answers of method (its full name, or any
// suffix such as "/GetMemberStatus") until t ends, on every member and for
// every caller, members included. It is for states a kernel-less member in
// one process cannot reach on its own (a data plane that cannot program a
// service, a replica that lags): the answer is lbd's, with the one field the
// test is about set. edit gets the response message (e.g.
// *edgelbv1.GetMemberStatusResponse) and may modify it in place.
func (c *Cluster) Rewrite(t testing.TB, method string, edit func(resp any)) {
	c.mu.Lock()
	id := c.nextID
	c.nextID++
	c.rewrites[id] = rewrite{method, edit}
	c.mu.Unlock()
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.rewrites, id)
	})
}

func (c *Cluster) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := c.fault(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	resp, err := h(ctx, req)
	if err != nil {
		return resp, err
	}
	msg, ok := resp.(proto.Message)
	if !ok {
		return resp, nil
	}
	c.mu.Lock()
	var edits []func(any)
	for id := 0; id < c.nextID; id++ {
		if r, ok := c.rewrites[id]; ok && strings.HasSuffix(info.FullMethod, r.method) {
			edits = append(edits, r.edit)
		}
	}
	c.mu.Unlock()
	if len(edits) == 0 {
		return resp, nil
	}
	// A copy: answers may share objects with the FSM, which must not change.
	msg = proto.Clone(msg)
	for _, e := range edits {
		e(msg)
	}
	return msg, nil
}

func (c *Cluster) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := c.fault(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
