package daemon

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
)

// A restarted member replays its log into the FSM after it hears the leader's
// commit index. raft counts entries as applied when it hands them to the FSM's
// goroutine, not when the FSM has applied them; a member that trusted that
// count marked itself caught up while its FSM still lacked services it owned,
// and its first data-plane pass withdrew them (seen in CI's restart scenario).
// The member must not be caught up before its FSM holds every service the
// leader had when it asked.
func TestRestartedMemberCatchesUpWithTheFSM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three raft members and restarts one")
	}
	ds := startCluster(t, 3, func(c *config.Config) {
		// Replay from the log, not a snapshot: the replay is the window.
		c.Raft.SnapshotThreshold = 1 << 30
	})
	leader, follower := leaderAndFollower(t, ds)
	setupPool(t, leader.Addr())
	c := client(t, leader.Addr())
	create := func(from, to int) {
		var next atomic.Int64
		next.Store(int64(from - 1))
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for i := int(next.Add(1)); i <= to; i = int(next.Add(1)) {
					if _, err := c.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: newService(i)}); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	// The follower's snapshot holds svc-1..5, so a restart begins with them
	// in the FSM and replays the rest from its log.
	create(1, 5)
	waitFor(t, 10*time.Second, "the follower applies svc-5", func() bool {
		_, ok := follower.Node().FSM.Service(fsmKey("default", "svc-5"))
		return ok
	})
	if err := follower.Node().Snapshot(); err != nil {
		t.Fatal(err)
	}
	const n = 1500
	create(6, n)
	want := leader.Node().FSM.Revision()
	target := leader.Node().Status().LastLogIndex

	// Slow the restarted member's FSM down by holding its read lock most of
	// the time: each replayed apply waits for a gap, while raft counts every
	// entry it hands over as applied at once. This is the CI run's interleaving
	// (an FSM on a busy CPU behind raft's count), made likely; an attempt
	// where the replay still won the race is repeated.
	targetKnown := make(chan string, 10)
	testHookCatchUpTarget = func(d *Daemon) { targetKnown <- d.cfg.ID }
	t.Cleanup(func() { testHookCatchUpTarget = nil })
	cfg := follower.cfg
	checked := false
	for attempt := 1; attempt <= 5 && !checked; attempt++ {
		if err := follower.Stop(); err != nil {
			t.Fatal(err)
		}
		d, err := Start(context.Background(), cfg, follower.log)
		if err != nil {
			t.Fatal(err)
		}
		follower = d
		t.Cleanup(func() { d.Stop() })
		stop := make(chan struct{})
		throttled := make(chan struct{})
		go func() {
			defer close(throttled)
			for {
				select {
				case <-stop:
					return
				default:
				}
				var once sync.Once
				d.Node().FSM.View(fsm.Filter{}, func(*edgelbv1.VirtualService) {
					once.Do(func() { time.Sleep(20 * time.Millisecond) })
				})
			}
		}()
		for id := ""; id != cfg.ID; {
			select {
			case id = <-targetKnown:
			case <-time.After(20 * time.Second):
				t.Fatal("the restarted member did not learn its catch-up target within 20s")
			}
		}
		waitFor(t, 10*time.Second, "raft on the restarted member counts the log as applied", func() bool {
			return d.Node().Status().LastApplied >= target
		})
		time.Sleep(300 * time.Millisecond) // several of catchUp's 50 ms polls
		early := d.caughtUp.Load()
		rev := d.Node().FSM.Revision()
		close(stop)
		<-throttled
		t.Logf("attempt %d: target known, raft counts %d applied, FSM at revision %d of the leader's %d, caught up: %v",
			attempt, d.Node().Status().LastApplied, rev, want, early)
		if rev >= want {
			continue // the replay finished before it could be slowed
		}
		checked = true
		if early {
			t.Fatalf("caught up while its FSM had applied up to revision %d of the leader's %d", rev, want)
		}
		waitFor(t, 20*time.Second, "the restarted member catches up", d.caughtUp.Load)
		if got := d.Node().FSM.Revision(); got < want {
			t.Fatalf("caught up at revision %d, the leader's is %d", got, want)
		}
		if _, ok := d.Node().FSM.Service(fsmKey("default", fmt.Sprintf("svc-%d", n))); !ok {
			t.Fatalf("caught up without svc-%d", n)
		}
	}
	if !checked {
		t.Fatal("in 5 restarts the replay always finished before it could be slowed; nothing was checked")
	}
}

// A member cut off from the others fences itself; if it then wins the
// election on its way back, leaderLoop's barrier marks it caught up before
// the reconcile loop sees contact again, clears the mark and starts a new
// catch-up. That catch-up runs on the leader, which has no leader to ask: it
// must use a barrier, or the member never serves its VIPs again (CI's
// cluster test saw exactly that).
func TestLeaderCatchesUpAgainAfterFencing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a raft member")
	}
	ds := startCluster(t, 1)
	d := ds[0]
	waitFor(t, 10*time.Second, "the only member leads and is caught up", func() bool {
		return d.Node().IsLeader() && d.caughtUp.Load()
	})
	setupPool(t, d.Addr())
	if _, err := client(t, d.Addr()).CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: newService(1)}); err != nil {
		t.Fatal(err)
	}
	d.caughtUp.Store(false) // as the reconcile loop does when contact returns
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.catchUp(ctx)
	if !d.caughtUp.Load() {
		t.Fatalf("the leader did not catch up again within 10s (context: %v)", ctx.Err())
	}
	if _, ok := d.Node().FSM.Service(fsmKey("default", "svc-1")); !ok {
		t.Fatal("caught up without svc-1")
	}
}
