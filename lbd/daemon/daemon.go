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
	"os"
	"path/filepath"
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
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/dataplane"
	"github.com/edgelb/edgelb/lbd/health"
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
	dpName   string
	lis      net.Listener
	sec      *security

	owned chan []string // latest VIPs programmed, for status
	// lastContact is the last time this member knew a leader (persisted).
	contactMu   sync.Mutex
	lastContact time.Time
	// caughtUp is set once the local FSM has applied everything the cluster
	// had committed when this member started; before that the FSM may show a
	// past state (log replay), which the data plane must not follow.
	caughtUp atomic.Bool
	checker  *health.Checker
	ops      *ops // issue 8: metrics and /healthz, /readyz (metrics.go)
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

// Start brings up lbd and returns once its API listens.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	d := &Daemon{cfg: cfg, log: log, owned: make(chan []string, 1), stallFile: stallPath(cfg)}
	d.owned <- nil

	dp, name, err := openDataPlane(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	d.dp, d.dpName = dp, name

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
			LeaderLeaseTimeout: cfg.Raft.LeaderLeaseTimeout.Duration, CommitTimeout: 10 * time.Millisecond,
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
		// A few elections' worth with this member's timers, never less than the default.
		LeaderWait:     max(3*time.Second, 3*(cfg.Raft.HeartbeatTimeout.Duration+cfg.Raft.ElectionTimeout.Duration)),
		Ready:          d.ready,
		CatchUpTimeout: cfg.Membership.CatchUpTimeout.Duration,
	}
	if e, ok := dp.(*dataplane.Engine); ok {
		opts.ServiceStats = ipvsStats{e: e, f: f}.Service
		opts.Isolated = e.Isolated
	}
	d.srv = server.New(n, opts)
	if err := d.startOps(); err != nil { // issue 8: metrics (metrics.go)
		n.Shutdown()
		lis.Close()
		dp.Close()
		return nil, err
	}
	// Metrics interceptors first (issue 8), then authorisation, then the read
	// gate: only an authorised caller learns why a replica refuses.
	srvOpts := append(d.opsServerOptions(), sec.serverOptions()...)
	srvOpts = append(srvOpts, grpc.ChainUnaryInterceptor(d.srv.UnaryReadGate), grpc.ChainStreamInterceptor(d.srv.StreamReadGate))
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

	d.loadContact()
	bg, cancel := context.WithCancel(context.Background())
	d.stopBG = cancel
	if len(cfg.Join) > 0 && !n.HadState() {
		d.bgWG.Go(func() { d.join(bg, self) })
	}
	d.bgWG.Go(func() { d.refreshSelf(bg) })
	d.bgWG.Go(func() { d.leaderLoop(bg) })
	d.bgWG.Go(func() { d.healthLoop(bg) })
	d.bgWG.Go(func() { d.catchUp(bg) })
	d.bgWG.Go(func() { d.contactLoop(bg) })
	d.bgWG.Go(func() { d.reconcileLoop(bg) })
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

func (d *Daemon) ownedVIPs() []string {
	v := <-d.owned
	d.owned <- v
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
			(&ownership.Assigner{Node: d.node, Grace: d.cfg.Ownership.Grace.Duration, Log: d.log.With("component", "ownership")}).Run(lctx)
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
// can wait for a usable member.
func (d *Daemon) healthLoop(ctx context.Context) {
	last := healthpb.HealthCheckResponse_UNKNOWN
	t := time.NewTicker(100 * time.Millisecond)
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
	var lapsed <-chan struct{}
	if lh != nil {
		lapsed = lh.Lapsed()
	}
	wd := newWatchdog(d.log)
	failures := 0
	fenced := false
	var nextPass time.Time // zero: a pass is due now
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
			d.caughtUp.Store(false)
			d.bgWG.Go(func() { d.catchUp(ctx) })
		}
		lastIter = time.Now()
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
			// Keep what the kernel holds while the lease allows, then fence.
			wait := 50 * time.Millisecond
			if exp := d.leaseExpiry(lease); time.Now().Before(exp) {
				d.renew(lh, exp)
			} else {
				// Fence on addresses only. Before the first entries apply
				// the FSM may even be empty: reconciling against it would
				// remove every IPVS service, and with them the connection
				// entries that keep established connections alive when
				// the VIPs come back here or move to another member (a
				// rolling restart reset them all).
				if err := d.dp.Withdraw(ctx); err != nil {
					d.log.Error("withdraw VIPs while out of contact and not caught up", "err", err)
				}
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
		all, _ := d.node.FSM.All()
		owner := d.cfg.ID
		owned := 0
		for _, vs := range all {
			if vs.Owner == owner {
				owned++
			}
		}
		// Self-fencing: a member answers for its VIPs only while it is in
		// contact with the leader. Past the lease it withdraws them by itself,
		// before the leader (which waits the longer grace) gives them to another.
		exp := d.leaseExpiry(lease)
		if !time.Now().Before(exp) {
			if !fenced && owned > 0 {
				d.log.Warn("no contact with a raft leader for longer than the lease; not serving VIPs", "lease", lease, "owned", owned,
					"raft_last_contact", d.node.Status().LastContact)
			}
			if !fenced {
				nextPass = time.Time{}
			}
			fenced = true
			owner, owned = "", 0
		} else if fenced {
			// Back from a partition, the replica may still show this member
			// as the owner of VIPs the leader moved meanwhile (the heartbeat
			// that restores contact can come before the entries it missed).
			// Serving from that state would put the address on two hosts:
			// catch up with the leader's commit index first, as after a start.
			fenced = false
			d.caughtUp.Store(false)
			d.bgWG.Go(func() { d.catchUp(ctx) })
			d.log.Info("back in contact with the raft leader; serving owned VIPs again once caught up")
			continue
		} else {
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
			err := d.dp.Reconcile(cctx, all, owner)
			cancel()
			wait := resyncInterval
			if err != nil {
				failures++
				wait = min(time.Duration(failures)*200*time.Millisecond, 5*time.Second)
				d.log.Error("reconcile data plane", "owned", owned, "err", err, "retry_in", wait)
			} else {
				failures = 0
				vips := make([]string, 0, owned)
				seen := map[string]bool{}
				for _, vs := range all {
					if owner != "" && vs.Owner == owner && !seen[vs.Vip] {
						seen[vs.Vip] = true
						vips = append(vips, vs.Vip)
					}
				}
				<-d.owned
				d.owned <- vips
			}
			if fenced {
				// Re-check often while there is something to restore.
				wait = min(wait, lease/4)
			}
			nextPass = time.Now().Add(wait)
		}
		wait := min(time.Until(nextPass), wd.every())
		if !fenced {
			wait = min(wait, renewEvery)
			if owned > 0 {
				// Wake when the lease would run out: an owner cut off from the
				// leader must have withdrawn before the leader's grace moves its
				// VIPs, and every moment it lingers is taken from that margin.
				wait = min(wait, max(time.Until(d.leaseExpiry(lease)), 0)+time.Millisecond)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// Let a burst of commits land so one pass covers them all.
			time.Sleep(coalesce)
			nextPass = time.Time{}
		case <-lapsed:
			// The fence withdrew addresses (this loop was late to renew):
			// a pass puts back those this member still owns, once it has
			// caught up (the gap check above) and is in contact.
			nextPass = time.Time{}
		case <-time.After(max(wait, 0)):
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

// renew extends the fence's lease to exp, when the data plane has a fence.
func (d *Daemon) renew(lh leaseHolder, exp time.Time) {
	if lh == nil {
		return
	}
	if err := lh.Renew(exp); err != nil {
		// Without renewals the fence withdraws the VIPs when the lease runs
		// out: fail closed, and say why.
		d.log.Error("renew the fence's lease; the VIPs will be withdrawn when it runs out", "err", err)
	}
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

// inContact reports whether this member heard from a leader within lease: it
// is the leader (raft makes a leader that loses its quorum step down within
// the leader lease), or a follower whose last contact is recent.
func (d *Daemon) inContact(lease time.Duration) bool {
	return time.Now().Before(d.leaseExpiry(lease))
}

// leaseExpiry is when this member's lease on its VIPs runs out unless a leader
// is heard from again.
func (d *Daemon) leaseExpiry(lease time.Duration) time.Time {
	d.contactMu.Lock()
	defer d.contactMu.Unlock()
	if d.node.IsLeader() {
		now := time.Now()
		d.noteContact(now)
		return now.Add(lease)
	}
	last := d.node.Status().LastContact
	if last.IsZero() || last.Before(d.lastContact) {
		// Just restarted: raft has not heard from a leader yet. The contact
		// recorded before the restart still counts for what is left of its
		// lease, so a quick restart keeps the VIPs it adopted instead of
		// withdrawing them and breaking every connection.
		last = d.lastContact
	}
	if time.Since(last) < lease {
		d.noteContact(last)
	}
	return last.Add(lease)
}

// persistedContact is the last leader contact recorded in the data dir.
func (d *Daemon) persistedContact() time.Time {
	d.contactMu.Lock()
	defer d.contactMu.Unlock()
	return d.lastContact
}

// contactLoop persists the last leader contact on its own clock: the
// reconcile loop may be busy in the kernel for seconds, and a restart must not
// find a stale record and fence VIPs it still holds a valid lease for.
func (d *Daemon) contactLoop(ctx context.Context) {
	t := time.NewTicker(max(d.cfg.Ownership.Lease.Duration/8, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.inContact(d.cfg.Ownership.Lease.Duration)
		}
	}
}

// contactFile records the last time this member knew it was in contact, so
// the lease survives a restart (see inContact).
func (d *Daemon) contactFile() string { return filepath.Join(d.cfg.DataDir, "last-contact") }

func (d *Daemon) loadContact() {
	b, err := os.ReadFile(d.contactFile())
	if err != nil {
		return
	}
	if ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
		// Never trust a recorded time from the future (clock stepped back).
		if t := time.Unix(0, ns); t.Before(time.Now()) {
			d.lastContact = t
		}
	}
}

// noteContact persists t, at most a few times per lease.
func (d *Daemon) noteContact(t time.Time) {
	if t.Sub(d.lastContact) < d.cfg.Ownership.Lease.Duration/8 {
		return
	}
	d.lastContact = t
	tmp := d.contactFile() + ".tmp"
	if os.WriteFile(tmp, []byte(strconv.FormatInt(t.UnixNano(), 10)), 0o600) == nil {
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
	d.stopOps() // issue 8 (metrics.go)
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
