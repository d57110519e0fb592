// Package guesttest runs a package's scenario tests inside one User-Mode Linux
// guest (integration/uml) and reports them back to `go test` on the host: the
// host-side test builds lbd, lbctl, nodeserver and probe, boots the guest with
// the same test binary as its init, runs the guest-side test there, and turns
// each guest subtest into a subtest of the host's. integration/e2e (data plane)
// integration/ha (failover) and integration/bgp are built on it.
//
// Knobs: EDGELB_E2E_BIN=DIR uses prebuilt binaries instead of building them;
// EDGELB_E2E_KEEP=1 keeps the work directory (lbd and node logs, guest console).
package guesttest

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/uml"
)

// GuestEnv is set in the guest's environment; guest-side tests skip without it.
const GuestEnv = "EDGELB_E2E_GUEST"

// InGuest reports whether this process is the guest side of a run.
func InGuest() bool { return os.Getenv(GuestEnv) == "1" && uml.InGuest() }

// Main is the TestMain of a package built on guesttest: as the guest's PID 1
// it mounts, loads modules and runs the guest test; on the host it runs the
// package's tests.
func Main(m *testing.M) {
	uml.MaybeGuestInit()
	os.Exit(m.Run())
}

// HostOnly skips the host-side test t unless EDGELB_UML=1 asks for the
// guest suites (what is what boots the guest, run how to run it), and
// inside the guest, which runs only the guest-side test.
func HostOnly(t *testing.T, what, run string) {
	t.Helper()
	if os.Getenv("EDGELB_UML") != "1" {
		t.Skip(what + " boot a User-Mode Linux guest; run: " + run)
	}
	if uml.InGuest() {
		t.Skip("host side only")
	}
}

// BuildBinaries builds lbd, lbctl, nodeserver and probe into a cache directory
// (or returns EDGELB_E2E_BIN).
func BuildBinaries(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("EDGELB_E2E_BIN"); dir != "" {
		return dir
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "edgelb-e2e", "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/edgelb/edgelb/lbd", "github.com/edgelb/edgelb/lbctl",
		"github.com/edgelb/edgelb/integration/cmd/nodeserver", "github.com/edgelb/edgelb/integration/cmd/probe")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build binaries: %v\n%s", err, out)
	}
	t.Logf("built lbd, lbctl, nodeserver, probe into %s in %s", dir, time.Since(t0).Round(time.Millisecond))
	return dir
}

// RunFilter is this test binary's -test.run value.
func RunFilter() string {
	if f := flag.Lookup("test.run"); f != nil {
		return f.Value.String()
	}
	return ""
}

// guestRun maps the host's -run filter (Host/scenario) to the guest's.
func guestRun(guestTest string) string {
	f := flag.Lookup("test.run")
	if f == nil {
		return "^" + guestTest + "$"
	}
	parts := strings.SplitN(f.Value.String(), "/", 2)
	if len(parts) == 2 && parts[1] != "" {
		return "^" + guestTest + "$/" + parts[1]
	}
	return "^" + guestTest + "$"
}

// Options of a guest run.
type Options struct {
	GuestTest string // the guest-side test function's name (default TestGuest)
	Mem       string // guest memory (default 1536M)
	Env       []string
}

// Run boots the guest, runs o.GuestTest there and reports its subtests as t's.
func Run(t *testing.T, o Options) {
	t.Helper()
	if o.GuestTest == "" {
		o.GuestTest = "TestGuest"
	}
	if o.Mem == "" {
		o.Mem = "1536M"
	}
	bin := BuildBinaries(t)
	work, err := os.MkdirTemp("", "edgelb-guest-")
	if err != nil {
		t.Fatal(err)
	}
	keep := os.Getenv("EDGELB_E2E_KEEP") == "1"
	defer func() {
		if keep || t.Failed() {
			t.Logf("work directory kept: %s (guest.log, lbd-*.log, node*.log, uml/console.log)", work)
			return
		}
		os.RemoveAll(work)
	}()

	timeout := 18 * time.Minute
	if d, ok := t.Deadline(); ok {
		timeout = time.Until(d) - 30*time.Second
	}
	pr, pw := io.Pipe()
	parsed := make(chan *guestResults, 1)
	go func() { parsed <- parseGuest(pr, testing.Verbose()) }()
	// The guest's own output is also kept in the work directory: CI keeps
	// that directory on failure, but not the clone whose log held the output.
	var out io.Writer = pw
	if f, err := os.Create(filepath.Join(work, "guest.log")); err == nil {
		defer f.Close()
		out = io.MultiWriter(pw, f)
	}
	env := append(os.Environ(), GuestEnv+"=1", "EDGELB_E2E_BIN="+bin, "EDGELB_E2E_WORK="+work)
	env = append(env, o.Env...)
	res, runErr := uml.Run(context.Background(), uml.Options{
		Argv:        []string{os.Args[0], "-test.run", guestRun(o.GuestTest), "-test.v", "-test.timeout", (timeout - 20*time.Second).String()},
		Env:         env,
		Stdout:      out,
		Stderr:      out,
		Timeout:     timeout,
		Mem:         o.Mem,
		WorkDir:     filepath.Join(work, "uml"),
		KeepWorkDir: true,
	})
	pw.Close()
	g := <-parsed
	t.Logf("guest: boot %s, total %s, exit %d", res.BootTime.Round(time.Millisecond), res.Duration.Round(time.Second), res.ExitCode)

	g.report(t, o.GuestTest)
	// CI shows only the end of a run, and the lbd log tails above push the
	// failing scenarios' own messages out of it: repeat those last, also
	// when the guest itself failed (a timeout ends every scenario at once).
	summary := g.failureSummary(o.GuestTest, 12)
	top := g.results[o.GuestTest]
	if runErr != nil {
		t.Fatalf("guest run: %v (guest output: %s)\n%s", runErr, filepath.Join(work, "guest.log"), summary)
	}
	if top == nil {
		t.Fatalf("the guest ran no %s (exit %d):\n%s", o.GuestTest, res.ExitCode, g.loose.String())
	}
	if top.status != "PASS" {
		t.Errorf("%s %s (exit %d):\n%s", o.GuestTest, top.status, res.ExitCode, top.output.String())
	}
	if summary != "" {
		t.Errorf("failed in the guest, their last messages:\n%s", summary)
	}
}

var messageLine = regexp.MustCompile(`^\s+[\w.-]+\.go:\d+: `)

// failureSummary lists, for each failed scenario under parent that has no
// failed scenario of its own, its last max file:line messages (t.Error and
// t.Log look alike in the output, so it cannot pick the errors alone).
func (g *guestResults) failureSummary(parent string, max int) string {
	var b strings.Builder
	for _, name := range g.order {
		r := g.results[name]
		if !strings.HasPrefix(name, parent+"/") || r.status == "PASS" || r.status == "SKIP" || g.failedUnder(name) {
			continue
		}
		var msgs []string
		for _, l := range strings.Split(r.output.String(), "\n") {
			if messageLine.MatchString(l) {
				if len(l) > 400 {
					l = l[:400] + " …"
				}
				msgs = append(msgs, strings.TrimSpace(l))
			}
		}
		if len(msgs) > max {
			msgs = msgs[len(msgs)-max:]
		}
		status := r.status
		if status == "" {
			status = "no result (crashed or timed out)"
		}
		fmt.Fprintf(&b, "%s: %s\n", name, status)
		for _, m := range msgs {
			fmt.Fprintf(&b, "    %s\n", m)
		}
	}
	return b.String()
}

func (g *guestResults) failedUnder(name string) bool {
	for n, r := range g.results {
		if strings.HasPrefix(n, name+"/") && r.status != "PASS" && r.status != "SKIP" {
			return true
		}
	}
	return false
}

type guestResult struct {
	status string
	output strings.Builder
}

type guestResults struct {
	order   []string
	results map[string]*guestResult
	loose   strings.Builder
}

// report turns the guest's subtests of parent into subtests of t, nested alike.
func (g *guestResults) report(t *testing.T, parent string) {
	for _, name := range g.order {
		sub, ok := strings.CutPrefix(name, parent+"/")
		if !ok || strings.Contains(sub, "/") {
			continue
		}
		r := g.results[name]
		t.Run(sub, func(t *testing.T) {
			if r.status != "SKIP" || testing.Verbose() {
				t.Log("\n" + r.output.String())
			}
			g.report(t, name)
			switch r.status {
			case "PASS":
			case "SKIP":
				t.Skip("skipped in the guest")
			case "FAIL":
				t.Fail()
			default:
				// go test -v prints a subtest's result only when its
				// parent ends, so a guest that dies leaves every scenario
				// it ran without one, passed or not.
				t.Error("no result from the guest: it ended (crashed or timed out) before its test printed this scenario's result; the last scenario started is the one it ended in")
			}
		})
	}
}

var (
	runLine    = regexp.MustCompile(`^\s*=== (RUN|CONT|PAUSE|NAME)\s+(\S+)`)
	resultLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(`)
)

// parseGuest splits the guest's `go test -v` output by test; with live set it also
// echoes every line (prefixed) to stdout so long runs show progress.
func parseGuest(r io.Reader, live bool) *guestResults {
	g := &guestResults{results: map[string]*guestResult{}}
	get := func(name string) *guestResult {
		if g.results[name] == nil {
			g.results[name] = &guestResult{}
			g.order = append(g.order, name)
		}
		return g.results[name]
	}
	cur := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if live {
			fmt.Println("guest| " + line)
		}
		if m := runLine.FindStringSubmatch(line); m != nil {
			cur = m[2]
			get(cur)
		} else if m := resultLine.FindStringSubmatch(line); m != nil {
			get(m[2]).status = m[1]
		} else if cur != "" {
			o := &get(cur).output
			o.WriteString(line)
			o.WriteByte('\n')
		} else {
			g.loose.WriteString(line + "\n")
		}
	}
	io.Copy(io.Discard, r)
	return g
}
