package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/metrics"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// startMetricsCluster is startCluster with a metrics listener on every member.
func startMetricsCluster(t *testing.T, n int) []*Daemon {
	t.Helper()
	var ds []*Daemon
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := 0; i < n; i++ {
		cfg := config.Default()
		cfg.ID = fmt.Sprintf("m%d", i+1)
		cfg.DataDir = filepath.Join(dir, cfg.ID)
		cfg.APIAddr, cfg.RaftAddr, cfg.MetricsAddr = freeAddr(t), freeAddr(t), freeAddr(t)
		cfg.DataPlane.Mode = "none"
		if i > 0 {
			cfg.Join = []string{ds[0].Addr()}
		}
		d, err := Start(context.Background(), cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Stop() })
		ds = append(ds, d)
	}
	for _, d := range ds {
		waitFor(t, 20*time.Second, "member "+d.cfg.ID+" ready", func() bool { ok, _ := d.ready(); return ok })
	}
	return ds
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// sample returns the value of the series with exactly this name and labels
// (as written in the exposition format, e.g. `edgelb_raft_state{state="Leader"}`).
func sample(t *testing.T, body, series string) (float64, bool) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("%s: %v", series, err)
	}
	return v, true
}

func TestMetricsEndpoints(t *testing.T) {
	ds := startMetricsCluster(t, 3)
	leader, follower := leaderAndFollower(t, ds)
	setupPool(t, follower.Addr())
	vs := client(t, follower.Addr())
	for i := range 3 {
		if _, err := vs.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: newService(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// A refused call is counted with its code.
	_, err := vs.GetVirtualService(context.Background(), &edgelbv1.GetVirtualServiceRequest{Name: "nope"})
	if err == nil {
		t.Fatal("get of a missing service succeeded")
	}

	for _, d := range ds {
		base := "http://" + d.MetricsAddr()
		if code, body := get(t, base+"/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
			t.Errorf("%s /healthz: %d %q", d.cfg.ID, code, body)
		}
		if code, body := get(t, base+"/readyz"); code != 200 {
			t.Errorf("%s /readyz: %d %q", d.cfg.ID, code, body)
		}
	}

	// Every member's replica and raft status; ownership and reconciles settle asynchronously.
	var body string
	scrape := func(d *Daemon) string { _, b := get(t, "http://"+d.MetricsAddr()+"/metrics"); return b }
	waitFor(t, 20*time.Second, "services assigned and reconciled on every member", func() bool {
		total := 0.0
		for _, d := range ds {
			b := scrape(d)
			v, _ := sample(t, b, "edgelb_fsm_vips_unowned")
			if v != 0 {
				return false
			}
			served, _ := sample(t, b, "edgelb_ownership_vips_served")
			total += served
			if passes, _ := sample(t, b, `edgelb_reconcile_total{result="ok"}`); passes < 1 {
				return false // a member reconciles once caught up with the leader
			}
		}
		return total == 3
	})
	for _, d := range ds {
		body = scrape(d)
		want := map[string]func(float64) bool{
			`edgelb_fsm_virtual_services`:                           func(v float64) bool { return v == 3 },
			`edgelb_fsm_vips`:                                       func(v float64) bool { return v == 3 },
			`edgelb_fsm_address_pools`:                              func(v float64) bool { return v == 1 },
			`edgelb_fsm_members{state="active"}`:                    func(v float64) bool { return v == 3 },
			`edgelb_fsm_revision`:                                   func(v float64) bool { return v > 0 },
			`edgelb_raft_term`:                                      func(v float64) bool { return v >= 1 },
			`edgelb_raft_applied_index`:                             func(v float64) bool { return v > 0 },
			`edgelb_raft_commit_index`:                              func(v float64) bool { return v > 0 },
			`edgelb_raft_last_log_index`:                            func(v float64) bool { return v > 0 },
			`edgelb_raft_peers`:                                     func(v float64) bool { return v == 2 },
			`edgelb_ready`:                                          func(v float64) bool { return v == 1 },
			`edgelb_ownership_in_contact`:                           func(v float64) bool { return v == 1 },
			`edgelb_reconcile_total{result="ok"}`:                   func(v float64) bool { return v >= 1 },
			`edgelb_reconcile_duration_seconds_count`:               func(v float64) bool { return v >= 1 },
			`edgelb_raft_fsm_apply_seconds_count`:                   func(v float64) bool { return v > 0 },
			`edgelb_ownership_assignments_total{reason="assigned"}`: func(v float64) bool { return v >= 3 },
			`edgelb_build_info{version="dev"}`:                      func(v float64) bool { return v == 1 },
			`edgelb_raft_leader{leader_id="` + leader.cfg.ID + `"}`: func(v float64) bool { return v == 1 },
		}
		for series, ok := range want {
			v, found := sample(t, body, series)
			if !found || !ok(v) {
				t.Errorf("%s: %s = %v (found %v)", d.cfg.ID, series, v, found)
			}
		}
		state := `edgelb_raft_state{state="Follower"}`
		if d == leader {
			state = `edgelb_raft_state{state="Leader"}`
		}
		if v, _ := sample(t, body, state); v != 1 {
			t.Errorf("%s: %s = %v", d.cfg.ID, state, v)
		}
	}
	body = scrape(follower)
	if v, _ := sample(t, body, `edgelb_grpc_server_handled_total{code="OK",method="/edgelb.v1.VirtualServiceService/CreateVirtualService"}`); v != 3 {
		t.Errorf("follower counted %v creates, want 3", v)
	}
	if v, _ := sample(t, body, `edgelb_grpc_server_handled_total{code="NotFound",method="/edgelb.v1.VirtualServiceService/GetVirtualService"}`); v != 1 {
		t.Errorf("follower counted %v NotFound gets, want 1", v)
	}
	if v, _ := sample(t, body, `edgelb_grpc_server_handling_seconds_count{method="/edgelb.v1.VirtualServiceService/CreateVirtualService",type="unary"}`); v != 3 {
		t.Errorf("latency histogram has %v creates, want 3", v)
	}
	// The leader forwarded-to: its PeerService.Apply calls are counted too.
	body = scrape(leader)
	if v, _ := sample(t, body, `edgelb_grpc_server_handled_total{code="OK",method="/edgelb.raft.v1.PeerService/Apply"}`); v < 3 {
		t.Errorf("leader counted %v forwarded applies, want ≥3", v)
	}
	if v, _ := sample(t, body, `edgelb_raft_commit_seconds_count`); v == 0 {
		t.Error("no raft commit timings recorded")
	}

	// A leader change is seen and counted by the others.
	before, _ := sample(t, scrape(follower), "edgelb_raft_leader_changes_total")
	if err := leader.Stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a leader change counted", func() bool {
		v, _ := sample(t, scrape(follower), "edgelb_raft_leader_changes_total")
		return v > before
	})
}

func TestReadyzBeforeJoining(t *testing.T) {
	cfg := config.Default()
	cfg.ID = "lonely"
	cfg.DataDir = t.TempDir()
	cfg.APIAddr, cfg.RaftAddr, cfg.MetricsAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	cfg.DataPlane.Mode = "none"
	cfg.Join = []string{freeAddr(t)} // nobody there: never joins
	d, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	base := "http://" + d.MetricsAddr()
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz %d, want 200 (the process is alive)", code)
	}
	code, body := get(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no raft leader") {
		t.Errorf("/readyz: %d %q, want 503 naming the missing leader", code, body)
	}
}

func TestMetricsAddrInUse(t *testing.T) {
	ds := startMetricsCluster(t, 1)
	cfg := config.Default()
	cfg.ID = "second"
	cfg.DataDir = t.TempDir()
	cfg.APIAddr, cfg.RaftAddr = freeAddr(t), freeAddr(t)
	cfg.MetricsAddr = ds[0].MetricsAddr() // explicitly set and taken: refuse to start
	cfg.DataPlane.Mode = "none"
	d, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		d.Stop()
		t.Fatal("started with a metrics address that is taken")
	}
	if !strings.Contains(err.Error(), "metrics") {
		t.Errorf("error %q does not say it is the metrics address", err)
	}
	// The API and raft listeners were released: the same addresses can start a member now.
	cfg.MetricsAddr = ""
	d, err = Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("after a failed start, the listeners were not released: %v", err)
	}
	d.Stop()
}

type fakeIPVS struct{}

func (fakeIPVS) Stats(context.Context) ([]metrics.ServiceStats, error) {
	return []metrics.ServiceStats{{Tenant: "t", Name: "web", VIP: "192.0.2.1", Protocol: "tcp", Port: 80,
		Counters: metrics.Counters{Connections: 10, CPS: 2},
		Backends: []metrics.BackendStats{{Address: "10.0.0.1", Port: 30080, Weight: 1, ActiveConns: 3}}}}, nil
}

// TestDashboardMetricsExist checks that every metric the Grafana dashboard
// queries is one lbd exports, so a rename cannot silently blank a panel.
func TestDashboardMetricsExist(t *testing.T) {
	d := startMetricsCluster(t, 1)[0]
	m := d.Metrics()
	if err := m.RegisterIPVS(fakeIPVS{}); err != nil {
		t.Fatal(err)
	}
	// Families with labels appear once they have a child.
	m.Checked("tcp", true, time.Millisecond)
	m.Transition(false)
	m.Announced("ipv4", "takeover", 3)
	m.TookOver(time.Second)
	m.KernelChange("service_add")
	client(t, d.Addr()).GetVirtualService(context.Background(), &edgelbv1.GetVirtualServiceRequest{Name: "x"})

	_, body := get(t, "http://"+d.MetricsAddr()+"/metrics")
	have := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[1] == "TYPE" {
			have[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_count", "_sum"} {
					have[f[2]+s] = true
				}
			}
		}
	}
	b, err := os.ReadFile("../../configs/grafana/edgelb.json")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`\b((?:edgelb|process|go)_[a-z0-9_]+)`).FindAllStringSubmatch(string(b), -1)
	if len(names) < 20 {
		t.Fatalf("found only %d metric references in the dashboard", len(names))
	}
	for _, n := range names {
		if !have[n[1]] {
			t.Errorf("the dashboard queries %s, which lbd does not export", n[1])
		}
	}
}
