package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/internal/logcapture"
	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/edgelb/edgelb/lbd/lbdtest"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"sigs.k8s.io/yaml"
)

type result struct {
	out, err string
	code     int
}

// lbctl runs the command tree in-process with a private config file.
func lbctl(t *testing.T, cfg string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Execute(append([]string{"--config", cfg, "--timeout", "3s"}, args...), &out, &errb)
	return result{out.String(), errb.String(), code}
}

type env struct {
	t    *testing.T
	c    *lbdtest.Cluster
	addr string
	cfg  string
}

// newEnv runs lbctl against a real one-member lbd (control plane only,
// plaintext) that has the pool public, 192.0.2.0/24.
func newEnv(t *testing.T) *env {
	return newEnvOf(t, lbdtest.StartCluster(t, 1, lbdtest.Plaintext()))
}

func newEnvOf(t *testing.T, c *lbdtest.Cluster) *env {
	t.Setenv("LBCTL_ENDPOINTS", "")
	e := &env{t: t, c: c, addr: c.Members[0].Addr, cfg: filepath.Join(t.TempDir(), "lbctl.yaml")}
	e.ok("pool", "create", "public", "--range", "192.0.2.0/24")
	return e
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	return lbctl(e.t, e.cfg, append([]string{"--endpoints", e.addr}, args...)...)
}

// ok runs a command that must succeed and returns its stdout.
func (e *env) ok(args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("lbctl %s: exit %d, stderr:\n%s", strings.Join(args, " "), r.code, r.err)
	}
	return r.out
}

// fails runs a command that must fail with code and returns its stderr.
func (e *env) fails(code int, args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != code {
		e.t.Fatalf("lbctl %s: exit %d, want %d; stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.out, r.err)
	}
	if !strings.HasPrefix(r.err, "Error: ") {
		e.t.Errorf("stderr should start with 'Error: ', got %q", r.err)
	}
	return r.err
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	return m
}

func TestVIPLifecycle(t *testing.T) {
	e := newEnv(t)
	// Direct routing cannot change ports: lbd refuses a backend port other
	// than the VIP's (the fake took it).
	if msg := e.fails(exitcode.InvalidArgument, "vip", "create", "web", "--port", "tcp/80:30080", "--mode", "dr"); !strings.Contains(msg, "direct routing cannot change the port") {
		t.Errorf("dr with another backend port: %q", msg)
	}
	out := e.ok("vip", "create", "web", "--port", "tcp/80", "--port", "udp/53", "--backend", "10.0.0.11",
		"--backend", "10.0.0.12,weight=2,drained", "--scheduler", "wrr", "--mode", "dr", "--persistence", "3h",
		"--health-check", "http", "--health-path", "/healthz", "--health-interval", "2s", "--rise", "2", "--fall", "3",
		"--source-range", "10.0.0.0/8,192.168.0.0/16", "--label", "app=web", "--sharing-key", "s1", "--pin", "lb1")
	if !strings.Contains(out, "virtualservice default/web created: vip 192.0.2.1, generation 1") {
		t.Errorf("create output: %q", out)
	}

	vs := decodeJSON(t, e.ok("vip", "get", "web", "-o", "json"))
	if vs["name"] != "web" || vs["tenant"] != "default" || vs["vip"] != "192.0.2.1" || vs["scheduler"] != "SCHEDULER_WRR" ||
		vs["forwardingMode"] != "FORWARDING_MODE_DR" || vs["pinnedMember"] != "lb1" || vs["sharingKey"] != "s1" {
		t.Errorf("get -o json: %v", vs)
	}
	if p := vs["persistence"].(map[string]any); p["timeoutSeconds"] != float64(10800) {
		t.Errorf("persistence = %v", p)
	}
	ports := vs["ports"].([]any)
	if len(ports) != 2 || ports[0].(map[string]any)["port"] != float64(80) || ports[1].(map[string]any)["protocol"] != "PROTOCOL_UDP" {
		t.Errorf("ports = %v", ports)
	}
	bs := vs["backends"].([]any)
	if b := bs[1].(map[string]any); b["address"] != "10.0.0.12" || b["weight"] != float64(2) || b["drained"] != true {
		t.Errorf("backend = %v", b)
	}
	if hc := vs["healthCheck"].(map[string]any); hc["type"] != "HEALTH_CHECK_TYPE_HTTP" || hc["path"] != "/healthz" || hc["interval"] != "2s" {
		t.Errorf("healthCheck = %v", hc)
	}

	detail := e.ok("vip", "get", "web")
	for _, want := range []string{"Name:", "web", "tcp/80,udp/53", "wrr", "3h0m0s", "http path=/healthz", "10.0.0.12", "drained", "app=web"} {
		if !strings.Contains(detail, want) {
			t.Errorf("vip get table lacks %q:\n%s", want, detail)
		}
	}

	e.ok("vip", "create", "api", "--vip", "192.0.2.99", "--port", "443", "--label", "app=api")
	table := e.ok("vip", "list")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TENANT") {
		t.Fatalf("list table:\n%s", table)
	}
	for _, col := range []string{"NAME", "VIP", "PORTS", "BACKENDS", "OWNER", "AGE"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header lacks %s: %q", col, lines[0])
		}
	}
	if !strings.Contains(lines[1], "api") || !strings.Contains(lines[2], "2 (1 drained)") {
		t.Errorf("rows (sorted by name):\n%s", table)
	}
	if wide := e.ok("vip", "list", "-o", "wide"); !strings.Contains(wide, "SCHEDULER") || !strings.Contains(wide, "wrr") {
		t.Errorf("wide:\n%s", wide)
	}

	var list struct {
		Items []map[string]any `json:"items"`
	}
	if err := yaml.Unmarshal([]byte(e.ok("vip", "list", "-l", "app=api", "-o", "yaml")), &list); err != nil || len(list.Items) != 1 || list.Items[0]["name"] != "api" {
		t.Errorf("list -l app=api -o yaml: %v %v", list, err)
	}
	if err := json.Unmarshal([]byte(e.ok("vip", "list", "--vip", "192.0.2.1", "-o", "json")), &list); err != nil || len(list.Items) != 1 || list.Items[0]["name"] != "web" {
		t.Errorf("list --vip -o json: %v %v", list, err)
	}

	// Update changes only what is given and keeps the rest.
	upd := decodeJSON(t, e.ok("vip", "update", "web", "--scheduler", "rr", "--label", "env=prod", "--persistence", "0", "-o", "json"))
	if upd["scheduler"] != "SCHEDULER_RR" || upd["generation"] != "2" || upd["persistence"] != nil || upd["mode"] != nil ||
		upd["forwardingMode"] != "FORWARDING_MODE_DR" || len(upd["backends"].([]any)) != 2 {
		t.Errorf("update: %v", upd)
	}
	if l := upd["labels"].(map[string]any); l["app"] != "web" || l["env"] != "prod" {
		t.Errorf("labels = %v", l)
	}
	upd = decodeJSON(t, e.ok("vip", "update", "web", "--label", "app-", "-o", "json"))
	if l := upd["labels"].(map[string]any); l["app"] != nil || l["env"] != "prod" {
		t.Errorf("label removal: %v", l)
	}
	// A stale generation is a conflict: exit 6, clear message.
	if msg := e.fails(exitcode.Conflict, "vip", "update", "web", "--scheduler", "lc", "--if-generation", "1"); !strings.Contains(msg, "conflict") {
		t.Errorf("conflict message: %q", msg)
	}
	e.fails(exitcode.Conflict, "vip", "delete", "web", "--if-generation", "1")
	if out := e.ok("vip", "delete", "web"); !strings.Contains(out, "deleted") {
		t.Errorf("delete: %q", out)
	}
	if msg := e.fails(exitcode.NotFound, "vip", "get", "web"); !strings.Contains(msg, "virtual service default/web not found") || strings.Contains(msg, "rpc error") {
		t.Errorf("NotFound message: %q", msg)
	}
	e.fails(exitcode.NotFound, "vip", "update", "web", "--scheduler", "rr")
	e.fails(exitcode.NotFound, "vip", "delete", "web")
}

func TestTenants(t *testing.T) {
	e := newEnv(t)
	e.ok("vip", "create", "web", "--port", "tcp/80")
	e.ok("--tenant", "cluster-a", "vip", "create", "web", "--port", "tcp/80")
	if out := e.ok("vip", "list"); strings.Contains(out, "cluster-a") {
		t.Errorf("default tenant list shows another tenant:\n%s", out)
	}
	if out := e.ok("vip", "list", "--all-tenants"); !strings.Contains(out, "cluster-a") || !strings.Contains(out, "default") {
		t.Errorf("--all-tenants:\n%s", out)
	}
	if vs := decodeJSON(t, e.ok("--tenant", "cluster-a", "vip", "get", "web", "-o", "json")); vs["tenant"] != "cluster-a" {
		t.Errorf("tenant get: %v", vs)
	}
}

func TestExitCodes(t *testing.T) {
	e := newEnv(t)
	e.ok("vip", "create", "web", "--port", "tcp/80")
	if msg := e.fails(exitcode.AlreadyExists, "vip", "create", "web", "--port", "tcp/80"); !strings.Contains(msg, "already exists") {
		t.Errorf("AlreadyExists: %q", msg)
	}
	e.fails(exitcode.InvalidArgument, "vip", "create", "bad", "--vip", "not-an-ip")

	usage := [][]string{
		{"vip", "create", "x", "--port", "tcp/99999"},
		{"vip", "create", "x", "--port", "http/80"},
		{"vip", "create", "x", "--backend", "10.0.0.1,weight=0"},
		{"vip", "create", "x", "--scheduler", "fifo"},
		{"vip", "create", "x", "--persistence", "soon"},
		{"vip", "create", "x", "--label", "novalue"},
		{"vip", "create"},
		{"vip", "get", "a", "b"},
		{"vip", "list", "--bogus"},
		{"vip", "list", "-o", "xml"},
		{"nonsense"},
		{"backend", "add", "web", "host:80"},
		{"backend", "set", "web"},
		{"pool", "create", "p", "--range", "10.0.0.9-10.0.0.1"},
		{"member", "add", "lb9"},
		{"completion", "tcsh"},
		{"--context", "missing", "vip", "list"},
	}
	for _, args := range usage {
		r := e.run(args...)
		if r.code != exitcode.Usage {
			t.Errorf("lbctl %v: exit %d, want 2; stderr %q", args, r.code, r.err)
		}
	}
	// Our own syntax errors say what to type.
	if msg := e.fails(exitcode.Usage, "vip", "create", "x", "--port", "tcp:80"); !strings.Contains(msg, "PROTO/PORT[:BACKEND_PORT]") {
		t.Errorf("port syntax hint missing: %q", msg)
	}
	if msg := e.fails(exitcode.Usage, "backend", "add", "web", "2001:db8::1:80:x"); !strings.Contains(msg, "ADDR[:PORT]") {
		t.Errorf("address syntax hint missing: %q", msg)
	}
}

func TestUnreachableAndFailover(t *testing.T) {
	e := newEnv(t)
	e.ok("vip", "create", "web", "--port", "tcp/80")
	dead := deadAddr(t)
	r := lbctl(t, e.cfg, "--endpoints", dead, "vip", "list")
	if r.code != exitcode.Unavailable || !strings.Contains(r.err, "cannot reach the cluster") || !strings.Contains(r.err, dead) {
		t.Errorf("unreachable: exit %d, stderr %q", r.code, r.err)
	}
	// The first endpoint is down: the second answers.
	r = lbctl(t, e.cfg, "--endpoints", dead+","+e.addr, "vip", "get", "web", "-o", "json")
	if r.code != 0 || decodeJSON(t, r.out)["name"] != "web" {
		t.Errorf("failover: exit %d, stderr %q", r.code, r.err)
	}
	// LBCTL_ENDPOINTS is used when --endpoints is not given.
	t.Setenv("LBCTL_ENDPOINTS", e.addr)
	if r := lbctl(t, e.cfg, "vip", "get", "web"); r.code != 0 {
		t.Errorf("LBCTL_ENDPOINTS: exit %d, %s", r.code, r.err)
	}
}

// deadAddr is a local address nobody listens on (any more).
func deadAddr(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis.Close()
	return lis.Addr().String()
}

func TestBackendOps(t *testing.T) {
	e := newEnv(t)
	e.ok("vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11")
	out := e.ok("backend", "add", "web", "10.0.0.12:30080", "--weight", "3")
	if !strings.Contains(out, "backend 10.0.0.12:30080 added (generation 2)") || !strings.Contains(out, "ADDRESS") {
		t.Errorf("add:\n%s", out)
	}
	e.fails(exitcode.AlreadyExists, "backend", "add", "web", "10.0.0.12:30080")
	// The bracketed form reaches lbd as the address, which keeps a VIP's
	// backends to its own family.
	if msg := e.fails(exitcode.InvalidArgument, "backend", "add", "web", "[2001:db8::5]:30080"); !strings.Contains(msg, "2001:db8::5 is not IPv4 like the VIP") {
		t.Errorf("IPv6 backend of an IPv4 VIP: %q", msg)
	}
	e.ok("backend", "add", "web", "10.0.0.5:30080", "--drained")
	vs := decodeJSON(t, e.ok("backend", "drain", "web", "10.0.0.12:30080", "-o", "json"))
	if b := vs["backends"].([]any)[1].(map[string]any); b["drained"] != true || b["weight"] != float64(3) {
		t.Errorf("drain: %v", b)
	}
	vs = decodeJSON(t, e.ok("backend", "drain", "web", "10.0.0.12:30080", "--undo", "-o", "json"))
	if b := vs["backends"].([]any)[1].(map[string]any); b["drained"] != nil {
		t.Errorf("undrain: %v", b)
	}
	e.ok("backend", "remove", "web", "10.0.0.11")
	e.fails(exitcode.NotFound, "backend", "remove", "web", "10.0.0.11")
	e.fails(exitcode.NotFound, "backend", "drain", "nope", "10.0.0.11")
	list := e.ok("backend", "list", "web")
	if strings.Contains(list, "10.0.0.11") || !strings.Contains(list, "10.0.0.5") {
		t.Errorf("backend list:\n%s", list)
	}
	vs = decodeJSON(t, e.ok("backend", "set", "web", "--backend", "10.0.0.21", "--backend", "10.0.0.22,weight=2", "-o", "json"))
	if bs := vs["backends"].([]any); len(bs) != 2 || bs[0].(map[string]any)["address"] != "10.0.0.21" {
		t.Errorf("set: %v", bs)
	}
	e.fails(exitcode.Conflict, "backend", "set", "web", "--backend", "10.0.0.1", "--if-generation", "1")
}

func TestPools(t *testing.T) {
	e := newEnv(t)
	// newEnv made public (192.0.2.0/24); edge is this test's.
	out := e.ok("pool", "create", "edge", "--range", "198.51.100.0/24", "--range", "203.0.113.10-203.0.113.20", "--tenant-allowed", "a,b")
	if !strings.Contains(out, "pool edge created") {
		t.Errorf("create: %q", out)
	}
	e.fails(exitcode.AlreadyExists, "pool", "create", "edge", "--range", "198.51.100.0/24")
	e.ok("vip", "create", "web", "--pool", "edge", "--tenant", "a", "--port", "tcp/80")
	got := decodeJSON(t, e.ok("pool", "get", "edge", "-o", "json"))
	// 254 of the /24 (no network or broadcast address) and 11 of the range.
	if got["used"] != "1" || got["size"] != "265" || got["pool"].(map[string]any)["name"] != "edge" {
		t.Errorf("pool get -o json: %v", got)
	}
	if tbl := e.ok("pool", "get", "edge"); !strings.Contains(tbl, "USED") || !strings.Contains(tbl, "203.0.113.10-203.0.113.20") {
		t.Errorf("pool get:\n%s", tbl)
	}
	e.ok("pool", "create", "v6", "--range", "2001:db8::/112", "--manual")
	var list struct{ Items []map[string]any }
	if err := json.Unmarshal([]byte(e.ok("pool", "list", "-o", "json")), &list); err != nil || len(list.Items) != 3 || list.Items[2]["name"] != "v6" || list.Items[2]["manual"] != true {
		t.Errorf("pool list -o json: %+v %v", list, err)
	}
	if tbl := e.ok("pool", "list"); !strings.Contains(tbl, "MANUAL") || !strings.Contains(tbl, "v6") {
		t.Errorf("pool list:\n%s", tbl)
	}
	if msg := e.fails(exitcode.Conflict, "pool", "delete", "edge"); !strings.Contains(msg, "in use") {
		t.Errorf("in use: %q", msg)
	}
	e.ok("pool", "delete", "v6")
	e.fails(exitcode.NotFound, "pool", "get", "v6")
}

func TestMembersAndLeader(t *testing.T) {
	c := lbdtest.StartCluster(t, 3, lbdtest.Plaintext())
	e := newEnvOf(t, c)
	leader := c.Leader(t)
	var followers []*lbdtest.Member
	for _, m := range c.Members {
		if m != leader {
			followers = append(followers, m)
		}
	}
	tbl := e.ok("member", "list")
	if !strings.Contains(tbl, "RAFT ADDRESS") || !strings.Contains(tbl, "lb2") || !strings.Contains(tbl, "lb3") || !strings.Contains(tbl, "*") {
		t.Errorf("member list:\n%s", tbl)
	}
	// Adding a member again with its own addresses changes nothing (a
	// member that restarts asks to join again); with others it is refused.
	have := c.Members[2].Config
	e.ok("member", "add", "lb3", "--raft-addr", have.RaftAddr, "--api-addr", have.APIAddr)
	if msg := e.fails(exitcode.AlreadyExists, "member", "add", "lb3", "--raft-addr", "127.0.0.1:1", "--api-addr", have.APIAddr); !strings.Contains(msg, "lbctl member remove lb3") {
		t.Errorf("re-adding with another address: %q", msg)
	}

	st := decodeJSON(t, e.ok("member", "status", leader.ID, "-o", "json"))
	if st["raftState"] != "Leader" || st["lastAppliedIndex"] == nil || st["lastAppliedIndex"] == "0" {
		t.Errorf("status -o json: %v", st)
	}
	if st := decodeJSON(t, e.ok("member", "status", followers[0].ID, "-o", "json")); st["raftState"] != "Follower" {
		t.Errorf("status %s: %v", followers[0].ID, st)
	}
	all := e.ok("member", "status")
	if strings.Count(all, "\n") != 4 || !strings.Contains(all, "Leader") || !strings.Contains(all, "APPLIED") {
		t.Errorf("status table (every member):\n%s", all)
	}
	// Issue 18: a service a member cannot program is named under the table.
	// (Without a kernel nothing fails to program: the member's status says
	// what its data plane would.)
	isolated := followers[0].ID
	t.Run("isolated", func(t *testing.T) {
		c.Rewrite(t, "/GetMemberStatus", func(resp any) {
			if st := resp.(*edgelbv1.GetMemberStatusResponse).Status; st.GetMember().GetId() == isolated {
				st.IsolatedServices = []string{"t/s1: unknown scheduler 42"}
			}
		})
		if out := e.ok("member", "status"); !strings.Contains(out, "WARNING "+isolated+" cannot program t/s1: unknown scheduler 42") {
			t.Errorf("status with an isolated service:\n%s", out)
		}
	})
	// A member that does not answer shows as such, and the exit code says so.
	victim := followers[1]
	victim.Stop()
	r := e.run("member", "status")
	if r.code != exitcode.Unavailable || !strings.Contains(r.out, "unreachable") || !strings.Contains(r.out, "Leader") {
		t.Errorf("status with a dead member: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
	var items struct{ Items []map[string]any }
	json.Unmarshal([]byte(e.run("member", "status", "--all", "-o", "json").out), &items)
	if len(items.Items) != 3 {
		t.Errorf("status --all -o json: %v", items)
	}
	e.fails(exitcode.NotFound, "member", "status", "lb9")
	e.ok("member", "remove", victim.ID)
	e.fails(exitcode.NotFound, "member", "remove", victim.ID)

	if l := e.ok("leader"); !strings.Contains(l, leader.ID) || !strings.Contains(l, "TERM") {
		t.Errorf("leader:\n%s", l)
	}
	to := followers[0].ID
	if out := e.ok("leader", "transfer", to); !strings.Contains(out, "transferred to "+to) {
		t.Errorf("transfer: %q", out)
	}
	l := decodeJSON(t, e.ok("leader", "-o", "json"))
	if l["leader"].(map[string]any)["id"] != to || l["term"] == nil || l["term"] == "0" {
		t.Errorf("leader -o json: %v", l)
	}
	if msg := e.fails(exitcode.NotFound, "leader", "transfer", "nobody"); !strings.Contains(msg, "nobody is not a member of this cluster") {
		t.Errorf("transfer to nobody: %q", msg)
	}
}

// watch runs lbctl watch (a command that runs until interrupted) on
// endpoints, calls step with its output so far until step says it is done,
// then interrupts it, as Ctrl-C would.
func (e *env) watch(endpoints string, step func(out, errOut string) bool, args ...string) result {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb logcapture.Buffer
	code := make(chan int, 1)
	go func() {
		code <- ExecuteContext(ctx, append([]string{"--config", e.cfg, "--timeout", "5s", "--endpoints", endpoints, "watch"}, args...), &out, &errb)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !step(out.String(), errb.String()) {
		select {
		case c := <-code:
			e.t.Fatalf("watch ended by itself: exit %d\n%s\n%s", c, out.String(), errb.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			e.t.Fatalf("watch: timed out\nstdout:\n%s\nstderr:\n%s", out.String(), errb.String())
		}
	}
	cancel()
	return result{out.String(), errb.String(), <-code}
}

// snapshotShown says the watch printed its snapshot line and that many objects.
func snapshotShown(out, errOut string) bool {
	var rev, n int
	i := strings.Index(errOut, "# snapshot of the current state at revision ")
	if i < 0 {
		return false
	}
	if _, err := fmt.Sscanf(errOut[i:], "# snapshot of the current state at revision %d (%d objects)", &rev, &n); err != nil {
		return false
	}
	return strings.Count(out, "\n") >= n
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	e.ok("vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.1")
	r := e.watch(e.addr, snapshotShown)
	if r.code != 0 || !strings.Contains(r.err, "snapshot") {
		t.Fatalf("watch: exit %d, %s", r.code, r.err)
	}
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	var vip, member bool
	for _, l := range lines {
		vip = vip || strings.Contains(l, " PUT vip default/web vip=192.0.2.1 ports=tcp/80:30080")
		member = member || strings.Contains(l, " PUT member lb1")
	}
	if !vip || !member {
		t.Errorf("watch lines (want the VIP and the member):\n%s", r.out)
	}
	r = e.watch(e.addr, snapshotShown, "-o", "json")
	sc := bufio.NewScanner(strings.NewReader(r.out))
	n := 0
	for sc.Scan() {
		ev := decodeJSON(t, sc.Text())
		if ev["type"] != "EVENT_TYPE_PUT" {
			t.Errorf("event: %v", ev)
		}
		n++
	}
	if n != len(lines) {
		t.Errorf("want %d JSON lines, got %d:\n%s", len(lines), n, r.out)
	}
}

// The member a watch follows goes away: lbctl resumes on the next endpoint
// after the last revision it saw, and later changes still arrive.
func TestWatchSurvivesMemberLoss(t *testing.T) {
	c := lbdtest.StartCluster(t, 3, lbdtest.Plaintext())
	e := newEnvOf(t, c)
	e.ok("vip", "create", "web", "--port", "tcp/80")
	first, second := c.Members[0], c.Members[1]
	stopped, created := false, false
	r := e.watch(first.Addr+","+second.Addr, func(out, errOut string) bool {
		switch {
		case !stopped && snapshotShown(out, errOut):
			first.Stop()
			stopped = true
		case stopped && !created && strings.Contains(errOut, "resuming after revision"):
			// Through the member still listed: a write after the resume.
			lbctl(t, e.cfg, "--endpoints", second.Addr, "vip", "create", "api", "--port", "tcp/443")
			created = true
		}
		return created && strings.Contains(out, "vip default/api")
	})
	if r.code != 0 || !strings.Contains(r.err, "stream lost") || !strings.Contains(r.err, "resuming after revision") {
		t.Errorf("watch across member loss: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
}

func TestWaitForOwner(t *testing.T) {
	e := newEnv(t)
	// lbd names the owner in its answer to the create: nothing to wait for.
	r := e.run("vip", "create", "web", "--port", "tcp/80", "--wait", "--wait-timeout", "5s")
	if r.code != 0 || !strings.Contains(r.out, "owner lb1") || strings.Contains(r.err, "waiting") {
		t.Errorf("create --wait: exit %d\nout: %s\nerr: %s", r.code, r.out, r.err)
	}
	// An answer without an owner (as from an lbd that assigns it later):
	// lbctl waits, and lbd's watch shows the owner.
	e.c.Rewrite(t, "/CreateVirtualService", func(resp any) {
		if vs := resp.(*edgelbv1.CreateVirtualServiceResponse).Service; vs.GetName() != "web" {
			vs.Owner = ""
		}
	})
	r = e.run("vip", "create", "api", "--port", "tcp/81", "--wait", "--wait-timeout", "5s")
	if r.code != 0 || !strings.Contains(r.out, "owner lb1") || !strings.Contains(r.err, "waiting") || !strings.Contains(r.err, "served by lb1") {
		t.Errorf("create --wait for an owner: exit %d\nout: %s\nerr: %s", r.code, r.out, r.err)
	}
	// Never an owner (every answer about "late" lacks one; no watch, so
	// lbctl polls): --wait gives up with exit 1, saying the write happened.
	e.c.Inject(t, func(_ context.Context, method string) error {
		if strings.HasSuffix(method, "/Watch") {
			return status.Error(codes.Unimplemented, "injected: no watch")
		}
		return nil
	})
	e.c.Rewrite(t, "/GetVirtualService", func(resp any) {
		if vs := resp.(*edgelbv1.GetVirtualServiceResponse).Service; vs.GetName() == "late" {
			vs.Owner = ""
		}
	})
	r = e.run("vip", "create", "late", "--port", "tcp/82", "--wait", "--wait-timeout", "300ms")
	if r.code != exitcode.Other || !strings.Contains(r.err, "timed out") || !strings.Contains(r.err, "created") {
		t.Errorf("create --wait timeout: exit %d\n%s", r.code, r.err)
	}
}

func TestContexts(t *testing.T) {
	e := newEnv(t)
	e.ok("vip", "create", "web", "--port", "tcp/80")
	e.ok("--tenant", "team", "vip", "create", "tweb", "--port", "tcp/80")
	cfg := e.cfg
	if r := lbctl(t, cfg, "config", "current-context"); r.code != exitcode.Other {
		t.Errorf("no current context: exit %d", r.code)
	}
	if r := lbctl(t, cfg, "config", "set-context", "lab", "--endpoints", e.addr); r.code != 0 {
		t.Fatalf("set-context: %d %s", r.code, r.err)
	}
	lbctl(t, cfg, "config", "set-context", "team", "--endpoints", e.addr, "--tenant", "team")
	if r := lbctl(t, cfg, "config", "current-context"); r.out != "lab\n" {
		t.Errorf("first context becomes current: %q", r.out)
	}
	// No --endpoints: the context supplies them.
	if r := lbctl(t, cfg, "vip", "get", "web"); r.code != 0 {
		t.Errorf("context endpoints: exit %d %s", r.code, r.err)
	}
	if r := lbctl(t, cfg, "--context", "team", "vip", "get", "tweb"); r.code != 0 {
		t.Errorf("--context team: exit %d %s", r.code, r.err)
	}
	if r := lbctl(t, cfg, "config", "use-context", "team"); r.code != 0 {
		t.Fatal(r.err)
	}
	if r := lbctl(t, cfg, "vip", "list", "-o", "json"); !strings.Contains(r.out, "tweb") || strings.Contains(r.out, `"web"`) {
		t.Errorf("use-context team: %s %s", r.out, r.err)
	}
	r := lbctl(t, cfg, "config", "get-contexts")
	if !strings.Contains(r.out, "CURRENT") || !strings.Contains(r.out, "*   ") || !strings.Contains(r.out, "plaintext") {
		t.Errorf("get-contexts:\n%s", r.out)
	}
	if r := lbctl(t, cfg, "config", "use-context", "nope"); r.code != exitcode.Usage {
		t.Errorf("use-context nope: %d", r.code)
	}
	data, _ := os.ReadFile(cfg)
	if !strings.Contains(string(data), "current-context: team") {
		t.Errorf("config file:\n%s", data)
	}
	// TLS settings from a context are used: a missing CA file is reported.
	lbctl(t, cfg, "config", "set-context", "secure", "--endpoints", e.addr, "--ca-file", "/nonexistent/ca.pem")
	if r := lbctl(t, cfg, "--context", "secure", "vip", "list"); r.code != exitcode.Other || !strings.Contains(r.err, "ca-file") {
		t.Errorf("TLS context: exit %d %s", r.code, r.err)
	}
}

func TestHelpEverywhere(t *testing.T) {
	root := (&app{}).rootCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Example == "" && c.Name() != "help" {
			t.Errorf("%q has no Example", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	r := lbctl(t, filepath.Join(t.TempDir(), "c.yaml"), "--help")
	for _, want := range []string{"Exit codes:", "8  Unavailable", "PLAINTEXT", "--endpoints", "LBCTL_ENDPOINTS", `{"items": [...]}`} {
		if r.code != 0 || !strings.Contains(r.out, want) {
			t.Errorf("lbctl --help lacks %q", want)
		}
	}
	if r := lbctl(t, filepath.Join(t.TempDir(), "c.yaml"), "vip", "create", "--help"); r.code != 0 || !strings.Contains(r.out, "Examples:") {
		t.Errorf("vip create --help: %d", r.code)
	}
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		if r := lbctl(t, filepath.Join(t.TempDir(), "c.yaml"), "completion", sh); r.code != 0 || len(r.out) < 100 {
			t.Errorf("completion %s: exit %d", sh, r.code)
		}
	}
	if r := lbctl(t, filepath.Join(t.TempDir(), "c.yaml"), "version", "--client"); r.code != 0 || !strings.Contains(r.out, "Client:") {
		t.Errorf("version: %d %s", r.code, r.out)
	}
}

func TestVersionAndCompletion(t *testing.T) {
	e := newEnv(t)
	if out := e.ok("version"); !strings.Contains(out, "Server: dev (member lb1)") {
		t.Errorf("version:\n%s", out)
	}
	e.ok("vip", "create", "web", "--port", "tcp/80")
	// The names completed for a command's one argument come from lbd.
	for _, c := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"vip", "get"}, "web\n"},
		{[]string{"pool", "get"}, "public\n"},
		{[]string{"tenant", "gc"}, "default\n"},
	} {
		out := e.ok(append(append([]string{"__complete"}, c.cmd...), "")...)
		if !strings.HasPrefix(out, c.want) {
			t.Errorf("completion of %v:\n%s", c.cmd, out)
		}
	}
}
