// Package e2e holds edgelb's real-kernel scenario tests. They run inside one
// User-Mode Linux guest per `go test` run (integration/uml): the host side (TestUML)
// builds lbd, lbctl, nodeserver and probe, boots the guest with this same test binary as
// its init, runs TestGuest inside it — the topology of integration/topo with three lbd
// members and three nodes — and turns each guest scenario into a subtest here.
//
//	sudo bash scripts/uml-deps.sh
//	EDGELB_UML=1 go test ./integration/e2e/ -v -timeout 20m
//	EDGELB_UML=1 go test ./integration/e2e/ -v -run 'TestUML/ipv6'   # one scenario
//
// Knobs: EDGELB_E2E_BIN=DIR uses prebuilt binaries (lbd, lbctl, nodeserver, probe)
// instead of building them; EDGELB_E2E_KEEP=1 keeps the work directory (lbd and node
// logs, guest console); EDGELB_E2E_DATAPLANE=none runs lbd control-plane-only (harness
// debugging; the data-plane scenarios then fail).
package e2e

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
	"sync"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/uml"
)

func TestMain(m *testing.M) {
	uml.MaybeGuestInit() // PID 1 of the guest: mount, load modules, run TestGuest
	os.Exit(m.Run())
}

const guestEnv = "EDGELB_E2E_GUEST"

func buildBinaries(t *testing.T) string {
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

// guestRun maps the host's -run filter (TestUML/scenario) to the guest's.
func guestRun() string {
	f := flag.Lookup("test.run")
	if f == nil {
		return "^TestGuest$"
	}
	parts := strings.SplitN(f.Value.String(), "/", 2)
	if len(parts) == 2 && parts[1] != "" {
		return "^TestGuest$/" + parts[1]
	}
	return "^TestGuest$"
}

func TestUML(t *testing.T) {
	if os.Getenv("EDGELB_UML") != "1" {
		t.Skip("real-kernel scenarios boot a User-Mode Linux guest; run: sudo bash scripts/uml-deps.sh && EDGELB_UML=1 go test ./integration/e2e/ -v -timeout 20m (or scripts/e2e-uml.sh)")
	}
	if uml.InGuest() {
		t.Skip("host side only")
	}
	bin := buildBinaries(t)
	work, err := os.MkdirTemp("", "edgelb-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	keep := os.Getenv("EDGELB_E2E_KEEP") == "1"
	defer func() {
		if keep || t.Failed() {
			t.Logf("work directory kept: %s (lbd-*.log, node*.log, uml/console.log)", work)
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
	env := append(os.Environ(), guestEnv+"=1", "EDGELB_E2E_BIN="+bin, "EDGELB_E2E_WORK="+work)
	res, runErr := uml.Run(context.Background(), uml.Options{
		Argv:        []string{os.Args[0], "-test.run", guestRun(), "-test.v", "-test.timeout", (timeout - 20*time.Second).String()},
		Env:         env,
		Stdout:      pw,
		Stderr:      pw,
		Timeout:     timeout,
		Mem:         "1536M",
		WorkDir:     filepath.Join(work, "uml"),
		KeepWorkDir: true,
	})
	pw.Close()
	g := <-parsed
	t.Logf("guest: boot %s, total %s, exit %d", res.BootTime.Round(time.Millisecond), res.Duration.Round(time.Second), res.ExitCode)

	g.report(t, "TestGuest")
	top := g.results["TestGuest"]
	if runErr != nil {
		t.Fatalf("guest run: %v", runErr)
	}
	if top == nil {
		t.Fatalf("the guest ran no TestGuest (exit %d):\n%s", res.ExitCode, g.loose.String())
	}
	if top.status != "PASS" {
		t.Errorf("TestGuest %s (exit %d):\n%s", top.status, res.ExitCode, top.output.String())
	}
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
				t.Error("no result from the guest (crashed or timed out in this scenario)")
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
	var mu sync.Mutex
	cur := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if live {
			fmt.Println("guest| " + line)
		}
		mu.Lock()
		if m := runLine.FindStringSubmatch(line); m != nil {
			cur = m[2]
			get(cur)
		} else if m := resultLine.FindStringSubmatch(line); m != nil {
			get(m[2]).status = m[1]
		} else if cur != "" {
			o := &get(cur).output
			o.WriteString(line)
			o.WriteByte('\n')
			// A subtest's lines also belong to its parent's story when it fails early.
		} else {
			g.loose.WriteString(line + "\n")
		}
		mu.Unlock()
	}
	io.Copy(io.Discard, r)
	return g
}
