package daemon

import (
	"context"
	"testing"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// New VIPs spread over the members, whether the write reaches the leader
// directly or is forwarded by a follower. The owner recorded at creation used
// to be the leader itself; the assigner is sticky, so every VIP stayed there.
func TestNewVIPsSpreadOverMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three raft members")
	}
	ds := startCluster(t, 3)
	leader, follower := leaderAndFollower(t, ds)
	waitFor(t, 10*time.Second, "every member registers", func() bool {
		return len(leader.Node().FSM.Members()) == 3
	})
	setupPool(t, leader.Addr())
	const n = 30
	for i := 1; i <= n; i++ {
		via := leader
		if i%2 == 0 {
			via = follower
		}
		if _, err := client(t, via.Addr()).CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: newService(i)}); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := leader.Node().FSM.All()
	load := map[string]int{}
	for _, vs := range all {
		load[vs.Owner]++
	}
	for _, d := range ds {
		if load[d.cfg.ID] != n/3 {
			t.Fatalf("owners after %d creations: %v, want %d each", n, load, n/3)
		}
	}
}
