package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgelb/edgelb/lbd/lbdtest"
)

// These tests run every example of lbctl's --help and of the docs against a
// real three-member lbd cluster (control plane only, loopback), so that an
// example a reader copies works. Each example line starts from the same
// state (the fixture below), so the examples do not depend on their order.

// example is one line to run, and where it is written.
type example struct {
	where string
	line  string
}

// expectedExit lists examples that are right to fail here, with the exit
// code and the text that show the failure is the documented one.
var expectedExit = []struct {
	match func(args []string) bool
	code  int
	want  string
	why   string
}{
	{func(a []string) bool { return slices.Contains(positional(a), "stats") }, 6, "runs without a data plane",
		"live IPVS counters need a member with the ipvs data plane (the guest scenarios run it); here the member says why it has none"},
	{func(a []string) bool {
		return slices.Contains(positional(a), "restore") && !slices.Contains(a, "--yes")
	}, 2, "run again with --yes",
		"without --yes, restore only shows what the file holds and exits 2, so that a script cannot mistake the preview for a restore"},
	{func(a []string) bool {
		return slices.Contains(a, "tenant") && slices.Contains(a, "gc") && !slices.Contains(a, "--force") && !slices.Contains(a, "--dry-run")
	}, 6, "never sent a heartbeat",
		"the fixture's tenants have no cloud provider, so none is silent: lbd refuses to gc one without --force (FailedPrecondition), as it must; the silent case runs against a real apiserver in integration/k8s"},
}

// skipped examples, each with why it cannot run here. Matched as substrings.
var skippedExamples = map[string]string{
	"member add":    "adds a member at a non-loopback address (10.x), which raft would dial; membership changes run on loopback in integration/cluster and in status_test.go",
	"member remove": "removes a member of the shared test cluster for good; membership changes run in integration/cluster",
}

// helpExamples returns the example lines of every command's --help.
func helpExamples(root *cobra.Command) []example {
	var out []example
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, l := range joinContinued(strings.Split(c.Example, "\n")) {
			out = append(out, example{c.CommandPath() + " --help", l})
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return out
}

// docExamples returns the lbctl lines of the sh blocks of a markdown file.
func docExamples(t *testing.T, path string) []example {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []example
	var block []string
	in := false
	for _, l := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(l, "```") && !in:
			in = strings.TrimPrefix(l, "```") == "sh"
			block = nil
		case strings.HasPrefix(l, "```"):
			for _, x := range joinContinued(block) {
				out = append(out, example{filepath.Base(filepath.Dir(path)) + "/" + filepath.Base(path), x})
			}
			in = false
		case in:
			block = append(block, l)
		}
	}
	return out
}

// joinContinued joins lines ending in a backslash and keeps those that run
// lbctl.
func joinContinued(lines []string) []string {
	var out []string
	cur := ""
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		l = cur + l
		cur = ""
		if runsLbctl(l) {
			out = append(out, l)
		}
	}
	return out
}

func runsLbctl(l string) bool {
	for _, st := range steps(l) {
		if len(st.args) > 0 {
			return true
		}
	}
	return false
}

// step is one lbctl invocation of an example line.
type step struct {
	args   []string
	stdout string // file the example redirects stdout to
	piped  bool   // the example pipes stdout into another program
}

// words splits a shell line into words, honouring quotes; an unquoted #
// starts a comment; |, &&, >, <( and ) are words of their own.
func words(line string) []string {
	var out []string
	var cur strings.Builder
	has := false
	flush := func() {
		if has {
			out = append(out, cur.String())
		}
		cur.Reset()
		has = false
	}
	var quote rune
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, has = r, true
		case r == ' ' || r == '\t':
			flush()
		case r == '#' && !has:
			flush()
			return out
		case r == '|' || r == '>' || r == ')':
			flush()
			out = append(out, string(r))
		case r == '&' && i+1 < len(rs) && rs[i+1] == '&':
			flush()
			out = append(out, "&&")
			i++
		case r == '<' && i+1 < len(rs) && rs[i+1] == '(':
			flush()
			out = append(out, "<(")
			i++
		default:
			cur.WriteRune(r)
			has = true
		}
	}
	flush()
	return out
}

// steps turns an example line into lbctl invocations: `a && b` runs both,
// `| jq ...` keeps lbctl's part, `> FILE` captures stdout, `sleep` and
// `source <(...)` are the shell's.
func steps(line string) []step {
	var out []step
	ws := words(line)
	for len(ws) > 0 {
		end := len(ws)
		for i, w := range ws {
			if w == "&&" {
				end = i
				break
			}
		}
		cmd := ws[:end]
		if end < len(ws) {
			ws = ws[end+1:]
		} else {
			ws = nil
		}
		var s step
		started := false
		for i := 0; i < len(cmd); i++ {
			w := cmd[i]
			switch {
			case !started && (w == "lbctl" || strings.HasSuffix(w, "/lbctl")):
				started = true
			case !started && (strings.Contains(w, "=") || w == "source" || w == "<("):
				// env assignments, source <(...): the shell's part
			case !started:
				i = len(cmd) // another program (go, sleep): not ours
			case w == "|":
				s.piped = true
				i = len(cmd)
			case w == ">":
				if i+1 < len(cmd) {
					s.stdout = cmd[i+1]
				}
				i = len(cmd)
			case w == ")":
				i = len(cmd)
			default:
				s.args = append(s.args, w)
			}
		}
		if started {
			out = append(out, s)
		}
	}
	return out
}

// examplesEnv is the cluster, the files and the fixture the examples run on.
type examplesEnv struct {
	t   *testing.T
	dir string // the working directory of the examples
	cfg string
	eps string
	ms  []*lbdtest.Member
}

func (e *examplesEnv) lbctl(ctx context.Context, args ...string) result {
	var out, errb bytes.Buffer
	code := ExecuteContext(ctx, append([]string{"--config", e.cfg, "--timeout", "10s"}, args...), &out, &errb)
	return result{out.String(), errb.String(), code}
}

func (e *examplesEnv) must(args ...string) string {
	e.t.Helper()
	r := e.lbctl(context.Background(), args...)
	if r.code != 0 {
		e.t.Fatalf("fixture: lbctl %s: exit %d\n%s", strings.Join(args, " "), r.code, r.err)
	}
	return r.out
}

// reset brings the cluster and the files to the fixture every example
// assumes, the world of the examples: pools public, team-a (tenant
// cluster-a, unused) and v6; a VIP web made the README's way (backends
// without a port, first address of public) in the default tenant and in
// cluster-a; api on 192.0.2.10 as in vip create's example; web6 on an IPv6
// address; every member active; contexts lab, prod and old-lab; a saved
// snapshot under each name the examples read.
func (e *examplesEnv) reset() {
	e.t.Helper()
	var list struct {
		Items []struct{ Name, Tenant string } `json:"items"`
	}
	if err := json.Unmarshal([]byte(e.must("vip", "list", "--all-tenants", "-o", "json")), &list); err != nil {
		e.t.Fatal(err)
	}
	for _, vs := range list.Items {
		e.must("vip", "delete", vs.Name, "--tenant", vs.Tenant)
	}
	var pools struct {
		Items []struct{ Name string } `json:"items"`
	}
	if err := json.Unmarshal([]byte(e.must("pool", "list", "-o", "json")), &pools); err != nil {
		e.t.Fatal(err)
	}
	for _, p := range pools.Items {
		e.must("pool", "delete", p.Name)
	}
	var members struct {
		Items []struct{ ID, State string } `json:"items"`
	}
	if err := json.Unmarshal([]byte(e.must("member", "list", "-o", "json")), &members); err != nil {
		e.t.Fatal(err)
	}
	for _, m := range members.Items {
		if m.State != "MEMBER_STATE_ACTIVE" {
			e.must("member", "drain", m.ID, "--undo")
		}
	}
	e.must("pool", "create", "public", "--range", "192.0.2.0/24", "--range", "203.0.113.0/28")
	e.must("pool", "create", "team-a", "--range", "198.51.100.10-198.51.100.20", "--tenant-allowed", "cluster-a")
	e.must("pool", "create", "v6", "--range", "2001:db8:1::/112", "--manual")
	e.must("vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11", "--backend", "10.0.0.12", "--label", "app=web,env=prod")
	e.must("vip", "create", "api", "--vip", "192.0.2.10", "--port", "tcp/443:30443", "--backend", "10.0.0.11,weight=2")
	e.must("vip", "create", "web", "--tenant", "cluster-a", "--port", "tcp/80:30080", "--backend", "10.0.0.11")
	e.must("vip", "create", "web6", "--pool", "v6", "--vip", "2001:db8:1::10", "--port", "tcp/80:30080", "--backend", "2001:db8::11")
	e.writeFiles()
}

func (e *examplesEnv) writeFiles() {
	e.t.Helper()
	cfg := fmt.Sprintf("current-context: lab\ncontexts:\n  lab:\n    endpoints: [%[1]s]\n  prod:\n    endpoints: [%[1]s]\n  old-lab:\n    endpoints: [%[1]s]\n", e.eps)
	if err := os.WriteFile(e.cfg, []byte(cfg), 0o600); err != nil {
		e.t.Fatal(err)
	}
	for _, f := range []string{"backup.snap", "backups/2026-01-02.snap", "backups/2026-11-24-0300.snap", "survivor.snap"} {
		path := filepath.Join(e.dir, f)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		os.MkdirAll(filepath.Dir(path), 0o755)
		e.must("snapshot", "save", path)
	}
	// The stale-restore example's file: saved with --stale, as its twin
	// example in snapshot save does (this member has a leader, so it is
	// not marked stale; restore --allow-stale takes either).
	if path := filepath.Join(e.dir, "lb3-stale.snap"); !exists(path) {
		e.must("--stale", "snapshot", "save", path)
	}
}

// localise points the paths of an example into the test's directory and
// fills in what a reader would: a date, a name for NAME.
func localise(line string) string {
	return strings.NewReplacer(
		"$(date +%F-%H%M)", "2026-12-04-1200",
		"$(date +%F)", "2026-12-04",
		"/var/backups/edgelb/", "backups/",
		"/etc/edgelb/", "etc/",
		"/root/", "",
		"~/.config/fish/completions/lbctl.fish", "lbctl.fish",
		"~/.config/", "home/",
		`"${fpath[1]}/_lbctl"`, "_lbctl",
		" NAME", " web",
	).Replace(line)
}

// rewrite points an example at the test cluster: --endpoints of a command
// that dials become the cluster's (set-context only saves them), and
// --if-generation N becomes the generation the object has now, which the
// reader of the example would have read first.
func (e *examplesEnv) rewrite(args []string) []string {
	saving := len(args) >= 2 && args[0] == "config"
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--endpoints" && !saving:
			i++ // LBCTL_ENDPOINTS names the cluster
		case strings.HasPrefix(a, "--endpoints=") && !saving:
		case a == "--if-generation" && i+1 < len(args):
			out = append(out, a, e.generation(args))
			i++
		default:
			out = append(out, a)
		}
	}
	return out
}

// generation is the current generation of the VIP an example names
// ("vip update web", "vip delete web", "backend set web").
func (e *examplesEnv) generation(args []string) string {
	e.t.Helper()
	name := ""
	for i, a := range args {
		if (a == "update" || a == "delete" || a == "set") && i+1 < len(args) {
			name = args[i+1]
			break
		}
	}
	if len(args) > 0 && args[0] == "pool" {
		var p struct{ Pool struct{ Generation string } }
		if err := json.Unmarshal([]byte(e.must("pool", "get", name, "-o", "json")), &p); err != nil {
			e.t.Fatal(err)
		}
		return p.Pool.Generation
	}
	var vs struct{ Generation string }
	if err := json.Unmarshal([]byte(e.must("vip", "get", name, "-o", "json")), &vs); err != nil {
		e.t.Fatal(err)
	}
	return vs.Generation
}

// prepare removes what a create example is about to create (the fixture
// has it, for every other example) and reports whether it changed anything.
func (e *examplesEnv) prepare(args []string) bool {
	e.t.Helper()
	pos := positional(args)
	if len(pos) < 3 || pos[1] != "create" {
		return false
	}
	switch pos[0] {
	case "vip":
		tenant := "default"
		for i, a := range args {
			if a == "--tenant" && i+1 < len(args) {
				tenant = args[i+1]
			}
		}
		if r := e.lbctl(context.Background(), "vip", "get", pos[2], "--tenant", tenant); r.code == 0 {
			e.must("vip", "delete", pos[2], "--tenant", tenant)
			return true
		}
	case "pool":
		if r := e.lbctl(context.Background(), "pool", "get", pos[2]); r.code == 0 {
			var list struct {
				Items []struct{ Name, Tenant, Pool string } `json:"items"`
			}
			json.Unmarshal([]byte(e.must("vip", "list", "--all-tenants", "-o", "json")), &list)
			for _, vs := range list.Items {
				if vs.Pool == pos[2] {
					e.must("vip", "delete", vs.Name, "--tenant", vs.Tenant)
				}
			}
			e.must("pool", "delete", pos[2])
			return true
		}
	}
	return false
}

// positional drops flags and their values (every lbctl flag but a few
// booleans takes a value).
func positional(args []string) []string {
	bools := map[string]bool{"--wait": true, "--yes": true, "--undo": true, "--manual": true, "--drained": true, "--use": true, "--all": true, "--all-tenants": true, "-A": true, "--client": true, "--nonvoter": true, "--dry-run": true, "--force": true, "--orphaned": true}
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "-") && (bools[a] || strings.Contains(a, "=")):
		case strings.HasPrefix(a, "-"):
			i++
		default:
			out = append(out, a)
		}
	}
	return out
}

// readOnly commands leave the fixture as it was, so the next example needs
// no reset.
func readOnly(args []string) bool {
	joined := " " + strings.Join(args, " ") + " "
	for _, w := range []string{" list", " get ", " get-contexts", " current-context", " status", " stats ", " leader", " version", " completion ", " watch", " inspect ", " save ", " use-context ", " set-context ", " delete-context "} {
		if strings.Contains(joined, w) && !strings.Contains(joined, " transfer") {
			return true
		}
	}
	r := strings.Contains(joined, " restore ") && !strings.Contains(joined, "--yes")
	return r
}

func TestEveryExampleWorks(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-member lbd cluster")
	}
	repo := repoRoot(t) // before the Chdir below
	dir := t.TempDir()
	ms := lbdtest.StartCluster(t, 3, lbdtest.Plaintext(), lbdtest.Named("edge1", "edge2", "edge3")).Members
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.Addr)
	}
	work := filepath.Join(dir, "work")
	os.MkdirAll(filepath.Join(work, "etc"), 0o755)
	os.MkdirAll(filepath.Join(work, "home", "edgelb"), 0o755)
	t.Chdir(work)
	t.Setenv("LBCTL_ENDPOINTS", strings.Join(eps, ","))
	e := &examplesEnv{t: t, dir: work, cfg: filepath.Join(dir, "lbctl.yaml"), eps: strings.Join(eps, ", "), ms: ms}

	root := (&app{stdout: io.Discard, stderr: io.Discard}).rootCmd()
	all := helpExamples(root)
	for _, doc := range []string{"README.md", "lbctl/README.md", "docs/OPERATIONS.md"} {
		all = append(all, docExamples(t, filepath.Join(repo, doc))...)
	}
	if len(all) < 80 {
		t.Fatalf("found only %d examples; the extraction is broken", len(all))
	}

	ran, dirty := 0, true
	for _, ex := range all {
		if reason := skipReason(ex.line); reason != "" {
			t.Logf("skip %s: %s: %s", ex.where, ex.line, reason)
			continue
		}
		if dirty {
			e.reset()
		} else {
			e.writeFiles()
		}
		dirty = false
		for _, s := range steps(localise(ex.line)) {
			args := e.rewrite(s.args)
			if e.prepare(args) {
				dirty = true
			}
			ctx, cancel := context.WithCancel(context.Background())
			if len(args) > 0 && args[0] == "watch" {
				// watch runs until interrupted: interrupt it (as Ctrl-C
				// would) once it has had time for its snapshot.
				time.AfterFunc(1500*time.Millisecond, cancel)
			}
			r := e.lbctl(ctx, args...)
			cancel()
			ran++
			if x, ok := expectation(args); ok {
				if r.code != x.code || !strings.Contains(r.err, x.want) {
					t.Errorf("%s: %s\n  ran: lbctl %s\n  exit %d, want %d with %q (%s): %s", ex.where, ex.line, strings.Join(args, " "), r.code, x.code, x.want, x.why, strings.TrimSpace(r.err))
				}
			} else if r.code != 0 {
				t.Errorf("%s: %s\n  ran: lbctl %s\n  exit %d: %s", ex.where, ex.line, strings.Join(args, " "), r.code, strings.TrimSpace(r.err))
			}
			if s.piped && strings.Contains(strings.Join(args, " "), "-o json") {
				for _, l := range strings.Split(strings.TrimSpace(r.out), "\n") {
					if l != "" && !json.Valid([]byte(l)) && !json.Valid([]byte(r.out)) {
						t.Errorf("%s: %s: output for the pipe is not JSON:\n%s", ex.where, ex.line, r.out)
						break
					}
				}
			}
			if s.stdout != "" {
				if err := os.WriteFile(filepath.Join(work, s.stdout), []byte(r.out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if !readOnly(args) {
				dirty = true
			}
		}
	}
	t.Logf("ran %d lbctl invocations from %d examples", ran, len(all))
}

func expectation(args []string) (x struct {
	match func(args []string) bool
	code  int
	want  string
	why   string
}, ok bool) {
	for _, x := range expectedExit {
		if x.match(args) {
			return x, true
		}
	}
	return x, false
}

func skipReason(line string) string {
	for k, why := range skippedExamples {
		if strings.Contains(line, k) {
			return why
		}
	}
	return ""
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
