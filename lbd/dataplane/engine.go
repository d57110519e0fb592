// Package dataplane programs the VIPs this host owns into the kernel: IPVS
// services and destinations (cloudflare/ipvs), the VIP address on the data
// interface (rtnetlink), gratuitous ARP / NDP announcements, and the SNAT rule
// of nat mode. Reconcile diffs the desired state against what this engine
// programmed and changes only what differs; it never flushes, and it never
// touches IPVS services, addresses or rules it did not create.
package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudflare/ipvs"
	"golang.org/x/sys/unix"

	"github.com/edgelb/edgelb/lbd/dataplane/addr"
	"github.com/edgelb/edgelb/lbd/dataplane/announce"
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
	SNAT               string // auto, iptables-legacy, iptables-nft, none
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
	Logger        *slog.Logger
}

// Engine is the data plane of one host.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	ipvs    ipvs.Client
	addrs   addr.Manager
	ifindex int
	snat    snat.Rules
	// filter enforces source ranges (nil: no iptables to do it with, and a
	// service with source ranges is isolated rather than served open).
	filter *srcrange.Filter
	// ranged is the filter of each service with source ranges, by its
	// (immutable) object, so an unchanged one is not parsed again and the
	// filter recognises it by identity.
	ranged  map[*edgelbv1.VirtualService]*srcrange.Service
	resyncs int // resyncs so far (SNAT is repaired every snatRepairEvery)
	wire    announce.Sender
	ann     *announce.Announcer
	cancel  context.CancelFunc
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
	cache  map[*edgelbv1.VirtualService][]*ipvsdiff.Svc
	stats  Stats

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
}

// IsolationObserver is implemented by an Observer that also wants the number
// of services the data plane cannot program (lbd/metrics does).
type IsolationObserver interface {
	Isolated(n int)
}

// Isolated returns the services the data plane could not program in its
// last pass, as "tenant/name: why", sorted.
func (e *Engine) Isolated() []string {
	e.isoMu.Lock()
	defer e.isoMu.Unlock()
	out := make([]string, 0, len(e.isolated))
	for k, why := range e.isolated {
		out = append(out, k+": "+why)
	}
	sort.Strings(out)
	return out
}

// noteIsolated records this pass's isolated services, logging each once when
// it becomes isolated and when it is programmable again.
func (e *Engine) noteIsolated(now map[string]string) {
	e.isoMu.Lock()
	before := e.isolated
	e.isolated = now
	e.isoMu.Unlock()
	for k, why := range now {
		if before[k] != why {
			e.log.Error("cannot program virtual service; it is left out and every other service is programmed", "service", k, "err", why)
		}
	}
	for k := range before {
		if _, still := now[k]; !still {
			e.log.Info("virtual service is programmable again", "service", k)
		}
	}
	if o, ok := e.obs.(IsolationObserver); ok {
		o.Isolated(len(now))
	}
}

// resyncEvery is how often Reconcile starts re-reading the kernel to repair
// changes made behind its back; between resyncs it trusts what it applied.
const resyncEvery = 30 * time.Second

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

// slowPass is how long a pass may take before it is logged with where its time
// went: a takeover waits for the pass that adds the address.
const slowPass = time.Second

// Stats counts the engine's work.
type Stats struct {
	Reconciles, Ops, Errors uint64
	LastDuration            time.Duration
}

// record is what programmed.json holds.
type record struct {
	Services []string `json:"services"` // "tcp/192.0.2.1:80"
	VIPs     []string `json:"vips"`
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
	rules, err := snat.Open(ctx, cfg.SNAT, cfg.TakeoverGuard)
	if err != nil {
		am.Close()
		return nil, err
	}
	filter, err := openFilter(ctx, rules)
	if err != nil {
		// Fail closed: services with source ranges are isolated (not
		// served open); the rest of the data plane works.
		cfg.Logger.Error("source ranges cannot be enforced on this host: virtual services with source ranges will not be programmed here", "err", err)
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
	e := &Engine{cfg: cfg, log: cfg.Logger, ipvs: c, addrs: am, ifindex: ifindex, snat: rules, filter: filter, wire: wire, lastResync: time.Now(), obs: nopObserver{},
		lapsed: map[netip.Addr]bool{}, lapsedCh: make(chan struct{}, 1),
		actual: ipvsdiff.State{}, ours: map[ipvsdiff.SvcKey]bool{}, vips: map[netip.Addr]bool{},
		cache: map[*edgelbv1.VirtualService][]*ipvsdiff.Svc{}}
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
	e.ann = announce.New(announce.Config{Burst: cfg.GARPBurst, BurstInterval: cfg.GARPBurstInterval, RepeatInterval: cfg.GARPRepeatInterval, Allowed: e.leaseHeld}, wire, cfg.Logger)
	actx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
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
	if rules != nil && cfg.TakeoverGuard > 0 {
		if n := snat.GuardCapacity(); n > 0 && n < snat.RecentCapacity {
			e.log.Warn("xt_recent was loaded before lbd with a small list: a takeover guards only this many VIPs at once (unload it, or load it with ip_list_tot=want)", "vips", n, "want", snat.RecentCapacity)
		}
	}
	return e, nil
}

// openFilter opens the source-range filter with the SNAT rules' iptables
// flavour, or, with SNAT off, the first flavour that works (legacy, then nft).
func openFilter(ctx context.Context, rules snat.Rules) (*srcrange.Filter, error) {
	if rules != nil {
		v4 := rules.Backend()
		return srcrange.Open(ctx, v4, strings.Replace(v4, "iptables", "ip6tables", 1), nil)
	}
	f, errL := srcrange.Open(ctx, "iptables-legacy", "ip6tables-legacy", nil)
	if errL == nil {
		return f, nil
	}
	f, errN := srcrange.Open(ctx, "iptables-nft", "ip6tables-nft", nil)
	if errN == nil {
		return f, nil
	}
	return nil, fmt.Errorf("no usable iptables: legacy: %w; nft: %w", errL, errN)
}

func (e *Engine) recordPath() string { return filepath.Join(e.cfg.StateDir, "programmed.json") }

// adopt reads the record of a previous run and the kernel's matching state.
func (e *Engine) adopt() error {
	b, err := os.ReadFile(e.recordPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", e.recordPath(), err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("parse %s: %w (delete it to start over; IPVS services it named will then be left alone)", e.recordPath(), err)
	}
	want := map[string]bool{}
	for _, s := range r.Services {
		want[s] = true
	}
	read, have, err := e.readKernel(func(k ipvsdiff.SvcKey) bool { return want[k.String()] })
	if err != nil {
		return err
	}
	for k, sv := range read {
		e.actual[k] = sv
		e.ours[k] = true
	}
	onIf := map[netip.Addr]bool{}
	for _, a := range have {
		onIf[a] = true
	}
	for _, s := range r.VIPs {
		if a, err := netip.ParseAddr(s); err == nil && onIf[a] {
			e.vips[a] = true
		}
	}
	return nil
}

// read is the kernel's view of one IPVS service with its destinations.
func (e *Engine) read(s ipvs.ServiceExtended) (*ipvsdiff.Svc, error) {
	k := ipvsdiff.SvcKey{Addr: s.Address, Proto: s.Protocol, Port: s.Port}
	ds, err := e.ipvs.Destinations(s.Service)
	if err != nil && !isNotExist(err) {
		return nil, fmt.Errorf("list destinations of %s: %w", k, err)
	}
	sv := &ipvsdiff.Svc{Key: k, Scheduler: s.Scheduler, Flags: s.Flags & ipvsdiff.FlagsMask, Timeout: s.Timeout, Dests: map[ipvsdiff.DestKey]ipvsdiff.Dest{}}
	if sv.Flags&ipvs.ServicePersistent == 0 {
		sv.Timeout = 0
	}
	for _, d := range ds {
		sv.Dests[ipvsdiff.DestKey{Addr: d.Address, Port: d.Port}] = ipvsdiff.Dest{Weight: d.Weight, Fwd: d.FwdMethod}
	}
	return sv, nil
}

func (e *Engine) save() error {
	var r record
	for k := range e.ours {
		r.Services = append(r.Services, k.String())
	}
	for a := range e.vips {
		r.VIPs = append(r.VIPs, a.String())
	}
	for _, a := range e.pending {
		if !e.vips[a] {
			r.VIPs = append(r.VIPs, a.String())
		}
	}
	sort.Strings(r.Services)
	sort.Strings(r.VIPs)
	b, _ := json.MarshalIndent(r, "", " ")
	if err := os.MkdirAll(e.cfg.StateDir, 0o700); err != nil {
		return err
	}
	tmp := e.recordPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return os.Rename(tmp, e.recordPath())
}

// desired builds the IPVS state for all services, the addresses of those
// owner owns (with their tenant, for the logs: the FSM gives an address to one
// tenant only), the nat-mode VIPs, and the VIPs that came to owner from another
// member since the last call, reusing the IPVS form of services whose
// (immutable) object did not change since the last call.
func (e *Engine) desired(all []*edgelbv1.VirtualService, owner string) (ipvsdiff.State, map[netip.Addr]string, map[netip.Addr][]uint16, map[netip.Addr]*srcrange.VIP, []netip.Addr, error) {
	// Sized like the last pass's: at 10k VIPs growing these maps from empty
	// costs more than filling them.
	st := make(ipvsdiff.State, len(e.settled))
	vips := make(map[netip.Addr]string, len(e.owned))
	natVIPs := make(map[netip.Addr][]uint16, len(e.cache)) // → TCP ports, which the takeover guard lets through
	var moved []netip.Addr
	filters := map[netip.Addr]*srcrange.VIP{} // VIPs with source ranges
	if e.owners == nil {
		e.owners = map[netip.Addr]string{}
	}
	next := make(map[*edgelbv1.VirtualService][]*ipvsdiff.Svc, len(all))
	nextRanged := make(map[*edgelbv1.VirtualService]*srcrange.Service, len(e.ranged))
	var isolated map[string]string
	defer func() { e.noteIsolated(isolated) }()
	for _, vs := range all {
		svcs, ok := e.cache[vs]
		if !ok {
			var err error
			if svcs, err = ipvsdiff.FromService(vs); err != nil {
				// One service the kernel cannot take (a scheduler this
				// binary does not know, say, from a newer member) must not
				// keep every other service from being programmed: it is left
				// out, with its address, and reported.
				if isolated == nil {
					isolated = map[string]string{}
				}
				isolated[vs.Tenant+"/"+vs.Name] = err.Error()
				continue
			}
		}
		var ranged *srcrange.Service
		if len(vs.SourceRanges) > 0 {
			var why string
			if ranged = e.ranged[vs]; ranged == nil {
				ranged, why = e.sourceRanges(vs, svcs)
			}
			if ranged == nil {
				// Fail closed: served open would let in every client
				// the ranges keep out.
				if isolated == nil {
					isolated = map[string]string{}
				}
				isolated[vs.Tenant+"/"+vs.Name] = why
				continue
			}
		}
		var a netip.Addr
		if len(svcs) > 0 {
			a = svcs[0].Key.Addr // parsed already
		} else {
			a = netip.MustParseAddr(vs.Vip) // FromService parsed it
		}
		if !ok {
			// An ownership change is a new object, so looking at new
			// objects only sees every one.
			if was := e.owners[a]; owner != "" && vs.Owner == owner && was != "" && was != owner {
				moved = append(moved, a)
			}
			e.owners[a] = vs.Owner
		}
		next[vs] = svcs
		for _, s := range svcs {
			st[s.Key] = s
		}
		if ranged != nil {
			f := filters[a]
			if f == nil {
				f = &srcrange.VIP{Addr: a}
				filters[a] = f
			}
			f.Services = append(f.Services, ranged)
			nextRanged[vs] = ranged
		}
		if owner != "" && vs.Owner == owner {
			vips[a] = vs.Tenant
		}
		if vs.ForwardingMode != edgelbv1.ForwardingMode_FORWARDING_MODE_DR {
			ports := natVIPs[a]
			for _, s := range svcs {
				if s.Key.Proto == ipvs.TCP {
					ports = append(ports, s.Key.Port)
				}
			}
			natVIPs[a] = ports
		}
	}
	e.cache = next
	e.ranged = nextRanged
	if len(e.owners) > 2*len(all)+1024 {
		// Forget deleted VIPs now and then (a map rebuild, not every pass).
		e.owners = make(map[netip.Addr]string, len(all))
		for _, vs := range all {
			if a, err := netip.ParseAddr(vs.Vip); err == nil {
				e.owners[a] = vs.Owner
			}
		}
	}
	return st, vips, natVIPs, filters, moved, nil
}

// sourceRanges is vs's source-range filter, or nil and why it cannot be
// enforced here (then vs is not programmed at all).
func (e *Engine) sourceRanges(vs *edgelbv1.VirtualService, svcs []*ipvsdiff.Svc) (*srcrange.Service, string) {
	if e.filter == nil {
		return nil, "it has source ranges and this host cannot enforce them (no usable iptables; see the log at start)"
	}
	s := &srcrange.Service{Name: vs.Tenant + "/" + vs.Name}
	for _, r := range vs.SourceRanges {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			return nil, fmt.Sprintf("source range %q: %v", r, err) // the FSM's rules refuse these
		}
		s.Ranges = append(s.Ranges, p.Masked())
	}
	for _, sv := range svcs {
		proto, ok := protoNames[sv.Key.Proto]
		if !ok {
			return nil, fmt.Sprintf("source ranges on protocol %d are not supported", sv.Key.Proto)
		}
		s.Ports = append(s.Ports, srcrange.Port{Proto: proto, Port: sv.Key.Port})
	}
	return s, ""
}

var protoNames = map[ipvs.Protocol]string{ipvs.TCP: "tcp", ipvs.UDP: "udp", ipvs.SCTP: "sctp"}

// Reconcile makes the kernel hold the IPVS services and SNAT rules of every
// service in all — a hot standby: a takeover then only adds the address — and
// the VIP addresses (announced) of exactly those whose Owner is owner (none
// when owner is empty: fenced or not serving). Anything it programmed before
// and not listed is withdrawn.
func (e *Engine) Reconcile(ctx context.Context, all []*edgelbv1.VirtualService, owner string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	// The re-read runs beside this pass, not before it: at 10k VIPs × 50
	// it takes seconds (half a minute in an emulated kernel), and a takeover
	// must not wait for it. Its repairs apply from the next pass on.
	if time.Since(e.lastResync) > resyncEvery && e.resyncMu.TryLock() {
		e.lastResync = time.Now()
		go func() {
			defer e.resyncMu.Unlock()
			if err := e.resync(); err != nil {
				e.log.Warn("re-read kernel state", "err", err)
			}
		}()
	}
	start := time.Now()
	e.stats.Reconciles++
	lapses := e.absorbLapsed()
	prev := e.cache // the last pass's services: a withdrawn VIP's may be gone from all
	want, vips, natVIPs, filters, moved, err := e.desired(all, owner)
	if err != nil {
		e.stats.Errors++
		return err
	}
	// Log lines about a VIP name its tenant (issue 8): an owned VIP's comes
	// with desired, a withdrawn one's from the last pass; only a VIP in
	// neither (adopted at open, then withdrawn) costs a look through the
	// services, once per pass.
	var tenants map[netip.Addr]string
	tenantOf := func(a netip.Addr) string {
		if t, ok := vips[a]; ok {
			return t
		}
		if t, ok := e.owned[a]; ok {
			return t
		}
		if tenants == nil {
			tenants = vipTenants(e.cache, prev)
		}
		return tenants[a]
	}
	for a := range e.unlabelled {
		if t, ok := vips[a]; ok {
			e.ann.SetTenant(a, t)
		}
		delete(e.unlabelled, a) // not owned: withdrawn below
	}
	defer func() { e.owned = vips }()
	var errs []error
	changed := false
	// Where a pass spends its time, for the slow-pass warning below.
	var phases []any
	mark := start
	phase := func(name string) {
		now := time.Now()
		phases = append(phases, name, now.Sub(mark).Round(time.Microsecond))
		mark = now
	}
	phase("plan")

	// Withdraw addresses first, so no new traffic reaches services about to go.
	for a := range e.vips {
		if _, ok := vips[a]; !ok {
			if err := e.removeAddr(a, tenantOf(a), "VIP withdrawn"); err != nil {
				errs = append(errs, err)
				continue
			}
			changed = true
		}
	}

	ops := ipvsdiff.Plan(want, e.actual, func(k ipvsdiff.SvcKey) bool { return e.ours[k] },
		func(k ipvsdiff.SvcKey, d *ipvsdiff.Svc) bool { return e.settled[k] == d })
	failed := map[ipvsdiff.SvcKey]bool{}
	for _, op := range ops {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			failed[op.Svc.Key] = true
			continue
		}
		if err := e.apply(op, tenantOf); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", op, err))
			failed[op.Svc.Key] = true
			continue
		}
		e.obs.KernelChange(opNames[op.Kind])
		// The record names services and addresses, not destinations: only
		// those changes need it rewritten.
		changed = changed || op.Kind == ipvsdiff.CreateService || op.Kind == ipvsdiff.RemoveService
	}
	// want is built afresh by each pass and not changed after: it is the
	// settled set as it stands unless some change failed.
	e.settled = want
	if len(failed) > 0 {
		e.settled = make(map[ipvsdiff.SvcKey]*ipvsdiff.Svc, len(want))
		for k, d := range want {
			if !failed[k] {
				e.settled[k] = d
			}
		}
	}
	e.stats.Ops += uint64(len(ops))
	phase("ipvs")

	// Addresses go up only once IPVS and SNAT are ready. A VIP whose SNAT
	// rule the kernel holds already (a standby's takeover; a restart that
	// outlasted the lease, whose fence withdrew the address) or that needs
	// none (DR) goes up before this pass's iptables run, which takes seconds
	// on a slow host; the rest after it. The takeover guard opens first.
	e.guardTakeovers(moved, vips, natVIPs, tenantOf)
	outlived := false // this pass outlived its lease: it adds nothing more
	addAddrs := func(ready func(netip.Addr) bool) {
		if outlived {
			return
		}
		e.pending = e.pending[:0]
		for a := range vips {
			if !e.vips[a] && ready(a) {
				e.pending = append(e.pending, a)
			}
		}
		if len(e.pending) == 0 {
			return
		}
		// Recorded before they go up: the fence withdraws only the
		// addresses the record names, should lbd die or hang from here on.
		if err := e.save(); err != nil {
			errs = append(errs, err)
			e.pending = e.pending[:0]
			return // an address the fence does not know of could outlive a hang
		}
		var added []netip.Addr
		failed := false
		for _, a := range e.pending {
			if !e.leaseHeld() {
				// The lease this pass was started under has run out: the
				// pass hung, and its plan is stale (the cluster may have
				// moved these VIPs meanwhile). Seen in the guest: a pass
				// released after 14 s added a VIP its successor served.
				// The daemon's next pass decides afresh.
				errs = append(errs, fmt.Errorf("%w: not adding %d VIP addresses from a pass that outlived it", ErrLeaseLapsed, len(e.pending)-len(added)))
				failed, outlived = true, true
				break
			}
			if err := e.addrs.Add(e.ifindex, a); err != nil {
				errs = append(errs, err)
				failed = true
				continue
			}
			e.vips[a] = true
			e.touchVIP(a)
			e.obs.KernelChange("addr_add")
			added = append(added, a)
		}
		e.pending = e.pending[:0]
		if failed {
			if err := e.save(); err != nil {
				errs = append(errs, err)
			}
		}
		if e.lapses.Load() != lapses {
			// The fence withdrew while this pass was in the kernel: what it
			// added may be gone again, and announcing an address not held
			// would draw traffic to this host. The next pass (the report
			// wakes the daemon) adds and announces them afresh, if this host
			// still owns them then; until then they are not held (fail closed).
			for _, a := range added {
				if err := e.addrs.Remove(e.ifindex, a); err != nil {
					errs = append(errs, fmt.Errorf("withdraw VIP %s the fence raced: %w", a, err))
					continue
				}
				delete(e.vips, a)
			}
			if err := e.save(); err != nil {
				errs = append(errs, err)
			}
			return
		}
		for _, a := range added {
			e.ann.Added(a, tenantOf(a))
			// From the start of this pass (which began on the commit that
			// gave this host the VIP) to the first announcement.
			e.obs.TookOver(time.Since(start))
			e.log.Info("VIP added and announced", "vip", a, "tenant", tenantOf(a), "interface", e.cfg.Interface, "after", time.Since(start).Round(time.Microsecond))
		}
	}
	// A VIP with source ranges goes up only once the kernel filters it as
	// wanted: a standby holds the filter already, so a takeover is closed
	// from its first packet and waits for no iptables run.
	filtered := func(a netip.Addr) bool {
		f, ok := filters[a]
		return !ok || e.filter.Holds(*f)
	}
	addAddrs(func(a netip.Addr) bool {
		if !filtered(a) {
			return false
		}
		if e.snat == nil {
			return true
		}
		_, nat := natVIPs[a]
		return !nat || e.snat.Present(a)
	})
	phase("early-addresses")
	if e.filter != nil {
		list := make([]srcrange.VIP, 0, len(filters))
		for _, f := range filters {
			list = append(list, *f)
		}
		if err := e.filter.Set(ctx, list); err != nil {
			errs = append(errs, err)
		}
		phase("source-ranges")
	}
	if e.snat != nil {
		list := make([]snat.VIP, 0, len(natVIPs))
		for a, ports := range natVIPs {
			list = append(list, snat.VIP{Addr: a, TCPPorts: ports})
		}
		if err := e.snat.Set(ctx, list); err != nil {
			errs = append(errs, fmt.Errorf("SNAT rules: %w", err))
		}
		phase("snat")
	}
	addAddrs(filtered)
	phase("addresses")
	if changed {
		if err := e.save(); err != nil {
			errs = append(errs, err)
		}
	}
	phase("record")
	e.stats.LastDuration = time.Since(start)
	if e.stats.LastDuration > slowPass {
		e.log.Warn("slow data-plane pass", append([]any{"took", e.stats.LastDuration.Round(time.Microsecond), "ops", len(ops)}, phases...)...)
	}
	if len(errs) > 0 {
		e.stats.Errors++
		return errors.Join(errs...)
	}
	return nil
}

// apply makes one change; tenantOf names a VIP's tenant for the log.
// ErrLeaseLapsed is returned by a Reconcile that did not add addresses
// because the lease last given to the fence had run out during the pass.
var ErrLeaseLapsed = errors.New("the serving lease ran out during the data-plane pass")

// Renew tells the fence this host may serve until until (see Fence.Renew:
// only from where lbd has just confirmed it serves). It does not wait for
// the engine's lock, so a pass stuck in the kernel does not block it.
func (e *Engine) Renew(until time.Time) error {
	if e.fence == nil {
		return nil
	}
	e.renewed(until)
	return e.fence.Renew(until)
}

// renewed records a new lease. A renewal that comes after the last lease ran
// out means the fence withdraws, or has withdrawn, every recorded address,
// and its report may not have been read yet: this is what a stopped raft
// leader does right after SIGCONT (raft counts its step-down as contact).
// Announcing them until the report arrives would draw traffic to a host
// without the addresses — seen in the guest — so they stop now, and the
// next pass adds back and announces those this member still owns.
func (e *Engine) renewed(until time.Time) {
	if prev := e.leaseUntil.Load(); prev != 0 && monotonic() >= time.Duration(prev) {
		for _, a := range e.ann.RemoveAll() {
			e.lapsedMu.Lock()
			e.lapsed[a] = true
			e.lapsedMu.Unlock()
		}
		e.lapses.Add(1)
		select {
		case e.lapsedCh <- struct{}{}:
		default:
		}
	}
	e.leaseUntil.Store(int64(monotonicAt(until)))
}

// leaseHeld reports whether the fence's lease still runs (or was never
// armed): past it the fence may have withdrawn the addresses, and after a
// SIGSTOP the announcer's timer can fire before the fence's report is read.
func (e *Engine) leaseHeld() bool {
	u := e.leaseUntil.Load()
	return u == 0 || monotonic() < time.Duration(u)
}

// Lapsed is signalled when the fence withdrew addresses because the lease
// was not renewed in time; the next Reconcile puts back those still owned.
func (e *Engine) Lapsed() <-chan struct{} { return e.lapsedCh }

// Keep tells the fence that lbd is stopping cleanly: from now on nothing in
// lbd renews the lease, and the fence gives a restart the lease to take the
// addresses over (as after a crash) instead of withdrawing them at once.
func (e *Engine) Keep() {
	if e.fence != nil {
		e.fence.Keep()
	}
}

// fenceWithdrew handles the fence's report that a lapsed lease made it
// withdraw a. It runs on its own goroutine, without mu.
func (e *Engine) fenceWithdrew(a netip.Addr) {
	e.ann.Removed(a) // no more GARPs for an address this host no longer holds
	e.lapsedMu.Lock()
	e.lapsed[a] = true
	e.lapsedMu.Unlock()
	e.lapses.Add(1)
	e.log.Warn("the fence withdrew a VIP: lbd did not renew its lease in time (hung, stopped, or out of contact)", "vip", a, "interface", e.cfg.Interface)
	select {
	case e.lapsedCh <- struct{}{}:
	default:
	}
}

// absorbLapsed forgets the addresses the fence withdrew, so this pass adds
// back those still owned; it returns the withdrawal count it has seen.
// The caller holds mu.
func (e *Engine) absorbLapsed() uint64 {
	n := e.lapses.Load()
	e.lapsedMu.Lock()
	defer e.lapsedMu.Unlock()
	changed := false
	for a := range e.lapsed {
		if e.vips[a] {
			delete(e.vips, a)
			e.touchVIP(a)
			changed = true
		}
		delete(e.lapsed, a)
	}
	if changed {
		if err := e.save(); err != nil {
			e.log.Warn("record the addresses the fence withdrew", "err", err)
		}
	}
	return n
}

// Withdraw removes every VIP address this engine added and leaves IPVS and
// SNAT alone: the connection entries must outlive a fence, since the VIPs
// may come back here or move to a member that relies on the same entries
// having been synced.
func (e *Engine) Withdraw(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	changed := false
	for a := range e.vips {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := e.removeAddr(a, e.owned[a], "VIP withdrawn (fenced; IPVS and SNAT kept)"); err != nil {
			errs = append(errs, err)
			continue
		}
		changed = true
	}
	if changed {
		if err := e.save(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeAddr takes VIP a off the interface and stops announcing it; the
// caller holds e.mu and saves the record.
func (e *Engine) removeAddr(a netip.Addr, tenant, msg string) error {
	if err := e.addrs.Remove(e.ifindex, a); err != nil {
		return fmt.Errorf("withdraw VIP %s from %s: %w", a, e.cfg.Interface, err)
	}
	e.ann.Removed(a)
	e.obs.KernelChange("addr_remove")
	delete(e.vips, a)
	e.touchVIP(a)
	e.log.Info(msg, "vip", a, "tenant", tenant, "interface", e.cfg.Interface)
	return nil
}

func (e *Engine) apply(op ipvsdiff.Op, tenantOf func(netip.Addr) string) error {
	if e.touched != nil {
		e.touched[op.Svc.Key] = true
	}
	svc := op.Svc.Service()
	switch op.Kind {
	case ipvsdiff.CreateService:
		if err := e.ipvs.CreateService(svc); err != nil {
			// Someone else's service with our key: take it over rather than fail forever.
			if uerr := e.ipvs.UpdateService(svc); uerr != nil {
				return err
			}
			e.log.Warn("took over an existing IPVS service not created by lbd", "vip", op.Svc.Key.Addr, "tenant", tenantOf(op.Svc.Key.Addr), "service", op.Svc.Key)
		}
		e.ours[op.Svc.Key] = true
		e.actual[op.Svc.Key] = &ipvsdiff.Svc{Key: op.Svc.Key, Scheduler: op.Svc.Scheduler, Flags: op.Svc.Flags, Timeout: op.Svc.Timeout, Dests: map[ipvsdiff.DestKey]ipvsdiff.Dest{}}
	case ipvsdiff.UpdateService:
		if err := e.ipvs.UpdateService(svc); err != nil {
			return err
		}
		a := e.actual[op.Svc.Key]
		a.Scheduler, a.Flags, a.Timeout = op.Svc.Scheduler, op.Svc.Flags, op.Svc.Timeout
	case ipvsdiff.RemoveService:
		if err := e.ipvs.RemoveService(svc); err != nil && !isNotExist(err) {
			return err
		}
		delete(e.actual, op.Svc.Key)
		delete(e.ours, op.Svc.Key)
	case ipvsdiff.CreateDest:
		if err := e.ipvs.CreateDestination(svc, ipvsdiff.Destination(op.Dest, op.D)); err != nil {
			if uerr := e.ipvs.UpdateDestination(svc, ipvsdiff.Destination(op.Dest, op.D)); uerr != nil {
				return err
			}
		}
		e.actual[op.Svc.Key].Dests[op.Dest] = op.D
	case ipvsdiff.UpdateDest:
		if err := e.ipvs.UpdateDestination(svc, ipvsdiff.Destination(op.Dest, op.D)); err != nil {
			return err
		}
		e.actual[op.Svc.Key].Dests[op.Dest] = op.D
	case ipvsdiff.RemoveDest:
		if err := e.ipvs.RemoveDestination(svc, ipvsdiff.Destination(op.Dest, op.D)); err != nil && !isNotExist(err) {
			return err
		}
		delete(e.actual[op.Svc.Key].Dests, op.Dest)
	}
	return nil
}

// vipTenants maps the VIP of every service in caches (services → their IPVS
// form, as in Engine.cache) to its tenant.
func vipTenants(caches ...map[*edgelbv1.VirtualService][]*ipvsdiff.Svc) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, c := range caches {
		for vs, svcs := range c {
			if len(svcs) > 0 {
				out[svcs[0].Key.Addr] = vs.Tenant // parsed already
			} else if a, err := netip.ParseAddr(vs.Vip); err == nil {
				out[a] = vs.Tenant
			}
		}
	}
	return out
}

var opNames = map[ipvsdiff.OpKind]string{
	ipvsdiff.CreateService: "service_add", ipvsdiff.UpdateService: "service_update", ipvsdiff.RemoveService: "service_remove",
	ipvsdiff.CreateDest: "dest_add", ipvsdiff.UpdateDest: "dest_update", ipvsdiff.RemoveDest: "dest_remove",
}

// IsEmptyTable reports whether err is how the kernel answers a listing of an
// empty IPVS table (or of an entry that is gone): ENOENT or ESRCH.
func IsEmptyTable(err error) bool { return isNotExist(err) }

// isNotExist: IPVS answers ESRCH for a missing service, ENOENT for a missing
// destination, which the client may also hand back as fs.ErrNotExist.
func isNotExist(err error) bool {
	return errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENOENT) || errors.Is(err, fs.ErrNotExist)
}

// Resync re-reads the kernel for this engine's services, so a change made by
// someone else (ipvsadm by hand, another program) is repaired on the next
// Reconcile. Reconcile starts one by itself every resyncEvery.
func (e *Engine) Resync() error {
	e.resyncMu.Lock()
	defer e.resyncMu.Unlock()
	return e.resync()
}

func (e *Engine) touchVIP(a netip.Addr) {
	if e.touchedVIPs != nil {
		e.touchedVIPs[a] = true
	}
}

// resync reads the kernel without the engine's lock, so reconciles go on
// meanwhile; what they change during the read is kept as they applied it
// rather than overwritten by the older reading. The caller holds resyncMu.
func (e *Engine) resync() error {
	e.mu.Lock()
	e.lastResync = time.Now()
	ours := maps.Clone(e.ours)
	e.touched, e.touchedVIPs = map[ipvsdiff.SvcKey]bool{}, map[netip.Addr]bool{}
	e.mu.Unlock()
	read, have, err := e.readKernel(func(k ipvsdiff.SvcKey) bool { return ours[k] })

	e.mu.Lock()
	defer e.mu.Unlock()
	touched, touchedVIPs := e.touched, e.touchedVIPs
	e.touched, e.touchedVIPs = nil, nil
	if err != nil {
		return err
	}
	for k := range ours {
		if touched[k] || !e.ours[k] {
			continue
		}
		if sv, ok := read[k]; ok {
			e.actual[k] = sv
		} else {
			delete(e.actual, k) // deleted behind our back: recreate
		}
	}
	e.settled = nil // compare everything against what was just read
	on := map[netip.Addr]bool{}
	for _, a := range have {
		on[a] = true
	}
	for a := range e.vips {
		if !on[a] && !touchedVIPs[a] {
			delete(e.vips, a) // lost with a link flap or by hand: re-add and re-announce
		}
	}
	// Rewriting the SNAT chains starts iptables processes (seconds on a
	// small or emulated host, with the engine locked), so only every
	// snatRepairEvery resyncs, and only the SNAT repair, not the check.
	e.resyncs++
	if e.resyncs%snatRepairEvery == 0 {
		if s, ok := e.snat.(*snat.Tables); ok {
			s.Forget()
		}
		if e.filter != nil {
			e.filter.Forget()
		}
	}
	return nil
}

// readKernel lists the IPVS services that are ours, with their
// destinations, and the addresses on the interface.
func (e *Engine) readKernel(ours func(ipvsdiff.SvcKey) bool) (map[ipvsdiff.SvcKey]*ipvsdiff.Svc, []netip.Addr, error) {
	svcs, err := e.ipvs.Services()
	if err != nil && !isNotExist(err) { // an empty table answers ENOENT
		return nil, nil, fmt.Errorf("list IPVS services: %w", err)
	}
	read := map[ipvsdiff.SvcKey]*ipvsdiff.Svc{}
	for _, s := range svcs {
		k := ipvsdiff.SvcKey{Addr: s.Address, Proto: s.Protocol, Port: s.Port}
		if !ours(k) {
			continue
		}
		sv, err := e.read(s)
		if err != nil {
			return nil, nil, err
		}
		read[k] = sv
	}
	have, err := e.addrs.List(e.ifindex)
	if err != nil {
		return nil, nil, fmt.Errorf("list addresses on %s: %w", e.cfg.Interface, err)
	}
	return read, have, nil
}

// snatRepairEvery resyncs (of resyncEvery) the SNAT chains are rewritten, in
// case someone flushed them: every 5 minutes.
const snatRepairEvery = 10

// Stats returns counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// Announcements returns GARP/NA sent and failed.
func (e *Engine) Announcements() (sent, failed uint64) { return e.ann.Counts() }

// IPVS exposes the client (for stats).
func (e *Engine) IPVS() ipvs.Client { return e.ipvs }

// Close stops announcing and leaves the kernel as it is: a restarted lbd
// adopts it, and connections keep flowing meanwhile.
func (e *Engine) Close() error {
	if e.cancel != nil {
		e.cancel()
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
