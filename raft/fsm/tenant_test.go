package fsm

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/rules"
)

// at applies op at the next index with the proposer's time t.
func (h *harness) at(t time.Time, op any) *Result {
	h.t.Helper()
	h.idx++
	cmd := command(h.idx, op)
	cmd.Time = timestamppb.New(t)
	return h.f.ApplyCommand(h.idx, cmd)
}

func gc(tenant string, silentFor time.Duration, force bool) *raftv1.DeleteTenantServices {
	return &raftv1.DeleteTenantServices{Tenant: tenant, SilentFor: durationpb.New(silentFor), Force: force, RequestedBy: "test"}
}

func tenantState(h *harness) {
	h.ok(createPool(pool("p", "10.0.0.0/28")))
	h.ok(create(svc("gone", "a", "")))
	h.ok(create(svc("gone", "b", "")))
	h.ok(create(svc("alive", "a", "")))
	h.ok(create(svc("manual", "x", "")))
}

func TestTenantHeartbeatAndList(t *testing.T) {
	h := newHarness(t)
	tenantState(h)
	t0 := epoch.Add(time.Hour)
	rev := h.f.Revision()
	if r := h.at(t0, &raftv1.RenewTenantHeartbeat{Tenant: "gone"}); r.Code != codes.OK || !r.LastSeen.AsTime().Equal(t0) {
		t.Fatalf("heartbeat: %v %s, last seen %v", r.Code, r.Message, r.LastSeen.AsTime())
	}
	// A lagging proposer's clock does not move it back.
	if r := h.at(t0.Add(-time.Minute), &raftv1.RenewTenantHeartbeat{Tenant: "gone"}); !r.LastSeen.AsTime().Equal(t0) {
		t.Errorf("an older heartbeat moved last seen to %v", r.LastSeen.AsTime())
	}
	h.at(t0.Add(2*time.Hour), &raftv1.RenewTenantHeartbeat{Tenant: "alive"})
	h.at(t0.Add(2*time.Hour), &raftv1.RenewTenantHeartbeat{Tenant: "empty"})
	if h.f.Revision() != rev {
		t.Errorf("heartbeats moved the revision: they are status, not a change of services")
	}
	ts, _ := h.f.Tenants()
	got := map[string]TenantInfo{}
	for _, x := range ts {
		got[x.Name] = x
	}
	if len(ts) != 4 || got["gone"].Services != 2 || !got["gone"].LastSeen.Equal(t0) || got["manual"].LastSeen != (time.Time{}) ||
		got["empty"].Services != 0 || len(got["alive"].Pools) != 1 || got["alive"].Pools[0] != "p" {
		t.Fatalf("tenants: %+v", ts)
	}
	now := t0.Add(2*time.Hour + time.Minute)
	if !got["gone"].Silent(now, 10*time.Minute) || got["alive"].Silent(now, 10*time.Minute) || got["manual"].Silent(now, 10*time.Minute) {
		t.Errorf("silence at %v: gone %v alive %v manual %v (never seen is not silent)", now,
			got["gone"].Silent(now, 10*time.Minute), got["alive"].Silent(now, 10*time.Minute), got["manual"].Silent(now, 10*time.Minute))
	}
	// Heartbeats survive a raft snapshot and restore.
	g := restored(t, persist(t, h.f))
	if !g.LastSeen("gone").Equal(t0) || !g.LastSeen("empty").Equal(t0.Add(2*time.Hour)) {
		t.Errorf("restored heartbeats: gone %v empty %v", g.LastSeen("gone"), g.LastSeen("empty"))
	}
}

func TestTenantGC(t *testing.T) {
	h := newHarness(t)
	tenantState(h)
	t0 := epoch.Add(time.Hour)
	h.at(t0, &raftv1.RenewTenantHeartbeat{Tenant: "gone"})
	h.at(t0, &raftv1.RenewTenantHeartbeat{Tenant: "alive"})
	h.at(t0.Add(50*time.Minute), &raftv1.RenewTenantHeartbeat{Tenant: "alive"})

	refuse := func(op *raftv1.DeleteTenantServices, at time.Time, code codes.Code, reason string) {
		t.Helper()
		before := h.snap()
		r := h.at(at, op)
		if r.Code != code || r.Reason != reason {
			t.Fatalf("gc %s: %v %s %q, want %v %s", op.Tenant, r.Code, r.Reason, r.Message, code, reason)
		}
		if _, ok := errinfo.Of(r.Err()); !ok {
			t.Errorf("gc %s: no ErrorInfo on %v", op.Tenant, r.Err())
		}
		if !proto.Equal(before, h.snap()) {
			t.Errorf("refused gc of %s changed the state", op.Tenant)
		}
	}
	now := t0.Add(time.Hour)
	refuse(gc("alive", 30*time.Minute, false), now, codes.FailedPrecondition, errinfo.TenantNotSilent)
	refuse(gc("manual", 30*time.Minute, false), now, codes.FailedPrecondition, errinfo.TenantNotSilent)
	refuse(gc("nobody", 0, true), now, codes.NotFound, errinfo.TenantNotFound)

	// The dry run and the command decide alike.
	plan, r := h.f.TenantGC("gone", now, 30*time.Minute, false)
	if r != nil || len(plan) != 2 {
		t.Fatalf("plan: %v %v", plan, r)
	}
	rev := h.f.Revision()
	res := h.at(now, gc("gone", 30*time.Minute, false))
	if res.Code != codes.OK || len(res.Services) != 2 || res.Services[0].Name != "a" || res.Services[1].Name != "b" {
		t.Fatalf("gc gone: %v %s %v", res.Code, res.Message, res.Services)
	}
	evs, _, _ := h.f.EventsSince(rev)
	if len(evs) != 2 || evs[0].Reason != ReasonTenantGC {
		t.Errorf("gc events: %v", evs)
	}
	if h.f.TenantServices("gone") != 0 || !h.f.LastSeen("gone").IsZero() {
		t.Errorf("gone still has %d services, heartbeat %v", h.f.TenantServices("gone"), h.f.LastSeen("gone"))
	}
	if h.f.TenantServices("alive") != 1 || h.f.TenantServices("manual") != 1 {
		t.Errorf("gc of one tenant touched others: alive %d manual %d", h.f.TenantServices("alive"), h.f.TenantServices("manual"))
	}
	// Force takes a tenant that never spoke.
	if r := h.at(now, gc("manual", 0, true)); r.Code != codes.OK || len(r.Services) != 1 {
		t.Fatalf("forced gc: %v %s", r.Code, r.Message)
	}
	// The freed addresses are allocated again.
	h.ok(create(svc("new", "a", "")))
}

func TestTenantCommandsMalformed(t *testing.T) {
	h := newHarness(t)
	h.refused(&raftv1.RenewTenantHeartbeat{}, codes.InvalidArgument, "without a tenant")
	h.refused(&raftv1.DeleteTenantServices{}, codes.InvalidArgument, "without a tenant")
	h.refused(&raftv1.DeleteTenantServices{Tenant: "x", SilentFor: durationpb.New(-time.Second)}, codes.InvalidArgument, "silent_for")
}

// A heartbeat's report of orphaned services is kept with the tenant,
// replaced by the next heartbeat, shown only for services that still exist,
// and survives a snapshot and restore.
func TestTenantHeartbeatOrphans(t *testing.T) {
	h := newHarness(t)
	tenantState(h)
	t0 := epoch.Add(time.Hour)
	orphaned := func(f *FSM, tenant string) []string {
		ts, _ := f.Tenants()
		for _, x := range ts {
			if x.Name == tenant {
				return x.Orphaned
			}
		}
		return nil
	}
	// Unsorted, with a duplicate and a name lbd does not have.
	if r := h.at(t0, &raftv1.RenewTenantHeartbeat{Tenant: "gone", OrphanedServices: []string{"b", "nosuch", "a", "b"}}); r.Code != codes.OK {
		t.Fatalf("heartbeat with orphans: %v %s", r.Code, r.Message)
	}
	if got := orphaned(h.f, "gone"); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("orphaned after the first report: %v, want [a b] (nosuch does not exist)", got)
	}
	if got := orphaned(h.f, "alive"); len(got) != 0 {
		t.Errorf("another tenant's report leaked to alive: %v", got)
	}
	// The next heartbeat replaces the report, also when it is older by the clock.
	h.at(t0.Add(-time.Second), &raftv1.RenewTenantHeartbeat{Tenant: "gone", OrphanedServices: []string{"b"}})
	if got := orphaned(h.f, "gone"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("orphaned after the second report: %v, want [b]", got)
	}
	// Survives a snapshot and restore.
	g := restored(t, persist(t, h.f))
	if got := orphaned(g, "gone"); !slices.Equal(got, []string{"b"}) {
		t.Errorf("restored orphans: %v, want [b]", got)
	}
	// A service deleted since is no longer shown.
	h.ok(deleteVS("gone", "b"))
	if got := orphaned(h.f, "gone"); len(got) != 0 {
		t.Errorf("a deleted service is still shown orphaned: %v", got)
	}
	// A heartbeat without a report (or an old log entry) clears it.
	h.at(t0.Add(time.Minute), &raftv1.RenewTenantHeartbeat{Tenant: "gone", OrphanedServices: []string{"a"}})
	h.at(t0.Add(2*time.Minute), &raftv1.RenewTenantHeartbeat{Tenant: "gone"})
	if got := orphaned(h.f, "gone"); len(got) != 0 {
		t.Errorf("a heartbeat without orphans left %v", got)
	}
	// Bad names and too long a list are refused, typed.
	for _, names := range [][]string{{"Bad_Name"}, make([]string, rules.MaxOrphanedServices+1)} {
		for i := range names {
			if names[i] == "" {
				names[i] = fmt.Sprintf("s%d", i)
			}
		}
		r := h.at(t0.Add(3*time.Minute), &raftv1.RenewTenantHeartbeat{Tenant: "gone", OrphanedServices: names})
		if r.Code != codes.InvalidArgument || r.Reason != errinfo.InvalidField {
			t.Errorf("%d names (%.20s...): %v %s %s, want InvalidArgument %s", len(names), names[0], r.Code, r.Reason, r.Message, errinfo.InvalidField)
		}
	}
}
