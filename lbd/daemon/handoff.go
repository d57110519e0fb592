package daemon

import (
	"context"
	"slices"
	"time"
)

// handOffTimeout bounds how long a stopping member waits for its VIPs to
// reach their new owners. Past it the stop goes on as without a hand-off: the
// addresses stay (the fence gives a restart the lease) and the assigner moves
// them after the grace if the restart is slower.
const handOffTimeout = 10 * time.Second

// handOverer is a data plane that keeps a moved VIP until its new owner
// announces it (the IPVS engine).
type handOverer interface{ HandingOver() bool }

// handOff runs first in a clean stop: like keepalived's priority-0 advert, a
// member that owns VIPs gives them to the members that would inherit them
// and waits until those have announced them, so a stop (and a rolling
// restart) is a planned move, with no new connection lost, rather than a
// failover that waits for the grace. The reconcile loop still runs and does
// the move; pinned VIPs stay (they have nowhere to go).
func (d *Daemon) handOff() {
	if !d.caughtUp.Load() || !d.lease.InContact() {
		return // out of contact, the cluster could not commit the move anyway
	}
	d.handOffVIPs()
	// Then leadership, if this member leads: without a transfer the others
	// wait out an election timeout, and every owner that hears no leader
	// for its lease withdraws its VIPs (seen in the guest: a rolling restart
	// lost new connections each time it stopped the leader).
	if d.node.IsLeader() {
		t0 := time.Now()
		if err := d.node.TransferLeadership(""); err != nil {
			d.log.Warn("stopping: could not hand raft leadership over; the others elect a leader after their election timeout", "err", err)
		} else {
			d.log.Info("stopping: raft leadership handed over", "after", time.Since(t0).Round(time.Millisecond))
		}
	}
}

func (d *Daemon) handOffVIPs() {
	if d.cfg.DataPlane.Mode == "none" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), handOffTimeout)
	defer cancel()
	t0 := time.Now()
	vips, err := d.srv.HandOff(ctx, d.cfg.ID)
	if err != nil {
		d.log.Warn("stopping: could not hand the VIPs over; they stay here for the restart", "err", err)
		return
	}
	if len(vips) == 0 {
		return
	}
	d.log.Info("stopping: VIPs handed over to the members that inherit them", "vips", vips)
	dp := d.dp
	if i, ok := dp.(*instrumentedDataPlane); ok {
		dp = i.DataPlane
	}
	ho, _ := dp.(handOverer)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		// Done once a pass has left them out and none is still kept for
		// its new owner's announcement.
		owned := d.ownedVIPs()
		done := !slices.ContainsFunc(vips, func(v string) bool { return slices.Contains(owned, v) })
		if done && (ho == nil || !ho.HandingOver()) {
			d.log.Info("stopping: VIPs taken over by their new owners", "vips", len(vips), "after", time.Since(t0).Round(time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			d.log.Warn("stopping: the VIPs' new owners did not take them over in time; stopping anyway", "vips", vips, "waited", handOffTimeout)
			return
		case <-tick.C:
		}
	}
}
