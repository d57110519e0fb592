package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbctl/client"
	"github.com/edgelb/edgelb/lbd/lbdtest"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/fsm"
)

// These tests run lbctl against real lbd members (control-plane only) in
// this process: the real gRPC server, raft and FSM, not the fake.

// startLBD starts n real members (control plane only, plaintext: lbctl's TLS
// paths have tls_test.go) that form one cluster.
func startLBD(t *testing.T, n int) []*lbdtest.Member {
	t.Helper()
	return lbdtest.StartCluster(t, n, lbdtest.Plaintext()).Members
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			cond() // once more, so a condition that logs shows its last state
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// realEnv runs lbctl against the members' API addresses.
type realEnv struct {
	t   *testing.T
	cfg string
	eps []string
}

func newRealEnv(t *testing.T, ms ...*lbdtest.Member) *realEnv {
	t.Setenv("LBCTL_ENDPOINTS", "")
	e := &realEnv{t: t, cfg: filepath.Join(t.TempDir(), "lbctl.yaml")}
	for _, m := range ms {
		e.eps = append(e.eps, m.Addr)
	}
	return e
}

func (e *realEnv) run(args ...string) result {
	e.t.Helper()
	if len(args) == 1 {
		args = strings.Fields(args[0])
	}
	return lbctl(e.t, e.cfg, append([]string{"--endpoints", strings.Join(e.eps, ",")}, args...)...)
}

func (e *realEnv) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("lbctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	return r.out
}

func (e *realEnv) status() clusterStatus {
	e.t.Helper()
	var st clusterStatus
	if err := json.Unmarshal([]byte(e.ok("status", "-o", "json")), &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

func leaderOf(t *testing.T, ms []*lbdtest.Member) *lbdtest.Member {
	t.Helper()
	var l *lbdtest.Member
	eventually(t, "a leader", func() bool {
		for _, m := range ms {
			if m.D != nil && m.D.Node().IsLeader() {
				l = m
				return true
			}
		}
		return false
	})
	return l
}

func TestStatusAgainstRealCluster(t *testing.T) {
	ms := startLBD(t, 3)
	e := newRealEnv(t, ms...)

	// Healthy once every member has applied its own registration (until
	// then it is not ready, which status reports).
	eventually(t, "fresh cluster healthy", func() bool { return e.status().Health == "healthy" })
	st := e.status()
	if st.Health != "healthy" || st.Leader == "" || st.Term == 0 || len(st.Members) != 3 {
		t.Fatalf("fresh cluster: %+v", st)
	}
	for _, m := range st.Members {
		if !m.Reachable || m.State != "active" || m.Suffrage != "voter" {
			t.Errorf("member %+v", m)
		}
	}

	e.ok("pool create public --range 192.0.2.0/24")
	e.ok("vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11", "--backend", "10.0.0.12")
	e.ok("vip", "create", "api", "--port", "tcp/443:30443", "--backend", "10.0.0.21")
	eventually(t, "both VIPs served", func() bool {
		st := e.status()
		served := 0
		for _, m := range st.Members {
			served += m.ServingVIPs
		}
		return st.Health == "healthy" && st.VIPs == 2 && served == 2
	})

	// The owner's health checks report one backend of web down.
	vs, _ := ms[0].D.Node().FSM.Service(fsm.Key{Tenant: "default", Name: "web"})
	leader := leaderOf(t, ms)
	_, err := leader.D.Node().Apply(context.Background(), &raftv1.Command{Op: &raftv1.Command_SetBackendHealth{SetBackendHealth: &raftv1.SetBackendHealth{
		Updates: []*raftv1.HealthUpdate{{Tenant: "default", Name: "web", Address: "10.0.0.12", Reporter: vs.Owner,
			Health: &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY, LastError: "connection refused"}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "unhealthy backend reported", func() bool { return len(e.status().VIPProblems) == 1 })
	st = e.status()
	p := st.VIPProblems[0]
	if st.Health != "degraded" || p.VIP != vs.Vip || p.Problem != "1 of 2 backends unhealthy" ||
		len(p.UnhealthyBackends) != 1 || p.UnhealthyBackends[0] != "10.0.0.12:30080 (connection refused)" || p.Owner != vs.Owner {
		t.Errorf("status with an unhealthy backend: %+v", st)
	}
	table := e.ok("status")
	for _, want := range []string{"CLUSTER   DEGRADED", "leader", "follower", vs.Vip, "default/web", "1 of 2 backends unhealthy", "10.0.0.12:30080 (connection refused)"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	t.Logf("lbctl status:\n%s", table)

	// A follower dies: it shows unreachable; its VIPs move after the grace.
	var victim *lbdtest.Member
	for _, m := range ms {
		if m != leader {
			victim = m
			break
		}
	}
	// Control-plane-only members have no kernel counters: a clear refusal,
	// and vip get still shows the service.
	if r := e.run("vip", "stats", "web"); r.code == 0 || !strings.Contains(r.err, "without a data plane") {
		t.Errorf("vip stats on a control-plane-only cluster: exit %d\n%s", r.code, r.err)
	}
	if out := e.ok("vip", "get", "web"); !strings.Contains(out, "Traffic:") || !strings.Contains(out, "unavailable: ") {
		t.Errorf("vip get without kernel counters:\n%s", out)
	}
	// Give it web's VIP first (a planned move), so its death is a failover.
	e.ok("vip", "move", vs.Vip, victim.ID)
	eventually(t, "planned move in recent moves", func() bool {
		m := e.status().RecentMoves
		return len(m) > 0 && m[0].VIP == vs.Vip && m[0].Owner == victim.ID && m[0].Reason == "moved by operator" && !m[0].Unplanned
	})
	victim.Stop()
	e.eps = nil
	for _, m := range ms {
		if m.D != nil {
			e.eps = append(e.eps, m.Addr)
		}
	}
	st = e.status()
	var seen bool
	for _, m := range st.Members {
		if m.ID == victim.ID {
			seen = true
			if m.Reachable || m.Error == "" {
				t.Errorf("stopped member shows as %+v", m)
			}
		}
	}
	if !seen || st.Health != "degraded" || !containsPrefix(st.Problems, "member "+victim.ID+" does not answer") {
		t.Errorf("status after a member stopped: %+v", st)
	}
	yaml := e.ok("status", "-o", "yaml")
	if !strings.Contains(yaml, "health: degraded") {
		t.Errorf("yaml output:\n%s", yaml)
	}
	// After the grace the leader moves the VIP: status lists the failover.
	var moved ownerMove
	// The victim may have owned other VIPs too: they move at the same time.
	eventually(t, "failover in recent moves", func() bool {
		for _, m := range e.status().RecentMoves {
			if m.VIP == vs.Vip {
				moved = m
				return m.Unplanned && m.Reason == "owner unreachable" && m.Owner != victim.ID
			}
		}
		return false
	})
	if time.Since(moved.Time) > time.Minute || !slices.Contains(moved.Services, "default/web") {
		t.Errorf("failover entry %+v", moved)
	}
	table = e.ok("status")
	if !strings.Contains(table, "FAILOVER: owner unreachable") || !strings.Contains(table, "moved by operator") {
		t.Errorf("table lacks the recent moves:\n%s", table)
	}
	t.Logf("lbctl status after the failover:\n%s", table)
}

// HEALTHY needs every member ready and within maxHealthyLag entries of the
// leader's commit index; DEGRADED names the member and its lag.
func TestStatusLagAndReadiness(t *testing.T) {
	e := newEnvOf(t, lbdtest.StartCluster(t, 2, lbdtest.Plaintext()))
	status := func() clusterStatus {
		t.Helper()
		var st clusterStatus
		if err := json.Unmarshal([]byte(e.ok("status", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := status(); st.Health != "healthy" {
		t.Fatalf("baseline: %+v", st)
	}
	// A replica on one machine does not lag by itself: lb2's status reports
	// its applied index that far behind the commit index the leader's
	// status reported (the one lbctl compares with), in a log long enough to
	// be behind in.
	vss := edgelbv1.NewVirtualServiceServiceClient(e.c.Admin(t))
	for i := range maxHealthyLag + 2 {
		_, err := vss.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
			Name: fmt.Sprintf("s%d", i), Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every member applied the writes", func() bool { return status().Health == "healthy" })
	var lag, leaderCommit atomic.Uint64
	var notReady atomic.Pointer[string]
	e.c.Rewrite(t, "/GetMemberStatus", func(resp any) {
		st := resp.(*edgelbv1.GetMemberStatusResponse).Status
		if st.GetRaftState() == "Leader" {
			leaderCommit.Store(st.GetCommitIndex())
		}
		if st.GetMember().GetId() != "lb2" {
			return
		}
		if l := lag.Load(); l > 0 {
			st.LastAppliedIndex = cmp.Or(leaderCommit.Load(), st.CommitIndex) - l
		}
		if r := notReady.Load(); r != nil {
			st.NotReadyReason = *r
		}
	})
	lag.Store(maxHealthyLag)
	if st := status(); st.Health != "healthy" {
		t.Errorf("lag of exactly %d: %+v; want healthy", maxHealthyLag, st)
	}
	lag.Store(maxHealthyLag + 1)
	st := status()
	want := fmt.Sprintf("member lb2 lags the leader by %d raft entries", maxHealthyLag+1)
	if st.Health != "degraded" || !containsPrefix(st.Problems, want) || st.Members[1].Lag != maxHealthyLag+1 {
		t.Errorf("lag of %d: %+v; want degraded with %q", maxHealthyLag+1, st, want)
	}
	if table := e.ok("status"); !strings.Contains(table, "CLUSTER   DEGRADED") || !strings.Contains(table, want) {
		t.Errorf("table:\n%s", table)
	}
	lag.Store(0)
	reason := "not caught up with the leader yet"
	notReady.Store(&reason)
	st = status()
	if st.Health != "degraded" || !containsPrefix(st.Problems, "member lb2 is not ready: not caught up") || st.Members[1].Ready || !st.Members[0].Ready {
		t.Errorf("lb2 not ready: %+v", st)
	}
}

func containsPrefix(ss []string, prefix string) bool {
	for _, s := range ss {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func vipNames(t *testing.T, e *realEnv) []string {
	t.Helper()
	var list struct {
		Items []struct {
			Name, Vip string
			Backends  []struct{ Address string }
		}
	}
	if err := json.Unmarshal([]byte(e.ok("vip", "list", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range list.Items {
		var bs []string
		for _, b := range it.Backends {
			bs = append(bs, b.Address)
		}
		out = append(out, it.Name+"="+it.Vip+"["+strings.Join(bs, ",")+"]")
	}
	sort.Strings(out)
	return out
}

func TestSnapshotSaveRestoreRoundTrip(t *testing.T) {
	ms := startLBD(t, 3)
	e := newRealEnv(t, ms...)
	e.ok("pool create public --range 192.0.2.0/24")
	e.ok("vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11", "--backend", "10.0.0.12")
	e.ok("vip", "create", "api", "--port", "tcp/443:30443", "--backend", "10.0.0.21")
	want := vipNames(t, e)

	file := filepath.Join(t.TempDir(), "backup.snap")
	out := e.ok("snapshot", "save", file)
	if !strings.Contains(out, "2 virtual services, 1 address pools, 3 members") {
		t.Errorf("save said: %s", out)
	}
	insp := e.ok("snapshot", "inspect", file, "-o", "json")
	var hdr map[string]any
	if err := json.Unmarshal([]byte(insp), &hdr); err != nil || hdr["virtualServices"] != float64(2) || hdr["formatVersion"] != float64(1) {
		t.Errorf("inspect: %v %s", err, insp)
	}

	// Change the state after the backup: drop one service, change one, add one and a pool.
	e.ok("vip", "delete", "api")
	e.ok("backend", "add", "web", "10.0.0.13")
	e.ok("pool create private --range 198.51.100.0/24")
	e.ok("vip", "create", "extra", "--pool", "private", "--port", "tcp/25", "--backend", "10.0.0.31")

	// Without --yes, restore only shows the file.
	if r := e.run("snapshot", "restore", file); r.code != 2 || !strings.Contains(r.out, "checksum ok") {
		t.Errorf("restore without --yes: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	// Restore through a follower: it forwards the whole upload to the leader.
	leader := leaderOf(t, ms)
	var follower *lbdtest.Member
	for _, m := range ms {
		if m != leader {
			follower = m
			break
		}
	}
	fe := newRealEnv(t, follower)
	out = fe.ok("snapshot", "restore", file, "--yes")
	if !strings.Contains(out, "2 virtual services, 1 address pools (removed 1 services and 1 pools not in the snapshot)") {
		t.Errorf("restore said: %s", out)
	}
	if got := vipNames(t, fe); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("after restore:\n%v\nwant\n%v", got, want)
	}
	// Every member holds the restored state.
	for _, m := range ms {
		me := newRealEnv(t, m)
		eventually(t, "member "+m.ID+" restored", func() bool { return strings.Join(vipNames(t, me), " ") == strings.Join(want, " ") })
	}
	if r := e.run("pool", "get", "private"); r.code != 4 {
		t.Errorf("pool private survived the restore: exit %d", r.code)
	}
	// The restored services get owners and the cluster is healthy.
	eventually(t, "healthy after restore", func() bool { return e.status().Health == "healthy" })

	// A damaged file is refused before anything is sent.
	b, _ := os.ReadFile(file)
	b[len(b)-1] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.snap")
	os.WriteFile(bad, b, 0o600)
	if r := e.run("snapshot", "restore", bad, "--yes"); r.code != 1 || !strings.Contains(r.err, "damaged") {
		t.Errorf("damaged file: exit %d %s", r.code, r.err)
	}
}

// TestRecoverFromSingleSurvivor restores a new cluster from a backup file
// that a survivor without quorum saved with --stale (docs/OPERATIONS.md §8
// recovers from the survivor's raft log instead, with lbd recover: see
// integration/cluster/recovery_test.go). A plain save is refused there; the
// stale file is marked and restores only with --allow-stale.
func TestRecoverFromSingleSurvivor(t *testing.T) {
	ms := startLBD(t, 3)
	e := newRealEnv(t, ms...)
	e.ok("pool create public --range 192.0.2.0/24")
	e.ok("vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11", "--backend", "10.0.0.12")
	e.ok("vip", "create", "dns", "--port", "udp/53:30053", "--backend", "10.0.0.21")
	want := vipNames(t, e)

	survivor := ms[2]
	// The survivor's snapshot holds what it has applied: writes committed by
	// the others but not yet applied there are lost (docs/OPERATIONS.md).
	eventually(t, "survivor caught up", func() bool {
		vss, _ := survivor.D.Node().FSM.List(fsm.Filter{})
		return len(vss) == 2
	})
	ms[0].Stop()
	ms[1].Stop()
	se := newRealEnv(t, survivor)
	// A clean stop hands raft leadership over first, so the survivor may
	// win an election with the second member's vote just before that one
	// stops, and lead alone until its leader lease runs out: wait for the
	// status, not for the first moment without a leader.
	eventually(t, "survivor lost its leader", func() bool { return se.status().Health == "unavailable" })
	file := filepath.Join(t.TempDir(), "survivor.snap")
	// Without a leader the survivor cannot vouch for its replica: a plain
	// save is refused, a --stale one is marked so and needs --allow-stale.
	if r := se.run("snapshot", "save", file); r.code != 8 || !strings.Contains(r.err, "no leader") {
		t.Fatalf("snapshot save without a leader: exit %d %s", r.code, r.err)
	}
	cc, err := grpc.NewClient(survivor.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = edgelbv1.NewVirtualServiceServiceClient(cc).ListVirtualServices(context.Background(), &edgelbv1.ListVirtualServicesRequest{})
	if client.RefusedReason(err) != errinfo.NoLeader || status.Code(err) != codes.Unavailable {
		t.Fatalf("list on the survivor: %v (reason %q); want Unavailable with ErrorInfo reason %s", err, client.RefusedReason(err), errinfo.NoLeader)
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatalf("a refused save left %s behind", file)
	}
	se.ok("--stale", "snapshot", "save", file)

	// Re-bootstrap on the survivor's host: its old data set aside, same id.
	survivor.Stop()
	recovered := lbdtest.StartCluster(t, 1, lbdtest.Plaintext(), lbdtest.Named(survivor.ID))
	fresh := recovered.Members[0]
	fe := newRealEnv(t, fresh)
	eventually(t, "new cluster ready", func() bool { return fe.run("leader").code == 0 })
	if r := fe.run("snapshot", "restore", file, "--yes"); r.code != 2 || !strings.Contains(r.err, "--allow-stale") {
		t.Fatalf("restore of a stale file without --allow-stale: exit %d %s", r.code, r.err)
	}
	fe.ok("snapshot", "restore", file, "--yes", "--allow-stale")
	if got := vipNames(t, fe); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("recovered state:\n%v\nwant\n%v", got, want)
	}
	// Two new members join; the state replicates; everything has an owner.
	m2 := recovered.Add(t, "lb-new2")
	m3 := recovered.Add(t, "lb-new3")
	all := newRealEnv(t, fresh, m2, m3)
	var st clusterStatus
	eventually(t, "recovered cluster healthy with 3 members", func() bool {
		st = all.status()
		ok := st.Health == "healthy" && len(st.Members) == 3 && st.VIPs == 2
		if !ok {
			t.Logf("not yet: %+v", st)
		}
		return ok
	})
	t.Logf("recovered: %+v", st)
	if got := vipNames(t, newRealEnv(t, m3)); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("new member's replica:\n%v\nwant\n%v", got, want)
	}
}
