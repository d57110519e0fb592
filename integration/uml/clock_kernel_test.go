package uml

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "unsafe" // go:linkname

	"golang.org/x/sys/unix"
)

//go:linkname nanotime runtime.nanotime
func nanotime() int64

// vvarOffset is where the guest kernel keeps the vDSO's time data in the
// vDSO page (patches/um-vdso-clock.patch, um_vvar.h).
const vvarOffset = 4096 - 64

// TestGuestClockNeedsNoTrap proves the guest kernel's vDSO clock
// (patches/um-vdso-clock.patch): a clock read in the guest no longer traps
// into UML, and what it returns is the kernel's clock. Go reads the
// monotonic clock at every goroutine switch and timer, and a trapped read
// made two thirds of an idle lbd's CPU time in the guest (docs/DEVELOPING.md,
// "The guest's clock"). The checks: the vDSO page's time data is published
// (valid), Go's clock never steps back, and both clocks it reads stay within
// two milliseconds of the kernel's own (syscall) reads, right away and after
// idle spells up to 5 s, in which no timer interrupt need refresh the data;
// and a read costs a small fraction of the syscall, which traps.
func TestGuestClockNeedsNoTrap(t *testing.T) {
	if !InGuest() {
		// The kernel keeps the fast clock to hosts whose TSC runs at one
		// rate through every power state; elsewhere reads trap, rightly.
		if flags, err := os.ReadFile("/proc/cpuinfo"); err == nil && !(bytes.Contains(flags, []byte(" constant_tsc")) && bytes.Contains(flags, []byte(" nonstop_tsc"))) {
			t.Skip("this host's TSC is not constant and non-stop (no constant_tsc, nonstop_tsc in /proc/cpuinfo): the guest's clock reads trap here")
		}
		runInGuest(t, "TestGuestClockNeedsNoTrap")
		return
	}
	// The kernel publishes the data once it has measured the TSC's rate
	// over 200 ms; a test binary that starts right after boot may be first.
	valid := false
	for t0 := time.Now(); !valid && time.Since(t0) < 5*time.Second; time.Sleep(50 * time.Millisecond) {
		var err error
		if valid, err = vdsoClockValid(); err != nil {
			t.Fatal(err)
		}
	}
	if !valid {
		t.Fatalf("the vDSO's time data is not valid: clock reads trap (a kernel without patches/um-vdso-clock.patch, a host without a constant TSC, or um_fastclock=off)")
	}

	// Never back: several goroutines, so reads interleave with switches.
	done := make(chan string, 4)
	for g := 0; g < 4; g++ {
		go func() {
			last := nanotime()
			for i := 0; i < 300_000; i++ {
				now := nanotime()
				if now < last {
					done <- "nanotime went back by " + time.Duration(last-now).String()
					return
				}
				last = now
				if i%1000 == 0 {
					runtime.Gosched()
				}
			}
			done <- ""
		}()
	}
	for g := 0; g < 4; g++ {
		if msg := <-done; msg != "" {
			t.Error(msg)
		}
	}

	// The kernel's clock, read by the syscall (x/sys/unix does not use the vDSO).
	sys := func(id int32) int64 {
		var ts unix.Timespec
		if err := unix.ClockGettime(id, &ts); err != nil {
			t.Fatal(err)
		}
		return ts.Nano()
	}
	// The vDSO's clock converges on the kernel's: the first rate, measured
	// over 200 ms, is a few parts in 10⁴ off, and the correction closes the
	// gap within about a second (seen: 0.4 ms a second after boot). A wrong
	// rate or base would be off by far more.
	const tol = int64(2 * time.Millisecond)
	worst := int64(0)
	// Idle spells past the longest the kernel's timer may wait (4.3 s) too:
	// a correction that outlived its second would show after them.
	for _, idle := range []time.Duration{0, time.Millisecond, 10 * time.Millisecond, 100 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second, 0} {
		time.Sleep(idle)
		for i := 0; i < 100; i++ {
			m1 := sys(unix.CLOCK_MONOTONIC)
			v := nanotime()
			m2 := sys(unix.CLOCK_MONOTONIC)
			r1 := sys(unix.CLOCK_REALTIME)
			w := time.Now().UnixNano()
			r2 := sys(unix.CLOCK_REALTIME)
			if v < m1-tol || v > m2+tol {
				t.Fatalf("after %s idle: CLOCK_MONOTONIC from the vDSO %d, the kernel's between %d and %d", idle, v, m1, m2)
			}
			if w < r1-tol || w > r2+tol {
				t.Fatalf("after %s idle: CLOCK_REALTIME from the vDSO %d, the kernel's between %d and %d", idle, w, r1, r2)
			}
			worst = max(worst, m1-v, v-m2)
		}
	}
	t.Logf("vDSO clock against the kernel's: at most %s outside the syscalls' bracket", time.Duration(worst))

	// No trap: the difference between a read that traps into UML and one
	// that does not is a ptrace round trip on the host, three orders of
	// magnitude (65 µs against 53 ns measured), so a tenth of it is a check
	// of which path ran, not a timing threshold.
	const n = 20_000
	t0 := nanotime()
	for i := 0; i < n; i++ {
		nanotime()
	}
	fast := time.Duration((nanotime() - t0) / n)
	t0 = nanotime()
	for i := 0; i < n/100; i++ {
		sys(unix.CLOCK_MONOTONIC)
	}
	trapped := time.Duration((nanotime() - t0) / (n / 100))
	t.Logf("a clock read in the guest: %s; the syscall: %s", fast, trapped)
	if fast*10 > trapped {
		t.Errorf("a vDSO clock read (%s) costs more than a tenth of the syscall (%s): it traps", fast, trapped)
	}
}

// vdsoClockValid reads the valid flag of the time data in this process's
// vDSO page.
func vdsoClockValid() (bool, error) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if !strings.HasSuffix(sc.Text(), "[vdso]") {
			continue
		}
		start, _, _ := strings.Cut(strings.Fields(sc.Text())[0], "-")
		base, err := strconv.ParseUint(start, 16, 64)
		if err != nil {
			return false, err
		}
		mem, err := os.Open("/proc/self/mem")
		if err != nil {
			return false, err
		}
		defer mem.Close()
		// struct um_vvar: u32 seq, u32 valid, ...
		var valid [4]byte
		if _, err := mem.ReadAt(valid[:], int64(base)+vvarOffset+4); err != nil {
			return false, err
		}
		return binary.NativeEndian.Uint32(valid[:]) == 1, nil
	}
	return false, os.ErrNotExist
}

// runInGuest runs the named test of this binary in a guest and fails t when
// it fails there.
func runInGuest(t *testing.T, name string) {
	t.Helper()
	if os.Getenv("EDGELB_UML") != "1" {
		t.Skip("boots a User-Mode Linux guest; run with EDGELB_UML=1 (needs scripts/uml-deps.sh, which builds the kernel)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer // one per stream: Run copies each in its own goroutine
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{Argv: []string{self, "-test.run=^" + name + "$", "-test.v"}, Stdout: &out, Stderr: &errb})
	t.Logf("guest output:\n%s%s", out.String(), errb.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.Contains(out.String(), "--- PASS: "+name) {
		t.Fatalf("the test failed in the guest (exit code %d)", res.ExitCode)
	}
}
