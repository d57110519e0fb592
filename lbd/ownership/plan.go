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

// Reasons recorded with assignments and new services (they show in Watch
// events as Event.ownership_reason). Plan, Decide and the operator's move set
// them; readers render them with Text.
const (
	ReasonNew        = edgelbv1.OwnershipReason_OWNERSHIP_REASON_ASSIGNED
	ReasonPinned     = edgelbv1.OwnershipReason_OWNERSHIP_REASON_PINNED
	ReasonOwnerGone  = edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_LEFT
	ReasonOwnerDown  = edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_UNREACHABLE
	ReasonOwnerDrain = edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_DRAINING
	ReasonAlign      = edgelbv1.OwnershipReason_OWNERSHIP_REASON_SHARED_VIP
	ReasonMoved      = edgelbv1.OwnershipReason_OWNERSHIP_REASON_MOVED
	ReasonHandOff    = edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_STOPPING
)

// reasonText is how each reason reads in logs and in the text of events.
// These texts are the ones the release before the enum wrote, so members of
// that release, which show only the text, show the same words.
var reasonText = map[edgelbv1.OwnershipReason]string{
	ReasonNew:        "assigned",
	ReasonPinned:     "pinned to member",
	ReasonOwnerGone:  "owner left the cluster",
	ReasonOwnerDown:  "owner unreachable",
	ReasonOwnerDrain: "owner draining",
	ReasonAlign:      "VIP shared with another service",
	ReasonMoved:      "moved by operator",
	ReasonHandOff:    "owner stopping",
	edgelbv1.OwnershipReason_OWNERSHIP_REASON_OWNER_REMOVED: "owner removed",
}

// Text is how r reads for people ("" for UNSPECIFIED).
func Text(r edgelbv1.OwnershipReason) string { return reasonText[r] }

// Assign is the assignment of vs to owner for reason r: the enum, and its
// text for members of the release that reads only the text.
func Assign(vs *edgelbv1.VirtualService, owner string, r edgelbv1.OwnershipReason) *raftv1.Assignment {
	return &raftv1.Assignment{Tenant: vs.Tenant, Name: vs.Name, Owner: owner, OwnershipReason: r, Reason: Text(r)}
}

// Plan returns the assignments that give every VIP an eligible owner. It is
// sticky: a VIP keeps its owner while that owner is an active, reachable
// member. Services that share an address always share an owner, since the
// address can live on one host only. alive reports members the leader hears
// from; the leader itself is always alive.
func Plan(vss []*edgelbv1.VirtualService, members []*edgelbv1.Member, alive func(id string) bool) []*raftv1.Assignment {
	return plan(vss, members, alive, nil)
}

// PlanChanged is Plan for the addresses of the services in changed only
// (every service at those addresses), given how many other addresses each
// member owns (others): what the leader plans after a commit, in proportion
// to the change. It decides as Plan does over every service when the others
// are settled — each address owned by one eligible member, as the assigner
// leaves them — and nothing about members or their reachability changed
// since; otherwise the assigner runs Plan.
func PlanChanged(changed []*edgelbv1.VirtualService, members []*edgelbv1.Member, alive func(id string) bool, others map[string]int) []*raftv1.Assignment {
	return plan(changed, members, alive, others)
}

// plan is Plan over the addresses of vss, counting base (addresses owned
// outside vss, per member) as load.
func plan(vss []*edgelbv1.VirtualService, members []*edgelbv1.Member, alive func(id string) bool, base map[string]int) []*raftv1.Assignment {
	active := activeMembers(members)
	load := map[string]int{}
	for id := range active {
		load[id] = base[id]
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
			var r edgelbv1.OwnershipReason
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
			out = append(out, Assign(vs, owner, r))
		}
	}
	return out
}

// Decision is the owner a new service is created with, and why.
type Decision struct {
	Owner  string
	Reason edgelbv1.OwnershipReason
}

// Candidates is what the leader knows when it places a new service.
type Candidates struct {
	// Self is the leader's member id.
	Self string
	// Members are the registered members; Load counts services per owner.
	Members []*edgelbv1.Member
	Load    map[string]int
	// Alive reports members the leader hears from.
	Alive func(id string) bool
	// Sharing are the services that already have the new service's VIP
	// (none when the VIP is still to be allocated from a pool).
	Sharing []*edgelbv1.VirtualService
}

// Decide is the one decision of a new service's owner, recorded with its
// creation so that it is programmed right after the commit instead of one
// assignment round later. The leader makes it, just before proposing the
// create, for its own writes and for those its followers forward (only the
// leader knows whom it hears from). In order:
//   - a VIP shared with services that have an owner goes where they are (an
//     address lives on one host only; the assigner moves the whole group if
//     that owner is not eligible);
//   - the pinned member when eligible;
//   - else the eligible member that owns the fewest services (ties: lowest
//     id), as Plan would;
//   - else, while the leader has not registered itself yet (a new cluster's
//     first moments), the leader: it is the only candidate there is;
//   - else no owner (UNSPECIFIED): the assigner decides once one is eligible.
func Decide(vs *edgelbv1.VirtualService, c Candidates) Decision {
	for _, o := range c.Sharing {
		if o.Owner != "" {
			return Decision{Owner: o.Owner, Reason: ReasonAlign}
		}
	}
	active := activeMembers(c.Members)
	alive := func(id string) bool { return id == c.Self || c.Alive == nil || c.Alive(id) }
	eligible := func(id string) bool { return id != "" && active[id] && alive(id) }
	if eligible(vs.PinnedMember) {
		return Decision{Owner: vs.PinnedMember, Reason: ReasonPinned}
	}
	counts := make(map[string]int, len(active))
	for id := range active {
		counts[id] = c.Load[id]
	}
	if o := leastLoaded(counts, eligible); o != "" {
		return Decision{Owner: o, Reason: ReasonNew}
	}
	registered := slices.ContainsFunc(c.Members, func(m *edgelbv1.Member) bool { return m.Id == c.Self })
	if !registered && c.Self != "" {
		return Decision{Owner: c.Self, Reason: ReasonNew}
	}
	return Decision{}
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
