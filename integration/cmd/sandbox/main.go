// Command sandbox runs a whole edgelb cluster on one machine and shows it balancing
// live traffic: it boots a User-Mode Linux guest (real IPVS, whatever the host kernel
// has), builds the integration/topo network — three edge hosts, three Kubernetes
// nodes serving a NodePort, a client — starts three real lbd (one bootstraps, two
// join), creates an address pool and a VIP with real lbctl, then sends traffic from
// the client through the VIP and prints which node answered, how often, and the
// owner's `ipvsadm -Ln`.
//
//	sandbox [-bin DIR] [-duration 0] [-mem 1024M]       run it (scripts/sandbox.sh builds and calls this)
//	sandbox exec CMD [ARGS...]                           run CMD inside the running sandbox's guest,
//	                                                      e.g. sandbox exec lbctl vip list -o wide
//
// With -duration (or SANDBOX_DURATION seconds) > 0 it stops by itself and exits 0 only
// when every node got its share of the traffic and nothing failed (CI); otherwise it
// runs until Ctrl-C.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/probe"
	"github.com/edgelb/edgelb/integration/topo"
	"github.com/edgelb/edgelb/integration/uml"
)

// stateDir is shared by the host and the guest (hostfs): logs, and the exec bridge.
func stateDir() string {
	if d := os.Getenv("SANDBOX_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "edgelb-sandbox")
}

func main() {
	uml.MaybeGuestInit()
	if len(os.Args) > 1 && os.Args[1] == "exec" {
		os.Exit(execInSandbox(os.Args[2:]))
	}
	self, _ := os.Executable()
	bin := flag.String("bin", filepath.Dir(self), "directory holding lbd, lbctl and nodeserver")
	dur := flag.Duration("duration", envSeconds("SANDBOX_DURATION"), "stop after this long and exit 0 only if traffic was balanced (0: until Ctrl-C)")
	mem := flag.String("mem", "1024M", "guest RAM")
	guest := flag.Bool("guest", false, "internal: run the sandbox inside the guest")
	flag.Parse()
	if *guest {
		os.Exit(runGuest(*bin, *dur))
	}
	os.Exit(runHost(*bin, *dur, *mem))
}

func envSeconds(name string) time.Duration {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil || v < 0 {
		return 0
	}
	return time.Duration(v) * time.Second
}

func runHost(bin string, dur time.Duration, mem string) int {
	for _, b := range []string{"lbd", "lbctl", "nodeserver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: %v (build them: go build -o %s/ ./lbd ./lbctl ./integration/cmd/nodeserver, or use scripts/sandbox.sh)\n", err, bin)
			return 2
		}
	}
	abs, _ := filepath.Abs(bin)
	dir := stateDir()
	os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "exec"), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 1
	}
	self, _ := os.Executable()
	fmt.Printf("sandbox: booting a User-Mode Linux guest (logs in %s)\n", dir)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	timeout := time.Duration(0)
	if dur > 0 {
		timeout = dur + 5*time.Minute
	}
	res, err := uml.Run(ctx, uml.Options{
		Argv:        []string{self, "-guest", "-bin", abs, "-duration", dur.String()},
		Env:         append(os.Environ(), "SANDBOX_DIR="+dir),
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		Mem:         mem,
		Timeout:     timeout,
		WorkDir:     filepath.Join(dir, "uml"),
		KeepWorkDir: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 1
	}
	return res.ExitCode
}

const vipName, vip = "web", "10.0.0.200"

func runGuest(bin string, dur time.Duration) int {
	dir := stateDir()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	say := func(format string, args ...any) { fmt.Printf("sandbox: "+format+"\n", args...) }
	// SANDBOX_DATAPLANE=none runs lbd control-plane-only (debugging the sandbox itself).
	// SANDBOX_LBD_CONFIG=FILE passes an lbd config file (e.g. slower raft timing).
	var lbdConfig string
	if p := os.Getenv("SANDBOX_LBD_CONFIG"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sandbox:", err)
			return 1
		}
		lbdConfig = string(b)
	}
	// SANDBOX_MODE=bgp: a BIRD router between the client and the edges,
	// lbd peering with it, and a dr VIP from a bgp pool on every edge (bgp.go).
	bgpMode := os.Getenv("SANDBOX_MODE") == "bgp"
	if lbdConfig == "" && !bgpMode {
		lbdConfig = sandboxL2LBDConfig
	}
	cfg := lab.Config{Bin: bin, Work: dir, Logf: say, DataMode: os.Getenv("SANDBOX_DATAPLANE"), Clients: 250, LBDConfig: lbdConfig}
	if bgpMode {
		cfg.Router = sandboxRouter()
		if lbdConfig == "" {
			cfg.LBDConfig = sandboxBGPLBDConfig
		}
		cfg.LBDConfig += cfg.Router.LBDConfig()
	}
	l, err := lab.Start(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 1
	}
	defer l.Close()
	os.Setenv("LBCTL_ENDPOINTS", l.Endpoints())
	os.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	if bgpMode {
		return runBGP(ctx, l, dir, dur)
	}

	run := func(args ...string) bool {
		fmt.Printf("\n$ lbctl %s\n", strings.Join(args, " "))
		out, err := l.LBCTL(args...)
		fmt.Print(out)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return false
		}
		return true
	}
	var backends []string
	weights := map[string]int{}
	for i, n := range l.Topo.Nodes {
		w := 1
		if i == len(l.Topo.Nodes)-1 {
			w = 2
		}
		backends = append(backends, "--backend", fmt.Sprintf("%s:%d,weight=%d", n.V4, topo.NodePort, w))
		weights[n.Name] = w
	}
	if !run("pool", "create", "lab", "--range", topo.VIPPoolV4) ||
		!run(append([]string{"vip", "create", vipName, "--vip", vip, "--port", "tcp/80:30080", "--port", "udp/80:30080", "--wait"}, backends...)...) {
		return 1
	}
	// vip create --wait returns once an owner is assigned; its data plane
	// may not have the VIP up yet: the clock starts here, and the rounds
	// start once the VIP answers, as the e2e scenarios' createVIP waits.
	// (Which member owns it is asked after: lbctl, a process, takes about
	// a second to start in the guest.)
	t0 := time.Now()
	if _, err := topo.WaitAnswer(probe.Options{Proto: "tcp", Addr: vip + ":80", NetNS: "client"}, time.Minute); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: VIP %s:80 does not answer: %v\n", vip, err)
		return 1
	}
	fmt.Printf("VIP %s:80 answering %s after its owner was assigned\n", vip, time.Since(t0).Round(time.Millisecond))
	owner, _, err := l.WaitOwner(vipName, 30*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 1
	}
	if !run("vip", "list", "-o", "wide") || !run("member", "list") {
		return 1
	}
	go serveExec(ctx, dir)

	fmt.Printf(`
────────────────────────────────────────────────────────────────────────────
 edgelb sandbox: 3 lbd on edge1-3 (10.0.0.11-13), nodes node1-%d (10.0.0.21-), client 10.0.0.100
 VIP %s:80 (tcp+udp) -> NodePort 30080, owned by %s. Weights: %s.
 From another terminal on this machine:
   scripts/sandbox.sh lbctl vip list -o wide
   scripts/sandbox.sh lbctl backend set web --backend 10.0.0.21:30080,weight=3 --backend 10.0.0.22:30080
   scripts/sandbox.sh ip netns exec %s ipvsadm -Ln
   scripts/sandbox.sh probe -netns client count %s:80   (one client address: mh sends it all to one node)
 (each runs inside the guest; lbctl's endpoints are preset). Logs: %s
────────────────────────────────────────────────────────────────────────────
`, len(l.Topo.Nodes), vip, owner.ID, fmtWeights(weights), owner.ID, vip, dir)

	if dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dur)
		defer cancel()
	}
	total := map[string]int{}
	var rounds, sent, failed int
	// 3 s lets a SYN be retransmitted once: IPVS drops a SYN whose client port
	// matches a connection it still holds in TIME_WAIT (conn_reuse_mode=1 with
	// conntrack), and on a slow host a 1 s timeout counted those as failures.
	tcp := probe.Options{Proto: "tcp", Addr: vip + ":80", NetNS: "client", Timeout: 3 * time.Second}
	// The default scheduler (Maglev, IPVS mh) hashes the client's address: traffic from
	// a single address goes to a single node. Like real traffic, these rounds come from
	// many client addresses (10.1.0.0/16, routed via the client host).
	tcp = tcp.WithSources(l.Topo.ClientSources)
	udp := tcp.WithSources(l.Topo.ClientSources)
	udp.Proto = "udp"
	for round := 1; ctx.Err() == nil; round++ {
		rc, _ := probe.Count(ctx, tcp, 60, 2)
		ru, _ := probe.Count(ctx, udp, 30, 2)
		if ctx.Err() != nil && rc.Sent+ru.Sent < 90 {
			break
		}
		rounds++
		sent += rc.Sent + ru.Sent
		failed += rc.Errors + ru.Errors
		for n, c := range rc.Counts {
			total[n] += c
		}
		for n, c := range ru.Counts {
			total[n] += c
		}
		fmt.Printf("\n[%s] round %d: %d client addresses -> %s:80, 60 TCP connections + 30 UDP datagrams (%.0f conn/s)\n", time.Now().Format("15:04:05"), round, len(tcp.Sources), vip, rc.PerSecond)
		printBars(rc, ru, weights)
		if rc.Errors+ru.Errors > 0 {
			fmt.Printf("  errors: tcp %d udp %d %v %v\n", rc.Errors, ru.Errors, rc.Samples, ru.Samples)
		}
		if round == 1 || round%5 == 0 {
			if o, _, err := l.WaitOwner(vipName, 5*time.Second); err == nil {
				owner = o
			}
			out, _ := owner.IPVSList()
			fmt.Printf("\n  %s# ipvsadm -Ln\n%s", owner.ID, indent(out, "  "))
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	fmt.Printf("\nsandbox: %d rounds, %d sent, %d failed; per node: %v\n", rounds, sent, failed, total)
	if dur == 0 {
		return 0
	}
	return verdict(total, weights, sent, failed)
}

// verdict: balanced means no failures and every node within half of its weighted share.
func verdict(total map[string]int, weights map[string]int, sent, failed int) int {
	sum := 0
	for _, w := range weights {
		sum += w
	}
	okCount := sent - failed
	bad := []string{}
	if sent == 0 {
		bad = append(bad, "no traffic sent")
	}
	if failed > 0 {
		bad = append(bad, fmt.Sprintf("%d failed", failed))
	}
	for n, w := range weights {
		share := float64(okCount) * float64(w) / float64(sum)
		if float64(total[n]) < share/2 {
			bad = append(bad, fmt.Sprintf("%s got %d, expected about %.0f", n, total[n], share))
		}
	}
	if len(bad) > 0 {
		fmt.Printf("sandbox: NOT balanced: %s\n", strings.Join(bad, "; "))
		return 1
	}
	fmt.Println("sandbox: traffic was balanced across every node: OK")
	return 0
}

func printBars(tcp, udp probe.CountResult, weights map[string]int) {
	var names []string
	for n := range weights {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := tcp.Counts[n] + udp.Counts[n]
		fmt.Printf("  %-6s w=%d  tcp %3d  udp %3d  %s\n", n, weights[n], tcp.Counts[n], udp.Counts[n], strings.Repeat("█", c/2))
	}
}

func fmtWeights(w map[string]int) string {
	var parts []string
	for n, v := range w {
		parts = append(parts, fmt.Sprintf("%s=%d", n, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func indent(s, p string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(p + l + "\n")
	}
	return b.String()
}

// The exec bridge: the host drops DIR/exec/ID.cmd (NUL-separated argv); the guest runs
// it and writes ID.out and then ID.rc. hostfs makes the files visible on both sides.
func serveExec(ctx context.Context, dir string) {
	ed := filepath.Join(dir, "exec")
	for ctx.Err() == nil {
		ents, _ := os.ReadDir(ed)
		for _, e := range ents {
			id, ok := strings.CutSuffix(e.Name(), ".cmd")
			if !ok {
				continue
			}
			p := filepath.Join(ed, e.Name())
			b, err := os.ReadFile(p)
			os.Remove(p)
			if err != nil || len(b) == 0 {
				continue
			}
			argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
			go func() {
				ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				defer cancel()
				cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				rc := 0
				if err := cmd.Run(); err != nil {
					var ee *exec.ExitError
					if errors.As(err, &ee) {
						rc = ee.ExitCode()
					} else {
						fmt.Fprintln(&out, err)
						rc = 127
					}
				}
				writeSync(filepath.Join(ed, id+".out"), out.Bytes())
				writeSync(filepath.Join(ed, id+".rc"), []byte(strconv.Itoa(rc)))
			}()
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func writeSync(path string, b []byte) {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return
	}
	f.Write(b)
	f.Sync()
	f.Close()
	os.Rename(tmp, path)
}

func execInSandbox(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "usage: sandbox exec CMD [ARGS...]")
		return 2
	}
	ed := filepath.Join(stateDir(), "exec")
	if _, err := os.Stat(ed); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox exec: no running sandbox (%v); start one with scripts/sandbox.sh\n", err)
		return 2
	}
	id := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	tmp := filepath.Join(ed, id+".tmp")
	if err := os.WriteFile(tmp, []byte(strings.Join(argv, "\x00")), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox exec:", err)
		return 1
	}
	os.Rename(tmp, filepath.Join(ed, id+".cmd"))
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(filepath.Join(ed, id+".rc")); err == nil {
			out, _ := os.ReadFile(filepath.Join(ed, id+".out"))
			os.Stdout.Write(out)
			os.Remove(filepath.Join(ed, id+".rc"))
			os.Remove(filepath.Join(ed, id+".out"))
			rc, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			return rc
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "sandbox exec: no answer from the guest within 3 minutes (is the sandbox running?)")
	return 1
}
