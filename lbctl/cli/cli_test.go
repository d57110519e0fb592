package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/spf13/cobra"
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
	fake *fakeLB
	addr string
	cfg  string
}

func newEnv(t *testing.T) *env {
	t.Setenv("LBCTL_ENDPOINTS", "")
	f, addr := startFake(t)
	return &env{t: t, fake: f, addr: addr, cfg: filepath.Join(t.TempDir(), "lbctl.yaml")}
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
	out := e.ok("vip", "create", "web", "--port", "tcp/80:30080", "--port", "udp/53", "--backend", "10.0.0.11",
		"--backend", "10.0.0.12:30081,weight=2,drained", "--scheduler", "wrr", "--mode", "dr", "--persistence", "3h",
		"--health-check", "http", "--health-path", "/healthz", "--health-interval", "2s", "--rise", "2", "--fall", "3",
		"--source-range", "10.0.0.0/8,192.168.0.0/16", "--label", "app=web", "--sharing-key", "s1", "--pin", "lb2")
	if !strings.Contains(out, "virtualservice default/web created: vip 192.0.2.10, generation 1") {
		t.Errorf("create output: %q", out)
	}

	vs := decodeJSON(t, e.ok("vip", "get", "web", "-o", "json"))
	if vs["name"] != "web" || vs["tenant"] != "default" || vs["vip"] != "192.0.2.10" || vs["scheduler"] != "SCHEDULER_WRR" ||
		vs["forwardingMode"] != "FORWARDING_MODE_DR" || vs["pinnedMember"] != "lb2" || vs["sharingKey"] != "s1" {
		t.Errorf("get -o json: %v", vs)
	}
	if p := vs["persistence"].(map[string]any); p["timeoutSeconds"] != float64(10800) {
		t.Errorf("persistence = %v", p)
	}
	ports := vs["ports"].([]any)
	if len(ports) != 2 || ports[0].(map[string]any)["backendPort"] != float64(30080) || ports[1].(map[string]any)["protocol"] != "PROTOCOL_UDP" {
		t.Errorf("ports = %v", ports)
	}
	bs := vs["backends"].([]any)
	if b := bs[1].(map[string]any); b["address"] != "10.0.0.12" || b["port"] != float64(30081) || b["weight"] != float64(2) || b["drained"] != true {
		t.Errorf("backend = %v", b)
	}
	if hc := vs["healthCheck"].(map[string]any); hc["type"] != "HEALTH_CHECK_TYPE_HTTP" || hc["path"] != "/healthz" || hc["interval"] != "2s" {
		t.Errorf("healthCheck = %v", hc)
	}

	detail := e.ok("vip", "get", "web")
	for _, want := range []string{"Name:", "web", "tcp/80:30080,udp/53", "wrr", "3h0m0s", "http path=/healthz", "10.0.0.12", "drained", "app=web"} {
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
	if !strings.Contains(lines[1], "api") || !strings.Contains(lines[2], "2 (1 drained)") || !strings.Contains(lines[2], "3m") {
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
	if err := json.Unmarshal([]byte(e.ok("vip", "list", "--vip", "192.0.2.10", "-o", "json")), &list); err != nil || len(list.Items) != 1 || list.Items[0]["name"] != "web" {
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
	if msg := e.fails(exitcode.NotFound, "vip", "get", "web"); !strings.Contains(msg, `virtual service "web" not found`) || strings.Contains(msg, "rpc error") {
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
	e.ok("backend", "add", "web", "[2001:db8::5]:30080", "--drained")
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
	if strings.Contains(list, "10.0.0.11") || !strings.Contains(list, "2001:db8::5") {
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
	out := e.ok("pool", "create", "public", "--range", "192.0.2.0/24", "--range", "198.51.100.10-198.51.100.20", "--tenant-allowed", "a,b")
	if !strings.Contains(out, "pool public created") {
		t.Errorf("create: %q", out)
	}
	e.fails(exitcode.AlreadyExists, "pool", "create", "public", "--range", "192.0.2.0/24")
	e.ok("vip", "create", "web", "--pool", "public", "--port", "tcp/80")
	got := decodeJSON(t, e.ok("pool", "get", "public", "-o", "json"))
	if got["used"] != "1" || got["size"] != "256" || got["pool"].(map[string]any)["name"] != "public" {
		t.Errorf("pool get -o json: %v", got)
	}
	if tbl := e.ok("pool", "get", "public"); !strings.Contains(tbl, "USED") || !strings.Contains(tbl, "198.51.100.10-198.51.100.20") {
		t.Errorf("pool get:\n%s", tbl)
	}
	e.ok("pool", "create", "v6", "--range", "2001:db8::/112", "--manual")
	var list struct{ Items []map[string]any }
	if err := json.Unmarshal([]byte(e.ok("pool", "list", "-o", "json")), &list); err != nil || len(list.Items) != 2 || list.Items[1]["manual"] != true {
		t.Errorf("pool list -o json: %+v %v", list, err)
	}
	if tbl := e.ok("pool", "list"); !strings.Contains(tbl, "MANUAL") || !strings.Contains(tbl, "v6") {
		t.Errorf("pool list:\n%s", tbl)
	}
	if msg := e.fails(exitcode.Conflict, "pool", "delete", "public"); !strings.Contains(msg, "in use") {
		t.Errorf("in use: %q", msg)
	}
	e.ok("pool", "delete", "v6")
	e.fails(exitcode.NotFound, "pool", "get", "v6")
}

func TestMembersAndLeader(t *testing.T) {
	e := newEnv(t)
	tbl := e.ok("member", "list")
	if !strings.Contains(tbl, "RAFT ADDRESS") || !strings.Contains(tbl, "lb2") || !strings.Contains(tbl, "*") {
		t.Errorf("member list:\n%s", tbl)
	}
	m := decodeJSON(t, e.ok("member", "add", "lb3", "--raft-addr", "127.0.0.1:7721", "--api-addr", "127.0.0.1:7720", "--interface", "eth1", "--nonvoter", "-o", "json"))
	if m["id"] != "lb3" || m["suffrage"] != "nonvoter" || m["dataInterface"] != "eth1" {
		t.Errorf("member add: %v", m)
	}
	e.fails(exitcode.AlreadyExists, "member", "add", "lb3", "--raft-addr", "x:1", "--api-addr", "x:2")

	st := decodeJSON(t, e.ok("member", "status", "-o", "json"))
	if st["raftState"] != "Leader" || st["lastAppliedIndex"] != "42" {
		t.Errorf("status -o json: %v", st)
	}
	if st := decodeJSON(t, e.ok("member", "status", "lb2", "-o", "json")); st["raftState"] != "Follower" {
		t.Errorf("status lb2: %v", st)
	}
	all := e.ok("member", "status")
	if strings.Count(all, "\n") != 4 || !strings.Contains(all, "Leader") || !strings.Contains(all, "APPLIED") {
		t.Errorf("status table (every member):\n%s", all)
	}
	// Issue 18: a service a member cannot program is named under the table.
	e.fake.set(func() { e.fake.isolated = map[string][]string{"lb2": {"t/s1: unknown scheduler 42"}} })
	if out := e.ok("member", "status"); !strings.Contains(out, "WARNING lb2 cannot program t/s1: unknown scheduler 42") {
		t.Errorf("status with an isolated service:\n%s", out)
	}
	e.fake.set(func() { e.fake.isolated = nil })
	// A member that does not answer shows as such, and the exit code says so.
	e.fake.set(func() { e.fake.down["lb3"] = true })
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
	e.ok("member", "remove", "lb3")
	e.fails(exitcode.NotFound, "member", "remove", "lb3")

	if l := e.ok("leader"); !strings.Contains(l, "lb1") || !strings.Contains(l, "TERM") {
		t.Errorf("leader:\n%s", l)
	}
	if out := e.ok("leader", "transfer", "lb2"); !strings.Contains(out, "transferred to lb2") {
		t.Errorf("transfer: %q", out)
	}
	l := decodeJSON(t, e.ok("leader", "-o", "json"))
	if l["leader"].(map[string]any)["id"] != "lb2" || l["term"] != "7" {
		t.Errorf("leader -o json: %v", l)
	}
	e.fails(exitcode.NotFound, "leader", "transfer", "nobody")
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	e.fake.set(func() { e.fake.watchOnce = true })
	e.ok("vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.1")
	r := e.run("watch")
	if r.code != 0 || !strings.Contains(r.err, "snapshot") {
		t.Fatalf("watch: exit %d, %s", r.code, r.err)
	}
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "1 PUT vip default/web vip=192.0.2.10 ports=tcp/80:30080") ||
		!strings.Contains(lines[1], "member lb1") || !strings.Contains(lines[1], `reason="joined"`) {
		t.Errorf("watch lines:\n%s", r.out)
	}
	out := e.ok("watch", "-o", "json")
	sc := bufio.NewScanner(strings.NewReader(out))
	n := 0
	for sc.Scan() {
		ev := decodeJSON(t, sc.Text())
		if ev["type"] != "EVENT_TYPE_PUT" {
			t.Errorf("event: %v", ev)
		}
		n++
	}
	if n != 3 {
		t.Errorf("want 3 JSON lines, got %d:\n%s", n, out)
	}
}

func TestWatchSurvivesMemberLoss(t *testing.T) {
	e := newEnv(t)
	e.ok("vip", "create", "web", "--port", "tcp/80")
	e.fake.set(func() { e.fake.dieAfterSnapshot = true })
	other, addr2 := startFake(t)
	other.set(func() { other.watchOnce = true })
	r := lbctl(t, e.cfg, "--endpoints", e.addr+","+addr2, "watch")
	if r.code != 0 || !strings.Contains(r.err, "stream lost") || !strings.Contains(r.err, "resuming after revision 1") {
		t.Errorf("watch across member loss: exit %d\n%s\n%s", r.code, r.out, r.err)
	}
}

func TestWaitForOwner(t *testing.T) {
	e := newEnv(t)
	e.fake.set(func() { e.fake.autoOwner = "lb2" })
	r := e.run("vip", "create", "web", "--port", "tcp/80", "--wait", "--wait-timeout", "5s")
	if r.code != 0 || !strings.Contains(r.out, "owner lb2") || !strings.Contains(r.err, "waiting") || !strings.Contains(r.err, "served by lb2") {
		t.Errorf("create --wait: exit %d\nout: %s\nerr: %s", r.code, r.out, r.err)
	}
	// Nobody assigns an owner: --wait gives up with exit 1, saying the write happened.
	e.fake.set(func() { e.fake.autoOwner = "" })
	r = e.run("vip", "create", "api", "--port", "tcp/80", "--wait", "--wait-timeout", "300ms")
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
	if out := e.ok("version"); !strings.Contains(out, "Server: v0.test (member lb1)") {
		t.Errorf("version:\n%s", out)
	}
	e.ok("vip", "create", "web", "--port", "tcp/80")
	out := e.ok("__complete", "vip", "get", "")
	if !strings.HasPrefix(out, "web\n") {
		t.Errorf("completion of vip names:\n%s", out)
	}
}
