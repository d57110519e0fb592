package ownership

import (
	"context"
	"log/slog"
	"time"

	"github.com/edgelb/edgelb/lbd/bgp"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node"
)

// maxBatch bounds one SetOwners command, so a mass move (a member with 10k VIPs
// died) is committed as several log entries of reasonable size.
const maxBatch = 1000

// Assigner runs on the leader and commits ownership decisions.
type Assigner struct {
	Node *node.Node
	// Grace is how long a follower may miss heartbeats before its VIPs move.
	Grace time.Duration
	// Liveness, when set, decides who is gone instead of raft's heartbeats
	// (issue 19): a member is gone once it cannot hold a quorum lease.
	Liveness Liveness
	Log      *slog.Logger
}

// Liveness tells which members cannot hold a lease any more (lbd/liveness).
type Liveness interface {
	Gone(id string) bool
	// Changes is closed when the answer of Gone changes for some member.
	Changes() <-chan struct{}
}

// Run assigns until ctx ends (the leader cancels it when it steps down).
func (a *Assigner) Run(ctx context.Context) {
	f := a.Node.FSM
	self := a.Node.ID()
	// A slow tick backs up the event-driven wakeups below; the exact wakeup
	// for a silent member is the moment its grace runs out, since every
	// millisecond after that is failover time.
	tick := time.NewTicker(max(a.Grace, time.Second))
	defer tick.Stop()
	expiry := time.NewTimer(time.Hour)
	defer expiry.Stop()
	// The change feed lets a wake-up by a commit plan only the addresses
	// of the services that changed; any other wake-up (members, their
	// reachability, the tick) or a failed commit plans everything.
	var cur fsm.Cursor
	full := true
	for {
		changed := f.Changed()
		silence := a.Node.PeerSilence()
		next := time.Duration(-1)
		for id, d := range silence {
			if id != self && d < a.Grace && (next < 0 || a.Grace-d < next) {
				next = a.Grace - d
			}
		}
		alive := func(id string) bool {
			d, failing := silence[id]
			return id == self || !failing || d < a.Grace
		}
		var gone <-chan struct{}
		if a.Liveness != nil {
			// The probes decide (and wake this loop); raft's silence does not.
			gone, next = a.Liveness.Changes(), -1
			alive = func(id string) bool { return id == self || !a.Liveness.Gone(id) }
		}
		var vss []*edgelbv1.VirtualService
		var plan []*raftv1.Assignment
		// bgp-pool VIPs have no single owner: every eligible member
		// advertises them (lbd/bgp). They stay at owner "". A pool's mode
		// changing is a change of Others, so a full plan follows.
		ch, now, ok := f.ChangesSince(cur)
		switch {
		case full || !ok || ch.Others:
			cur = f.Cursor() // before the read: a change in between is seen again
			vss, _ = f.Shared(fsm.Filter{})
			vss = bgp.WithoutBGP(vss, bgp.Pools(f.Pools()))
			plan = Plan(vss, f.Members(), alive)
		case len(ch.Services) > 0:
			cur = now
			var others map[string]int
			vss, others = f.Groups(ch.VIPs)
			vss = bgp.WithoutBGP(vss, bgp.Pools(f.Pools()))
			plan = PlanChanged(vss, f.Members(), alive, others)
		default:
			cur = now
		}
		full = false
		for len(plan) > 0 && ctx.Err() == nil {
			n := min(len(plan), maxBatch)
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			res, err := a.Node.Apply(cctx, &raftv1.Command{Op: &raftv1.Command_SetOwners{SetOwners: &raftv1.SetOwners{Assignments: plan[:n]}}})
			cancel()
			if err == nil {
				err = res.Err()
			}
			if err != nil {
				a.Log.Warn("commit VIP assignments", "count", n, "err", err)
				full = true // what was not committed is not in the next change
				break
			}
			logAssigned(a.Log, vss, plan[:n])
			plan = plan[n:]
		}
		if next >= 0 {
			expiry.Reset(next + time.Millisecond)
		} else {
			expiry.Reset(time.Hour)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			time.Sleep(5 * time.Millisecond) // let a burst of commits land first
		case <-a.Node.PeerChanges():
			full = true
		case <-gone:
			full = true
		case <-tick.C:
			full = true
		case <-expiry.C:
			full = true
		}
	}
}

// logAssigned writes a line per committed assignment naming the VIP, its
// tenant and service as separate keys, so an operator can grep by any of
// them. vss are the
// services the plan was made from.
func logAssigned(log *slog.Logger, vss []*edgelbv1.VirtualService, committed []*raftv1.Assignment) {
	vips := make(map[fsm.Key]string, len(committed))
	for _, as := range committed {
		vips[fsm.Key{Tenant: as.Tenant, Name: as.Name}] = ""
	}
	for _, vs := range vss {
		k := fsm.Key{Tenant: vs.Tenant, Name: vs.Name}
		if _, ok := vips[k]; ok {
			vips[k] = vs.Vip
		}
	}
	for _, as := range committed {
		log.Info("VIP assigned", "vip", vips[fsm.Key{Tenant: as.Tenant, Name: as.Name}], "tenant", as.Tenant, "service", as.Name,
			"owner", as.Owner, "reason", Text(as.OwnershipReason))
	}
}
