package fsm

import (
	"slices"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// Tenant heartbeats: each cloud provider renews its tenant's "last seen", so
// that an operator can tell a cluster that is gone (its CCM silent for hours)
// from one that merely has not changed anything, and remove its VIPs.

// TenantInfo is one tenant as the state knows it.
type TenantInfo struct {
	Name string
	// LastSeen is the last heartbeat; zero when the tenant never sent one.
	LastSeen time.Time
	Services int
	Pools    []string // sorted, distinct
	// Orphaned are the services its cloud provider last reported orphaned
	// (their Kubernetes Service is gone) that still exist, sorted.
	Orphaned []string
}

// Silent reports whether the tenant sent a heartbeat and none since
// threshold before now. A tenant that never sent one is not silent: its
// services were made by hand or by a cloud provider older than heartbeats,
// and nothing says it is gone.
func (t TenantInfo) Silent(now time.Time, threshold time.Duration) bool {
	return !t.LastSeen.IsZero() && now.Sub(t.LastSeen) >= threshold
}

// Tenants lists every tenant with services or a heartbeat, by name.
func (f *FSM) Tenants() ([]TenantInfo, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	byName := map[string]*TenantInfo{}
	get := func(n string) *TenantInfo {
		t, ok := byName[n]
		if !ok {
			t = &TenantInfo{Name: n}
			byName[n] = t
		}
		return t
	}
	for n, ts := range f.st.heartbeats {
		get(n).LastSeen = ts.AsTime()
	}
	pools := map[string]map[string]bool{}
	for k, vs := range f.st.services {
		t := get(k.Tenant)
		t.Services++
		if vs.Pool != "" {
			if pools[k.Tenant] == nil {
				pools[k.Tenant] = map[string]bool{}
			}
			pools[k.Tenant][vs.Pool] = true
		}
	}
	out := make([]TenantInfo, 0, len(byName))
	for n, t := range byName {
		for p := range pools[n] {
			t.Pools = append(t.Pools, p)
		}
		sort.Strings(t.Pools)
		// A reported name that is gone from the state (the CCM deleted it
		// since, or an operator did) is no orphan to show.
		for _, name := range f.st.orphans[n] {
			if _, ok := f.st.services[Key{n, name}]; ok {
				t.Orphaned = append(t.Orphaned, name)
			}
		}
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, f.revision
}

// LastSeen returns a tenant's last heartbeat (zero: none).
func (f *FSM) LastSeen(tenant string) time.Time {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if ts, ok := f.st.heartbeats[tenant]; ok {
		return ts.AsTime()
	}
	return time.Time{}
}

// TenantGC is what deleting a tenant's services would do at now: the
// services, or the refusal. The API's dry run and the command's apply both
// decide here, so a dry run says what the real one does.
func (f *FSM) TenantGC(tenant string, now time.Time, silentFor time.Duration, force bool) ([]*edgelbv1.VirtualService, *Result) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	keys, r := f.st.tenantGC(tenant, now, silentFor, force)
	if r != nil {
		return nil, r
	}
	out := make([]*edgelbv1.VirtualService, 0, len(keys))
	for _, k := range keys {
		out = append(out, f.st.services[k])
	}
	return out, nil
}

func (s *state) tenantGC(tenant string, now time.Time, silentFor time.Duration, force bool) ([]Key, *Result) {
	ts, seen := s.heartbeats[tenant]
	if s.tenants[tenant] == 0 && !seen {
		return nil, failInfo(codes.NotFound, errinfo.TenantNotFound, map[string]string{"tenant": tenant},
			"tenant %s has no virtual services and never sent a heartbeat (lbctl tenant list)", tenant)
	}
	if !force {
		if !seen {
			return nil, failInfo(codes.FailedPrecondition, errinfo.TenantNotSilent, map[string]string{"tenant": tenant},
				"tenant %s never sent a heartbeat, so nothing says its cluster is gone (its services may be an operator's); add --force to delete them anyway", tenant)
		}
		if silence := now.Sub(ts.AsTime()); silence < silentFor {
			return nil, failInfo(codes.FailedPrecondition, errinfo.TenantNotSilent,
				map[string]string{"tenant": tenant, "last_seen": ts.AsTime().UTC().Format(time.RFC3339), "silent_for": silence.Round(time.Second).String()},
				"tenant %s was last seen %s ago, less than the %s it must be silent; its cluster may still be alive: check it, or add --force",
				tenant, silence.Round(time.Second), silentFor)
		}
	}
	var keys []Key
	for _, k := range s.sortedKeys() {
		if k.Tenant == tenant {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

func (a *applier) renewHeartbeat(c *raftv1.RenewTenantHeartbeat) *Result {
	// Status, not spec: no event, no revision, like backend health. Only
	// forward: a proposer whose clock lags must not make a tenant look older.
	hb := a.st().heartbeats
	if cur, ok := hb[c.Tenant]; !ok || a.time.AsTime().After(cur.AsTime()) {
		hb[c.Tenant] = a.time
	}
	// The report replaces the previous one whatever the clocks say: one
	// cloud provider sends its heartbeats one after another, so the log's
	// order is the order of its sweeps. Sorted and distinct, so members and
	// snapshots hold the same whatever order the proposer sent.
	if names := distinctSorted(c.OrphanedServices); len(names) > 0 {
		a.st().orphans[c.Tenant] = names
	} else {
		delete(a.st().orphans, c.Tenant)
	}
	return &Result{LastSeen: hb[c.Tenant]}
}

func (a *applier) deleteTenantServices(c *raftv1.DeleteTenantServices) *Result {
	st := a.st()
	last := st.heartbeats[c.Tenant]
	keys, r := st.tenantGC(c.Tenant, a.time.AsTime(), c.SilentFor.AsDuration(), c.Force)
	if r != nil {
		return r
	}
	res := &Result{LastSeen: last}
	for _, k := range keys {
		old := st.services[k]
		st.deleteService(k)
		a.emit(del, ReasonTenantGC, old)
		res.Services = append(res.Services, cloneVS(old))
	}
	// The cluster is gone: forget it, so it leaves lbctl tenant list. A
	// cloud provider that comes back starts a new heartbeat.
	delete(st.heartbeats, c.Tenant)
	delete(st.orphans, c.Tenant)
	a.f.log.Warn("deleted a tenant's virtual services", "index", a.idx, "tenant", c.Tenant, "services", len(keys),
		"force", c.Force, "requested_by", c.RequestedBy)
	return res
}

// ReasonTenantGC is the event reason of services deleted with their tenant.
const ReasonTenantGC = "tenant gc"

func distinctSorted(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := append([]string(nil), in...)
	sort.Strings(out)
	return slices.Compact(out)
}

func cloneHeartbeats(m map[string]*timestamppb.Timestamp, orphans map[string][]string) []*raftv1.TenantHeartbeat {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*raftv1.TenantHeartbeat, 0, len(names))
	for _, n := range names {
		out = append(out, &raftv1.TenantHeartbeat{Tenant: n, LastSeen: m[n], OrphanedServices: orphans[n]})
	}
	return out
}
