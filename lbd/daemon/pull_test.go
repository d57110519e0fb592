package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/dataplane"
)

// pullDP is a quiet data plane that records the pushes asked of it and
// keeps the PullHandover the daemon installs, as the IPVS engine would.
type pullDP struct {
	quietDP
	mu     sync.Mutex
	pushes []string // "from vip,vip"
	pull   dataplane.PullHandover
}

func (p *pullDP) PushConnections(_ context.Context, from string, vips []netip.Addr) (map[netip.Addr]int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := from
	for _, a := range vips {
		s += " " + a.String()
	}
	p.pushes = append(p.pushes, s)
	return map[netip.Addr]int{vips[0]: 5}, nil
}

func (p *pullDP) SetPullHandover(f dataplane.PullHandover) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pull = f
}

func (p *pullDP) get() (dataplane.PullHandover, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pull, slices.Clone(p.pushes)
}

// The new owner's pull, as the daemon wires it into the data plane, reaches
// the old owner's data plane over the liveness connection between two real
// members; a member out of contact (stopped, or unknown) is not asked and
// costs nothing.
func TestPullHandoverReachesTheOldOwner(t *testing.T) {
	var mu sync.Mutex
	dps := map[string]*pullDP{}
	withKernel(t, func(_ context.Context, cfg config.Config, _ *slog.Logger) (DataPlane, string, error) {
		mu.Lock()
		defer mu.Unlock()
		dps[cfg.ID] = &pullDP{}
		return dps[cfg.ID], "fake", nil
	})
	ds := startCluster(t, 2, func(c *config.Config) {
		c.DataPlane.Mode = "ipvs"
		c.MetricsAddr = ""
	})
	pull, _ := dps["m2"].get()
	if pull == nil {
		t.Fatal("the daemon installed no PullHandover in the data plane")
	}
	v1, v2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	waitFor(t, 10*time.Second, "m2 in contact with m1", func() bool { return ds[1].live.InContact("m1") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sent, err := pull(ctx, "m1", []netip.Addr{v1, v2})
	if err != nil {
		t.Fatal(err)
	}
	if sent[v1] != 5 || sent[v2] != 0 {
		t.Errorf("sent %v, want %s: 5, %s: 0", sent, v1, v2)
	}
	if _, pushes := dps["m1"].get(); !slices.Equal(pushes, []string{"m2 192.0.2.1 192.0.2.2"}) {
		t.Errorf("m1 pushed %q, want once for m2's 192.0.2.1 and 192.0.2.2", pushes)
	}
	t0 := time.Now()
	if _, err := pull(ctx, "m9", []netip.Addr{v1}); !errors.Is(err, dataplane.ErrNotInContact) || time.Since(t0) > 10*time.Millisecond {
		t.Errorf("pull from an unknown member: %v after %v, want ErrNotInContact at once", err, time.Since(t0))
	}
	ds[0].Stop()
	waitFor(t, 10*time.Second, "m2 out of contact with m1", func() bool { return !ds[1].live.InContact("m1") })
	t0 = time.Now()
	if _, err := pull(ctx, "m1", []netip.Addr{v1}); !errors.Is(err, dataplane.ErrNotInContact) || time.Since(t0) > 10*time.Millisecond {
		t.Errorf("pull from a stopped member: %v after %v, want ErrNotInContact at once", err, time.Since(t0))
	}
}
