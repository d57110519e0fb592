package ownership

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// groupsOf is what the FSM's Groups answers for the changed addresses:
// every service at them, in name order, and the addresses each owner holds
// besides.
func groupsOf(all []*edgelbv1.VirtualService, vips map[string]bool) ([]*edgelbv1.VirtualService, map[string]int) {
	var out []*edgelbv1.VirtualService
	owned := map[string]map[string]bool{}
	for _, v := range all {
		if vips[v.Vip] {
			out = append(out, v)
		}
		if v.Owner != "" {
			if owned[v.Owner] == nil {
				owned[v.Owner] = map[string]bool{}
			}
			owned[v.Owner][v.Vip] = true
		}
	}
	others := map[string]int{}
	for o, m := range owned {
		for vip := range m {
			if !vips[vip] {
				others[o]++
			}
		}
	}
	return out, others
}

// apply commits a plan to the services (as SetOwners would), keeping the
// name order.
func applyPlan(all []*edgelbv1.VirtualService, plan []*raftv1.Assignment) []*edgelbv1.VirtualService {
	to := map[string]string{}
	for _, a := range plan {
		to[a.Name] = a.Owner
	}
	out := make([]*edgelbv1.VirtualService, len(all))
	for i, v := range all {
		out[i] = v
		if o, ok := to[v.Name]; ok {
			c := proto.Clone(v).(*edgelbv1.VirtualService)
			c.Owner = o
			out[i] = c
		}
	}
	return out
}

// Planning the changed addresses only (PlanChanged, what the assigner does
// after a commit) decides as Plan over every service does, from the states
// the assigner leaves (every earlier plan committed), for random sequences
// of new services (on new or shared addresses, pinned or not), deletions,
// pins set and cleared, and addresses moved.
func TestPlanChangedMatchesPlan(t *testing.T) {
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 3))
		ms := members("m1", "m2", "m3", "m4")
		if r.IntN(3) == 0 {
			ms = withState(ms, "m4", edgelbv1.MemberState_MEMBER_STATE_DRAINING)
		}
		alive := allAlive
		if r.IntN(3) == 0 {
			alive = aliveExcept("m3")
		}
		var all []*edgelbv1.VirtualService
		next := 0
		vip := func() string { return fmt.Sprintf("10.0.0.%d", 1+r.IntN(40)) }
		for step := range 80 {
			changed := map[string]bool{}
			vips := map[string]bool{} // the addresses of the changed services, before and after
			for range 1 + r.IntN(3) {
				switch op := r.IntN(10); {
				case op < 5 || len(all) == 0:
					next++
					v := vs(fmt.Sprintf("s%03d", next), vip(), "")
					if r.IntN(6) == 0 {
						v.PinnedMember = []string{"m1", "m2", "m3", "m4", "gone"}[r.IntN(5)]
					}
					// A new service shares its address's owner, as Decide
					// places it, or has none yet.
					if r.IntN(2) == 0 {
						for _, o := range all {
							if o.Vip == v.Vip {
								v.Owner = o.Owner
							}
						}
					}
					all = append(all, v)
					changed[v.Name], vips[v.Vip] = true, true
				case op < 7:
					i := r.IntN(len(all))
					changed[all[i].Name], vips[all[i].Vip] = true, true
					all = slices.Delete(all, i, i+1)
				case op < 9:
					i := r.IntN(len(all))
					c := proto.Clone(all[i]).(*edgelbv1.VirtualService)
					c.PinnedMember = []string{"", "m1", "m2", "m3", "m4"}[r.IntN(5)]
					all[i] = c
					changed[c.Name], vips[c.Vip] = true, true
				default:
					i := r.IntN(len(all))
					c := proto.Clone(all[i]).(*edgelbv1.VirtualService)
					vips[c.Vip] = true
					c.Vip = vip()
					all[i] = c
					changed[c.Name], vips[c.Vip] = true, true
				}
			}
			slices.SortFunc(all, func(a, b *edgelbv1.VirtualService) int { return strings.Compare(a.Name, b.Name) })
			want := Plan(all, ms, alive)
			group, others := groupsOf(all, vips)
			got := PlanChanged(group, ms, alive, others)
			if render(got) != render(want) {
				t.Fatalf("seed %d step %d: changed %v:\nPlanChanged %s\nPlan        %s", seed, step, changed, render(got), render(want))
			}
			all = applyPlan(all, want)
			if again := Plan(all, ms, alive); len(again) != 0 {
				t.Fatalf("seed %d step %d: a committed plan is not settled: %s", seed, step, render(again))
			}
		}
	}
}
