package dataplane

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/addr"
)

// The fence is a small child process that outlives a crashed lbd. A SIGKILLed
// lbd leaves its VIP addresses on the interface, and the kernel keeps
// answering ARP for them: after a survivor takes over, two hosts would answer
// for one VIP. The fence holds a pipe from lbd; when the pipe closes without
// lbd saying "keep" first (a crash), or after a clean stop ("keep"), it waits
// up to the lease for a restarted lbd to take the state directory over — a
// quick restart disturbs nothing — and otherwise removes the addresses lbd
// recorded in programmed.json, before the cluster's grace moves them.

// FenceCommand is the hidden lbd subcommand that runs the fence.
const FenceCommand = "__fence"

// Fence is the parent's end of the pipe.
type Fence struct {
	w   io.WriteCloser
	cmd *exec.Cmd
}

// pidFile names the engine that currently owns the state directory.
const pidFile = "engine.pid"

// StartFence starts the fence child (this same binary) for the interface and
// state directory. After a crash it waits up to delay (the ownership lease:
// the cluster moves the VIPs only after the longer grace) for a new lbd to
// take the state directory over — a quick restart then disturbs nothing —
// and withdraws the addresses otherwise.
func StartFence(iface, stateDir string, delay time.Duration) (*Fence, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable for the fence: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, pidFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, fmt.Errorf("record the engine's pid: %w", err)
	}
	cmd := exec.Command(exe, FenceCommand, iface, stateDir, delay.String(), strconv.Itoa(os.Getpid()))
	w, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the fence process: %w", err)
	}
	return &Fence{w: w, cmd: cmd}, nil
}

// Keep tells the fence this is a clean stop: the addresses stay for a
// restart within the lease, and are withdrawn after it like after a crash.
func (f *Fence) Keep() {
	fmt.Fprintln(f.w, "keep")
	f.w.Close()
	f.cmd.Process.Release() // it outlives us by design
}

// RunFence is the child: it waits for its parent's pipe to close and fences
// unless told to keep or a new engine takes over within delay. It returns the
// process exit code. args: interface, state dir, delay, parent pid.
func RunFence(args []string, stdin io.Reader) int {
	if len(args) != 4 {
		fmt.Fprintln(os.Stderr, "lbd fence: want interface, state dir, delay, parent pid")
		return 2
	}
	iface, stateDir, parent := args[0], args[1], args[3]
	delay, err := time.ParseDuration(args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "lbd fence:", err)
		return 2
	}
	r := bufio.NewReader(stdin)
	line, _ := r.ReadString('\n') // returns at "keep" or when the parent dies
	// A clean stop is a restart as often as a shutdown for maintenance. Both
	// get the lease to come back: past it the cluster moves the VIPs, and an
	// address left behind would answer beside the new owner.
	clean := strings.TrimSpace(line) == "keep"
	for deadline := time.Now().Add(delay); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(stateDir, pidFile)); err == nil && strings.TrimSpace(string(b)) != parent {
			return 0 // a restarted lbd adopted the state: it decides now
		}
	}
	b, err := os.ReadFile(filepath.Join(stateDir, "programmed.json"))
	if err != nil {
		if os.IsNotExist(err) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "lbd fence: read record:", err)
		return 1
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		fmt.Fprintln(os.Stderr, "lbd fence: parse record:", err)
		return 1
	}
	idx, err := addr.IfIndex(iface)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lbd fence:", err)
		return 1
	}
	nl, err := addr.Open()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lbd fence:", err)
		return 1
	}
	defer nl.Close()
	code := 0
	for _, s := range rec.VIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if err := nl.Remove(idx, a); err != nil {
			fmt.Fprintln(os.Stderr, "lbd fence:", err)
			code = 1
			continue
		}
		how := "exited without a clean stop"
		if clean {
			how = "stopped"
		}
		fmt.Fprintf(os.Stderr, "lbd fence: lbd %s and did not come back within %s; withdrew VIP %s from %s\n", how, delay, a, iface)
	}
	return code
}
