package dataplane

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"

	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgelb/edgelb/lbd/proc"

	"golang.org/x/sys/unix"

	"github.com/edgelb/edgelb/lbd/dataplane/addr"
)

// The fence is a small child process that outlives a crashed or hung lbd. A
// SIGKILLed, stopped or deadlocked lbd leaves its VIP addresses on the
// interface, and the kernel keeps answering ARP for them: after a survivor
// takes over, two hosts would answer for one VIP. The fence holds a pipe from
// lbd and acts in two cases:
//
//   - The lease. lbd tells it "serve until T" (T on CLOCK_MONOTONIC, which
//     both processes read) from its reconcile loop, each time that loop
//     confirms it is in contact with a leader. When T passes without a
//     renewal — lbd stopped, deadlocked, or its loop stuck in the kernel —
//     the fence withdraws every address recorded in programmed.json and tells
//     lbd so over a second pipe (fd 3). It keeps running: a renewal arms it
//     again, and lbd puts the addresses back through its own reconcile pass.
//   - The pipe closes, without lbd saying "keep" first (a crash) or after a
//     clean stop ("keep"). It then waits up to the delay, and never past the
//     lease lbd last renewed, for a restarted lbd to take the state
//     directory over — a quick restart disturbs nothing — and otherwise
//     removes the recorded addresses, before the cluster's grace moves them.

// FenceCommand is the hidden lbd subcommand that runs the fence.
const FenceCommand = "__fence"

// Fence is the parent's end of the pipes.
type Fence struct {
	mu     sync.Mutex // one writer at a time: the reconcile loop renews, Stop keeps
	w      io.WriteCloser
	cmd    *exec.Cmd
	notify *os.File // read end of the fence's reports (fd 3 in the child)
	kept   bool
}

// pidFile names the engine that currently owns the state directory.
const pidFile = "engine.pid"

// monotonic reads CLOCK_MONOTONIC, the clock lbd and its fence share: a
// deadline on it means the same instant to both, and no wall-clock step moves it.
func monotonic() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(fmt.Sprintf("clock_gettime(CLOCK_MONOTONIC): %v", err)) // cannot fail on Linux
	}
	return time.Duration(ts.Nano())
}

// monotonicAt converts t (read on this process's clocks) to CLOCK_MONOTONIC.
func monotonicAt(t time.Time) time.Duration { return monotonic() + time.Until(t) }

// StartFence starts the fence child (this same binary) for the interface and
// state directory. serveUntil, unless zero, arms the lease from the start (a
// hang before the first renewal is fenced too); zero arms it on the first
// Renew. After a crash it waits up to delay (the ownership lease: the cluster
// moves the VIPs only after the longer grace) for a new lbd to take the state
// directory over — a quick restart then disturbs nothing — and withdraws the
// addresses otherwise.
func StartFence(iface, stateDir string, delay time.Duration, serveUntil time.Time) (*Fence, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable for the fence: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, pidFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, fmt.Errorf("record the engine's pid: %w", err)
	}
	until := "-"
	if !serveUntil.IsZero() {
		until = strconv.FormatInt(int64(monotonicAt(serveUntil)), 10)
	}
	nr, nw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pipe for the fence's reports: %w", err)
	}
	cmd := proc.Command(exe, FenceCommand, iface, stateDir, delay.String(), strconv.Itoa(os.Getpid()), until)
	w, err := cmd.StdinPipe()
	if err != nil {
		nr.Close()
		nw.Close()
		return nil, fmt.Errorf("pipe to the fence: %w", err)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = []*os.File{nw} // fd 3
	if err := cmd.Start(); err != nil {
		nr.Close()
		nw.Close()
		return nil, fmt.Errorf("start the fence process: %w", err)
	}
	nw.Close() // the child holds it now; EOF on nr means the fence is gone
	return &Fence{w: w, cmd: cmd, notify: nr}, nil
}

// Renew tells the fence this host may serve until until. It must be called
// only where lbd has just confirmed that it serves (in contact with a
// leader): a renewal from anywhere that keeps running while lbd is hung
// would defeat the fence.
func (f *Fence) Renew(until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kept {
		return nil
	}
	if _, err := fmt.Fprintf(f.w, "serve %d\n", int64(monotonicAt(until))); err != nil {
		return fmt.Errorf("renew the fence's lease: %w", err)
	}
	return nil
}

// Withdrawn reads the fence's reports: it calls fn with each address the
// fence withdrew because the lease lapsed, until the fence exits.
func (f *Fence) Withdrawn(fn func(netip.Addr)) {
	sc := bufio.NewScanner(f.notify)
	for sc.Scan() {
		s, ok := strings.CutPrefix(sc.Text(), "withdrew ")
		if !ok {
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			fn(a)
		}
	}
}

// Keep tells the fence this is a clean stop: the addresses stay for a
// restart within the lease, and are withdrawn after it like after a crash.
// Only the first call counts.
func (f *Fence) Keep() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.kept {
		return
	}
	f.kept = true
	fmt.Fprintln(f.w, "keep")
	f.w.Close()
	f.cmd.Process.Release() // it outlives us by design
}

// fenceClock is what the lease watch needs of time (tests fake it).
type fenceClock interface {
	Now() time.Duration // CLOCK_MONOTONIC
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Duration                     { return monotonic() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// fenceMsg is one line from lbd: a renewal ("serve <monotonic ns>") or "keep".
type fenceMsg struct {
	keep  bool
	until time.Duration
}

// parseFenceMsg reads one line of the protocol; ok is false for a line it
// does not know (ignored, so an older fence survives a newer lbd's lines).
func parseFenceMsg(line string) (m fenceMsg, ok bool) {
	f := strings.Fields(line)
	switch {
	case len(f) == 1 && f[0] == "keep":
		return fenceMsg{keep: true}, true
	case len(f) == 2 && f[0] == "serve":
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return fenceMsg{}, false
		}
		return fenceMsg{until: time.Duration(ns)}, true
	}
	return fenceMsg{}, false
}

// watchLease enforces the lease until lbd's pipe closes: whenever the
// deadline passes without a renewal it calls withdraw, once, and waits for
// the next renewal to arm it again. armed tells whether until is a deadline
// yet. It returns whether lbd said "keep" (a clean stop) before the pipe
// closed, and the lease as it stood then (the wait after the close ends at
// its deadline: closeWait).
func watchLease(clk fenceClock, until time.Duration, armed bool, msgs <-chan fenceMsg, withdraw func()) (clean bool, last time.Duration, lastArmed bool) {
	for {
		var expired <-chan time.Time
		if armed {
			expired = clk.After(max(until-clk.Now(), 0))
		}
		select {
		case m, ok := <-msgs:
			if !ok {
				return false, until, armed
			}
			if m.keep {
				return true, until, armed
			}
			until, armed = m.until, true
		case <-expired:
			// A renewal may have raced the timer; only a passed deadline counts.
			if clk.Now() >= until {
				withdraw()
				armed = false
			}
		}
	}
}

// RunFence is the child: it enforces the lease lbd renews, and when its
// parent's pipe closes it fences unless a new engine takes over within
// delay. It returns the process exit code. args: interface, state dir,
// delay, parent pid, and the first serve-until (monotonic ns, or "-" for
// none yet; absent from older lbd versions).
func RunFence(args []string, stdin io.Reader) int {
	if len(args) != 4 && len(args) != 5 {
		fmt.Fprintln(os.Stderr, "lbd fence: want interface, state dir, delay, parent pid[, serve-until]")
		return 2
	}
	iface, stateDir, parent := args[0], args[1], args[3]
	delay, err := time.ParseDuration(args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "lbd fence:", err)
		return 2
	}
	var until time.Duration
	armed := false
	var notify io.Writer = io.Discard
	if len(args) == 5 {
		// The five-argument form comes with the report pipe as fd 3.
		notify = os.NewFile(3, "lbd-fence-reports")
		if args[4] != "-" {
			ns, err := strconv.ParseInt(args[4], 10, 64)
			if err != nil {
				fmt.Fprintln(os.Stderr, "lbd fence: serve-until:", err)
				return 2
			}
			until, armed = time.Duration(ns), true
		}
	}
	msgs := make(chan fenceMsg)
	go func() {
		defer close(msgs)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			if m, ok := parseFenceMsg(sc.Text()); ok {
				msgs <- m
				if m.keep {
					return
				}
			}
		}
	}()
	clean, until, armed := watchLease(realClock{}, until, armed, msgs, func() {
		for _, a := range withdrawRecorded(iface, stateDir) {
			// lbd learns which addresses it no longer holds; a broken pipe
			// (lbd gone) is fine: fd 3 is not stdout, so no SIGPIPE.
			fmt.Fprintf(notify, "withdrew %s\n", a)
			fmt.Fprintf(os.Stderr, "lbd fence: lbd did not renew its lease (stopped, hung, or out of contact); withdrew VIP %s from %s\n", a, iface)
		}
	})
	// A clean stop is a restart as often as a shutdown for maintenance. Both
	// get the lease to come back: past it the cluster moves the VIPs, and an
	// address left behind would answer beside the new owner.
	for deadline := time.Now().Add(closeWait(monotonic(), delay, until, armed)); time.Now().Before(deadline); time.Sleep(min(50*time.Millisecond, max(time.Until(deadline), time.Millisecond))) {
		if b, err := os.ReadFile(filepath.Join(stateDir, pidFile)); err == nil && strings.TrimSpace(string(b)) != parent {
			return 0 // a restarted lbd adopted the state: it decides now
		}
	}
	how := "exited without a clean stop"
	if clean {
		how = "stopped"
	}
	code := 0
	removed := withdrawRecorded(iface, stateDir)
	if removed == nil {
		code = 1
	}
	for _, a := range removed {
		fmt.Fprintf(os.Stderr, "lbd fence: lbd %s and did not come back within %s; withdrew VIP %s from %s\n", how, delay, a, iface)
	}
	return code
}

// closeWait is how long the fence waits, after lbd's pipe closed at now, for
// a restarted lbd to adopt the state before it withdraws: the delay, but
// never past the lease lbd last renewed (armed: until is a deadline). Past
// the lease the cluster may give the VIPs to another member, crash or no
// crash, so an address kept for a restart would answer beside it.
func closeWait(now, delay, until time.Duration, armed bool) time.Duration {
	if armed {
		return max(min(delay, until-now), 0)
	}
	return delay
}

// withdrawRecorded removes the addresses programmed.json names from iface and
// returns those it removed (or found gone); nil, after logging why, when it
// could not do its work.
func withdrawRecorded(iface, stateDir string) []netip.Addr {
	b, err := os.ReadFile(filepath.Join(stateDir, "programmed.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return []netip.Addr{}
		}
		fmt.Fprintln(os.Stderr, "lbd fence: read record:", err)
		return nil
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		fmt.Fprintln(os.Stderr, "lbd fence: parse record:", err)
		return nil
	}
	idx, err := addr.IfIndex(iface)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lbd fence:", err)
		return nil
	}
	nl, err := addr.Open()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lbd fence:", err)
		return nil
	}
	defer nl.Close()
	out := []netip.Addr{}
	for _, s := range rec.VIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if err := nl.Remove(idx, a); err != nil {
			fmt.Fprintln(os.Stderr, "lbd fence:", err)
			continue
		}
		out = append(out, a)
	}
	return out
}
