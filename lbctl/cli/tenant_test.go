package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/lbdtest"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// tenantEnv starts a real lbd with a pool and the services vips (each
// "tenant:name"), and returns lbctl against it and a TenantService client
// (closed when the test ends).
func tenantEnv(t *testing.T, vips ...string) (*realEnv, edgelbv1.TenantServiceClient) {
	t.Helper()
	m := lbdtest.StartCluster(t, 1, lbdtest.Plaintext()).Members[0]
	e := newRealEnv(t, m)
	eventually(t, "member ready", func() bool { return e.run("vip list").code == 0 })
	e.ok("pool create p --range 192.0.2.0/24")
	for _, v := range vips {
		tenant, name, _ := strings.Cut(v, ":")
		e.ok("vip", "create", name, "--tenant", tenant, "--port", "tcp/80:30080", "--backend", "10.0.0.11")
	}
	cc, err := grpc.NewClient(m.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return e, edgelbv1.NewTenantServiceClient(cc)
}

// lbctl tenant list / gc, vip list --orphaned and status against a real lbd:
// a tenant whose heartbeat is older than the threshold is silent, one that
// never sent one is not; gc deletes exactly the silent tenant's services.
func TestTenantCommands(t *testing.T) {
	e, tc := tenantEnv(t, "gone:a", "gone:b", "alive:a", "manual:a")
	beat := func(tenant string) {
		if _, err := tc.RenewTenantHeartbeat(context.Background(), &edgelbv1.RenewTenantHeartbeatRequest{Tenant: tenant}); err != nil {
			t.Fatal(err)
		}
	}
	beat("gone")
	time.Sleep(2100 * time.Millisecond)
	beat("alive")

	table := e.ok("tenant list --silent-threshold 2s")
	for _, want := range []string{"gone     ", "SILENT", "alive", "manual   never", "p"} {
		if !strings.Contains(table, want) {
			t.Errorf("tenant list lacks %q:\n%s", want, table)
		}
	}
	var tl struct{ Items []tenantView }
	if err := json.Unmarshal([]byte(e.ok("tenant list --silent-threshold 2s -o json")), &tl); err != nil {
		t.Fatal(err)
	}
	silent := map[string]bool{}
	for _, v := range tl.Items {
		silent[v.Name] = v.Silent
	}
	if len(tl.Items) != 3 || !silent["gone"] || silent["alive"] || silent["manual"] {
		t.Errorf("tenant list -o json: %+v", tl.Items)
	}

	orphans := func() []string {
		var l struct {
			Items []struct{ Tenant, Name string }
		}
		if err := json.Unmarshal([]byte(e.ok("vip list --orphaned --silent-threshold 2s -o json")), &l); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, i := range l.Items {
			out = append(out, i.Tenant+"/"+i.Name)
		}
		return out
	}
	if got := orphans(); !slices.Equal(got, []string{"gone/a", "gone/b"}) {
		t.Errorf("vip list --orphaned: %v, want gone/a gone/b", got)
	}
	var st clusterStatus
	if err := json.Unmarshal([]byte(e.ok("status --silent-threshold 2s -o json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Health != "degraded" || st.Orphaned != 2 || len(st.OrphanedTenants) != 1 || st.OrphanedTenants[0].Tenant != "gone" {
		t.Errorf("status: %+v", st)
	}
	if tbl := e.ok("status --silent-threshold 2s"); !strings.Contains(tbl, "ORPHANS   2 virtual services (tenant gone silent ") {
		t.Errorf("status table:\n%s", tbl)
	}
	// A wider threshold: nothing is orphaned.
	if got := e.ok("vip list --orphaned -o json"); strings.Contains(got, `"gone"`) {
		t.Errorf("orphans at the default 10m threshold: %s", got)
	}

	// Without --yes (and no terminal): shows, exits 2, deletes nothing.
	r := e.run("tenant gc gone --silent-threshold 2s")
	if r.code != 2 || !strings.Contains(r.err, "run again with --yes") || !strings.Contains(r.out, "would delete 2 virtual services") {
		t.Errorf("gc without --yes: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if r := e.run("tenant gc alive --silent-threshold 2s --yes"); r.code != 6 || !strings.Contains(r.err, "add --force") {
		t.Errorf("gc of a live tenant: exit %d %s", r.code, r.err)
	}
	if r := e.run("tenant gc gone --silent-threshold 0s --yes"); r.code != 2 {
		t.Errorf("gc with a zero threshold: exit %d %s; want 2", r.code, r.err)
	}
	if got := orphans(); len(got) != 2 {
		t.Fatalf("refused gcs deleted: orphans now %v", got)
	}
	out := e.ok("tenant gc gone --silent-threshold 2s --yes")
	if !strings.Contains(out, "deleted 2 virtual services") {
		t.Errorf("gc output:\n%s", out)
	}
	var left struct {
		Items []struct{ Tenant, Name string }
	}
	json.Unmarshal([]byte(e.ok("vip list -A -o json")), &left)
	if len(left.Items) != 2 || left.Items[0].Tenant != "alive" || left.Items[1].Tenant != "manual" {
		t.Errorf("after gc: %+v; want alive/a and manual/a", left.Items)
	}
}

// vip list --orphaned, status and tenant list against a real lbd also show
// the services a live cloud provider reported orphaned (their Kubernetes
// Service is gone), with why, beside those of a silent tenant.
func TestOrphanedServicesReportedByLiveTenant(t *testing.T) {
	e, tc := tenantEnv(t, "gone:x", "alive:a", "alive:b")
	beat := func(tenant string, orphaned ...string) error {
		_, err := tc.RenewTenantHeartbeat(context.Background(), &edgelbv1.RenewTenantHeartbeatRequest{Tenant: tenant, OrphanedServices: orphaned})
		return err
	}
	if err := beat("gone"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond)
	// "nosuch" is not in lbd: not shown.
	if err := beat("alive", "nosuch", "a"); err != nil {
		t.Fatal(err)
	}
	// Too long a report is refused, typed, and keeps the last one.
	long := make([]string, 1001)
	for i := range long {
		long[i] = fmt.Sprintf("s%d", i)
	}
	if err := beat("alive", long...); status.Code(err) != codes.InvalidArgument || errinfo.Reason(err) != errinfo.InvalidField {
		t.Errorf("1001 orphaned names: %v, want InvalidArgument %s", err, errinfo.InvalidField)
	}

	var l struct {
		Items []struct {
			Tenant, Name string
			Orphaned     orphanReason
		}
	}
	if err := json.Unmarshal([]byte(e.ok("vip list --orphaned --silent-threshold 2s -o json")), &l); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range l.Items {
		got = append(got, i.Tenant+"/"+i.Name+":"+i.Orphaned.Reason)
		if i.Orphaned.Reason == "tenantSilent" && i.Orphaned.SilentSeconds < 2 {
			t.Errorf("%s/%s: silentSeconds %d", i.Tenant, i.Name, i.Orphaned.SilentSeconds)
		}
	}
	if want := []string{"alive/a:serviceGone", "gone/x:tenantSilent"}; !slices.Equal(got, want) {
		t.Errorf("vip list --orphaned -o json: %v, want %v", got, want)
	}
	table := e.ok("vip list --orphaned --silent-threshold 2s")
	for _, want := range []string{"ORPHANED", "Service gone", "tenant silent 2s"} {
		if !strings.Contains(table, want) {
			t.Errorf("vip list --orphaned lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "alive    b") {
		t.Errorf("vip list --orphaned shows alive/b, which nobody reported:\n%s", table)
	}
	if y := e.ok("vip list --orphaned --silent-threshold 2s -o yaml"); !strings.Contains(y, "reason: serviceGone") {
		t.Errorf("-o yaml lacks the reason:\n%s", y)
	}
	// --tenant narrows it to one tenant.
	if got := e.ok("vip list --orphaned --tenant alive --silent-threshold 2s"); strings.Contains(got, "gone") && !strings.Contains(got, "Service gone") {
		t.Errorf("--tenant alive shows another tenant:\n%s", got)
	}

	var st clusterStatus
	if err := json.Unmarshal([]byte(e.ok("status --silent-threshold 2s -o json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Orphaned != 2 || len(st.OrphanedTenants) != 1 || len(st.GoneServices) != 1 || st.GoneServices[0].Tenant != "alive" ||
		!slices.Equal(st.GoneServices[0].Services, []string{"a"}) {
		t.Errorf("status: orphaned %d, tenants %+v, gone %+v", st.Orphaned, st.OrphanedTenants, st.GoneServices)
	}
	if tbl := e.ok("status --silent-threshold 2s"); !strings.Contains(tbl, "ORPHANS   2 virtual services (tenant gone silent ") || !strings.Contains(tbl, "tenant alive: 1 Service gone)") {
		t.Errorf("status table:\n%s", tbl)
	}
	var tl struct{ Items []tenantView }
	if err := json.Unmarshal([]byte(e.ok("tenant list --silent-threshold 2s -o json")), &tl); err != nil {
		t.Fatal(err)
	}
	for _, v := range tl.Items {
		if want := map[string]int{"alive": 1}[v.Name]; len(v.OrphanedServices) != want {
			t.Errorf("tenant list: %s reports %v", v.Name, v.OrphanedServices)
		}
	}
	if tbl := e.ok("tenant list"); !strings.Contains(tbl, "SERVICE GONE") {
		t.Errorf("tenant list table:\n%s", tbl)
	}

	// Deleted (by the CCM's next try, or by hand): no longer shown.
	e.ok("vip delete a --tenant alive")
	if got := e.ok("vip list --orphaned --silent-threshold 2s"); strings.Contains(got, "Service gone") {
		t.Errorf("a deleted service is still listed orphaned:\n%s", got)
	}
}
