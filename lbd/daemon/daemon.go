// Package daemon wires lbd together: the raft member, the gRPC API, the
// leader's ownership assigner and the per-host reconciler that drives the data
// plane. Data flows one way: API → raft log → FSM → reconciler → kernel.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/edgelb/edgelb/internal/backoff"
	"github.com/edgelb/edgelb/lbd/bgp"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/dataplane"
	"github.com/edgelb/edgelb/lbd/health"
	"github.com/edgelb/edgelb/lbd/lease"
	"github.com/edgelb/edgelb/lbd/liveness"
	"github.com/edgelb/edgelb/lbd/ownership"
	"github.com/edgelb/edgelb/lbd/server"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node"
)

// Version is set at build time.
var Version = "dev"

// DataPlane programs the VIPs this host owns into the kernel.
type DataPlane interface {
	// Reconcile makes the kernel hold every service's IPVS entries (a hot
	// standby) and the addresses of those whose Owner is owner ("" for none);
	// anything it programmed before and not listed is withdrawn. The services
	// are the FSM's own immutable objects: read, never modify.
	Reconcile(ctx context.Context, all []*edgelbv1.VirtualService, owner string) error
	// Withdraw removes every VIP address this host holds and leaves the
	// IPVS services, their connection entries and the SNAT rules as they
	// are: fencing when the replicated state cannot be trusted yet.
	Withdraw(ctx context.Context) error
	Close() error
}

// activeActiveSetter is a data plane that can serve a service from every
// member at once (the kernel's; a bgp pool's services): told which services
// those are once the replicated pools exist.
type activeActiveSetter interface {
	SetActiveActive(func(*edgelbv1.VirtualService) bool)
}

// Daemon is a running lbd.
type Daemon struct {
	cfg  config.Config
	log  *slog.Logger
	node *node.Node
	srv  *server.Server
	grpc *grpc.Server
	// peerGRPC serves PeerService on the raft port (members only).
	peerGRPC *grpc.Server
	health   *grpchealth.Server
	dp       DataPlane
	kernel   dataplane.Kernel // dp's kernel side; nil when it programs no kernel
	dpName   string
	lis      net.Listener
	sec      *security

	owned chan []string // latest VIPs programmed, for status
	// feed is the reconcile loop's view of the FSM's change feed (only
	// that loop, and the data plane it calls, touch it).
	feed *changeFeed
	// lease is this member's quorum lease on its VIPs, renewed by the
	// answers to live's probes (issue 19); no raft leader is involved.
	lease *lease.Lease
	live  *liveness.Prober
	// servingUntil is how long the reconcile loop last allowed this member
	// to hold VIP addresses (what it last gave the fence); the probes tell
	// peers whether it is serving.
	servingUntil atomic.Pointer[time.Time]
	// renewedAt is when the reconcile loop last renewed (its goroutine
	// only: for the log line of a fence that lapsed).
	renewedAt time.Time
	// catchingUp is when the running catch-up began (zero: none runs);
	// loopBeat is when the reconcile loop last iterated (unix ns). Together
	// they tell peers a member is about to serve, not stuck (reportsServing).
	catchingUp atomic.Pointer[time.Time]
	loopBeat   atomic.Int64
	// lastContact is the last time this member held its lease (persisted).
	// What was left of that lease is carried into d.lease at the start.
	contactMu   sync.Mutex
	lastContact time.Time
	// recordedLeft: the record on disk carries some lease.
	recordedLeft bool
	// caughtUp is set once the local FSM has applied everything the cluster
	// had committed when this member started; before that the FSM may show a
	// past state (log replay), which the data plane must not follow.
	caughtUp atomic.Bool
	checker  *health.Checker
	bgp      *bgpSide // the BGP speaker for bgp-mode pools (bgp.go); nil without peers
	ops      *ops     // metrics and /healthz, /readyz (metrics.go)
	stopBG   context.CancelFunc
	// stallFile is the test hook's file (testhook.go); "" outside tests.
	stallFile string
	bgWG      sync.WaitGroup // the background loops, which Stop waits for
}

// Run starts lbd and blocks until ctx is cancelled, then shuts down cleanly.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	d, err := Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return d.Stop()
}

// Option changes how Start wires the daemon; lbd's main passes none.
type Option func(*startOptions)

type startOptions struct {
	unary  []grpc.UnaryServerInterceptor
	stream []grpc.StreamServerInterceptor
}

// WithAPIInterceptors adds interceptors to the API server, innermost: they
// see only calls that passed authorisation and the read gate, just before
// lbd handles them. Tests use it to inject faults and delays into a real
// lbd (lbd/lbdtest); either may be nil.
func WithAPIInterceptors(unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor) Option {
	return func(o *startOptions) {
		if unary != nil {
			o.unary = append(o.unary, unary)
		}
		if stream != nil {
			o.stream = append(o.stream, stream)
		}
	}
}

// Start brings up lbd and returns once its API listens.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger, options ...Option) (*Daemon, error) {
	var so startOptions
	for _, o := range options {
		o(&so)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	d := &Daemon{cfg: cfg, log: log, owned: make(chan []string, 1), stallFile: stallPath(cfg), feed: newChangeFeed()}
	d.owned <- nil

	dp, kernel, name, err := openDataPlane(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	d.dp, d.kernel, d.dpName = dp, kernel, name

	lis, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		dp.Close()
		return nil, fmt.Errorf("listen for the API on %s: %w", cfg.APIAddr, err)
	}
	d.lis = lis

	sec, err := newSecurity(cfg, log)
	if err != nil {
		lis.Close()
		dp.Close()
		return nil, err
	}
	d.sec = sec

	f := fsm.New(log.With("component", "fsm"))
	n, err := node.Open(node.Config{
		ID: cfg.ID, RaftAddr: cfg.RaftAddr, DataDir: filepath.Join(cfg.DataDir, "raft"),
		Bootstrap: len(cfg.Join) == 0,
		Timing: node.Timing{
			HeartbeatTimeout: cfg.Raft.HeartbeatTimeout.Duration, ElectionTimeout: cfg.Raft.ElectionTimeout.Duration,
			LeaderLeaseTimeout: cfg.Raft.LeaderLeaseTimeout.Duration, CommitTimeout: node.CommitTimeoutFor(cfg.Raft.HeartbeatTimeout.Duration),
		},
		SnapshotThreshold: cfg.Raft.SnapshotThreshold,
		SnapshotInterval:  cfg.Raft.SnapshotInterval.Duration,
		Logger:            log.With("component", "raft"),
		LogJSON:           cfg.Log.Format == "json",
		TLS:               sec.raftTLS(),
	}, f)
	if err != nil {
		lis.Close()
		dp.Close()
		return nil, err
	}
	d.node = n
	if e, ok := dp.(activeActiveSetter); ok {
		// A bgp pool's services are served by every member at once: their
		// mh tables must be the same everywhere (docs/DATAPLANE.md,
		// "Active-active").
		e.SetActiveActive(func(vs *edgelbv1.VirtualService) bool { return bgp.Mode(vs, bgp.Pools(n.FSM.Pools())) })
	}
	d.lease = lease.New(cfg.ID, cfg.Ownership.Lease.Duration, lease.System)
	// Before the peers' service starts: a claim's Revoke must not come
	// before what it revokes.
	d.lease.Carry(d.loadContact())
	var push func(context.Context, string, []netip.Addr) (map[netip.Addr]int, error)
	if hp, ok := dp.(handoverPusher); ok {
		// A VIP's new owner asks this member, its old owner, for the
		// connections before it announces it (docs/DATAPLANE.md, "Handover
		// sync").
		push = hp.PushConnections
	}
	d.live = liveness.New(liveness.Config{
		Self: cfg.ID, Interval: cfg.Ownership.ProbeInterval.Duration, Grace: cfg.Ownership.Grace.Duration,
		Peers: d.livenessPeers, Creds: sec.peerCreds(), Lease: d.lease,
		Serving: d.reportsServing, Revision: n.FSM.Revision,
		Observe: func(peer string, rtt time.Duration, ok bool) {
			if d.ops != nil { // set by startOps before the probes start
				d.ops.m.ObserveProbe(peer, rtt, ok)
			}
		},
		Push: push,
		Log:  log.With("component", "liveness"),
	})
	if hp, ok := dp.(handoverPuller); ok {
		hp.SetPullHandover(d.pullHandover)
	}

	self := &edgelbv1.Member{Id: cfg.ID, RaftAddress: n.RaftAddr(), ApiAddress: cfg.APIAddr, DataInterface: cfg.DataPlane.Interface}
	// Reported so no address pool hands out this host's own addresses or
	// its gateway as a VIP (the FSM checks pools against every member).
	self.InterfaceAddresses, self.Gateways, err = hostAddrs.reportedAddresses(cfg)
	if err != nil {
		n.Shutdown()
		lis.Close()
		dp.Close()
		return nil, err
	}
	opts := server.Options{
		Self: self, DataPlane: name, Version: Version, Logger: log.With("component", "api"),
		OwnedVIPs: d.ownedVIPs, PeerCreds: sec.peerCreds(),
		MaxServicesPerTenant: cfg.Auth.MaxServicesPerTenant,
		CaughtUp:             d.caughtUp.Load,
		LastLeaderContact:    d.persistedContact,
		Removed:              d.lease.Removed,
		// A few elections' worth with this member's timers, never less than the default.
		LeaderWait:     max(3*time.Second, 3*(cfg.Raft.HeartbeatTimeout.Duration+cfg.Raft.ElectionTimeout.Duration)),
		Ready:          d.ready,
		CatchUpTimeout: cfg.Membership.CatchUpTimeout.Duration,
		BGPStatus:      d.bgpStatus,
	}
	if kernel != nil {
		opts.ServiceStats = ipvsStats{k: kernel, f: f}.Service
		opts.Isolated = kernel.Isolated
	}
	d.srv = server.New(n, opts)
	if err := d.startOps(); err != nil { // metrics (metrics.go)
		n.Shutdown()
		lis.Close()
		dp.Close()
		return nil, err
	}
	// Metrics interceptors first, so refused calls are counted with their
	// code, then authorisation, then the read gate: only an authorised
	// caller learns why a replica refuses.
	if err := d.startBGP(ctx); err != nil { // bgp.go
		d.stopOps()
		n.Shutdown()
		lis.Close()
		dp.Close()
		return nil, err
	}
	srvOpts := append(d.opsServerOptions(), sec.serverOptions()...)
	srvOpts = append(srvOpts, grpc.ChainUnaryInterceptor(d.srv.UnaryReadGate), grpc.ChainStreamInterceptor(d.srv.StreamReadGate))
	srvOpts = append(srvOpts, grpc.ChainUnaryInterceptor(so.unary...), grpc.ChainStreamInterceptor(so.stream...))
	d.grpc = grpc.NewServer(srvOpts...)
	d.srv.Register(d.grpc)
	if sec.servesPeerOnAPI() {
		d.srv.RegisterPeer(d.grpc)
	}
	// PeerService takes raw raft commands: it is served on the raft port,
	// which only members reach (member certificates with TLS; in plaintext
	// whoever reaches the raft port could append to the log anyway).
	d.peerGRPC = grpc.NewServer(append(d.opsServerOptions(), sec.peerServerOptions()...)...)
	d.srv.RegisterPeer(d.peerGRPC)
	d.live.Register(d.peerGRPC)
	go func() {
		if err := d.peerGRPC.Serve(n.PeerListener()); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
			log.Error("PeerService server on the raft port stopped", "err", err)
		}
	}()
	d.health = grpchealth.NewServer()
	d.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(d.grpc, d.health)
	reflection.Register(d.grpc)
	go func() {
		if err := d.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Error("API server stopped", "err", err)
		}
	}()
	log.Info("lbd started", "id", cfg.ID, "api", cfg.APIAddr, "raft", n.RaftAddr(), "data_plane", name, "data_dir", cfg.DataDir, "version", Version)

	bg, cancel := context.WithCancel(context.Background())
	d.stopBG = cancel
	if len(cfg.Join) > 0 && !n.HadState() {
		d.bgWG.Go(func() { d.join(bg, self) })
	}
	d.bgWG.Go(func() { d.refreshSelf(bg) })
	d.bgWG.Go(func() { d.leaderLoop(bg) })
	d.bgWG.Go(func() { d.healthLoop(bg) })
	d.beginCatchUp(bg)
	d.bgWG.Go(func() { d.contactLoop(bg) })
	d.bgWG.Go(func() { d.live.Run(bg) })
	d.bgWG.Go(func() { d.reconcileLoop(bg) })
	if d.bgp != nil {
		d.bgWG.Go(func() { d.bgp.ann.Run(bg) })
		d.bgWG.Go(func() { d.runBGP(bg) })
		d.bgWG.Go(func() { d.reportPeersDown(bg) })
	}
	switch {
	case cfg.HealthProbes() && cfg.DataPlane.Mode == "none":
		d.log.Warn("HEALTH PROBES WITHOUT A DATA PLANE: this member sends health checks to the backends of the VIPs it owns or would inherit (health.withoutDataPlane)")
	case cfg.Health.Enabled && !cfg.HealthProbes():
		d.log.Info("data plane none: no backend health probes, every backend counts as up; set health.withoutDataPlane (--health-without-data-plane) to probe them")
	}
	if cfg.HealthProbes() {
		checker := d.newChecker()
		d.bgWG.Go(func() { d.checkLoop(bg, checker) })
	}
	return d, nil
}

// Addr is the API's listening address.
func (d *Daemon) Addr() string { return d.lis.Addr().String() }

// ReadsRefused is nil when this member answers reads of the replicated state
// (it has a leader and has caught up), else the status it refuses them with.
func (d *Daemon) ReadsRefused(ctx context.Context) error { return d.srv.ReadVerdict(ctx).Err() }

// Node exposes the raft member (for tests).
func (d *Daemon) Node() *node.Node { return d.node }

// ownedVIPs is what the last pass put in the kernel, or nothing once the
// lease the loop last renewed has run out: then the fence has withdrawn
// them (the loop may not have run since: a stopped process just resumed).
func (d *Daemon) ownedVIPs() []string {
	v := <-d.owned
	d.owned <- v
	if !d.serving() {
		return nil
	}
	return v
}

// join asks the listed members to add this one, until one of them does.
func (d *Daemon) join(ctx context.Context, self *edgelbv1.Member) {
	for attempt := 0; ctx.Err() == nil; attempt++ {
		for _, addr := range d.cfg.Join {
			err := func() error {
				conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(d.sec.peerCreds()))
				if err != nil {
					return err
				}
				defer conn.Close()
				// The leader checks this member, adds it as a non-voter and
				// promotes it once it has caught up (up to its catch-up timeout).
				cctx, cancel := context.WithTimeout(ctx, d.cfg.Membership.CatchUpTimeout.Duration+20*time.Second)
				defer cancel()
				_, err = edgelbv1.NewClusterServiceClient(conn).AddMember(cctx, &edgelbv1.AddMemberRequest{Member: self})
				return err
			}()
			if err == nil {
				d.log.Info("joined the cluster", "via", addr)
				return
			}
			if reason := errinfo.Reason(err); reason != "" {
				// Refused by the leader's checks: retrying helps only once
				// the operator has fixed what the message says.
				d.log.Error("join refused; fix the cause, lbd keeps retrying", "via", addr, "reason", reason, "err", err)
			} else {
				d.log.Warn("join failed; retrying", "via", addr, "err", err)
			}
		}
		backoff.Wait(ctx, joinRetry.Delay(attempt))
	}
}

// joinRetry paces join attempts: a leader being elected answers within a
// second or two; one refusing for a reason waits for the operator.
var joinRetry = backoff.Policy{First: 500 * time.Millisecond, Max: 5 * time.Second}

// leaderLoop runs the leader's duties for as long as this member leads.
func (d *Daemon) leaderLoop(ctx context.Context) {
	var stop context.CancelFunc = func() {}
	defer func() { stop() }()
	start := func() {
		stop()
		lctx, cancel := context.WithCancel(ctx)
		stop = cancel
		go func() {
			// Apply everything the previous leader committed before deciding anything.
			if err := d.node.Barrier(lctx); err != nil {
				d.log.Warn("leader barrier", "err", err)
			} else {
				d.caughtUp.Store(true)
			}
			for lctx.Err() == nil {
				if err := d.srv.RegisterSelf(lctx); err == nil {
					break
				} else {
					d.log.Warn("register self", "err", err)
				}
				time.Sleep(200 * time.Millisecond)
			}
			// A cluster gets its id from its first leader (members from
			// before the id existed get one from the next leader). Off the
			// assigner's path: it may ask peers that do not answer.
			go func() {
				for lctx.Err() == nil {
					if err := d.srv.EnsureClusterID(lctx); err == nil {
						return
					} else {
						d.log.Warn("set cluster id", "err", err)
					}
					time.Sleep(200 * time.Millisecond)
				}
			}()
			(&ownership.Assigner{Node: d.node, Grace: d.cfg.Ownership.Grace.Duration, Liveness: d.live, Log: d.log.With("component", "ownership")}).Run(lctx)
		}()
	}
	if d.node.IsLeader() {
		start()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-d.node.LeaderChanges():
			if leader {
				d.log.Info("became raft leader")
				start()
			} else {
				d.log.Info("no longer raft leader")
				stop()
				stop = func() {}
			}
		}
	}
}

// healthLoop reports SERVING while the member is ready (a leader known,
// registered, caught up), so load balancers and scripts in front of the API
// can wait for a usable member. Readiness changes seldom; a look every
// half second is well inside any health checker's period and keeps the
// idle member's wake-ups down.
func (d *Daemon) healthLoop(ctx context.Context) {
	last := healthpb.HealthCheckResponse_UNKNOWN
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if ok, _ := d.ready(); ok { // the same answer as /readyz
			st = healthpb.HealthCheckResponse_SERVING
		}
		if st != last {
			d.health.SetServingStatus("", st)
			last = st
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reconcileLoop drives the data plane from the FSM: on every change, and
// every resyncInterval to repair what someone else changed in the kernel.
//
// It is also the one place that renews the fence's lease (lbd/dataplane
// fence.go) and pings systemd's watchdog: both must stop when this loop
// stops — lbd stopped, deadlocked, or a pass stuck in the kernel — since
// this loop is what withdraws the VIPs when the lease runs out. A timer
// elsewhere would keep renewing for a member that can no longer fence itself.
func (d *Daemon) reconcileLoop(ctx context.Context) {
	const resyncInterval = 30 * time.Second
	lease := d.cfg.Ownership.Lease.Duration
	// Between passes the loop wakes this often to renew the fence's lease,
	// well before it runs out.
	renewEvery := max(lease/4, 10*time.Millisecond)
	lh := leaseHolderOf(d.dp)
	pe := provisionalEnderOf(d.dp)
	var lapsed <-chan struct{}
	if lh != nil {
		lapsed = lh.Lapsed()
	}
	wd := newWatchdog(d.log)
	failures := 0
	fenced := false
	everHeld := false              // the lease has been valid since this process started
	var nextPass time.Time         // zero: a pass is due now
	var provisional []string       // VIPs taken over before a leader committed them
	var provFrom map[string]string // each of them → the owner it was taken from
	// held: the owners whose VIPs a pass may have put in the kernel
	// provisionally. Their claims stay in this member's views until a pass
	// has withdrawn those VIPs (lbd/liveness SetClaims).
	var held []string
	renewWait := renewEvery
	var lastPass time.Duration       // how long the latest pass took
	var lastPassEnded time.Time      // and when it ended (for the fence's log)
	var liveChanged <-chan struct{}  // a member became gone or came back
	inc := changedReconcilerOf(d.dp) // nil: every pass is a full one
	feed := d.feed
	var changed <-chan struct{}
	lastIter := time.Now()
	for {
		wd.alive()
		// A gap longer than the lease since the last iteration means this
		// loop did not run: the process was stopped or a pass hung. The
		// fence has likely withdrawn the VIPs, and the cluster may have
		// moved them; raft may not have noticed yet (a stopped leader still
		// believes it leads for a moment after SIGCONT). Catch up with the
		// cluster before serving, as after a partition.
		if gap := time.Since(lastIter); gap > lease && d.caughtUp.Load() {
			d.log.Warn("the reconcile loop did not run for longer than the lease (process stopped or a pass hung); catching up with the cluster before serving VIPs again",
				"gap", gap.Round(time.Millisecond), "lease", lease)
			d.beginCatchUp(ctx)
		}
		lastIter = time.Now()
		d.loopBeat.Store(lastIter.UnixNano())
		if hook := testHookIteration.Load(); hook != nil {
			(*hook)()
		}
		// The channel of the last look stays until it fires: an iteration
		// that only renews must not drop a change that landed after the
		// select returned (the next look's channel would not fire for it).
		// The fresh one is taken before the old is checked, so nothing
		// falls between them.
		fresh := d.node.FSM.Changed()
		if changed != nil {
			select {
			case <-changed:
				nextPass = time.Time{}
			default:
			}
		}
		changed = fresh
		if !d.caughtUp.Load() {
			// Right after a start the FSM replays its log and may show a past
			// state; following it would withdraw and re-add VIPs mid-replay.
			// Keep what the kernel holds while a lease renewed before the
			// restart allows, then fence. A fresh lease does not count here:
			// a member whose lease ran out (or that restarted) may have lost
			// its VIPs meanwhile, and serves again only once caught up.
			wait := 50 * time.Millisecond
			if left := d.lease.CarriedLeft(); left > 0 {
				d.renew(lh, time.Now().Add(left))
			} else {
				d.servingUntil.Store(&time.Time{})
				// Fence on addresses only. Before the first entries apply
				// the FSM may even be empty: reconciling against it would
				// remove every IPVS service, and with them the connection
				// entries that keep established connections alive when
				// the VIPs come back here or move to another member (a
				// rolling restart reset them all).
				if err := d.dp.Withdraw(ctx); err != nil {
					d.log.Error("withdraw VIPs while out of contact and not caught up", "err", err)
				} else {
					<-d.owned
					d.owned <- nil
					held = nil
				}
				// Claims only for what a pass may have put in the kernel:
				// a member that is not caught up takes nothing over, and a
				// claim left standing would keep its owner from renewing
				// its lease (seen in the guest: a rolling restart's
				// hand-over never completed).
				d.live.SetClaims(held)
				provisional = nil
				wait = min(lease/4, time.Second)
			}
			nextPass = time.Time{}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		liveChanged = d.live.Changes() // before reading: no change falls between
		var all []*edgelbv1.VirtualService
		owner := d.cfg.ID
		owned := 0
		// The lease ran out since the last renewal, though it may be valid
		// again now (the fence withdrew at that instant): a provisional
		// takeover starts over, with claims of a new epoch and fresh
		// acknowledgements (peers stop repeating the claims of a member
		// that could not hold a lease).
		lapsedUnseen := false
		if u := d.servingUntil.Load(); u != nil && !u.IsZero() && time.Now().After(*u) {
			lapsedUnseen = true
		}
		prevFrom := provFrom // the copies the last pass served
		var served []string  // owners whose VIPs this pass serves provisionally
		var wanted []string  // owners this member would take over (claimed)
		full := inc == nil   // a data plane that cannot plan by change
		if d.cfg.Ownership.ProvisionalTakeover && !fenced && d.lease.Valid() && !lapsedUnseen {
			// Reads the whole state only when a takeover is to be planned
			// (a member counted as gone owns services and the survivors
			// agree); otherwise the owner index answers, and the pass
			// below follows the change feed.
			t := d.provisional(held)
			all, served, wanted = t.all, t.owners, t.wanted
			if !slices.Equal(t.vips, provisional) {
				if len(t.vips) > 0 {
					d.log.Info("taking over VIPs of a lost owner before a raft leader commits the move (provisional)", "vips", t.vips, "from", t.owners)
				} else if len(provisional) > 0 {
					d.log.Info("no longer serving VIPs taken over provisionally; the replicated state decides", "vips", provisional)
				}
				// A pass that adds or drops provisional copies plans
				// from the whole (rewritten) state, not from the feed.
				full = true
				provisional = t.vips
				nextPass = time.Time{}
			}
			provFrom = t.from
			if len(provisional) > 0 {
				full = true // the owners it passes are rewritten
			}
			renewWait = renewEvery
			if t.pending {
				// A lost owner's successor waits for the survivors' views
				// to agree and for its claim to be repeated: look at the
				// probe rate, not the renewal rate.
				renewWait = min(renewEvery, max(d.cfg.Ownership.ProbeInterval.Duration/5, time.Millisecond))
			}
		} else {
			if lapsedUnseen && len(held) > 0 {
				d.live.SetClaims(nil) // what is claimed again gets a new epoch
			}
			d.live.SetClaims(held)
			if provisional != nil {
				nextPass = time.Time{} // withdraw them, in a full pass
				full = true
			}
			provisional, provFrom = nil, nil
		}
		if full {
			if all == nil {
				all, _ = d.node.FSM.All()
			}
			if pe != nil {
				if ended := endedCopies(prevFrom, provisional, all); len(ended) > 0 {
					pe.EndProvisional(ended)
				}
			}
			for _, vs := range all {
				if vs.Owner == owner {
					owned++
				}
			}
			feed.full = true // back on the feed, start from the whole state
		} else {
			// What changed since the last look, from the FSM's change
			// feed: the cost of an iteration follows the change, not the
			// number of services. A provisional check that read the
			// whole list and took nothing over leaves it unplanned.
			all = nil
			feed.follow(d.node.FSM, owner)
			owned = len(feed.owned)
		}
		// Self-fencing: a member answers for its VIPs only while it holds
		// its quorum lease (a majority of voters answered its probes within
		// the lease). Past it, it withdraws them by itself, before a majority
		// (which waits the longer grace) lets another member take them.
		exp := d.lease.Until()
		if !d.lease.Valid() {
			d.servingUntil.Store(&time.Time{})
			if r, removed := d.lease.Removed(); removed && !fenced {
				d.log.Warn("removed from the cluster: a member's newer raft configuration leaves this member out; not serving VIPs (rejoin it with an empty data dir)",
					"by", r.By, "config_index", r.Index, "voters", r.Voters, "owned", owned)
			} else if !fenced && (owned > 0 || feed.full && d.node.FSM.OwnerLoad()[d.cfg.ID] > 0) {
				// (A feed not yet read, as on the first look after the
				// start, counts no owned services: the FSM does.)
				d.log.Warn("no majority of the voters answered this member's probes within the lease; not serving VIPs", "lease", lease, "owned", owned,
					"probes", d.live.Probes())
			}
			if !fenced {
				nextPass = time.Time{}
			}
			fenced = true
			owner, owned = "", 0
		} else if fenced && everHeld {
			// Back from a partition, the replica may still show this member
			// as the owner of VIPs the leader moved meanwhile (the heartbeat
			// that restores contact can come before the entries it missed).
			// Serving from that state would put the address on two hosts:
			// catch up with the leader's commit index first, as after a start.
			fenced = false
			d.beginCatchUp(ctx)
			d.log.Info("back in contact with a majority; serving owned VIPs again once caught up with the cluster")
			continue
		} else {
			// The first lease since the start needs no second catch-up: the
			// one after the start came after anything this process missed.
			if fenced {
				nextPass = time.Time{} // serve what it owns now
			}
			fenced, everHeld = false, true
			// Renewed before the pass: a pass that then hangs in the kernel
			// renews no more, and the fence withdraws when this runs out.
			d.renew(lh, exp)
		}
		if d.stallRequested() {
			nextPass = time.Time{} // the test hook holds the next pass: make it now
		}
		if !time.Now().Before(nextPass) {
			d.testStall(ctx, d.log)
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			var err error
			passBegan := time.Now()
			switch {
			case all != nil:
				err = d.dp.Reconcile(cctx, all, owner)
			case feed.full || time.Since(feed.lastFull) >= resyncInterval:
				// The periodic full pass repairs what drifted (the data
				// plane re-reads the kernel beside it), and resynchronises
				// a feed that fell behind.
				all = feed.resync(d.node.FSM, d.cfg.ID)
				err = d.dp.Reconcile(cctx, all, owner)
			default:
				err = inc.ReconcileChanged(cctx, feed.take(), owner)
			}
			cancel()
			lastPass, lastPassEnded = time.Since(passBegan), time.Now()
			wait := resyncInterval
			if err != nil {
				failures++
				wait = min(time.Duration(failures)*200*time.Millisecond, 5*time.Second)
				d.log.Error("reconcile data plane", "owned", owned, "err", err, "retry_in", wait)
				held = union(held, served) // the kernel may hold any of them
			} else {
				failures = 0
				if owner == "" {
					served = nil // fenced: the pass withdrew everything
				}
				if !slices.Equal(held, served) {
					// Claims on owners whose VIPs this pass withdrew end
					// now; the ones still wanted stay (SetClaims again).
					held = served
					d.live.SetClaims(union(held, wanted))
				}
				if all != nil {
					feed.ownedFrom(all, d.cfg.ID)
				}
				if vips, ok := feed.vips(owner); ok {
					<-d.owned
					d.owned <- vips
				}
			}
			if inc != nil {
				// Wake for the next full pass even when nothing changes.
				wait = min(wait, max(resyncInterval-time.Since(feed.lastFull), 0))
			}
			if fenced {
				// Re-check often while there is something to restore.
				wait = min(wait, lease/4)
			}
			nextPass = time.Now().Add(wait)
		}
		wait := min(time.Until(nextPass), wd.every())
		if !fenced {
			wait = min(wait, renewWait)
			if owned > 0 {
				// Wake when the lease would run out: an owner cut off from a
				// majority must have withdrawn before the grace moves its
				// VIPs, and every moment it lingers is taken from that margin.
				wait = min(wait, max(time.Until(d.lease.Until()), 0)+time.Millisecond)
			}
		}
		// Fenced, the loop also wakes at each probe answer for the lease to
		// come back (only an answer renews it): serving resumes as the
		// answer arrives, not at the next pass, lease/4 away (30 s of a
		// 2-minute lease).
		// Serving, it does the same once the fence's deadline is nearer
		// than the next renewal: a lease that rests on what a restart
		// carried, or on late answers, is extended by the next answer, and
		// the fence must hear of it before its deadline. Looking only at the
		// probe rate cost up to a probe interval of a margin that, on a
		// sub-second lease in a busy guest, was already thin: the fence
		// withdrew, and the next pass put the VIP back, again and again.
		var leaseBack <-chan struct{}
		if fenced || lh != nil && time.Until(d.servingUntilTime()) < renewWait {
			leaseBack = d.lease.Answers()
		}
		timeout := time.After(max(wait, 0))
	waiting:
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				// Let a burst of commits land so one pass covers them all.
				time.Sleep(coalesce)
				nextPass = time.Time{}
			case <-liveChanged:
				// A lost owner's VIPs may be this member's to take over.
				liveChanged = nil
			case <-lapsed:
				// The fence withdrew addresses (this loop was late to renew):
				// a pass puts back those this member still owns, once it has
				// caught up (the gap check above) and is in contact.
				nextPass = time.Time{}
				if !fenced {
					// Say which it was: answers too late for the lease, or
					// a lease still good that this loop, busy, passed on
					// too late (the last pass's length tells).
					d.log.Warn("the fence's deadline passed before this loop renewed it; putting back the VIPs this member still owns",
						"lease_left_now", d.lease.Remaining().Round(time.Millisecond),
						"renewed_ago", time.Since(d.renewedAt).Round(time.Millisecond),
						"last_pass_took", lastPass.Round(time.Millisecond), "last_pass_ended_ago", time.Since(lastPassEnded).Round(time.Millisecond),
						"probes", d.live.Probes())
				}
			case <-leaseBack:
				if fenced && !d.lease.Valid() || !fenced && d.lease.Until().Sub(d.servingUntilTime()) < time.Millisecond {
					continue // nothing new for the fence
				}
			case <-timeout:
			}
			break waiting
		}
	}
}

// testHookIteration, when set by a test, runs at the top of each iteration
// of the reconcile loop (atomic: the test sets it while the loop runs).
var testHookIteration atomic.Pointer[func()]

// leaseHolder is a data plane whose addresses a fence guards (the IPVS
// engine): it is told how long this member may serve, and reports when the
// fence withdrew because no renewal came in time.
type leaseHolder interface {
	Renew(until time.Time) error
	Lapsed() <-chan struct{}
	Keep()
}

// leaseHolderOf returns dp's fence side, seen through the metrics wrapper;
// nil when dp has no fence (control-plane-only, test fakes).
func leaseHolderOf(dp DataPlane) leaseHolder {
	if i, ok := dp.(*instrumentedDataPlane); ok {
		dp = i.DataPlane
	}
	lh, _ := dp.(leaseHolder)
	return lh
}

// servingUntilTime is the deadline last given to the fence (zero: none).
func (d *Daemon) servingUntilTime() time.Time {
	if u := d.servingUntil.Load(); u != nil {
		return *u
	}
	return time.Time{}
}

// renew extends the fence's lease to exp, when the data plane has a fence.
func (d *Daemon) renew(lh leaseHolder, exp time.Time) {
	d.servingUntil.Store(&exp)
	d.renewedAt = time.Now()
	if lh == nil {
		return
	}
	if err := lh.Renew(exp); err != nil {
		// Without renewals the fence withdraws the VIPs when the lease runs
		// out: fail closed, and say why.
		d.log.Error("renew the fence's lease; the VIPs will be withdrawn when it runs out", "err", err)
	}
}

// beginCatchUp marks the member not caught up and starts catchUp.
func (d *Daemon) beginCatchUp(ctx context.Context) {
	began := time.Now()
	d.catchingUp.Store(&began)
	d.caughtUp.Store(false)
	d.bgWG.Go(func() {
		d.catchUp(ctx)
		d.catchingUp.CompareAndSwap(&began, &time.Time{}) // unless a newer one began
	})
}

// catchUp marks the member caught up once its FSM has reached the revision
// the leader's FSM reports. It asks the FSM, not raft: raft's applied index
// counts entries handed to the FSM, and a restarted member that trusted it
// once withdrew a VIP it owned because the service was still in the FSM's
// queue. A member that leads has no one to ask (LeaderRevision refuses); a
// barrier tells it instead. It cannot rely on leaderLoop's barrier alone: a
// member fenced off that wins the election on its way back had that barrier
// mark it before the reconcile loop saw contact again and cleared the mark,
// and then it waited for an answer that never came (seen in CI).
func (d *Daemon) catchUp(ctx context.Context) {
	var target uint64
	known := false
	for !d.caughtUp.Load() && ctx.Err() == nil {
		if !known {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			rev, err := d.srv.LeaderRevision(cctx)
			if errors.Is(err, server.ErrSelfLeads) {
				// The barrier returns once the FSM has applied every entry
				// committed before it, whichever leader committed them.
				if err := d.node.Barrier(cctx); err == nil {
					cancel()
					d.caughtUp.Store(true)
					d.log.Info("caught up with the cluster as its leader; the data plane follows the replicated state",
						"revision", d.node.FSM.Revision())
					return
				}
			}
			cancel()
			if err == nil {
				target, known = rev, true
				if testHookCatchUpTarget != nil {
					testHookCatchUpTarget(d)
				}
			}
		}
		if known && d.node.FSM.Revision() >= target {
			d.caughtUp.Store(true)
			d.log.Info("caught up with the cluster; the data plane follows the replicated state", "revision", target)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// refreshSelf brings this member's record up to date once it has caught up,
// when it differs from what this member reports (a follower restarted with a
// new address on its data interface, or upgraded from a version that
// reported none). The leader does the same through RegisterSelf; a member
// not in the table (joining, or removed) is left to AddMember.
func (d *Daemon) refreshSelf(ctx context.Context) {
	for ctx.Err() == nil {
		if d.caughtUp.Load() && !d.node.IsLeader() {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := d.srv.UpdateSelf(cctx)
			cancel()
			if err == nil {
				return
			}
			d.log.Warn("update this member's record", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// testHookCatchUpTarget, when set by a test, runs once catchUp knows its target.
var testHookCatchUpTarget func(*Daemon)

// serving reports whether the reconcile loop lets this member hold VIP
// addresses now; peers learn it from the probes.
func (d *Daemon) serving() bool {
	t := d.servingUntil.Load()
	return t != nil && time.Now().Before(*t)
}

// catchUpHeld is how many graces a catch-up may last while the probes still
// say this member serves (reportsServing).
const catchUpHeld = 5

// reportsServing is what the probes tell peers about this member: whether it
// serves now, or is catching up with the cluster and will serve what the
// log gives it once it has. Peers move the VIPs of a member that says it
// serves nothing for longer than the grace (lbd/liveness Gone): that is for
// a hung reconcile pass, not for a catch-up. A catch-up waits for a leader,
// and when it lasted past the grace the new leader used to move the VIPs
// while this member, caught up a moment before the move was committed,
// announced them again: two hosts answered ARP for one VIP (the guest's
// hung_leader scenario, 2026-12-06). The loop must have run within the
// lease (a hung one reports nothing), and a catch-up that lasts catchUpHeld
// graces stops counting, so that a member that can never catch up loses its
// VIPs to one that serves.
func (d *Daemon) reportsServing() bool {
	if d.serving() {
		return true
	}
	began := d.catchingUp.Load()
	if began == nil || began.IsZero() {
		return false
	}
	now := time.Now()
	return now.Sub(*began) < catchUpHeld*d.cfg.Ownership.Grace.Duration &&
		now.Sub(time.Unix(0, d.loopBeat.Load())) < d.cfg.Ownership.Lease.Duration
}

// livenessPeers is the raft configuration, for the probes.
func (d *Daemon) livenessPeers() ([]liveness.Peer, uint64) {
	if id := testHookProbesHeld.Load(); id != nil && *id == d.cfg.ID {
		return nil, 0
	}
	servers, index, err := d.node.ServersAt()
	if err != nil {
		return nil, 0
	}
	out := make([]liveness.Peer, 0, len(servers))
	for _, sv := range servers {
		out = append(out, liveness.Peer{ID: sv.ID, Addr: sv.Address, Voter: sv.Voter})
	}
	return out, index
}

// persistedContact is the last time this member held its lease, as recorded
// in the data dir (before a restart, for the API's diagnostics).
func (d *Daemon) persistedContact() time.Time {
	d.contactMu.Lock()
	defer d.contactMu.Unlock()
	return d.lastContact
}

// contactLoop persists, on its own clock, the last time this member held
// its lease: a restart quicker than what was left of it keeps the addresses
// the kernel holds until then (lease.Lease.Carry). With a lease of a few hundred
// milliseconds hardly any restart is that quick; the record then only tells
// the API's diagnostics when this member was last in contact.
func (d *Daemon) contactLoop(ctx context.Context) {
	t := time.NewTicker(contactEvery(d.cfg.Ownership.Lease.Duration))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// The boot clock is read first: the time until the lease is
			// read counts against what is recorded, never for it.
			boot, err := lease.BootNow()
			if err != nil {
				continue // nothing a restart could trust: it carries no lease
			}
			now := time.Now()
			left := d.lease.Remaining()
			d.contactMu.Lock()
			if left > 0 {
				d.noteContact(now, boot, left)
			} else if d.recordedLeft {
				// Ended early (a Revoke, a removal) or run out: a restart
				// must not carry what the record still says.
				d.writeContact(d.lastContact, boot, 0)
			}
			d.contactMu.Unlock()
		}
	}
}

// contactFile records the last time this member knew it was in contact, so
// the lease survives a restart (lease.Lease.Carry).
func (d *Daemon) contactFile() string { return filepath.Join(d.cfg.DataDir, "last-contact") }

// loadContact reads the record of the last contact: it sets lastContact, and
// returns what is left now of the lease held then (0 when nothing is).
func (d *Daemon) loadContact() time.Duration {
	b, err := os.ReadFile(d.contactFile())
	if err != nil {
		return 0
	}
	// "<when, unix ns> <lease left then, ns> <boot id> <CLOCK_BOOTTIME ns>".
	// The wall time is for the API's diagnostics only; what is carried is
	// counted on the boot clock of the same boot, so neither a wall-clock
	// step nor a reboot can stretch it. Older files (the time alone, or
	// without the boot fields) carry nothing.
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0
	}
	// Never trust a recorded time from the future (clock stepped back).
	if t := time.Unix(0, ns); t.Before(time.Now()) {
		d.lastContact = t
	}
	if len(f) < 4 {
		return 0
	}
	left, err1 := strconv.ParseInt(f[1], 10, 64)
	boot, err2 := strconv.ParseInt(f[3], 10, 64)
	now, err3 := lease.BootNow()
	if err1 != nil || err2 != nil || err3 != nil {
		return 0
	}
	// What is left of the lease recorded there — never more than the lease
	// had left when it was written, nor more than a lease.
	carried := lease.CarriedBoot(lease.Boot{ID: f[2], Time: time.Duration(boot)}, now,
		time.Duration(left), d.cfg.Ownership.Lease.Duration)
	d.recordedLeft = carried > 0
	return carried
}

// noteContact persists t, at most a few times per lease and never more than
// four times a second (a short lease must not turn into a disk write per probe).
// left is how much of the lease was left at t: a restart carries no more.
// contactEvery is how often the lease is recorded: a quarter of it, and at
// least every second, so that a long lease is on disk within a second of
// its start (recorded only every lease/4, an lbd restarted in its first
// 30 s with a 2-minute lease had nothing to carry and withdrew its VIPs:
// e2e restart_lbd_under_traffic).
func contactEvery(lease time.Duration) time.Duration {
	return min(max(lease/4, 10*time.Millisecond), time.Second)
}

func (d *Daemon) noteContact(t time.Time, boot lease.Boot, left time.Duration) {
	if t.Sub(d.lastContact) < min(max(d.cfg.Ownership.Lease.Duration/8, 250*time.Millisecond), time.Second) {
		return
	}
	d.writeContact(t, boot, left)
}

// writeContact records that at t (boot: the boot clock then) this member
// held its lease with left to run (contactMu held).
func (d *Daemon) writeContact(t time.Time, boot lease.Boot, left time.Duration) {
	d.lastContact = t
	d.recordedLeft = left > 0
	tmp := d.contactFile() + ".tmp"
	rec := fmt.Sprintf("%d %d %s %d", t.UnixNano(), int64(left), boot.ID, int64(boot.Time))
	if os.WriteFile(tmp, []byte(rec), 0o600) == nil {
		os.Rename(tmp, d.contactFile())
	}
}

// coalesce is how long the reconciler and the assigner let a burst of commits
// accumulate before one pass over the state. It adds at most this much to the
// time from commit to kernel; without it a write storm costs a full pass per write.
const coalesce = 5 * time.Millisecond

// Stop shuts lbd down: the API stops accepting calls, raft stops, and the data
// plane is closed without withdrawing what it programmed (a restart must not
// disturb traffic).
func (d *Daemon) Stop() error {
	defer watchStop(d.log, d.cfg.DataDir, stopStacksAfter)()
	d.handOff() // handoff.go: a clean stop is a planned move of its VIPs
	// From here on nothing renews the fence's lease: tell it this is a clean
	// stop, which gives a restart the lease to take the addresses over.
	// Said later, a stop slower than the lease would have them withdrawn.
	if lh := leaseHolderOf(d.dp); lh != nil {
		lh.Keep()
	}
	notifyStopping()
	d.stopBG()
	// The loops write into the data directory (last contact) and drive the
	// data plane: let them end before what they use goes away. They follow
	// the cancelled context; a loop stuck in a kernel call is not waited for
	// forever.
	loops := make(chan struct{})
	go func() { d.bgWG.Wait(); close(loops) }()
	select {
	case <-loops:
	case <-time.After(10 * time.Second):
		d.log.Warn("background loops still running 10s after stop; shutting down anyway")
	}
	// Withdraw bgp routes and close the sessions: the routers drop this
	// member's paths now rather than at BFD or hold-time expiry.
	d.stopBGP()
	d.stopOps() // the metrics listener and the ownership observer (metrics.go)
	stopped := make(chan struct{})
	go func() { d.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(3 * time.Second):
		d.grpc.Stop() // watches never end by themselves
	}
	// Forwarded writes in flight end with the API calls that carried them.
	d.peerGRPC.Stop()
	d.srv.Close()
	err := d.node.Shutdown()
	if cerr := d.dp.Close(); err == nil {
		err = cerr
	}
	d.log.Info("lbd stopped")
	return err
}
