package uml

// The kernel launcher: Run does not exec the UML kernel itself but re-executes the calling
// binary (os.Executable()) with launchEnv set; this package's init() recognises that,
// installs a seccomp filter and execs the kernel. Every binary that calls Run (test
// binaries, umlrun, the sandbox) links this package and so carries the launcher.
//
// Why: UML 6.1 (the project's build of linux-source-6.1 as Debian's linux.uml) sizes its copy of a guest thread's FPU state by its own
// struct _xstate (x87/SSE + the XSAVE header + AVX: 832 bytes) and, when the host
// answers PTRACE_GETREGSET(NT_X86_XSTATE), switches threads with
// PTRACE_SETREGSET(NT_X86_XSTATE). The host kernel accepts SETREGSET only with a buffer
// of exactly its own XSAVE size, which is larger on any host with AVX-512, PKRU or AMX
// (2696 bytes and more), so the first context switch panics the guest: "ptrace set fp
// regs failed, errno = 14" (EFAULT). The filter makes GETREGSET(NT_X86_XSTATE) fail
// with EIO; UML then takes that as "no XSTATE support" and falls back to
// PTRACE_GETFPREGS/SETFPREGS, which carry the x87/SSE state only.
//
// The upper halves of the AVX registers (and the AVX-512 and AMX state) then no longer
// survive a switch between two threads of one guest process, so guest programs must
// not use them: guestFPUEnv keeps Go programs (GODEBUG=cpu.all=off: the runtime's
// memmove, hashing etc. take their SSE paths) and glibc (its ifunc selection: string
// and memory functions) off AVX. Run hands that environment to the guest's init on the
// kernel command line (UML passes KEY=VALUE arguments to init as its environment) and
// to the command through the spec; everything the command starts inherits it.
//
// It is applied always, on every host, not only where the host's XSAVE area is larger
// than UML's buffer: one behaviour everywhere, so a guest problem caused by the reduced
// FPU state shows up on a developer's machine exactly as in CI rather than only on one
// kind of CPU; no model of the two sizes to keep right (the host kernel wants the exact
// size, which depends on XCR0 and the kernel, and reading it needs CPUID from assembly);
// and what it costs — no AVX for string functions in the guest — does not matter to
// tests. EDGELB_UML_XSTATE=1 boots without it (to check whether a later UML handles
// this host).

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// launchEnv, set by Run on the re-executed binary, holds the kernel's path; the
	// arguments are the kernel's command line.
	launchEnv = "EDGELB_UML_LAUNCH_KERNEL"
	// xstateEnv=1 turns the launcher's filter and guestFPUEnv off.
	xstateEnv = "EDGELB_UML_XSTATE"
)

// guestFPUEnv is the environment every guest process gets when the filter is on.
var guestFPUEnv = []string{
	"GODEBUG=cpu.all=off",
	"GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512BW,-AVX512VL,-AVX512DQ,-AVX512CD,-EVEX,-AVX_Fast_Unaligned_Load,-FMA,-BMI2",
}

// listSep separates the settings inside the variables of guestFPUEnv.
var listSep = map[string]string{"GODEBUG": ",", "GLIBC_TUNABLES": ":"}

// init turns a binary started by Run with launchEnv into the launcher, before main or
// TestMain. Package inits that Go orders before this one have run by then; they must
// not need anything Run's caller would set up. The fds (consoles), the process group
// and the parent-death signal Run gave this process pass through the exec.
func init() {
	kernel := os.Getenv(launchEnv)
	if kernel == "" {
		return
	}
	os.Unsetenv(launchEnv)
	code := launch(kernel, os.Args[1:])
	os.Exit(code) // launch returns only on failure
}

// fpregsFallback reports whether guests boot with the seccomp filter and guestFPUEnv.
func fpregsFallback() bool {
	return runtime.GOARCH == "amd64" && os.Getenv(xstateEnv) != "1"
}

// withGuestFPUEnv returns env with guestFPUEnv added: a variable env already has keeps
// its settings, ours appended (they come last, so they win).
func withGuestFPUEnv(env []string) []string {
	out := append([]string{}, env...)
	for _, kv := range guestFPUEnv {
		key, val, _ := strings.Cut(kv, "=")
		merged := false
		for i := len(out) - 1; i >= 0; i-- {
			if old, ok := strings.CutPrefix(out[i], key+"="); ok {
				if old != "" {
					out[i] = key + "=" + old + listSep[key] + val
				} else {
					out[i] = kv
				}
				merged = true
				break
			}
		}
		if !merged {
			out = append(out, kv)
		}
	}
	return out
}

// launchCommand returns the command that starts kernel with args: this binary as the
// launcher when the filter is on, else the kernel itself.
func launchCommand(kernel string, args []string) (path string, argv []string, env []string, err error) {
	if !fpregsFallback() {
		return kernel, append([]string{kernel}, args...), nil, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", nil, nil, fmt.Errorf("uml: the kernel launcher needs this executable: %w", err)
	}
	return self, append([]string{kernel}, args...), []string{launchEnv + "=" + kernel}, nil
}

// launch installs the filter and execs the kernel; it returns an exit code on failure.
func launch(kernel string, args []string) int {
	// no_new_privs and the filter belong to this thread; the exec below must happen on it.
	runtime.LockOSThread()
	if err := installXstateFilter(); err != nil {
		fmt.Fprintf(os.Stderr, "uml launcher: %v\n", err)
		return 125
	}
	err := syscall.Exec(kernel, append([]string{kernel}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "uml launcher: exec %s: %v\n", kernel, err)
	return 125
}

const (
	ntX86Xstate   = 0x202 // NT_X86_XSTATE (elf.h)
	seccompRetErr = 0x00050000
	seccompRetOK  = 0x7fff0000
	// Offsets into struct seccomp_data.
	offNr   = 0
	offArch = 4
	offArg0 = 16 // ptrace: request
	offArg2 = 32 // ptrace: addr (for GETREGSET, the note type)
)

// xstateFilter: on x86-64, ptrace(PTRACE_GETREGSET, pid, NT_X86_XSTATE, iov) fails
// with EIO; every other system call is allowed.
func xstateFilter() []unix.SockFilter {
	ld := func(off uint32) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off}
	}
	// jne: skip to the final "allow" (at index 8) when the value differs.
	jne := func(at uint8, k uint32) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 8 - at - 1, K: k}
	}
	return []unix.SockFilter{
		0: ld(offArch),
		1: jne(1, unix.AUDIT_ARCH_X86_64),
		2: ld(offNr),
		3: jne(3, unix.SYS_PTRACE),
		4: ld(offArg0),
		5: jne(5, unix.PTRACE_GETREGSET),
		6: ld(offArg2),
		7: {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: ntX86Xstate},
		8: {Code: unix.BPF_RET | unix.BPF_K, K: seccompRetOK},
		9: {Code: unix.BPF_RET | unix.BPF_K, K: seccompRetErr | uint32(unix.EIO)},
	}
}

func installXstateFilter() error {
	f := xstateFilter()
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	// Unprivileged seccomp needs no_new_privs (nothing here gains privileges by exec).
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER): %w", e)
	}
	runtime.KeepAlive(f)
	return nil
}
