package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node"
)

func sinceSeconds(t time.Time) float64 { return time.Since(t).Seconds() }

// RegisterNode adds the collectors that read this member's raft status and
// replicated state at scrape time.
func (m *Metrics) RegisterNode(n *node.Node, self string) error {
	if err := m.Registry.Register(newRaftCollector(n)); err != nil {
		return err
	}
	return m.Registry.Register(newStateCollector(n.FSM, self))
}

// stateCollector reads the replicated state (this member's replica) at scrape time.
type stateCollector struct {
	f    *fsm.FSM
	self string

	services, vips, unowned, pools, members, revision, owned, backends *prometheus.Desc
	tenantSeen, tenantServices, tenantOrphaned                         *prometheus.Desc
}

func newStateCollector(f *fsm.FSM, self string) *stateCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(ns, "fsm", name), help, labels, nil)
	}
	return &stateCollector{
		f: f, self: self,
		services: d("virtual_services", "Virtual services in the replicated state."),
		vips:     d("vips", "Distinct VIP addresses in the replicated state."),
		unowned:  d("vips_unowned", "VIP addresses of l2 pools no member owns (nothing answers for them); bgp-pool VIPs have no owner by design and are not counted."),
		pools:    d("address_pools", "Address pools in the replicated state."),
		members:  d("members", "Members in the member table, by state.", "state"),
		revision: d("revision", "Log index of the last change to the replicated state."),
		owned:    d("vips_assigned", "VIP addresses the replicated state assigns to this member."),
		backends: d("backends", "Backends of all virtual services, by health state reported by their owners (unknown, healthy, unhealthy) and drained.", "health", "drained"),
		tenantSeen: prometheus.NewDesc(prometheus.BuildFQName(ns, "tenant", "last_seen_seconds"),
			"Unix time of the tenant's last cloud-provider heartbeat (absent: it never sent one). time() minus it is the silence.", []string{"tenant"}, nil),
		tenantServices: prometheus.NewDesc(prometheus.BuildFQName(ns, "tenant", "virtual_services"),
			"Virtual services of the tenant.", []string{"tenant"}, nil),
		tenantOrphaned: prometheus.NewDesc(prometheus.BuildFQName(ns, "tenant", "orphaned_services"),
			"Virtual services of the tenant that its cloud provider last reported orphaned (their Kubernetes Service is gone) and that still exist.", []string{"tenant"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.services, c.vips, c.unowned, c.pools, c.members, c.revision, c.owned, c.backends, c.tenantSeen, c.tenantServices, c.tenantOrphaned} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	services := 0
	vipOwner := map[string]string{}
	type bk struct{ health, drained string }
	backends := map[bk]int{}
	for _, h := range []string{"unknown", "healthy", "unhealthy"} {
		for _, dr := range []string{"false", "true"} {
			backends[bk{h, dr}] = 0
		}
	}
	// bgp-pool VIPs have no owner by design (lbd/bgp): never counted unowned.
	bgpPools := map[string]bool{}
	for _, p := range c.f.Pools() {
		if p.GetAnnounceMode() == edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP {
			bgpPools[p.Name] = true
		}
	}
	rev := c.f.View(fsm.Filter{}, func(vs *edgelbv1.VirtualService) {
		services++
		owner := vs.Owner
		if owner == "" && vs.Pool != "" && bgpPools[vs.Pool] {
			owner = "(bgp)"
		}
		if o, seen := vipOwner[vs.Vip]; !seen || o == "" {
			vipOwner[vs.Vip] = owner
		}
		for _, b := range vs.Backends {
			h := "unknown"
			switch b.GetHealth().GetState() {
			case edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY:
				h = "healthy"
			case edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY:
				h = "unhealthy"
			}
			dr := "false"
			if b.Drained {
				dr = "true"
			}
			backends[bk{h, dr}]++
		}
	})
	unowned, mine := 0, 0
	for _, o := range vipOwner {
		if o == "" {
			unowned++
		}
		if o == c.self {
			mine++
		}
	}
	g(c.services, float64(services))
	g(c.vips, float64(len(vipOwner)))
	g(c.unowned, float64(unowned))
	g(c.owned, float64(mine))
	g(c.revision, float64(rev))
	g(c.pools, float64(len(c.f.Pools())))
	byState := map[string]int{"active": 0, "draining": 0, "left": 0}
	for _, m := range c.f.Members() {
		s := strings.ToLower(strings.TrimPrefix(m.State.String(), "MEMBER_STATE_"))
		byState[s]++
	}
	for s, n := range byState {
		g(c.members, float64(n), s)
	}
	for k, n := range backends {
		g(c.backends, float64(n), k.health, k.drained)
	}
	// Every member exports them from its replica: an alert fires while any
	// member is scraped, also when the leader is gone.
	ts, _ := c.f.Tenants()
	for _, t := range ts {
		if !t.LastSeen.IsZero() {
			g(c.tenantSeen, float64(t.LastSeen.UnixNano())/1e9, t.Name)
		}
		g(c.tenantServices, float64(t.Services), t.Name)
		g(c.tenantOrphaned, float64(len(t.Orphaned)), t.Name)
	}
}

// ownershipLabel is a reason's label on edgelb_ownership_assignments_total: its
// enum name without the prefix, in lower case ("owner_unreachable").
func ownershipLabel(r edgelbv1.OwnershipReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "OWNERSHIP_REASON_"))
}

// ObserveOwnership follows f's events and counts ownership changes by reason,
// until stop is closed. Every member applies the same commits, so every
// member counts the same; the dashboard takes max() across members.
func (m *Metrics) ObserveOwnership(f *fsm.FSM, stop <-chan struct{}) {
	for v := range edgelbv1.OwnershipReason_name {
		if r := edgelbv1.OwnershipReason(v); r != edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED {
			m.OwnershipCommits.WithLabelValues(ownershipLabel(r))
		}
	}
	// Count from the revision applied now, not from whenever the goroutine
	// first runs: commits applied in between would go uncounted.
	rev := f.Revision()
	go func() {
		for {
			ch := f.Changed()
			evs, cur, ok := f.EventsSince(rev)
			if !ok {
				rev = cur // history trimmed (or restored): count from here
			} else {
				for _, e := range evs {
					if e.GetVirtualService() == nil || e.Type != edgelbv1.EventType_EVENT_TYPE_PUT {
						continue
					}
					// The FSM sets the reason on every event that changes an
					// owner, creates with their first owner included.
					if r := e.GetOwnershipReason(); r != edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED {
						m.OwnershipCommits.WithLabelValues(ownershipLabel(r)).Inc()
					}
				}
				rev = max(rev, cur)
			}
			select {
			case <-stop:
				return
			case <-ch:
			}
		}
	}()
}
