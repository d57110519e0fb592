package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

func tenantClient(t testing.TB, addr string) edgelbv1.TenantServiceClient {
	return edgelbv1.NewTenantServiceClient(dial(t, addr))
}

// Heartbeats and tenant gc through a follower of a real three-member cluster:
// replicated to every member, exported as metrics, and refused with the
// right code and ErrorInfo for bad input.
func TestTenantHeartbeatAndGC(t *testing.T) {
	ds := startMetricsCluster(t, 3)
	_, follower := leaderAndFollower(t, ds)
	setupPool(t, follower.Addr())
	vs := client(t, follower.Addr())
	tc := tenantClient(t, follower.Addr())
	ctx := context.Background()
	for _, x := range []struct{ tenant, name string }{{"gone", "a"}, {"gone", "b"}, {"alive", "a"}} {
		s := newService(0)
		s.Tenant, s.Name = x.tenant, x.name
		if _, err := vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: s}); err != nil {
			t.Fatal(err)
		}
	}
	// "nosuch" is not in lbd: reported, never shown.
	hb, err := tc.RenewTenantHeartbeat(ctx, &edgelbv1.RenewTenantHeartbeatRequest{Tenant: "gone", OrphanedServices: []string{"nosuch", "a"}})
	if err != nil || hb.GetLastSeen() == nil {
		t.Fatalf("heartbeat: %v %v", hb, err)
	}
	for _, d := range ds {
		waitFor(t, 10*time.Second, "heartbeat replicated to "+d.cfg.ID, func() bool { return d.Node().FSM.LastSeen("gone").Equal(hb.GetLastSeen().AsTime()) })
	}
	list, err := tc.ListTenants(ctx, &edgelbv1.ListTenantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Tenants) != 2 || list.Tenants[0].Name != "alive" || list.Tenants[0].LastSeen != nil || list.Tenants[1].VirtualServices != 2 ||
		len(list.Tenants[1].Pools) != 1 || list.Tenants[1].Pools[0] != "bench" || list.ServerTime == nil ||
		len(list.Tenants[1].OrphanedServices) != 1 || list.Tenants[1].OrphanedServices[0] != "a" {
		t.Fatalf("tenants: %v", list)
	}
	for _, d := range ds {
		_, body := get(t, "http://"+d.MetricsAddr()+"/metrics")
		if v, ok := sample(t, body, `edgelb_tenant_last_seen_seconds{tenant="gone"}`); !ok || int64(v) != hb.GetLastSeen().AsTime().Unix() {
			t.Errorf("%s: edgelb_tenant_last_seen_seconds{gone} = %v (%v), want %d", d.cfg.ID, v, ok, hb.GetLastSeen().AsTime().Unix())
		}
		if _, ok := sample(t, body, `edgelb_tenant_last_seen_seconds{tenant="alive"}`); ok {
			t.Errorf("%s: a tenant without heartbeat has a last-seen series", d.cfg.ID)
		}
		if v, _ := sample(t, body, `edgelb_tenant_virtual_services{tenant="gone"}`); v != 2 {
			t.Errorf("%s: edgelb_tenant_virtual_services{gone} = %v, want 2", d.cfg.ID, v)
		}
		if v, _ := sample(t, body, `edgelb_tenant_orphaned_services{tenant="gone"}`); v != 1 {
			t.Errorf("%s: edgelb_tenant_orphaned_services{gone} = %v, want 1 (replicated)", d.cfg.ID, v)
		}
	}

	refused := func(what string, req *edgelbv1.DeleteTenantServicesRequest, code codes.Code, reason, msg string) {
		t.Helper()
		_, err := tc.DeleteTenantServices(ctx, req)
		if status.Code(err) != code || errinfo.Reason(err) != reason || !strings.Contains(status.Convert(err).Message(), msg) {
			t.Errorf("%s: %v (reason %q); want %v %s saying %q", what, err, errinfo.Reason(err), code, reason, msg)
		}
	}
	refused("not silent", &edgelbv1.DeleteTenantServicesRequest{Tenant: "gone", SilentFor: durationpb.New(time.Hour)}, codes.FailedPrecondition, errinfo.TenantNotSilent, "add --force")
	refused("never seen", &edgelbv1.DeleteTenantServicesRequest{Tenant: "alive", SilentFor: durationpb.New(time.Second)}, codes.FailedPrecondition, errinfo.TenantNotSilent, "never sent a heartbeat")
	refused("typo", &edgelbv1.DeleteTenantServicesRequest{Tenant: "gnoe", Force: true}, codes.NotFound, errinfo.TenantNotFound, "known tenants: alive, gone")
	refused("no threshold", &edgelbv1.DeleteTenantServicesRequest{Tenant: "gone"}, codes.InvalidArgument, errinfo.InvalidField, "silent_for")
	refused("negative threshold", &edgelbv1.DeleteTenantServicesRequest{Tenant: "gone", SilentFor: durationpb.New(-time.Second)}, codes.InvalidArgument, errinfo.InvalidField, "non-negative")
	refused("no tenant", &edgelbv1.DeleteTenantServicesRequest{Force: true}, codes.InvalidArgument, errinfo.InvalidField, "tenant")
	if _, err := tc.RenewTenantHeartbeat(ctx, &edgelbv1.RenewTenantHeartbeatRequest{Tenant: "Bad Name"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("heartbeat of an invalid tenant name: %v", err)
	}

	// Silent for a second: a dry run lists, changes nothing; the real one
	// deletes exactly that tenant's services, on every member.
	time.Sleep(1100 * time.Millisecond)
	gc := &edgelbv1.DeleteTenantServicesRequest{Tenant: "gone", SilentFor: durationpb.New(time.Second), DryRun: true}
	dry, err := tc.DeleteTenantServices(ctx, gc)
	if err != nil || len(dry.Services) != 2 {
		t.Fatalf("dry run: %v %v", dry, err)
	}
	if n := follower.Node().FSM.TenantServices("gone"); n != 2 {
		t.Fatalf("the dry run deleted: %d left", n)
	}
	gc.DryRun = false
	done, err := tc.DeleteTenantServices(ctx, gc)
	if err != nil || len(done.Services) != 2 || done.LastSeen == nil {
		t.Fatalf("gc: %v %v", done, err)
	}
	for _, d := range ds {
		waitFor(t, 10*time.Second, "gc replicated to "+d.cfg.ID, func() bool {
			f := d.Node().FSM
			return f.TenantServices("gone") == 0 && f.LastSeen("gone").IsZero() && f.TenantServices("alive") == 1
		})
	}
}

// BenchmarkRenewTenantHeartbeat is the cost of one CCM heartbeat: a raft
// commit forwarded by a follower of a three-member cluster.
func BenchmarkRenewTenantHeartbeat(b *testing.B) {
	ds := startCluster(b, 3)
	_, follower := leaderAndFollower(b, ds)
	tc := tenantClient(b, follower.Addr())
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := tc.RenewTenantHeartbeat(ctx, &edgelbv1.RenewTenantHeartbeatRequest{Tenant: "bench"}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportLatency(b, lat)
}
