package daemon

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// quietDP is a data plane that programs nothing and succeeds.
type quietDP struct{}

func (quietDP) Reconcile(context.Context, []*edgelbv1.VirtualService, string) error { return nil }
func (quietDP) Withdraw(context.Context) error                                      { return nil }
func (quietDP) Close() error                                                        { return nil }

// A member that stops cleanly hands its VIPs to the others before it stops:
// right after Stop returns, the survivors' replicas name another owner
// (a failover would wait for the grace), and a VIP pinned to it stays.
func TestCleanStopHandsVIPsOver(t *testing.T) {
	withKernel(t, func(context.Context, config.Config, *slog.Logger) (DataPlane, string, error) {
		return quietDP{}, "fake", nil
	})
	ds := startCluster(t, 3, func(c *config.Config) {
		c.DataPlane.Mode = "ipvs"
		c.MetricsAddr = ""
		// A long grace: only the hand-off can move the VIP within the test.
		c.Ownership.Grace.Duration = time.Minute
	})
	leader, _ := leaderAndFollower(t, ds)
	setupPool(t, leader.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vs := client(t, leader.Addr())
	if _, err := vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: newService(1)}); err != nil {
		t.Fatal(err)
	}
	var owner *Daemon
	for owner == nil {
		if ctx.Err() != nil {
			t.Fatal("the service got no owner")
		}
		if got, err := vs.GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Name: "svc-1"}); err == nil {
			for _, d := range ds {
				if d.cfg.ID == got.Service.Owner {
					owner = d
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	pinned := newService(2)
	pinned.PinnedMember = owner.cfg.ID
	if _, err := vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: pinned}); err != nil {
		t.Fatal(err)
	}
	// The owner has programmed both (its last pass lists them) before it stops.
	for ctx.Err() == nil && len(owner.ownedVIPs()) < 2 {
		time.Sleep(20 * time.Millisecond)
	}
	if err := owner.Stop(); err != nil {
		t.Fatal(err)
	}
	var other *Daemon
	for _, d := range ds {
		if d != owner {
			other = d
		}
	}
	// Applied on the survivor before the hand-off returned? Its replica may
	// lag by a commit: wait for the entry, not for a grace.
	for {
		all, _ := other.Node().FSM.All()
		owners := map[string]string{}
		for _, s := range all {
			owners[s.Name] = s.Owner
		}
		if o := owners["svc-1"]; o != "" && o != owner.cfg.ID {
			if owners["svc-2"] != owner.cfg.ID {
				t.Fatalf("the pinned service moved to %q", owners["svc-2"])
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("after %s stopped, svc-1 is still owned by %q", owner.cfg.ID, owners["svc-1"])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
