package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgelb/edgelb/lbd/dataplane/addr"
)

// fakeClock is a CLOCK_MONOTONIC the test moves by hand. Each After call is
// reported on armed, so the test knows the watch is waiting before it
// moves time on.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Duration
	timers []fakeTimer
	armed  chan time.Duration // the deadline of each timer set
}

type fakeTimer struct {
	at time.Duration
	c  chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Hour, armed: make(chan time.Duration, 100)}
}

func (c *fakeClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := fakeTimer{at: c.now + d, c: make(chan time.Time, 1)}
	if d <= 0 {
		t.c <- time.Time{}
	} else {
		c.timers = append(c.timers, t)
	}
	c.armed <- t.at
	return t.c
}

// advance moves the clock to at and fires the timers due by then.
func (c *fakeClock) advance(at time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = at
	keep := c.timers[:0]
	for _, t := range c.timers {
		if t.at <= at {
			t.c <- time.Time{}
		} else {
			keep = append(keep, t)
		}
	}
	c.timers = keep
}

// leaseWatch runs watchLease on a fake clock and records its withdrawals.
type leaseWatch struct {
	t         *testing.T
	clk       *fakeClock
	msgs      chan fenceMsg
	withdrawn chan time.Duration // the fake time of each withdrawal
	done      chan bool          // watchLease's result
}

func startLeaseWatch(t *testing.T, until time.Duration, armed bool) *leaseWatch {
	w := &leaseWatch{t: t, clk: newFakeClock(), msgs: make(chan fenceMsg), withdrawn: make(chan time.Duration, 10), done: make(chan bool, 1)}
	go func() {
		clean, _, _ := watchLease(w.clk, until, armed, w.msgs, func() { w.withdrawn <- w.clk.Now() })
		w.done <- clean
	}()
	return w
}

// waitArmed waits until the watch has set a timer for deadline.
func (w *leaseWatch) waitArmed(deadline time.Duration) {
	w.t.Helper()
	for {
		select {
		case at := <-w.clk.armed:
			if at == deadline {
				return
			}
		case <-time.After(10 * time.Second):
			w.t.Fatalf("the fence never set a timer for %s", deadline)
		}
	}
}

func (w *leaseWatch) noWithdrawal(when string) {
	w.t.Helper()
	select {
	case at := <-w.withdrawn:
		w.t.Fatalf("%s: the fence withdrew at %s", when, at)
	default:
	}
}

func (w *leaseWatch) wantWithdrawal(when string) time.Duration {
	w.t.Helper()
	select {
	case at := <-w.withdrawn:
		return at
	case <-time.After(10 * time.Second):
		w.t.Fatalf("%s: the fence did not withdraw", when)
		return 0
	}
}

const h = time.Hour // the fake clock starts at 1h

// The lease: the fence withdraws when "serve until" passes without a
// renewal, not before; a renewal moves the deadline; it withdraws once per
// lapse and a later renewal arms it again.
func TestFenceLease(t *testing.T) {
	w := startLeaseWatch(t, h+2*time.Second, true)
	w.waitArmed(h + 2*time.Second)
	w.clk.advance(h + 1500*time.Millisecond)
	w.msgs <- fenceMsg{until: h + 3500*time.Millisecond} // renewed in time
	w.waitArmed(h + 3500*time.Millisecond)
	w.clk.advance(h + 3*time.Second) // past the first deadline, before the second
	w.noWithdrawal("renewed before the deadline")

	w.clk.advance(h + 3500*time.Millisecond)
	if at := w.wantWithdrawal("no renewal"); at != h+3500*time.Millisecond {
		t.Errorf("withdrew at %s, want at the deadline %s", at, h+3500*time.Millisecond)
	}
	// Once per lapse: time goes on, nothing renews, nothing more happens.
	w.clk.advance(h + time.Minute)
	w.noWithdrawal("after the lapse, without a renewal")

	// lbd came back and renewed: the lease holds again, and lapses again.
	w.msgs <- fenceMsg{until: h + time.Minute + 2*time.Second}
	w.waitArmed(h + time.Minute + 2*time.Second)
	w.clk.advance(h + time.Minute + time.Second)
	w.noWithdrawal("renewed after a lapse")
	w.clk.advance(h + time.Minute + 2*time.Second)
	w.wantWithdrawal("second lapse")

	// A renewal that is already past (lbd's own lease ran out) withdraws at once.
	w.msgs <- fenceMsg{until: h + time.Second}
	w.wantWithdrawal("renewal to a past deadline")

	close(w.msgs) // the crash path takes over
	if clean := <-w.done; clean {
		t.Error("a closed pipe counted as a clean stop")
	}
	w.noWithdrawal("pipe closed")
}

// Without a first deadline the lease is unarmed until the first renewal; a
// clean stop ("keep") ends the watch without withdrawing, whatever the lease.
func TestFenceLeaseUnarmedAndKeep(t *testing.T) {
	w := startLeaseWatch(t, 0, false)
	w.clk.advance(h + time.Hour)
	w.noWithdrawal("unarmed")
	w.msgs <- fenceMsg{until: h + time.Hour + time.Second}
	w.waitArmed(h + time.Hour + time.Second)
	w.msgs <- fenceMsg{keep: true}
	if clean := <-w.done; !clean {
		t.Error("keep did not count as a clean stop")
	}
	w.clk.advance(3 * h)
	w.noWithdrawal("after keep")
}

func TestParseFenceMsg(t *testing.T) {
	for _, c := range []struct {
		line string
		want fenceMsg
		ok   bool
	}{
		{"serve 123", fenceMsg{until: 123}, true},
		{"keep", fenceMsg{keep: true}, true},
		{"serve", fenceMsg{}, false},
		{"serve x", fenceMsg{}, false},
		{"hello 1", fenceMsg{}, false},
		{"", fenceMsg{}, false},
	} {
		if got, ok := parseFenceMsg(c.line); got != c.want || ok != c.ok {
			t.Errorf("parseFenceMsg(%q) = %+v, %v; want %+v, %v", c.line, got, ok, c.want, c.ok)
		}
	}
}

// ipIn runs ip(8) in the namespace.
func ipIn(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -n %s %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The real fence process, in a network namespace of its own with a dummy
// interface: it keeps the address while renewed, removes it once renewals
// stop, reports that to lbd, and is armed again by the next renewal.
func TestFenceProcessWithdrawsWhenRenewalsStop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8)")
	}
	ns := fmt.Sprintf("edgelb-fence-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	// A dummy interface where the kernel has the module; a bridge without
	// ports holds addresses as well (this host's kernel has no dummy).
	if out, err := exec.Command("ip", "-n", ns, "link", "add", "fz0", "type", "dummy").CombinedOutput(); err != nil {
		t.Logf("no dummy interface (%v: %s); using a bridge", err, strings.TrimSpace(string(out)))
		ipIn(t, ns, "link", "add", "fz0", "type", "bridge")
	}
	ipIn(t, ns, "link", "set", "fz0", "up")
	const vip = "192.0.2.77"
	// Asked over netlink from a thread in the namespace: an ip(8) process
	// per look takes hundreds of ms in the emulated guest.
	hasVIP := func() bool {
		found := false
		if err := inNetns(t, ns, func() error {
			idx, err := addr.IfIndex("fz0")
			if err != nil {
				return err
			}
			nl, err := addr.Open()
			if err != nil {
				return err
			}
			defer nl.Close()
			as, err := nl.List(idx)
			for _, a := range as {
				found = found || a.String() == vip
			}
			return err
		}); err != nil {
			t.Fatalf("list addresses in %s: %v", ns, err)
		}
		return found
	}
	addVIP := func() {
		ipIn(t, ns, "addr", "add", vip+"/32", "dev", "fz0")
		if !hasVIP() {
			t.Fatal("the test could not add the VIP")
		}
	}
	addVIP()
	dir := t.TempDir()
	b, _ := json.Marshal(record{VIPs: []string{vip}})
	if err := os.WriteFile(filepath.Join(dir, "programmed.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}

	const lease = 2 * time.Second
	var f *Fence
	if err := inNetns(t, ns, func() (err error) {
		// The child inherits this thread's namespace.
		f, err = StartFence("fz0", dir, 2*time.Second, time.Now().Add(lease))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.w.Close()
		f.cmd.Process.Kill()
	})
	reports := make(chan netip.Addr, 10)
	go f.Withdrawn(func(a netip.Addr) { reports <- a })

	// Renewed every lease/4 (as the reconcile loop does) for several
	// leases, on a goroutine of its own so that slow checks do not delay
	// it: the address stays.
	stopRenew := make(chan struct{})
	renewed := make(chan error, 1)
	go func() {
		tick := time.NewTicker(lease / 4)
		defer tick.Stop()
		for {
			if err := f.Renew(time.Now().Add(lease)); err != nil {
				renewed <- err
				return
			}
			select {
			case <-stopRenew:
				renewed <- nil
				return
			case <-tick.C:
			}
		}
	}()
	for end := time.Now().Add(3 * lease); time.Now().Before(end); time.Sleep(lease / 8) {
		if !hasVIP() {
			t.Fatal("the fence withdrew the VIP while its lease was being renewed")
		}
	}
	close(stopRenew)
	if err := <-renewed; err != nil {
		t.Fatal(err)
	}
	// lbd "hangs": no more renewals.
	last := time.Now().Add(lease)
	if err := f.Renew(last); err != nil {
		t.Fatal(err)
	}
	waitCond(t, 10*time.Second, "the fence withdraws the VIP", func() bool { return !hasVIP() })
	if early := time.Until(last); early > 50*time.Millisecond {
		t.Errorf("withdrew %s before the lease ran out", early)
	}
	select {
	case a := <-reports:
		if a.String() != vip {
			t.Errorf("reported %s withdrawn, want %s", a, vip)
		}
	case <-time.After(5 * time.Second):
		t.Error("the fence did not report the withdrawal to lbd")
	}

	// lbd is back: its reconcile pass re-adds the address and renews; the
	// fence guards it again and withdraws at the next lapse.
	addVIP()
	if err := f.Renew(time.Now().Add(lease)); err != nil {
		t.Fatal(err)
	}
	waitCond(t, 10*time.Second, "the re-armed fence withdraws the VIP again", func() bool { return !hasVIP() })

	// The crash path still works: the pipe closes without "keep", no
	// restart adopts the state, and after the delay the fence withdraws
	// and exits.
	addVIP()
	f.w.Close()
	done := make(chan error, 1)
	go func() { done <- f.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the fence exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the fence did not exit after its pipe closed")
	}
	if hasVIP() {
		t.Error("the fence left the VIP after a crash")
	}
}

// inNetns runs f on a thread moved into the named namespace and moves that
// thread back before unlocking it. (integration/netns.Do instead lets the
// thread die; when that thread is the main one, it cannot, and it stays in
// the namespace: /proc/self/net — the main thread's — then shows the test's
// namespace to everything later in this process. Seen in the guest: the
// kernel tests that followed found no /proc/net/xt_recent lists.)
func inNetns(t *testing.T, name string, f func() error) error {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns %s: %w", name, err)
	}
	defer func() {
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread must not serve anything else now: keep it locked.
			runtime.LockOSThread()
			t.Errorf("return from netns %s: %v", name, err)
		}
	}()
	return f()
}

// waitCond polls cond until it holds or limit passes.
func waitCond(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
	}
}

// A pass that outlives the lease it was started under (it hung in the
// kernel) adds no address from its stale plan: the cluster may have moved
// the VIP meanwhile. The next pass, under a fresh lease, adds it.
func TestPassPastItsLeaseAddsNoAddress(t *testing.T) {
	e, _, fa, snd := fakeEngine(t)
	ctx := context.Background()
	vss := many(2, 1)
	e.leaseUntil.Store(int64(monotonic() - time.Millisecond))
	err := e.Reconcile(ctx, vss, "me")
	if !errors.Is(err, ErrLeaseLapsed) {
		t.Fatalf("pass past its lease: err %v, want ErrLeaseLapsed", err)
	}
	if len(fa.on) != 0 || snd.n != 0 {
		t.Fatalf("pass past its lease added %d addresses and sent %d announcements; want none", len(fa.on), snd.n)
	}
	e.leaseUntil.Store(int64(monotonic() + time.Minute))
	if err := e.Reconcile(ctx, vss, "me"); err != nil {
		t.Fatal(err)
	}
	if len(fa.on) != 2 || snd.n != 2 {
		t.Fatalf("under a fresh lease: %d addresses, %d announcements; want 2, 2", len(fa.on), snd.n)
	}
}

// When the fence reports that it withdrew an address, the engine stops
// announcing it at once, wakes the daemon, and its next pass adds the
// address back (the engine believed it held it, so without the report no
// pass would).
func TestFenceReportReaddsThroughAPass(t *testing.T) {
	e, _, fa, snd := fakeEngine(t)
	e.lapsed, e.lapsedCh = map[netip.Addr]bool{}, make(chan struct{}, 1)
	ctx := context.Background()
	vss := many(1, 1)
	if err := e.Reconcile(ctx, vss, "me"); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr(vss[0].Vip)
	if !fa.on[a] {
		t.Fatal("the VIP did not go up")
	}
	// The fence's work: the address is gone, and it says so.
	delete(fa.on, a)
	e.fenceWithdrew(a)
	select {
	case <-e.Lapsed():
	default:
		t.Fatal("the report did not wake the daemon")
	}
	n := snd.n
	e.ann.Added(netip.MustParseAddr("192.0.2.250"), "") // the announcer still runs for others
	if snd.n != n+1 {
		t.Fatal("the announcer stopped altogether")
	}
	if err := e.Reconcile(ctx, vss, "me"); err != nil {
		t.Fatal(err)
	}
	if !fa.on[a] {
		t.Fatal("the pass after the report did not add the VIP back")
	}
	if snd.n != n+2 {
		t.Errorf("the VIP added back was announced %d times, want once", snd.n-n-1)
	}
}

// A renewal after the lease ran out (a stopped leader right after SIGCONT,
// before the fence's report is read) stops every announcement at once; the
// next pass adds the addresses back and announces them.
func TestRenewalAfterALapseStopsAnnouncing(t *testing.T) {
	e, _, fa, snd := fakeEngine(t)
	e.lapsed, e.lapsedCh = map[netip.Addr]bool{}, make(chan struct{}, 1)
	ctx := context.Background()
	vss := many(1, 1)
	e.renewed(time.Now().Add(time.Minute))
	if err := e.Reconcile(ctx, vss, "me"); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr(vss[0].Vip)
	// In time: nothing changes.
	e.renewed(time.Now().Add(time.Minute))
	select {
	case <-e.Lapsed():
		t.Fatal("a renewal in time counted as a lapse")
	default:
	}
	// Late: the lease had run out; the fence took the address.
	e.leaseUntil.Store(int64(monotonic() - time.Millisecond))
	delete(fa.on, a)
	e.renewed(time.Now().Add(time.Minute))
	select {
	case <-e.Lapsed():
	default:
		t.Fatal("a late renewal did not wake the daemon")
	}
	if got := e.ann.RemoveAll(); len(got) != 0 {
		t.Errorf("still announcing %v after a late renewal", got)
	}
	n := snd.n
	if err := e.Reconcile(ctx, vss, "me"); err != nil {
		t.Fatal(err)
	}
	if !fa.on[a] || snd.n != n+1 {
		t.Errorf("the next pass: address up %v, %d announcements; want up, 1", fa.on[a], snd.n-n)
	}
}

// After lbd's pipe closes the fence waits for a restart at most the delay
// and never past the lease lbd last renewed.
func TestFenceCloseWait(t *testing.T) {
	for _, tc := range []struct {
		name              string
		now, delay, until time.Duration
		armed             bool
		want              time.Duration
	}{
		{"lease ends first", h, 250 * time.Millisecond, h + 100*time.Millisecond, true, 100 * time.Millisecond},
		{"delay ends first", h, 250 * time.Millisecond, h + time.Second, true, 250 * time.Millisecond},
		{"lease already over", h, 250 * time.Millisecond, h - time.Second, true, 0},
		{"never armed", h, 250 * time.Millisecond, 0, false, 250 * time.Millisecond},
	} {
		if got := closeWait(tc.now, tc.delay, tc.until, tc.armed); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	// watchLease hands the lease it held at the close to closeWait.
	w := &leaseWatch{t: t, clk: newFakeClock(), msgs: make(chan fenceMsg)}
	res := make(chan [2]any, 1)
	go func() {
		_, until, armed := watchLease(w.clk, 0, false, w.msgs, func() {})
		res <- [2]any{until, armed}
	}()
	w.msgs <- fenceMsg{until: h + time.Second}
	close(w.msgs)
	if got := <-res; got[0] != h+time.Second || got[1] != true {
		t.Errorf("watchLease returned the lease %v armed=%v, want 1h1s true", got[0], got[1])
	}
}

// hookAddrs runs onAdd after each address it adds.
type hookAddrs struct {
	*fakeAddrs
	onAdd func(netip.Addr)
}

func (h *hookAddrs) Add(i int, a netip.Addr) error {
	err := h.fakeAddrs.Add(i, a)
	if h.onAdd != nil {
		h.onAdd(a)
	}
	return err
}

// One lapse can be reported twice: by a late renewal (renewed) and by the
// fence's own report, which may arrive while the pass that adds the address
// back runs. That pass then takes its additions back (fail closed), and the
// passes that follow, incremental ones with nothing changed in the FSM (as
// the daemon runs them), must still put the address back. Seen in the guest
// at the double profile: the VIP stayed dark until the loop's next full
// pass, 30 s later.
func TestLapseReportedTwiceStillReadds(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	e.lapsed, e.lapsedCh = map[netip.Addr]bool{}, make(chan struct{}, 1)
	ha := &hookAddrs{fakeAddrs: fa}
	e.addrs = ha
	ctx := context.Background()
	vss := many(1, 1)
	a := netip.MustParseAddr(vss[0].Vip)
	e.renewed(time.Now().Add(time.Minute))
	if err := e.Reconcile(ctx, vss, "me"); err != nil {
		t.Fatal(err)
	}
	// The lease ran out; the fence took the address; lbd renews late.
	e.leaseUntil.Store(int64(monotonic() - time.Millisecond))
	delete(fa.on, a)
	e.renewed(time.Now().Add(time.Minute))
	<-e.Lapsed()
	// The fence's own report of the same withdrawal arrives while the next
	// pass adds the address back.
	ha.onAdd = func(netip.Addr) { e.fenceWithdrew(a); ha.onAdd = nil }
	err := e.ReconcileChanged(ctx, nil, "me")
	if fa.on[a] {
		t.Fatalf("the pass the fence's report raced kept the address (err %v)", err)
	}
	for i := 0; i < 2 && !fa.on[a]; i++ {
		select {
		case <-e.Lapsed(): // the daemon wakes for the report
		default:
		}
		if err := e.ReconcileChanged(ctx, nil, "me"); err != nil {
			t.Fatal(err)
		}
	}
	if !fa.on[a] {
		t.Fatal("the passes after a lapse reported twice did not put the address back")
	}
}
