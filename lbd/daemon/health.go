package daemon

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgelb/edgelb/lbd/bgp"
	"github.com/edgelb/edgelb/lbd/health"
	"github.com/edgelb/edgelb/lbd/ownership"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
)

// healthReportDelay batches transitions into one raft entry: a node that dies
// fails every check of every VIP on it within one interval.
const healthReportDelay = 50 * time.Millisecond

// maxHealthUpdates bounds one SetBackendHealth entry (~100 bytes an update).
const maxHealthUpdates = 2000

var protoState = map[health.State]edgelbv1.BackendHealthState{
	health.Unknown:   edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNKNOWN,
	health.Healthy:   edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY,
	health.Unhealthy: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY,
}

// healthReports collects the checker's transitions for checkLoop to publish.
type healthReports struct {
	mu      sync.Mutex
	pending map[health.Key]health.Status
	signal  chan struct{}
}

func (r *healthReports) add(k health.Key, st health.Status) {
	r.mu.Lock()
	r.pending[k] = st
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *healthReports) take() map[health.Key]health.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	batch := r.pending
	r.pending = map[health.Key]health.Status{}
	return batch
}

// healthDial opens the health probes' connections; nil is the plain dialer.
// Tests point it at loopback: backends may not be loopback addresses, and a
// test must send no traffic anywhere else.
var healthDial func(ctx context.Context, network, addr string) (net.Conn, error)

// newChecker sets d.checker up; checkLoop runs it.
func (d *Daemon) newChecker() *healthReports {
	r := &healthReports{pending: map[health.Key]health.Status{}, signal: make(chan struct{}, 1)}
	d.checker = health.New(health.Options{
		Logger:      d.log.With("component", "health"),
		DialContext: healthDial,
		OnProbe: func(k health.Key, ok bool, lat time.Duration) {
			if m := d.Metrics(); m != nil {
				m.Checked(k.Spec.Type.String(), ok, lat)
			}
		},
		OnTransition: func(k health.Key, st health.Status) {
			if m := d.Metrics(); m != nil {
				m.Transition(st.State == health.Healthy)
			}
			r.add(k, st)
		},
	})
	return r
}

// checkLoop runs the health checks of the backends of the VIPs this member
// owns or would take over, and publishes the owned ones' transitions through
// raft, where the reconciler (weight 0 for unhealthy backends), the API and
// Watch see them, and where a new owner finds them after a failover.
func (d *Daemon) checkLoop(ctx context.Context, r *healthReports) {
	c := d.checker
	go c.Run(ctx)
	// refs maps each check this member runs to the backends it stands for:
	// those of the VIPs it owns, and of the VIPs it would inherit if their
	// owner failed now, so a takeover starts from results of its own. Only
	// the owned ones are published. (One map: at 10k VIPs × 50 backends
	// each costs tens of megabytes.)
	var refs map[health.Key][]health.Ref
	owned := map[fsm.Key]bool{}
	others := map[fsm.Key]bool{} // services another member owned at the last pass
	// bgp-pool VIPs have no owner (lbd/bgp): the raft leader checks their
	// backends and publishes the results, one reporter at a time. A change
	// of leader is noticed within a second.
	leaderTick := time.NewTicker(time.Second)
	defer leaderTick.Stop()
	for {
		changed := d.node.FSM.Changed()
		all, _ := d.node.FSM.Shared(fsm.Filter{})
		succ := ownership.Successors(all, d.node.FSM.Members())
		lead := d.node.IsLeader()
		var bgpPools map[string]*edgelbv1.AddressPool
		if lead {
			bgpPools = bgp.Pools(d.node.FSM.Pools())
		}
		prevOthers := others
		byKey := make(map[fsm.Key]*edgelbv1.VirtualService, len(owned))
		owned = make(map[fsm.Key]bool, len(owned))
		others = make(map[fsm.Key]bool, len(others))
		var watched, inherited []*edgelbv1.VirtualService
		for _, vs := range all {
			k := fsm.Key{Tenant: vs.Tenant, Name: vs.Name}
			if vs.Owner != "" && vs.Owner != d.cfg.ID {
				others[k] = true
			}
			switch {
			case vs.Owner == d.cfg.ID:
				owned[k] = true
				if prevOthers[k] {
					inherited = append(inherited, vs)
				}
			case lead && vs.Owner == "" && bgp.Mode(vs, bgpPools):
				owned[k] = true
			case succ[vs.Vip] == d.cfg.ID:
			default:
				continue
			}
			watched = append(watched, vs)
			byKey[k] = vs
		}
		refs = nil // let the old map go before the new one is built
		refs = health.Targets(watched)
		keys := make([]health.Key, 0, len(refs))
		for k := range refs {
			keys = append(keys, k)
		}
		c.SetTargetsFrom(keys, func(k health.Key) health.State { return publishedState(byKey, refs[k]) })
		// A VIP just inherited: what this member found while standing by
		// replaces what the FSM holds, which the old owner may have failed
		// to update before it died.
		for k, rs := range health.Targets(inherited) {
			if st, ok := c.Status(k); ok && st.State != health.Unknown && st.State != publishedState(byKey, rs) {
				r.add(k, st)
			}
		}
	wait:
		select {
		case <-ctx.Done():
			return
		case <-changed:
			time.Sleep(coalesce)
		case <-r.signal:
			time.Sleep(healthReportDelay)
			d.publishHealth(ctx, r.take(), refs, owned)
		case <-leaderTick.C:
			if d.node.IsLeader() == lead {
				goto wait
			}
		}
	}
}

// publishedState is the health the FSM holds for the backends a check stands
// for, read from the services at hand (no copies: this runs per check).
func publishedState(byKey map[fsm.Key]*edgelbv1.VirtualService, refs []health.Ref) health.State {
	for _, r := range refs {
		vs := byKey[fsm.Key{Tenant: r.Tenant, Name: r.Name}]
		if vs == nil {
			continue
		}
		for _, b := range vs.Backends {
			if b.Address == r.Address && b.Port == r.Port {
				switch b.GetHealth().GetState() {
				case edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY:
					return health.Unhealthy
				case edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY:
					return health.Healthy
				}
			}
		}
	}
	return health.Unknown
}

func (d *Daemon) publishHealth(ctx context.Context, batch map[health.Key]health.Status, refs map[health.Key][]health.Ref, owned map[fsm.Key]bool) {
	var ups []*raftv1.HealthUpdate
	var lines []healthLine
	debug := d.log.Enabled(ctx, slog.LevelDebug)
	for k, st := range batch {
		var h *edgelbv1.BackendHealth
		for _, r := range refs[k] {
			sk := fsm.Key{Tenant: r.Tenant, Name: r.Name}
			if !owned[sk] {
				// A VIP this member would inherit: its owner reports.
				if debug {
					lines = append(lines, healthLine{svc: sk, check: k, st: st})
				}
				continue
			}
			if h == nil {
				h = &edgelbv1.BackendHealth{State: protoState[st.State], LastError: st.LastError,
					LastCheckTime: timestamppb.New(st.LastCheck), LastTransitionTime: timestamppb.New(st.LastTransition)}
			}
			ups = append(ups, &raftv1.HealthUpdate{Tenant: r.Tenant, Name: r.Name, Address: r.Address, Port: r.Port, Health: h, Reporter: d.cfg.ID})
			lines = append(lines, healthLine{svc: sk, check: k, st: st, owned: true})
		}
	}
	d.logHealth(lines)
	if len(ups) == 0 {
		return
	}
	// A dead node fails every check of every VIP on it at once: commit in
	// chunks so no single log entry grows to megabytes.
	for len(ups) > 0 {
		n := min(len(ups), maxHealthUpdates)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := d.srv.Propose(cctx, &raftv1.Command{Op: &raftv1.Command_SetBackendHealth{SetBackendHealth: &raftv1.SetBackendHealth{Updates: ups[:n]}}})
		cancel()
		if err != nil {
			// The data plane still got nothing wrong: it follows the FSM. The
			// next transition or the owner's next start republishes.
			d.log.Warn("publish backend health", "updates", n, "err", err)
		}
		ups = ups[n:]
	}
}

// healthLine is one service a health transition concerns.
type healthLine struct {
	svc   fsm.Key
	check health.Key
	st    health.Status
	owned bool // else this member only stands by for it
}

// logHealth writes a line per service a transition concerns, each naming the
// VIP and tenant, so an operator can grep one tenant's or one VIP's lines;
// the VIPs come from one pass over the FSM.
func (d *Daemon) logHealth(lines []healthLine) {
	if len(lines) == 0 {
		return
	}
	vips := make(map[fsm.Key]string, len(lines))
	for _, l := range lines {
		vips[l.svc] = ""
	}
	all, _ := d.node.FSM.All()
	for _, vs := range all {
		if _, ok := vips[fsm.Key{Tenant: vs.Tenant, Name: vs.Name}]; ok {
			vips[fsm.Key{Tenant: vs.Tenant, Name: vs.Name}] = vs.Vip
		}
	}
	for _, l := range lines {
		args := []any{"vip", vips[l.svc], "tenant", l.svc.Tenant, "service", l.svc.Name, "backend", l.check.String(), "state", l.st.State.String(), "error", l.st.LastError}
		if l.owned {
			d.log.Info("backend health changed", args...)
		} else {
			d.log.Debug("backend health changed (standing by)", args...)
		}
	}
}
