package daemon

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
)

// Each member's reconcile loop, fed only the changes, knows the VIPs it
// owns as the replicated state says: after creates and a delete, the VIPs
// every member reports are exactly those the FSM gives it.
func TestReconcileLoopFollowsChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three raft members")
	}
	ds := startCluster(t, 3)
	leader, _ := leaderAndFollower(t, ds)
	setupPool(t, leader.Addr())
	c := client(t, leader.Addr())
	ctx := context.Background()
	for i := 1; i <= 12; i++ {
		if _, err := c.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: newService(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.DeleteVirtualService(ctx, &edgelbv1.DeleteVirtualServiceRequest{Name: "svc-3"}); err != nil {
		t.Fatal(err)
	}
	want := func(d *Daemon) []string {
		var vips []string
		d.Node().FSM.View(fsm.Filter{Owner: d.cfg.ID}, func(vs *edgelbv1.VirtualService) { vips = append(vips, vs.Vip) })
		slices.Sort(vips)
		return slices.Compact(vips)
	}
	total := 0
	for _, d := range ds {
		var got, w []string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got, w = slices.Sorted(slices.Values(d.ownedVIPs())), want(d)
			if slices.Equal(got, w) && d.Node().FSM.Revision() == leader.Node().FSM.Revision() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s reports VIPs %v, the FSM gives it %v", d.cfg.ID, got, w)
			}
		}
		total += len(got)
	}
	if total != 11 {
		t.Fatalf("%d VIPs owned in all, want 11", total)
	}
}

// The owned VIPs the loop publishes, merged from the last list and the
// changes since, are the sorted set a fresh sort gives, through random
// moves, deletes, shared VIPs, full rebuilds and fences.
func TestFeedVIPsMergeEqualsSort(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 5))
	c := newChangeFeed()
	live := map[fsm.Key]*edgelbv1.VirtualService{}
	for step := range 20000 {
		k := fsm.Key{Tenant: "t", Name: fmt.Sprintf("s%d", r.IntN(60))}
		var vs *edgelbv1.VirtualService
		if r.IntN(4) != 0 {
			vs = &edgelbv1.VirtualService{Tenant: k.Tenant, Name: k.Name, Vip: fmt.Sprintf("10.0.%d.%d", r.IntN(3), r.IntN(20)), Owner: []string{"me", "other"}[r.IntN(2)]}
			live[k] = vs
		} else {
			delete(live, k)
		}
		c.setOwned(k, vs, "me")
		if r.IntN(200) == 0 {
			c.ownedFrom(slices.Collect(maps.Values(live)), "me")
		}
		if r.IntN(3) != 0 {
			continue
		}
		owner := "me"
		if r.IntN(10) == 0 {
			owner = "" // fenced
		}
		got, ok := c.vips(owner)
		if !ok {
			continue
		}
		want := slices.Sorted(maps.Keys(c.vipRefs))
		if owner == "" {
			want = []string{}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: published %v, want %v", step, got, want)
		}
	}
}
