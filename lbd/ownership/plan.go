// Package ownership decides which member owns (programs and announces) each
// VIP. Only the raft leader runs it; its decisions are committed through the log
// as SetOwners commands, so every member agrees on who owns what.
package ownership

import (
	"sort"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Reasons recorded with assignments (they show in Watch events).
const (
	ReasonNew        = "assigned"
	ReasonPinned     = "pinned to member"
	ReasonOwnerGone  = "owner left the cluster"
	ReasonOwnerDown  = "owner unreachable"
	ReasonOwnerDrain = "owner draining"
	ReasonAlign      = "VIP shared with another service"
	ReasonMoved      = "moved by operator"
)

// Plan returns the assignments that give every VIP an eligible owner. It is
// sticky: a VIP keeps its owner while that owner is an active, reachable
// member. Services that share an address always share an owner, since the
// address can live on one host only. alive reports members the leader hears
// from; the leader itself is always alive.
func Plan(vss []*edgelbv1.VirtualService, members []*edgelbv1.Member, alive func(id string) bool) []*raftv1.Assignment {
	active := map[string]bool{}
	load := map[string]int{}
	for _, m := range members {
		if m.State == edgelbv1.MemberState_MEMBER_STATE_ACTIVE || m.State == edgelbv1.MemberState_MEMBER_STATE_UNSPECIFIED {
			active[m.Id] = true
			load[m.Id] = 0
		}
	}
	known := map[string]bool{}
	for _, m := range members {
		known[m.Id] = true
	}
	eligible := func(id string) bool { return id != "" && active[id] && alive(id) }

	// Group by address, in a stable order.
	groups := map[string][]*edgelbv1.VirtualService{}
	var vips []string
	for _, vs := range vss {
		if _, ok := groups[vs.Vip]; !ok {
			vips = append(vips, vs.Vip)
		}
		groups[vs.Vip] = append(groups[vs.Vip], vs)
	}
	sort.Strings(vips)

	// Count the load that stays where it is, so new VIPs go to the least loaded.
	current := map[string]string{}
	for _, vip := range vips {
		owner := groupOwner(groups[vip], eligible)
		if pin := pinned(groups[vip]); pin != "" && eligible(pin) {
			owner = pin
		}
		if owner != "" {
			current[vip] = owner
			load[owner]++
		}
	}
	var out []*raftv1.Assignment
	for _, vip := range vips {
		g := groups[vip]
		owner := current[vip]
		joined := owner != "" // newcomers join a group that already has its owner
		if owner == "" {
			owner = leastLoaded(load, eligible)
			if owner == "" {
				// Nobody can take it: leave it where it is rather than churn.
				continue
			}
			load[owner]++
		}
		for _, vs := range g {
			if vs.Owner == owner {
				continue
			}
			// The reason is about this service's own previous owner.
			var r string
			switch prev := vs.Owner; {
			case prev == "" && joined:
				r = ReasonAlign
			case prev == "":
				r = ReasonNew
			case !known[prev]:
				r = ReasonOwnerGone
			case !active[prev]:
				r = ReasonOwnerDrain
			case !alive(prev):
				r = ReasonOwnerDown
			case pinned(g) == owner:
				r = ReasonPinned
			default:
				r = ReasonAlign
			}
			out = append(out, &raftv1.Assignment{Tenant: vs.Tenant, Name: vs.Name, Owner: owner, Reason: r})
		}
	}
	return out
}

// groupOwner is the eligible owner most services of an address agree on
// (ties: lowest id), or "" when none of their owners is eligible.
func groupOwner(g []*edgelbv1.VirtualService, eligible func(string) bool) string {
	count := map[string]int{}
	for _, vs := range g {
		if eligible(vs.Owner) {
			count[vs.Owner]++
		}
	}
	best := ""
	for id, n := range count {
		if best == "" || n > count[best] || n == count[best] && id < best {
			best = id
		}
	}
	return best
}

func pinned(g []*edgelbv1.VirtualService) string {
	for _, vs := range g {
		if vs.PinnedMember != "" {
			return vs.PinnedMember
		}
	}
	return ""
}

func leastLoaded(load map[string]int, eligible func(string) bool) string {
	best := ""
	for id, n := range load {
		if !eligible(id) {
			continue
		}
		if best == "" || n < load[best] || n == load[best] && id < best {
			best = id
		}
	}
	return best
}
