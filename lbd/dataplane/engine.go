// Package dataplane programs the VIPs this host owns into the kernel: IPVS
// services and destinations (cloudflare/ipvs), the VIP address on the data
// interface (rtnetlink), gratuitous ARP / NDP announcements, and the SNAT rule
// of nat mode. Reconcile diffs the desired state against what this engine
// programmed and changes only what differs; it never flushes, and it never
// touches IPVS services, addresses or rules it did not create.
package dataplane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/ipvs"

	"github.com/edgelb/edgelb/lbd/dataplane/addr"
	"github.com/edgelb/edgelb/lbd/dataplane/announce"
	"github.com/edgelb/edgelb/lbd/dataplane/conntrack"
	"github.com/edgelb/edgelb/lbd/dataplane/ipvsdiff"
	"github.com/edgelb/edgelb/lbd/dataplane/snat"
	"github.com/edgelb/edgelb/lbd/dataplane/srcrange"
	"github.com/edgelb/edgelb/lbd/dataplane/syncd"
	"github.com/edgelb/edgelb/lbd/dataplane/sysctl"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Config configures the engine.
type Config struct {
	Interface          string
	StateDir           string // where programmed.json records what this engine owns
	GARPBurst          int
	GARPBurstInterval  time.Duration
	GARPRepeatInterval time.Duration
	SNAT               string // the rule engine: auto, nftables, iptables-legacy, iptables-nft, none (rules.go)
	SysctlRoot         string // default /proc/sys
	// NoFence skips the fence process (tests that open several engines).
	NoFence bool
	// FenceDelay is how long the fence gives a crashed lbd to come back
	// before it withdraws the VIPs: the ownership lease.
	FenceDelay time.Duration
	// LeaseUntil, unless zero, is how long this host may serve from the
	// start: the fence withdraws the addresses then unless Renew extends it.
	// Zero leaves the fence's lease unarmed until the first Renew.
	LeaseUntil time.Time
	// SyncInterface carries IPVS connection sync (multicast); empty disables it.
	SyncInterface string
	SyncID        uint32
	// TakeoverGuard is how long, after a nat-mode VIP comes here from another
	// member, mid-stream TCP packets to ports it does not serve are dropped
	// (package snat says why); 0 turns the guard off.
	TakeoverGuard time.Duration
	// TickleACKs sends tickle ACKs to the clients of the synced connections
	// of a VIP taken over from another member (tickle.go).
	TickleACKs bool
	// NoHandover withdraws a VIP moved to another member at once instead of
	// keeping it until the new owner announces it (handover.go).
	NoHandover bool
	// ActiveActive, when set, names the services every member serves at
	// once (a bgp pool's): their IPVS destinations are kept in the one
	// order and weight history that gives every member the same mh table
	// (ipvsdiff.ActiveActive). It must answer the same for the same
	// object: the result is cached with it.
	ActiveActive func(*edgelbv1.VirtualService) bool
	// PullHandover, if set, asks a moved VIP's previous owner to push its
	// connections before this host announces the VIP (pull.go).
	PullHandover PullHandover
	Logger       *slog.Logger
}

// Engine is the data plane of one host.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	ipvs    ipvs.Client
	addrs   addr.Manager
	ifindex int
	snat    snat.Rules
	// ct deletes the stale conntrack entries of VIPs taken over or deleted
	// (nil: conntrack netlink unavailable; stale entries then delay connects).
	ct conntrack.Forgetter
	// ctAfter deletes, after a pass, what its takeovers' clean-up left and
	// the entries of VIPs it withdrew (forgetAfter): a socket of its own,
	// since that runs beside the next pass. afterDone is closed when the
	// last job queued ends (e.mu); afterWG is waited for at Close. nil
	// when ct is.
	ctAfter   conntrack.Forgetter
	afterDone chan struct{}
	afterWG   sync.WaitGroup
	// filter enforces source ranges (nil: no rule engine to do it with, and
	// a service with source ranges is isolated rather than served open).
	filter  srcrange.Enforcer
	resyncs int // resyncs so far (SNAT is repaired every snatRepairEvery)
	wire    announce.Sender
	ann     *announce.Announcer
	cancel  context.CancelFunc
	bg      context.Context // ends at Close: background work (tickle ACKs)
	fence   *Fence

	// The fence's reports, kept apart from mu: a pass stuck in the kernel
	// holds mu, and the announcer must stop at once for what the fence took.
	lapsedMu sync.Mutex
	lapsed   map[netip.Addr]bool // withdrawn by the fence, not yet seen by a pass
	lapses   atomic.Uint64       // count of the fence's withdrawals, ever
	lapsedCh chan struct{}
	// leaseUntil is the last "serve until" given to the fence, on
	// CLOCK_MONOTONIC (0: not armed); announcements stop once it passes.
	leaseUntil atomic.Int64
	// pending are addresses about to be added: recorded first, so a fence
	// that acts while the pass is in the kernel withdraws them too.
	pending []netip.Addr

	mu     sync.Mutex
	actual ipvsdiff.State // what this engine believes the kernel holds for its services
	ours   map[ipvsdiff.SvcKey]bool
	vips   map[netip.Addr]bool // addresses this engine added
	// plan is the desired state, kept service by service (plan.go); an
	// unchanged service keeps its planned form (and its source-range filter,
	// which the filter recognises by identity).
	plan  *plan
	stats Stats
	// needFull makes the next pass compare everything: after a failed pass,
	// a re-read of the kernel, or a withdrawal.
	needFull bool

	lastResync time.Time
	// resyncMu is held while the kernel is being re-read; touched (non-nil
	// only then) names what reconciles changed meanwhile, which the older
	// reading must not overwrite.
	resyncMu    sync.Mutex
	touched     map[ipvsdiff.SvcKey]bool
	touchedVIPs map[netip.Addr]bool
	obs         Observer
	// settled maps each service to the desired *Svc last applied in full; an
	// identical pointer next time means nothing to compare (objects are immutable).
	settled map[ipvsdiff.SvcKey]*ipvsdiff.Svc
	// owned is the last pass's owned VIPs → tenant, for the log line of a
	// VIP withdrawn because its service is gone. unlabelled holds the VIPs
	// adopted at open whose tenant the announcer does not know yet
	// (programmed.json records addresses, not tenants).
	owned      map[netip.Addr]string
	unlabelled map[netip.Addr]bool

	// owners is each VIP's owner as the passes saw it, updated from changed
	// objects only; a VIP whose owner changes from another member to this
	// one has been taken over.
	owners map[netip.Addr]string

	// isolated names the services the last pass could not turn into IPVS
	// services (tenant/name → why). They are left out; every other service
	// is programmed. Guarded by isoMu, not mu: status reads it while a pass
	// may be stuck in the kernel.
	isoMu    sync.Mutex
	isolated map[string]string

	ho handovers // moved VIPs kept until their new owner announces them (handover.go)
}

// Observer receives what only the data plane sees (lbd/metrics implements it).
type Observer interface {
	KernelChange(op string)
	Announced(family, kind string, n int)
	TookOver(d time.Duration)
}

type nopObserver struct{}

func (nopObserver) KernelChange(string)           {}
func (nopObserver) Announced(string, string, int) {}
func (nopObserver) TookOver(time.Duration)        {}

// SetObserver installs o (metrics are set up after the data plane opens).
func (e *Engine) SetObserver(o Observer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.obs = o
	e.ann.SetOnSent(func(a netip.Addr, kind string) {
		fam := "ipv4"
		if a.Is6() {
			fam = "ipv6"
		}
		o.Announced(fam, kind, 1)
	})
}

// SetActiveActive installs Config.ActiveActive once the replicated state
// that answers it (the pools) exists; services planned before are planned
// again.
func (e *Engine) SetActiveActive(f func(*edgelbv1.VirtualService) bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg.ActiveActive = f
	e.settled = nil // the next pass compares everything
}

// Stats counts the engine's work.
type Stats struct {
	Reconciles, Ops, Errors uint64
	// FullPasses counts the passes that compared every service.
	FullPasses   uint64
	LastDuration time.Duration
}

// Open checks that IPVS is usable, sets the sysctls, and adopts what the kernel
// holds for the services and addresses recorded by a previous run, so a
// restart disturbs no connection.
func Open(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	if cfg.SysctlRoot == "" {
		cfg.SysctlRoot = "/proc/sys"
	}
	c, err := ipvs.New()
	if err == nil {
		_, err = c.Info()
	}
	if err != nil {
		return nil, fmt.Errorf("IPVS is not available (%v): load the ip_vs module (modprobe ip_vs ip_vs_mh) and run as root", err)
	}
	ifindex, err := addr.IfIndex(cfg.Interface)
	if err != nil {
		return nil, err
	}
	am, err := addr.Open()
	if err != nil {
		return nil, err
	}
	rules, filter, ferr, err := openRules(ctx, cfg)
	if err != nil {
		am.Close()
		return nil, err
	}
	if ferr != nil {
		// Fail closed: services with source ranges are isolated (not
		// served open); the rest of the data plane works.
		cfg.Logger.Error("source ranges cannot be enforced on this host: virtual services with source ranges will not be programmed here", "err", ferr)
	}
	// After the SNAT rules: they load nf_conntrack, whose settings are
	// among the optional ones.
	if err := sysctl.Apply(cfg.SysctlRoot, sysctl.Required, sysctl.Optional); err != nil {
		am.Close()
		return nil, err
	}
	wire, err := announce.Open(cfg.Interface)
	if err != nil {
		am.Close()
		return nil, err
	}
	e := newEngine(cfg, c, am, ifindex, wire)
	e.snat = rules
	if filter != nil {
		e.filter = filter
	}
	// Two sockets: the pass's, and the clean-up's after it (forgetAfter).
	ct, err := conntrack.Open()
	var after *conntrack.Netlink
	if err == nil {
		if after, err = conntrack.Open(); err != nil {
			ct.Close()
		}
	}
	if err != nil {
		// Traffic flows; a client reusing the port of a connection this
		// member carried in an earlier turn of a VIP waits for a SYN
		// retransmit, or fails (package conntrack).
		cfg.Logger.Error("conntrack netlink unavailable: stale conntrack entries of VIPs taken over or deleted are kept", "err", err)
	} else {
		e.ct, e.ctAfter = ct, after
	}
	if err := e.adopt(); err != nil {
		e.Close()
		return nil, err
	}
	if cfg.SyncInterface != "" {
		if err := syncd.Start(cfg.SyncInterface, cfg.SyncID); err != nil {
			// Traffic still flows; only takeovers lose established connections.
			cfg.Logger.Error("IPVS connection sync not running: a takeover will reset established connections", "err", err)
		}
	}
	if !cfg.NoFence && !cfg.LeaseUntil.IsZero() {
		e.leaseUntil.Store(int64(monotonicAt(cfg.LeaseUntil)))
	}
	actx, cancel := context.WithCancel(context.Background())
	e.cancel, e.bg = cancel, actx
	go e.ann.Run(actx)
	e.unlabelled = map[netip.Addr]bool{}
	for a := range e.vips {
		// Re-announce what we still hold after a restart; Reconcile names
		// the tenant once it knows the services.
		e.ann.Added(a, "")
		e.unlabelled[a] = true
	}
	snatName := "none"
	if rules != nil {
		snatName = rules.Backend()
	}
	// The fence last, once nothing can fail: taking the state directory
	// over stops the previous run's fence, and from then on this run's
	// daemon enforces the lease. Taken earlier (tried), a restart slower
	// than the lease left the address up, unfenced, until the daemon's loop
	// ran: in the guest it answered beside the member the VIP had moved to.
	if !cfg.NoFence {
		if e.fence, err = StartFence(cfg.Interface, cfg.StateDir, cfg.FenceDelay, cfg.LeaseUntil); err != nil {
			e.Close()
			return nil, err
		}
		go e.fence.Withdrawn(e.fenceWithdrew)
	}
	e.log.Info("IPVS data plane ready", "interface", cfg.Interface, "snat", snatName, "adopted_services", len(e.actual), "adopted_vips", len(e.vips))
	if _, ok := rules.(*snat.Tables); ok && cfg.TakeoverGuard > 0 {
		if n := snat.GuardCapacity(); n > 0 && n < snat.RecentCapacity {
			e.log.Warn("xt_recent was loaded before lbd with a small list: a takeover guards only this many VIPs at once (unload it, or load it with ip_list_tot=want)", "vips", n, "want", snat.RecentCapacity)
		}
	}
	return e, nil
}

// newEngine is an engine over the given kernel interfaces with nothing
// adopted, announced or started: the one constructor, which Open gives the
// kernel's interfaces and the tests give fakes, so both run the same engine.
func newEngine(cfg Config, k ipvs.Client, addrs addr.Manager, ifindex int, wire announce.Sender) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, ipvs: k, addrs: addrs, ifindex: ifindex, wire: wire, lastResync: time.Now(), obs: nopObserver{},
		lapsed: map[netip.Addr]bool{}, lapsedCh: make(chan struct{}, 1),
		actual: ipvsdiff.State{}, ours: map[ipvsdiff.SvcKey]bool{}, vips: map[netip.Addr]bool{},
		plan: newPlan(""), needFull: true}
	e.ann = announce.New(announce.Config{Burst: cfg.GARPBurst, BurstInterval: cfg.GARPBurstInterval, RepeatInterval: cfg.GARPRepeatInterval, Allowed: e.leaseHeld}, wire, cfg.Logger)
	return e
}

// Stats returns counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// Announcements returns GARP/NA sent and failed.
func (e *Engine) Announcements() (sent, failed uint64) { return e.ann.Counts() }

// Close stops announcing and leaves the kernel as it is: a restarted lbd
// adopts it, and connections keep flowing meanwhile.
func (e *Engine) Close() error {
	if e.cancel != nil {
		e.cancel()
	}
	// The handover watcher reads ARP for at most a moment more. A pass
	// stuck in the kernel holds e.mu, and the daemon closes the engine even
	// then (after giving up on its loops): wait only so long.
	stopped := make(chan struct{})
	go func() {
		e.mu.Lock()
		e.ho.closed = true // no watcher starts after this
		e.mu.Unlock()
		e.ho.watcher.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(time.Second):
		e.log.Warn("closing the data plane while a pass still holds it: a handover in progress may end after this")
	}
	if e.fence != nil {
		e.fence.Keep()
	}
	if e.wire != nil {
		e.wire.Close()
	}
	if c, ok := e.addrs.(*addr.Netlink); ok {
		c.Close()
	}
	e.afterWG.Wait() // a clean-up after a pass still uses its socket
	for _, f := range []conntrack.Forgetter{e.ct, e.ctAfter} {
		if c, ok := f.(*conntrack.Netlink); ok {
			c.Close()
		}
	}
	// The rule engine's netlink socket (one, whichever view holds it); the
	// rules stay.
	if c, ok := e.snat.(io.Closer); ok {
		c.Close()
	} else if c, ok := e.filter.(io.Closer); ok {
		c.Close()
	}
	return nil
}

// SourceRangeDrops returns, per VIP with source ranges, the packets its
// filter has dropped (read from the kernel's rule counters; totals that only
// grow). Nil without a filter.
func (e *Engine) SourceRangeDrops(ctx context.Context) (map[netip.Addr]uint64, error) {
	if e.filter == nil {
		return nil, nil
	}
	return e.filter.Dropped(ctx)
}
