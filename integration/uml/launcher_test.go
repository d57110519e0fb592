package uml

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestWithGuestFPUEnv(t *testing.T) {
	got := withGuestFPUEnv([]string{"A=1", "GODEBUG=madvdontneed=1", "GLIBC_TUNABLES="})
	want := []string{"A=1", "GODEBUG=madvdontneed=1,cpu.all=off", guestFPUEnv[1]}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if got := withGuestFPUEnv(nil); !slices.Equal(got, guestFPUEnv) {
		t.Errorf("from nothing: %q", got)
	}
}

const probeEnv = "EDGELB_UML_TEST_PTRACE_PROBE"

// TestLauncherPtraceProbe runs only as the child of TestLauncherFiltersXstate: it
// asks for a register set of a process it does not trace and prints the errnos.
// The filter acts before the kernel looks at the pid: EIO for NT_X86_XSTATE,
// ESRCH (not traced) for anything else and for everything without the filter.
func TestLauncherPtraceProbe(t *testing.T) {
	if os.Getenv(probeEnv) != "1" {
		t.Skip("the child of TestLauncherFiltersXstate")
	}
	probe := func(note uintptr) unix.Errno {
		_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETREGSET, uintptr(os.Getppid()), note, 0, 0, 0)
		return e
	}
	fmt.Printf("probe xstate=%d prstatus=%d\n", probe(ntX86Xstate), probe(1 /* NT_PRSTATUS */))
}

func TestLauncherFiltersXstate(t *testing.T) {
	if runtime.GOARCH != "amd64" || !fpregsFallback() {
		t.Skip("the launcher filters on amd64 without " + xstateEnv + "=1")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	run := func(launched bool) string {
		args := []string{"-test.run", "^TestLauncherPtraceProbe$", "-test.v"}
		cmd := exec.Command(self, args...)
		if launched {
			path, argv, env, err := launchCommand(self, args)
			if err != nil {
				t.Fatal(err)
			}
			cmd = &exec.Cmd{Path: path, Args: argv, Env: env}
		}
		cmd.Env = append(append(os.Environ(), cmd.Env...), probeEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("launched=%v: %v\n%s", launched, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "probe ") {
				return l
			}
		}
		t.Fatalf("launched=%v: no probe line in\n%s", launched, out)
		return ""
	}
	plain := fmt.Sprintf("probe xstate=%d prstatus=%d", unix.ESRCH, unix.ESRCH)
	filtered := fmt.Sprintf("probe xstate=%d prstatus=%d", unix.EIO, unix.ESRCH)
	if got := run(false); got != plain {
		t.Errorf("without the launcher: %q, want %q", got, plain)
	}
	if got := run(true); got != filtered {
		t.Errorf("through the launcher: %q, want %q", got, filtered)
	}
}
