// Package ownership decides which member owns (programs and announces) each
// VIP. Only the raft leader runs it; its decisions are committed through the log
// as SetOwners commands, so every member agrees on who owns what.
package ownership

import (
	"slices"
	"sort"
	"strings"

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
	active := activeMembers(members)
	load := map[string]int{}
	for id := range active {
		load[id] = 0
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
		owner := pinnedOrGroupOwner(groups[vip], eligible)
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

// Place picks the owner of a new service, recorded with its creation so that
// it is programmed right after the commit instead of one assignment round
// later: its pinned member when eligible, else the eligible member that owns
// the fewest services (ties: lowest id), as Plan would. load counts services
// per owner. "" when no member is eligible: the assigner decides later.
func Place(pin string, load map[string]int, members []*edgelbv1.Member, alive func(id string) bool) string {
	active := activeMembers(members)
	eligible := func(id string) bool { return id != "" && active[id] && alive(id) }
	if eligible(pin) {
		return pin
	}
	counts := make(map[string]int, len(active))
	for id := range active {
		counts[id] = load[id]
	}
	return leastLoaded(counts, eligible)
}

// activeMembers are the members that may own VIPs (not draining).
func activeMembers(members []*edgelbv1.Member) map[string]bool {
	active := map[string]bool{}
	for _, m := range members {
		if m.State == edgelbv1.MemberState_MEMBER_STATE_ACTIVE || m.State == edgelbv1.MemberState_MEMBER_STATE_UNSPECIFIED {
			active[m.Id] = true
		}
	}
	return active
}

// pinnedOrGroupOwner is the group's pinned member when it is eligible, else
// its groupOwner.
func pinnedOrGroupOwner(g []*edgelbv1.VirtualService, eligible func(string) bool) string {
	if pin := pinned(g); pin != "" && eligible(pin) {
		return pin
	}
	return groupOwner(g, eligible)
}

// groupOwner is the eligible owner most services of an address agree on
// (ties: lowest id), or "" when none of their owners is eligible.
func groupOwner(g []*edgelbv1.VirtualService, eligible func(string) bool) string {
	if len(g) == 1 { // the common case, without the map
		if eligible(g[0].Owner) {
			return g[0].Owner
		}
		return ""
	}
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

// Successors predicts, for each VIP address, the member that would take it
// over if its owner failed now: what Plan would decide with that owner
// unreachable and every other member reachable. Members run the health checks
// of the VIPs they would inherit as well as their own, so a takeover starts
// from fresh results. Every member runs it on each change of state, so it
// does not run Plan once per owner: it lays the VIPs out once and, per owner,
// replays Plan's two passes over only the groups that owner's failure frees.
func Successors(vss []*edgelbv1.VirtualService, members []*edgelbv1.Member) map[string]string {
	active := activeMembers(members)
	// Groups of services sharing an address, in address order.
	sorted := slices.Clone(vss)
	slices.SortStableFunc(sorted, func(a, b *edgelbv1.VirtualService) int { return strings.Compare(a.Vip, b.Vip) })
	var groups [][]*edgelbv1.VirtualService
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j].Vip == sorted[i].Vip {
			j++
		}
		groups = append(groups, sorted[i:j])
		i = j
	}
	// Plan's first pass with everyone reachable.
	allUp := func(id string) bool { return id != "" && active[id] }
	load := map[string]int{}
	for id := range active {
		load[id] = 0
	}
	var free []int // groups nobody eligible owns
	byOwner := map[string][]int{}
	base := make([]string, len(groups))
	for gi, g := range groups {
		o := pinnedOrGroupOwner(g, allUp)
		base[gi] = o
		if o == "" {
			free = append(free, gi)
			continue
		}
		load[o]++
		byOwner[o] = append(byOwner[o], gi)
	}
	out := map[string]string{}
	for down, mine := range byOwner {
		eligible := func(id string) bool { return id != down && allUp(id) }
		l := make(map[string]int, len(load))
		for id, n := range load {
			if id != down {
				l[id] = n
			}
		}
		// Plan's first pass again for the groups down held or nobody holds
		// (both lists are in address order; merged, so the second pass
		// assigns in Plan's order), then its second pass.
		var again []int
		affected := mergeSorted(mine, free)
		for _, gi := range affected {
			if o := pinnedOrGroupOwner(groups[gi], eligible); o != "" {
				l[o]++
				if base[gi] == down {
					out[groups[gi][0].Vip] = o
				}
				continue
			}
			again = append(again, gi)
		}
		for _, gi := range again {
			o := leastLoaded(l, eligible)
			if o == "" {
				break
			}
			l[o]++
			if base[gi] == down {
				out[groups[gi][0].Vip] = o
			}
		}
	}
	return out
}

func mergeSorted(a, b []int) []int {
	out := make([]int, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0] < b[0] {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}
