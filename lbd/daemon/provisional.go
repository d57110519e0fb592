package daemon

import (
	"cmp"
	"net/netip"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/lbd/ownership"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// takeover is what provisional decided for one pass.
type takeover struct {
	// all: the FSM's services, taken-over ones as copies owned by this
	// member; nil when the decision did not need to read them (no member
	// counted as gone owns a service, or the survivors do not agree yet).
	all []*edgelbv1.VirtualService
	// base: the FSM's services as read (all before the copies), nil when
	// not read.
	base []*edgelbv1.VirtualService
	// vips: the VIPs taken over; owners: whose they were.
	vips, owners []string
	// from: each VIP taken over → the owner it was taken from.
	from map[string]string
	// claims: the owners this member claims now (its views carry them):
	// those it is about to take over and those whose VIPs a pass may have
	// put in the kernel (held), until a pass has withdrawn them.
	claims []string
	// wanted: the owners it would take over, acknowledged or not.
	wanted []string
	// pending: an owner is gone but the takeover waits (the survivors do
	// not agree yet, or the claim is not acknowledged yet).
	pending bool
}

// takeoverLiveness is what the takeover decision reads from lbd/liveness.
type takeoverLiveness interface {
	Agreement(rev uint64) (gone map[string]bool, agreed bool)
	Silent(id string) bool
}

// takeoverState is what the takeover decision reads from the FSM. OwnsAny
// answers from the FSM's owner index, so a pass in which no member counted
// as gone owns a service (the common case: nobody is gone, or the leader has
// committed the move of a gone member's services) reads nothing else; only
// a takeover to be made reads every service.
type takeoverState interface {
	Revision() uint64
	OwnsAny(ids map[string]bool) bool
	All() ([]*edgelbv1.VirtualService, uint64)
	Members() []*edgelbv1.Member
}

// provisional lets the successor of a lost owner serve its VIPs before a raft
// leader commits the move, when the leader is lost too (issue 19: a raft
// election alone takes longer than the failover goal). held are the owners
// whose VIPs an earlier pass may have put in the kernel provisionally; their
// claims stay until a pass has withdrawn them.
//
// The rules, argued in docs/ARCHITECTURE.md ("Leader and owner lost
// together"):
//   - with or without a live raft leader: a new leader is elected before it
//     commits, and dropping the copy when it is known (before its commit)
//     left the VIP unserved for up to an election; with a live leader the
//     copy is what its assigner commits (the same plan) and gives way to
//     the commit as any planned move does;
//   - the lost owner cannot hold a lease (lbd/liveness Gone: no majority has
//     heard from it within the grace), and this member has not heard from it
//     for the grace itself;
//   - every member this one does not count as gone reports, in a fresh view,
//     the same gone set and the same FSM revision, and they are a majority:
//     so they all run ownership.Plan on the same state with the same
//     liveness and name the same successor — the one the next leader's
//     assigner commits (the same function, the same inputs);
//   - the claim is acknowledged (lbd/liveness Acked): enough voters that
//     have not heard the owner for the grace repeat it that the owner cannot
//     renew its lease, so an owner that was only stopped cannot serve again
//     beside this member when it resumes;
//   - this member holds its own lease and has caught up (the caller checks).
func (d *Daemon) provisional(held []string) takeover {
	var live takeoverLiveness
	if d.live != nil {
		live = d.live
	}
	t := planTakeover(live, d.cfg.ID, d.node.FSM)
	t.wanted = t.owners
	t.claims = union(t.owners, held)
	d.live.SetClaims(t.claims)
	// Serve only what is acknowledged; the rest waits (claimed already).
	var acked []string
	for _, o := range t.owners {
		if d.live.Acked(o) {
			acked = append(acked, o)
		} else {
			t.pending = true
		}
	}
	t.owners = acked
	if len(acked) == 0 {
		t.vips = nil
		t.all = t.base
		return t
	}
	out := make([]*edgelbv1.VirtualService, len(t.base))
	var vips []string
	t.from = map[string]string{}
	for i, vs := range t.base {
		out[i] = vs
		// t.all holds a copy where a service was taken over: keep it only
		// when its owner's claim is acknowledged.
		if t.all[i] != vs && slices.Contains(acked, vs.Owner) {
			out[i] = t.all[i]
			vips = append(vips, vs.Vip)
			t.from[vs.Vip] = vs.Owner
		}
	}
	slices.Sort(vips)
	t.all, t.vips = out, slices.Compact(vips)
	return t
}

// planTakeover computes the takeover without the claim: t.all with every
// lost owner's service self succeeds to as a copy owned by it, the VIPs and
// the owners they were taken from. It is the one place that decides; what
// it reads costs in proportion to the members counted as gone until one of
// them owns services and the survivors agree (a takeover to plan).
func planTakeover(live takeoverLiveness, self string, st takeoverState) takeover {
	if live == nil {
		return takeover{}
	}
	rev := st.Revision()
	gone, agreed := live.Agreement(rev)
	if len(gone) == 0 || !st.OwnsAny(gone) {
		return takeover{}
	}
	if !agreed {
		return takeover{pending: true}
	}
	all, now := st.All()
	if now != rev {
		// A commit landed in between: the survivors must agree on the
		// state the plan is made from.
		gone, agreed = live.Agreement(now)
	}
	none := takeover{all: all, base: all}
	lost := false
	for _, vs := range all {
		if gone[vs.Owner] {
			lost = true
			break
		}
	}
	if !lost {
		return none
	}
	if !agreed {
		none.pending = true
		return none
	}
	// The assigner plans from the FSM's services in tenant/name order;
	// the same order here gives the same plan.
	sorted := slices.Clone(all)
	slices.SortFunc(sorted, func(a, b *edgelbv1.VirtualService) int {
		return cmp.Or(cmp.Compare(a.Tenant, b.Tenant), cmp.Compare(a.Name, b.Name))
	})
	plan := ownership.Plan(sorted, st.Members(), func(id string) bool { return id == self || !gone[id] })
	type key struct{ tenant, name string }
	take := map[key]bool{}
	for _, as := range plan {
		if as.Owner == self {
			take[key{as.Tenant, as.Name}] = true
		}
	}
	out := make([]*edgelbv1.VirtualService, len(all))
	var vips, owners []string
	for i, vs := range all {
		out[i] = vs
		// Only a lost owner's services, and only an owner this member has
		// not heard from for the grace itself (one gone only because it
		// says it serves nothing still answers: a claim would hold it off
		// for good). Rebalancing is the leader's to commit.
		if gone[vs.Owner] && take[key{vs.Tenant, vs.Name}] && live.Silent(vs.Owner) {
			c := proto.Clone(vs).(*edgelbv1.VirtualService)
			c.Owner = self
			out[i] = c
			vips = append(vips, vs.Vip)
			owners = append(owners, vs.Owner)
		}
	}
	if len(vips) == 0 {
		return none
	}
	slices.Sort(vips)
	slices.Sort(owners)
	return takeover{all: out, base: all, vips: slices.Compact(vips), owners: slices.Compact(owners)}
}

// union is the sorted set of a's and b's elements.
func union(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

// provisionalEnder is a data plane told which provisional copies end while
// the committed state still gives them to the owner they were taken from:
// it withdraws those at once instead of handing them over
// (lbd/dataplane EndProvisional says why).
type provisionalEnder interface {
	EndProvisional(vips []netip.Addr)
}

// provisionalEnderOf is dp's provisionalEnder, looking through the metrics
// wrapper; nil when it has none (no handovers to skip).
func provisionalEnderOf(dp DataPlane) provisionalEnder {
	if i, ok := dp.(*instrumentedDataPlane); ok {
		dp = i.DataPlane
	}
	pe, _ := dp.(provisionalEnder)
	return pe
}

// endedCopies returns the VIPs of prev (the last pass's provisional copies,
// each with the owner it was taken from) that are no copies now and whose
// committed owner in all is still that owner: the owner is back, or the
// survivors no longer agree it is gone.
func endedCopies(prev map[string]string, now []string, all []*edgelbv1.VirtualService) []netip.Addr {
	if len(prev) == 0 {
		return nil
	}
	var out []netip.Addr
	for _, vs := range all {
		if from, ok := prev[vs.Vip]; ok && vs.Owner == from && !slices.Contains(now, vs.Vip) {
			if a, err := netip.ParseAddr(vs.Vip); err == nil && !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}
