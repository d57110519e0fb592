package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgelb/edgelb/internal/logcapture"
	"github.com/edgelb/edgelb/lbd/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// leaseDP is a data plane with a fence: it records the renewals and passes.
type leaseDP struct {
	mu       sync.Mutex
	renewals []time.Time // the "serve until" of each renewal
	passes   int
	lastAll  int // services in the last pass
	kept     bool
	lapsed   chan struct{}
}

func (f *leaseDP) Reconcile(_ context.Context, all []*edgelbv1.VirtualService, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.passes++
	f.lastAll = len(all)
	return nil
}
func (f *leaseDP) Withdraw(context.Context) error { return nil }
func (f *leaseDP) Close() error                   { return nil }
func (f *leaseDP) Renew(until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewals = append(f.renewals, until)
	return nil
}
func (f *leaseDP) Lapsed() <-chan struct{} { return f.lapsed }
func (f *leaseDP) Keep() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kept = true
}

func (f *leaseDP) counts() (renewals, passes int, last time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n := len(f.renewals); n > 0 {
		last = f.renewals[n-1]
	}
	return len(f.renewals), f.passes, last
}

// notifySocket is a fake systemd: it records what lbd sends to NOTIFY_SOCKET.
type notifySocket struct {
	mu   sync.Mutex
	msgs []string
	path string
}

func listenNotify(t *testing.T) *notifySocket {
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	s := &notifySocket{path: path}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *notifySocket) count(msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// drain waits until everything sent to the socket so far has been read: a
// datagram of its own, queued behind them, comes back.
func (s *notifySocket) drain(t *testing.T) {
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mark := fmt.Sprintf("MARK=%d", time.Now().UnixNano())
	if _, err := c.Write([]byte(mark)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the fake systemd reads its mark", func() bool { return s.count(mark) == 1 })
}

func (s *notifySocket) first() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.msgs) == 0 {
		return ""
	}
	return s.msgs[0]
}

// The fence's lease and systemd's watchdog are fed by the reconcile loop
// only: while a pass is stuck neither is renewed, whatever else in lbd still
// runs (raft, the API, the contact loop); once the pass returns both resume,
// and a withdrawal the fence reports is answered by a pass.
func TestLeaseAndWatchdogFollowTheReconcileLoop(t *testing.T) {
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "400000") // pinged every 100–200 ms
	t.Setenv(testHooksEnv, "1")
	stalled := make(chan struct{}, 1)
	testHookStalled = func() { stalled <- struct{}{} }
	t.Cleanup(func() { testHookStalled = nil })

	dp := &leaseDP{lapsed: make(chan struct{}, 1)}
	withKernel(t, func(context.Context, config.Config, *slog.Logger) (DataPlane, string, error) { return dp, "fake", nil })
	var logs logcapture.Buffer
	cfg := soloConfig(t)
	cfg.Health.Enabled = false
	stall := filepath.Join(cfg.DataDir, "test-stall")
	d, err := Start(context.Background(), cfg, logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			d.Stop()
		}
	})
	lease := cfg.Ownership.Lease.Duration

	waitFor(t, 20*time.Second, "renewals and passes", func() bool { r, p, _ := dp.counts(); return r >= 3 && p >= 1 })
	waitFor(t, 10*time.Second, "watchdog pings", func() bool { return sock.count("WATCHDOG=1") >= 3 })
	if f := sock.first(); f != "READY=1" {
		t.Errorf("first notification %q, want READY=1", f)
	}
	if n := sock.count("READY=1"); n != 1 {
		t.Errorf("READY=1 sent %d times, want once", n)
	}
	if _, _, last := dp.counts(); time.Until(last) > lease || time.Until(last) <= 0 {
		t.Errorf("renewed until %s from now, want within the lease (%s)", time.Until(last), lease)
	}

	// Hold a pass, as a slow iptables-restore or a stuck netlink call would.
	if err := os.WriteFile(stall, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stalled:
	case <-time.After(10 * time.Second):
		t.Fatal("the test hook did not hold a pass")
	}
	r0, _, last := dp.counts()
	sock.drain(t) // pings sent before the pass was held are counted now
	w0 := sock.count("WATCHDOG=1")
	// Everything else keeps running past the moment the fence would act.
	time.Sleep(time.Until(last) + 300*time.Millisecond)
	sock.drain(t)
	if r, _, _ := dp.counts(); r != r0 {
		t.Errorf("%d renewals while the reconcile pass was stuck; want none, or the fence never acts", r-r0)
	}
	if w := sock.count("WATCHDOG=1"); w != w0 {
		t.Errorf("%d watchdog pings while the reconcile pass was stuck; want none", w-w0)
	}

	// Released: the loop notices it did not run for longer than the lease,
	// catches up, and renews and pings again.
	if err := os.Remove(stall); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "renewals resume", func() bool { r, _, _ := dp.counts(); return r > r0 })
	waitFor(t, 10*time.Second, "watchdog pings resume", func() bool { return sock.count("WATCHDOG=1") > w0 })
	found := false
	for _, r := range logs.MustRecords(t) {
		if msg, _ := r["msg"].(string); msg == "the reconcile loop did not run for longer than the lease (process stopped or a pass hung); catching up with the cluster before serving VIPs again" {
			found = true
		}
	}
	if !found {
		t.Error("no catch-up after the loop did not run for longer than the lease")
	}

	// The fence reports a withdrawal: a pass follows at once (not at the
	// next resync, 30 s on).
	waitFor(t, 20*time.Second, "caught up again", d.caughtUp.Load)
	_, p0, _ := dp.counts()
	dp.lapsed <- struct{}{}
	waitFor(t, 10*time.Second, "a pass after the fence's report", func() bool { _, p, _ := dp.counts(); return p > p0 })

	stopped = true
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	dp.mu.Lock()
	kept := dp.kept
	dp.mu.Unlock()
	if !kept {
		t.Error("a clean stop did not tell the fence to keep the addresses")
	}
	waitFor(t, 5*time.Second, "STOPPING=1 on a clean stop", func() bool { return sock.count("STOPPING=1") == 1 })
}

// A change that lands while the loop is between two looks (after its wait
// returned, before it looks again) is not lost: the loop wakes often only to
// renew the lease, and a renewal-only iteration must still see the change.
// The hook makes the change at exactly that point; the next resync pass
// would come only 30 s later.
func TestChangeBetweenIterationsIsNotMissed(t *testing.T) {
	dp := &leaseDP{lapsed: make(chan struct{}, 1)}
	withKernel(t, func(context.Context, config.Config, *slog.Logger) (DataPlane, string, error) { return dp, "fake", nil })
	var logs logcapture.Buffer
	cfg := soloConfig(t)
	cfg.Health.Enabled = false
	d, err := Start(context.Background(), cfg, logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop() })
	waitFor(t, 20*time.Second, "caught up", d.caughtUp.Load)
	setupPool(t, d.Addr())
	c := client(t, d.Addr())
	create := func(i int) {
		if _, err := c.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: newService(i)}); err != nil {
			t.Error(err)
		}
	}
	create(1)
	waitFor(t, 10*time.Second, "a pass with the first service", func() bool { dp.mu.Lock(); defer dp.mu.Unlock(); return dp.lastAll == 1 })
	// Let the loop settle into renewal-only iterations.
	time.Sleep(time.Second)
	done := make(chan struct{})
	var once sync.Once
	hook := func() { once.Do(func() { create(2); close(done) }) }
	testHookIteration.Store(&hook)
	t.Cleanup(func() { testHookIteration.Store(nil) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop did not iterate")
	}
	waitFor(t, 5*time.Second, "a pass with the service created between two iterations", func() bool { dp.mu.Lock(); defer dp.mu.Unlock(); return dp.lastAll == 2 })
}
