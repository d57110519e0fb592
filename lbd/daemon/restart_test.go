package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/lease"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// ownerDP is a data plane with a fence that records the owner of every
// pass, every withdrawal and every renewal.
type ownerDP struct {
	mu       sync.Mutex
	owners   []string
	withdraw int
	renewals []renewal
}

// renewal is one "serve until" the fence was given, and when.
type renewal struct{ at, until time.Time }

func (f *ownerDP) Renew(until time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renewals = append(f.renewals, renewal{time.Now(), until})
	return nil
}
func (f *ownerDP) Lapsed() <-chan struct{} { return nil }
func (f *ownerDP) Keep()                   {}

// lapse is the first moment the fence would have withdrawn: a deadline
// that passed before the next renewal (or before now); zero when none did.
func (f *ownerDP) lapse() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range f.renewals {
		next := time.Now()
		if i+1 < len(f.renewals) {
			next = f.renewals[i+1].at
		}
		if r.until.Before(next) {
			return r.until
		}
	}
	return time.Time{}
}

func (f *ownerDP) Reconcile(_ context.Context, _ []*edgelbv1.VirtualService, owner string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.owners = append(f.owners, owner)
	return nil
}

func (f *ownerDP) Withdraw(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.withdraw++
	return nil
}

func (f *ownerDP) Close() error { return nil }

func (f *ownerDP) passes() (owners []string, withdrawals int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.owners), f.withdraw
}

// A member restarted within its lease keeps serving its VIPs through the
// catch-up and until its first probe answers, on the lease it carried over
// the restart: caught up before a majority answered (0.4 s after the start,
// in the guest), it withdrew a pinned VIP under traffic and left it down.
// When the answers come before what was carried runs out, the fence hears
// of the longer lease before its deadline. Restarted with nothing carried
// it fences (fail closed) and serves again within a probe interval of the
// answers, not at its next pass a quarter of a lease later (30 s of the
// 2-minute lease here).
func TestRestartWithinTheLeaseKeepsServing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three members and restarts one")
	}
	var mu sync.Mutex
	dps := map[string]*ownerDP{}
	withKernel(t, func(_ context.Context, cfg config.Config, _ *slog.Logger) (DataPlane, string, error) {
		mu.Lock()
		defer mu.Unlock()
		dps[cfg.ID] = &ownerDP{}
		return dps[cfg.ID], "fake", nil
	})
	dpOf := func(id string) *ownerDP {
		mu.Lock()
		defer mu.Unlock()
		return dps[id]
	}
	t.Cleanup(func() { testHookProbesHeld.Store(nil) })
	ds := startCluster(t, 3, func(c *config.Config) {
		c.DataPlane.Mode = "ipvs"
		c.MetricsAddr = ""
		c.Ownership.Lease.Duration, c.Ownership.Grace.Duration = 2*time.Minute, 2*time.Minute+time.Second
	})
	leader, m := leaderAndFollower(t, ds)
	setupPool(t, leader.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vs := newService(1)
	vs.PinnedMember = m.cfg.ID
	if _, err := client(t, leader.Addr()).CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: vs}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, m.cfg.ID+" serves the pinned VIP", func() bool { return len(m.ownedVIPs()) == 1 })
	contact := filepath.Join(m.cfg.DataDir, "last-contact")
	waitFor(t, 10*time.Second, "the lease on disk", func() bool { _, err := os.Stat(contact); return err == nil })

	cfg := m.cfg
	restart := func(stopped func()) *Daemon {
		t.Helper()
		if err := m.Stop(); err != nil {
			t.Fatal(err)
		}
		stopped()
		id := cfg.ID
		testHookProbesHeld.Store(&id)
		d, err := Start(context.Background(), cfg, m.log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Stop() })
		m = d
		waitFor(t, 20*time.Second, id+" catches up", d.caughtUp.Load)
		// Several iterations of its loop, with no probe answered.
		waitFor(t, 10*time.Second, "a pass after the catch-up", func() bool { o, _ := dpOf(id).passes(); return len(o) >= 1 })
		time.Sleep(300 * time.Millisecond)
		return d
	}

	d := restart(func() {})
	owners, withdrawals := dpOf(cfg.ID).passes()
	if withdrawals > 0 || slices.Contains(owners, "") || len(d.ownedVIPs()) != 1 {
		t.Fatalf("restarted within its lease, before any probe answer: %d withdrawals, passes as owners %q, serving %v; want its VIP kept throughout",
			withdrawals, owners, d.ownedVIPs())
	}
	if d.lease.Remaining() < time.Minute {
		t.Errorf("lease left %s after a restart of a second or so; want what was carried, most of 2m", d.lease.Remaining())
	}

	// Little carried (3 s, a tenth of the renewal interval), then answers:
	// the fence's deadline moves on before it passes.
	d = restart(func() {
		boot, err := lease.BootNow()
		if err != nil {
			t.Fatal(err)
		}
		rec := fmt.Sprintf("%d %d %s %d", time.Now().UnixNano(), int64(3*time.Second), boot.ID, int64(boot.Time))
		if err := os.WriteFile(contact, []byte(rec), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	testHookProbesHeld.Store(nil)
	carriedEnd := time.Now().Add(d.lease.CarriedLeft())
	waitFor(t, 10*time.Second, "answers renew the lease past what was carried", func() bool { return d.lease.InContact() })
	time.Sleep(time.Until(carriedEnd) + 500*time.Millisecond)
	if at := dpOf(cfg.ID).lapse(); !at.IsZero() {
		t.Errorf("the fence's deadline passed at %s (what was carried ended at %s) before a renewal: it would have withdrawn the VIP",
			at.Format("15:04:05.000"), carriedEnd.Format("15:04:05.000"))
	}
	if owners, withdrawals := dpOf(cfg.ID).passes(); withdrawals > 0 || slices.Contains(owners, "") || len(d.ownedVIPs()) != 1 {
		t.Errorf("carried 3 s, then answered: %d withdrawals, passes as owners %q, serving %v; want its VIP kept throughout", withdrawals, owners, d.ownedVIPs())
	}

	// Nothing carried: it fences until a majority answers, then serves
	// within a probe interval or so of that.
	d = restart(func() {
		if err := os.Remove(contact); err != nil {
			t.Fatal(err)
		}
	})
	owners, _ = dpOf(cfg.ID).passes()
	if len(owners) == 0 || owners[0] != "" || len(d.ownedVIPs()) != 0 {
		t.Fatalf("restarted with no lease carried and no probe answered: passes as owners %q, serving %v; want fenced", owners, d.ownedVIPs())
	}
	testHookProbesHeld.Store(nil)
	t0 := time.Now()
	waitFor(t, 10*time.Second, cfg.ID+" serves again once answered", func() bool { return len(d.ownedVIPs()) == 1 })
	t.Logf("nothing carried: serving %s after its probes were let through", time.Since(t0).Round(time.Millisecond))
}
