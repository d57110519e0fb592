// Package uml runs a command inside a User-Mode Linux guest: a whole Linux kernel
// (the project's own, built by scripts/uml-kernel.sh from Debian's linux-source-6.1 with
// kernel.config: see kernel.go) running as an ordinary process, whose root file system is the
// host's own (hostfs), so host binaries — Go test binaries included — run inside it
// unchanged but under the guest's kernel, with the guest's own IPVS, netfilter and
// network namespaces. This is how edgelb tests its data plane on machines whose kernel
// has no IPVS.
//
// The host side (Run) checks the kernel has every feature the run wants built in,
// writes a spec into a per-run work directory, boots the kernel
// (through the calling executable as a launcher that first installs a seccomp filter:
// see launcher.go) with the calling executable as the guest's init, streams the command's stdout and stderr
// back over two UML consoles, and returns the command's exit code. The guest side
// (MaybeGuestInit, called first thing in main or TestMain) mounts /proc, /sys, /dev and
// /run, brings lo up, runs the command, reaps orphans and powers the guest off.
package uml

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options describe one guest run.
type Options struct {
	Argv []string // command and arguments, run inside the guest (PATH is searched there)
	Env  []string // the command's environment; nil means the caller's (os.Environ())
	Dir  string   // working directory; empty means the caller's

	Mem     string        // guest RAM, e.g. "1024M" (default "1024M")
	Timeout time.Duration // whole run, boot included; 0 means no limit (ctx still applies)
	// Grace is how long a stopped run (ctx done, Stop called) gives the command after
	// SIGINT before the guest is killed. Default 10s.
	Grace time.Duration

	Stdout, Stderr io.Writer // the command's output; nil discards

	Modules      []string // modules the kernel must have built in; nil means DefaultModules
	ExtraModules []string // checked as well as Modules
	Kernel       string   // the UML kernel binary; default KernelPath()
	Init         string   // the guest's init; default the calling executable (which must call MaybeGuestInit)
	WorkDir      string   // per-run directory on the host (visible in the guest); default a new temp dir
	KeepWorkDir  bool     // keep WorkDir (console log, spec) after the run
	KernelArgs   []string // extra kernel command-line arguments
}

// Result reports a finished run.
type Result struct {
	ExitCode   int           // the command's exit code; 128+signal when it was killed
	BootTime   time.Duration // from starting the kernel until the command started
	Duration   time.Duration // whole run
	ConsoleLog string        // the guest console (kernel messages, init diagnostics)
	Stopped    string        // non-empty when the run was stopped (ctx, timeout) rather than ending on its own
	WorkDir    string
}

// spec is what the host hands to the guest's init, as JSON in the work directory.
type spec struct {
	Argv        []string
	Env         []string
	Dir         string
	WorkDir     string
	StartedUnix int64 // host time when the kernel was started (for the boot time)
	GraceMillis int64
}

const (
	specEnv      = "EDGELB_UML_SPEC" // kernel command line -> init's environment
	exitFile     = "exit"
	bootFile     = "booted"
	stopFile     = "stop"
	consoleFile  = "console.log"
	specFileName = "spec.json"
)

// ErrNoExitCode means the guest ended without reporting the command's exit code
// (kernel panic, init failure, killed at the timeout). The console log says why.
var ErrNoExitCode = errors.New("uml: guest ended without the command's exit code")

// Run boots a guest, runs o.Argv in it and returns when the guest is gone. The error
// is nil whenever the command's exit code is known, whatever that code is.
func Run(ctx context.Context, o Options) (Result, error) {
	var res Result
	if len(o.Argv) == 0 {
		return res, errors.New("uml: no command")
	}
	if o.Mem == "" {
		o.Mem = "1024M"
	}
	if o.Grace == 0 {
		o.Grace = 10 * time.Second
	}
	if o.Env == nil {
		o.Env = os.Environ()
	}
	if o.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return res, err
		}
		o.Dir = wd
	}
	if o.Modules == nil {
		o.Modules = DefaultModules
	}
	var kernel string
	var err error
	if o.Kernel == "" {
		kernel, err = KernelPath()
	} else {
		kernel, err = exec.LookPath(o.Kernel)
	}
	if err != nil {
		return res, err
	}
	// Everything is built in (no insmod in the guest): a feature the kernel lacks is a
	// kernel.config to fix, said now rather than as an odd error in the middle of a test.
	builtin, err := LoadBuiltin(kernel)
	if err != nil {
		return res, err
	}
	if missing := MissingModules(builtin, append(append([]string{}, o.Modules...), o.ExtraModules...)); len(missing) > 0 {
		return res, fmt.Errorf("uml: the guest kernel %s lacks %v; add them (=y) to integration/uml/kernel.config and rebuild with scripts/uml-kernel.sh", kernel, missing)
	}
	if o.Init == "" {
		if o.Init, err = os.Executable(); err != nil {
			return res, err
		}
	}
	if o.Init, err = filepath.Abs(o.Init); err != nil {
		return res, err
	}
	if o.WorkDir == "" {
		if o.WorkDir, err = os.MkdirTemp("", "umlrun-"); err != nil {
			return res, err
		}
	} else if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return res, err
	}
	if o.WorkDir, err = filepath.Abs(o.WorkDir); err != nil {
		return res, err
	}
	res.WorkDir = o.WorkDir
	res.ConsoleLog = filepath.Join(o.WorkDir, consoleFile)
	if !o.KeepWorkDir {
		defer os.RemoveAll(o.WorkDir)
	}
	for _, f := range []string{exitFile, bootFile, stopFile} {
		os.Remove(filepath.Join(o.WorkDir, f))
	}

	start := time.Now()
	env := o.Env
	if fpregsFallback() {
		env = withGuestFPUEnv(env) // see launcher.go
	}
	sp := spec{
		Argv: o.Argv, Env: env, Dir: o.Dir,
		WorkDir:     o.WorkDir,
		StartedUnix: start.UnixNano(),
		GraceMillis: o.Grace.Milliseconds(),
	}
	b, err := json.Marshal(sp)
	if err != nil {
		return res, err
	}
	specPath := filepath.Join(o.WorkDir, specFileName)
	if err := os.WriteFile(specPath, b, 0o644); err != nil {
		return res, err
	}

	console, err := os.Create(res.ConsoleLog)
	if err != nil {
		return res, err
	}
	defer console.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return res, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return res, err
	}
	// Extra files are fds 3 (console), 4 (stdout), 5 (stderr) in the kernel.
	args := []string{
		"mem=" + o.Mem,
		"rootfstype=hostfs", "rootflags=/", "rw",
		"init=" + o.Init,
		"con=null", "ssl=null",
		"con0=null,fd:3", "con1=null,fd:4", "con2=null,fd:5",
		"loglevel=4",
		specEnv + "=" + specPath,
	}
	args = append(args, paramArgs(ModuleParams)...) // built-in modules take theirs here
	if fpregsFallback() {
		args = append(args, guestFPUEnv...) // init's environment
	}
	if os.Getenv(FastClockEnv) == "off" {
		args = append(args, "um_fastclock=off") // clock reads trap, as before the patch
	}
	args = append(args, o.KernelArgs...)
	// The kernel is started through this binary (launcher.go), which installs a
	// seccomp filter before it execs the kernel.
	path, argv, lenv, err := launchCommand(kernel, args)
	if err != nil {
		return res, err
	}
	cmd := &exec.Cmd{Path: path, Args: argv}
	cmd.Stdin = nil
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.ExtraFiles = []*os.File{console, outW, errW}
	// UML's memory file goes to TMPDIR: tmpfs when there is one, else next to the run.
	memDir := o.WorkDir
	var st syscall.Statfs_t
	if syscall.Statfs("/dev/shm", &st) == nil && st.Type == 0x01021994 && uint64(st.Bavail)*uint64(st.Bsize) > 2<<30 {
		memDir = "/dev/shm"
	}
	cmd.Env = append(os.Environ(), "TMPDIR="+memDir)
	cmd.Env = append(cmd.Env, lenv...)
	cmd.Dir = o.WorkDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	outW.Close()
	errW.Close()

	var wg sync.WaitGroup
	copyOut := func(w io.Writer, r *os.File) {
		defer wg.Done()
		defer r.Close()
		if w == nil {
			w = io.Discard
		}
		io.Copy(w, r)
	}
	wg.Add(2)
	go copyOut(o.Stdout, outR)
	go copyOut(o.Stderr, errR)

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var deadline <-chan time.Time
	if o.Timeout > 0 {
		t := time.NewTimer(o.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	killGroup := func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var waitErr error
	var stopped string
loop:
	for {
		select {
		case waitErr = <-done:
			break loop
		case <-ctx.Done():
			stopped = "stopped: " + ctx.Err().Error()
		case <-deadline:
			stopped = fmt.Sprintf("timed out after %s", o.Timeout)
		}
		// Ask the guest's init to stop the command (SIGINT), then kill the guest.
		os.WriteFile(filepath.Join(o.WorkDir, stopFile), []byte(stopped), 0o644)
		select {
		case waitErr = <-done:
		case <-time.After(o.Grace + 5*time.Second):
			killGroup()
			waitErr = <-done
		}
		break
	}
	// UML helper processes may outlive the main one for a moment; make sure they go.
	killGroup()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
	}
	res.Duration = time.Since(start)
	if b, err := os.ReadFile(filepath.Join(o.WorkDir, bootFile)); err == nil {
		if ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			res.BootTime = time.Duration(ns)
		}
	}
	b, err = os.ReadFile(filepath.Join(o.WorkDir, exitFile))
	if err != nil {
		msg := ErrNoExitCode.Error()
		if stopped != "" {
			msg += " (" + stopped + ")"
		}
		if waitErr != nil {
			msg += "; kernel: " + waitErr.Error()
		}
		return res, fmt.Errorf("%w: %s\n--- console tail ---\n%s", ErrNoExitCode, msg, tail(res.ConsoleLog, 40))
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return res, fmt.Errorf("uml: bad exit file %q", b)
	}
	res.ExitCode = code
	res.Stopped = stopped
	return res, nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
