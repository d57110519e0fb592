package ownership

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func vs(name, vip, owner string) *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{Tenant: "t", Name: name, Vip: vip, Owner: owner}
}

func pinnedTo(v *edgelbv1.VirtualService, m string) *edgelbv1.VirtualService {
	v.PinnedMember = m
	return v
}

func members(ids ...string) []*edgelbv1.Member {
	var out []*edgelbv1.Member
	for _, id := range ids {
		out = append(out, &edgelbv1.Member{Id: id, State: edgelbv1.MemberState_MEMBER_STATE_ACTIVE})
	}
	return out
}

func withState(ms []*edgelbv1.Member, id string, st edgelbv1.MemberState) []*edgelbv1.Member {
	for _, m := range ms {
		if m.Id == id {
			m.State = st
		}
	}
	return ms
}

func allAlive(string) bool { return true }

func aliveExcept(dead ...string) func(string) bool {
	return func(id string) bool {
		for _, d := range dead {
			if d == id {
				return false
			}
		}
		return true
	}
}

// render writes a plan as "name→owner(reason)" sorted, for comparisons.
func render(plan []*raftv1.Assignment) string {
	var s []string
	for _, a := range plan {
		s = append(s, fmt.Sprintf("%s→%s(%s)", a.Name, a.Owner, Text(a.OwnershipReason)))
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func TestPlanIsSticky(t *testing.T) {
	// Uneven, but every owner is fine: nothing moves, not even to balance.
	vss := []*edgelbv1.VirtualService{
		vs("a", "10.0.0.1", "m1"), vs("b", "10.0.0.2", "m1"), vs("c", "10.0.0.3", "m1"), vs("d", "10.0.0.4", "m2"),
	}
	if plan := Plan(vss, members("m1", "m2", "m3"), allAlive); len(plan) != 0 {
		t.Errorf("plan for a healthy cluster: %s, want nothing", render(plan))
	}
	// Members with an unspecified state count as active.
	ms := []*edgelbv1.Member{{Id: "m1"}, {Id: "m2"}}
	if plan := Plan(vss, ms, allAlive); len(plan) != 0 {
		t.Errorf("plan with unspecified member states: %s, want nothing", render(plan))
	}
	if plan := Plan(nil, members("m1"), allAlive); len(plan) != 0 {
		t.Errorf("plan with no services: %s", render(plan))
	}
}

func TestPlanNewVIPsGoToLeastLoaded(t *testing.T) {
	vss := []*edgelbv1.VirtualService{
		vs("a", "10.0.0.1", "m1"), vs("b", "10.0.0.2", "m1"), vs("c", "10.0.0.3", "m2"),
		vs("new1", "10.0.0.4", ""), vs("new2", "10.0.0.5", ""), vs("new3", "10.0.0.6", ""),
	}
	// Loads 2/1/0: m3 first, then m2 and m3 tie (lowest id wins), then m3.
	got := render(Plan(vss, members("m1", "m2", "m3"), allAlive))
	want := "new1→m3(assigned) new2→m2(assigned) new3→m3(assigned)"
	if got != want {
		t.Errorf("plan = %s\nwant   %s", got, want)
	}
	// Determinism: the same input gives the same plan, whatever the input order.
	rev := make([]*edgelbv1.VirtualService, len(vss))
	for i := range vss {
		rev[len(vss)-1-i] = vss[i]
	}
	ms := members("m3", "m2", "m1")
	if again := render(Plan(rev, ms, allAlive)); again != want {
		t.Errorf("plan with reordered input = %s", again)
	}
}

func TestPlanSharedAddressesShareAnOwner(t *testing.T) {
	// A new pair on one address goes to one member together.
	vss := []*edgelbv1.VirtualService{vs("a", "10.0.0.1", ""), vs("b", "10.0.0.1", ""), vs("c", "10.0.0.2", "m1")}
	plan := Plan(vss, members("m1", "m2"), allAlive)
	if got := render(plan); got != "a→m2(assigned) b→m2(assigned)" {
		t.Errorf("plan = %s, want both to the idle m2", got)
	}
	// A newcomer on an owned address joins its owner.
	vss = []*edgelbv1.VirtualService{vs("a", "10.0.0.1", "m2"), vs("b", "10.0.0.1", "")}
	if got := render(Plan(vss, members("m1", "m2"), allAlive)); got != "b→m2("+Text(ReasonAlign)+")" {
		t.Errorf("plan = %s, want b aligned with m2", got)
	}
	// Disagreeing owners: the majority wins.
	vss = []*edgelbv1.VirtualService{vs("a", "10.0.0.1", "m2"), vs("b", "10.0.0.1", "m2"), vs("c", "10.0.0.1", "m1")}
	if got := render(Plan(vss, members("m1", "m2"), allAlive)); got != "c→m2("+Text(ReasonAlign)+")" {
		t.Errorf("plan = %s, want c aligned with the majority m2", got)
	}
	// When the shared owner dies, the whole group moves together.
	vss = []*edgelbv1.VirtualService{vs("a", "10.0.0.1", "m1"), vs("b", "10.0.0.1", "m1")}
	if got := render(Plan(vss, members("m1", "m2", "m3"), aliveExcept("m1"))); got != "a→m2("+Text(ReasonOwnerDown)+") b→m2("+Text(ReasonOwnerDown)+")" {
		t.Errorf("plan = %s, want the group moved together to m2", got)
	}
}

// A group whose owners disagree, and whose majority owner died, should settle
// on its surviving owner: moving the services that are already on a live member
// is a move without a reason.
func TestPlanMixedGroupPrefersLiveOwner(t *testing.T) {
	vss := []*edgelbv1.VirtualService{
		vs("a", "10.0.0.1", "m1"), vs("b", "10.0.0.1", "m1"), vs("c", "10.0.0.1", "m2"),
		vs("d", "10.0.0.2", "m2"), // m2 is busier than the idle m3
	}
	got := render(Plan(vss, members("m1", "m2", "m3"), aliveExcept("m1")))
	if got != "a→m2("+Text(ReasonOwnerDown)+") b→m2("+Text(ReasonOwnerDown)+")" {
		t.Errorf("plan = %s, want a and b to join c on the live m2 and c to stay", got)
	}
}

func TestPlanPinned(t *testing.T) {
	ms := members("m1", "m2", "m3")
	// An eligible pinned member wins over the current owner, for the whole group.
	vss := []*edgelbv1.VirtualService{pinnedTo(vs("a", "10.0.0.1", "m1"), "m3"), vs("b", "10.0.0.1", "m1"), vs("c", "10.0.0.2", "")}
	got := render(Plan(vss, ms, allAlive))
	if got != "a→m3("+Text(ReasonPinned)+") b→m3("+Text(ReasonPinned)+") c→m1(assigned)" {
		t.Errorf("plan = %s", got)
	}
	// A new pinned service goes straight to its member.
	vss = []*edgelbv1.VirtualService{pinnedTo(vs("a", "10.0.0.1", ""), "m3")}
	if got := Plan(vss, ms, allAlive); len(got) != 1 || got[0].Owner != "m3" {
		t.Errorf("plan = %s, want a→m3", render(got))
	}
	// A pinned member that is dead, draining or unknown does not take it: the
	// current owner keeps it.
	for name, tc := range map[string]struct {
		ms    []*edgelbv1.Member
		alive func(string) bool
		pin   string
	}{
		"dead":     {members("m1", "m2", "m3"), aliveExcept("m3"), "m3"},
		"draining": {withState(members("m1", "m2", "m3"), "m3", edgelbv1.MemberState_MEMBER_STATE_DRAINING), allAlive, "m3"},
		"unknown":  {members("m1", "m2"), allAlive, "m9"},
	} {
		vss := []*edgelbv1.VirtualService{pinnedTo(vs("a", "10.0.0.1", "m1"), tc.pin)}
		if got := Plan(vss, tc.ms, tc.alive); len(got) != 0 {
			t.Errorf("%s pinned member: plan = %s, want a to stay on m1", name, render(got))
		}
	}
	// Once the pinned member is back, it takes the VIP again.
	vss = []*edgelbv1.VirtualService{pinnedTo(vs("a", "10.0.0.1", "m1"), "m3")}
	if got := render(Plan(vss, ms, allAlive)); got != "a→m3("+Text(ReasonPinned)+")" {
		t.Errorf("plan = %s, want a back on m3", got)
	}
}

func TestPlanMovesWithReason(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ms     []*edgelbv1.Member
		alive  func(string) bool
		reason edgelbv1.OwnershipReason
	}{
		{"unreachable", members("m1", "m2", "m3"), aliveExcept("m1"), ReasonOwnerDown},
		{"removed", members("m2", "m3"), allAlive, ReasonOwnerGone},
		{"draining", withState(members("m1", "m2", "m3"), "m1", edgelbv1.MemberState_MEMBER_STATE_DRAINING), allAlive, ReasonOwnerDrain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vss := []*edgelbv1.VirtualService{
				vs("a", "10.0.0.1", "m1"), vs("b", "10.0.0.2", "m1"), vs("c", "10.0.0.3", "m1"), vs("d", "10.0.0.4", "m1"),
				vs("e", "10.0.0.5", "m2"),
			}
			plan := Plan(vss, tc.ms, tc.alive)
			if len(plan) != 4 {
				t.Fatalf("plan = %s, want m1's four VIPs moved", render(plan))
			}
			load := map[string]int{"m2": 1}
			for _, a := range plan {
				if a.OwnershipReason != tc.reason || a.Reason != Text(tc.reason) {
					t.Errorf("%s moved with reason %v (%q), want %v", a.Name, a.OwnershipReason, a.Reason, tc.reason)
				}
				if a.Owner != "m2" && a.Owner != "m3" {
					t.Errorf("%s moved to %q", a.Name, a.Owner)
				}
				if a.Name == "e" {
					t.Error("e moved although its owner is fine")
				}
				load[a.Owner]++
			}
			// Spread evenly, counting what m2 already had: 5 VIPs over two members.
			if d := load["m2"] - load["m3"]; d < -1 || d > 1 {
				t.Errorf("load after the move: %v, want even", load)
			}
		})
	}
}

func TestPlanNobodyEligibleNoChurn(t *testing.T) {
	vss := []*edgelbv1.VirtualService{vs("a", "10.0.0.1", "m1"), vs("b", "10.0.0.2", ""), vs("c", "10.0.0.3", "gone")}
	for name, tc := range map[string]struct {
		ms    []*edgelbv1.Member
		alive func(string) bool
	}{
		"all dead":     {members("m1", "m2"), aliveExcept("m1", "m2")},
		"all draining": {withState(withState(members("m1", "m2"), "m1", edgelbv1.MemberState_MEMBER_STATE_DRAINING), "m2", edgelbv1.MemberState_MEMBER_STATE_DRAINING), allAlive},
		"all left":     {withState(members("m1"), "m1", edgelbv1.MemberState_MEMBER_STATE_LEFT), allAlive},
		"no members":   {nil, allAlive},
	} {
		if plan := Plan(vss, tc.ms, tc.alive); len(plan) != 0 {
			t.Errorf("%s: plan = %s, want no churn", name, render(plan))
		}
	}
}

// Random clusters: after applying a plan, the next plan is empty; every VIP
// has an eligible owner when anyone is eligible; shared VIPs have one owner;
// services on a healthy, agreed, unpinned owner do not move.
func TestPlanProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for iter := range 500 {
		ids := []string{"m1", "m2", "m3", "m4"}
		var ms []*edgelbv1.Member
		for _, id := range ids[:1+rng.IntN(4)] {
			ms = append(ms, &edgelbv1.Member{Id: id, State: edgelbv1.MemberState(rng.IntN(3))})
		}
		dead := map[string]bool{}
		for _, id := range ids {
			dead[id] = rng.IntN(4) == 0
		}
		alive := func(id string) bool { return !dead[id] }
		active := map[string]bool{}
		for _, m := range ms {
			if m.State != edgelbv1.MemberState_MEMBER_STATE_DRAINING {
				active[m.Id] = true
			}
		}
		eligible := func(id string) bool { return active[id] && alive(id) }
		anyEligible := false
		for _, id := range ids {
			anyEligible = anyEligible || eligible(id)
		}

		var vss []*edgelbv1.VirtualService
		for i := range 1 + rng.IntN(12) {
			owner := []string{"", "m1", "m2", "m3", "m4", "m9"}[rng.IntN(6)]
			v := vs(fmt.Sprint("s", i), fmt.Sprint("10.0.0.", rng.IntN(6)), owner)
			if rng.IntN(6) == 0 {
				v.PinnedMember = ids[rng.IntN(4)]
			}
			vss = append(vss, v)
		}
		groupOK := map[string]bool{} // VIP → every service agrees on an eligible owner and no eligible pin differs
		owners := map[string]map[string]bool{}
		for _, v := range vss {
			if owners[v.Vip] == nil {
				owners[v.Vip] = map[string]bool{}
			}
			owners[v.Vip][v.Owner] = true
		}
		for vip, os := range owners {
			ok := len(os) == 1
			for o := range os {
				ok = ok && eligible(o)
			}
			for _, v := range vss {
				if v.Vip == vip && v.PinnedMember != "" && eligible(v.PinnedMember) && !os[v.PinnedMember] {
					ok = false
				}
			}
			groupOK[vip] = ok
		}

		plan := Plan(vss, ms, alive)
		byName := map[string]*edgelbv1.VirtualService{}
		for _, v := range vss {
			byName[v.Name] = v
		}
		for _, a := range plan {
			v := byName[a.Name]
			if v == nil || a.Tenant != "t" {
				t.Fatalf("iter %d: assignment for unknown service %v", iter, a)
			}
			if !eligible(a.Owner) {
				t.Fatalf("iter %d: %s assigned to ineligible %q", iter, a.Name, a.Owner)
			}
			if groupOK[v.Vip] {
				t.Fatalf("iter %d: %s moved from healthy owner %s to %s (%s)", iter, a.Name, v.Owner, a.Owner, a.OwnershipReason)
			}
			if a.Owner == v.Owner {
				t.Fatalf("iter %d: no-op assignment %v", iter, a)
			}
			if a.OwnershipReason == edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED {
				t.Fatalf("iter %d: assignment without a reason %v", iter, a)
			}
		}
		for _, a := range plan {
			byName[a.Name].Owner = a.Owner
		}
		if again := Plan(vss, ms, alive); len(again) != 0 {
			t.Fatalf("iter %d: plan is not a fixpoint; second plan %s", iter, render(again))
		}
		if !anyEligible {
			if len(plan) != 0 {
				t.Fatalf("iter %d: nobody eligible but plan %s", iter, render(plan))
			}
			continue
		}
		ownerOf := map[string]string{}
		for _, v := range vss {
			if !eligible(v.Owner) {
				t.Fatalf("iter %d: %s left on ineligible %q although someone is eligible", iter, v.Name, v.Owner)
			}
			if o, seen := ownerOf[v.Vip]; seen && o != v.Owner {
				t.Fatalf("iter %d: VIP %s on both %s and %s", iter, v.Vip, o, v.Owner)
			}
			ownerOf[v.Vip] = v.Owner
		}
	}
}

// A member's VIPs would spread over the others, least loaded first; each
// VIP's successor is who the leader's Plan would pick when its owner died.
func TestSuccessors(t *testing.T) {
	vss := []*edgelbv1.VirtualService{
		vs("v1", "10.0.0.1", "a"), vs("v2", "10.0.0.2", "a"),
		vs("v3", "10.0.0.3", "b"), vs("v4", "10.0.0.4", "c"),
		vs("v4-udp", "10.0.0.4", "c"), // shares v4's address
		vs("new", "10.0.0.5", ""),     // not assigned yet: nothing to inherit
	}
	got := Successors(vss, members("a", "b", "c"))
	want := map[string]string{"10.0.0.1": "b", "10.0.0.2": "c", "10.0.0.3": "c", "10.0.0.4": "b"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("successors %v, want %v", got, want)
	}
	// A draining member takes nothing over, and the VIPs it still holds are
	// moving already (the leader's Plan reassigns them now): no prediction.
	got = Successors(vss, withState(members("a", "b", "c"), "b", edgelbv1.MemberState_MEMBER_STATE_DRAINING))
	want = map[string]string{"10.0.0.1": "c", "10.0.0.2": "c", "10.0.0.4": "a"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("with b draining: successors %v, want %v", got, want)
	}
	if got := Successors(vss[:2], members("a")); len(got) != 0 {
		t.Fatalf("single member: successors %v, want none", got)
	}
}

// Every member runs Successors on each change of state (its health checks
// follow it): one Plan per owner over every VIP.
func BenchmarkSuccessors(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ids := []string{"m1", "m2", "m3", "m4", "m5"}
			vss := make([]*edgelbv1.VirtualService, n)
			for i := range vss {
				vss[i] = vs(fmt.Sprint("s", i), fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), ids[i%len(ids)])
			}
			ms := members(ids...)
			for b.Loop() {
				Successors(vss, ms)
			}
		})
	}
}

// successorsByPlan is Successors' definition: one Plan per owner.
func successorsByPlan(vss []*edgelbv1.VirtualService, members []*edgelbv1.Member) map[string]string {
	out := map[string]string{}
	for _, vs := range vss {
		if vs.Owner == "" {
			continue
		}
		down := vs.Owner
		for _, a := range Plan(vss, members, func(id string) bool { return id != down }) {
			for _, v := range vss {
				if v.Tenant == a.Tenant && v.Name == a.Name && v.Owner == down {
					out[v.Vip] = a.Owner
				}
			}
		}
	}
	return out
}

// On any settled state (the leader's Plan has nothing left to do), the fast
// Successors agrees with running Plan once per owner.
func TestSuccessorsMatchesPlan(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 3))
	for iter := range 2000 {
		ids := []string{"m1", "m2", "m3", "m4", "m5"}
		var ms []*edgelbv1.Member
		for _, id := range ids[:1+rng.IntN(5)] {
			ms = append(ms, &edgelbv1.Member{Id: id, State: edgelbv1.MemberState(rng.IntN(3))})
		}
		var vss []*edgelbv1.VirtualService
		for i := range 1 + rng.IntN(20) {
			v := vs(fmt.Sprint("s", i), fmt.Sprint("10.0.0.", rng.IntN(10)), "")
			if rng.IntN(6) == 0 {
				v.PinnedMember = ids[rng.IntN(5)]
			}
			vss = append(vss, v)
		}
		for _, a := range Plan(vss, ms, allAlive) {
			for _, v := range vss {
				if v.Name == a.Name {
					v.Owner = a.Owner
				}
			}
		}
		got, want := Successors(vss, ms), successorsByPlan(vss, ms)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			var state []string
			for _, v := range vss {
				state = append(state, fmt.Sprintf("%s@%s→%s(pin %s)", v.Name, v.Vip, v.Owner, v.PinnedMember))
			}
			t.Fatalf("iteration %d: members %v, services %v:\nSuccessors %v\nby Plan    %v", iter, ms, state, got, want)
		}
	}
}

func TestDecide(t *testing.T) {
	ms := withState(members("m1", "m2", "m3", "m4"), "m4", edgelbv1.MemberState_MEMBER_STATE_DRAINING)
	notM2 := func(id string) bool { return id != "m2" }
	none := func(string) bool { return false }
	shared := []*edgelbv1.VirtualService{{Name: "other", Owner: ""}, {Name: "web-udp", Owner: "m4"}}
	for _, c := range []struct {
		name    string
		self    string
		ms      []*edgelbv1.Member
		pin     string
		load    map[string]int
		alive   func(string) bool
		sharing []*edgelbv1.VirtualService
		want    Decision
	}{
		{"least loaded", "m9", ms, "", map[string]int{"m1": 3, "m2": 1, "m3": 2}, allAlive, nil, Decision{"m2", ReasonNew}},
		{"a member that owns nothing counts as empty", "m9", ms, "", map[string]int{"m1": 3, "m2": 1}, allAlive, nil, Decision{"m3", ReasonNew}},
		{"ties go to the lowest id", "m9", ms, "", map[string]int{"m1": 2, "m2": 1, "m3": 1}, allAlive, nil, Decision{"m2", ReasonNew}},
		{"an unreachable member gets none", "m9", ms, "", map[string]int{"m1": 3, "m3": 2}, notM2, nil, Decision{"m3", ReasonNew}},
		{"a draining member gets none", "m9", ms, "", map[string]int{"m1": 3, "m2": 3, "m3": 3}, allAlive, nil, Decision{"m1", ReasonNew}},
		{"a load of a member that left is ignored", "m9", ms, "", map[string]int{"gone": 0, "m1": 1, "m2": 1, "m3": 1}, allAlive, nil, Decision{"m1", ReasonNew}},
		{"the pinned member when eligible", "m9", ms, "m1", map[string]int{"m1": 9}, allAlive, nil, Decision{"m1", ReasonPinned}},
		{"not a pinned member that is unreachable", "m9", ms, "m2", map[string]int{"m1": 9, "m3": 1}, notM2, nil, Decision{"m3", ReasonNew}},
		{"not a pinned member that is draining", "m9", ms, "m4", nil, allAlive, nil, Decision{"m1", ReasonNew}},
		{"the leader always hears itself", "m3", ms, "", map[string]int{"m3": 5}, none, nil, Decision{"m3", ReasonNew}},
		{"nobody eligible: the assigner decides later", "m4", ms, "", nil, none, nil, Decision{}},
		{"a leader not registered yet takes it", "m9", ms, "", nil, none, nil, Decision{"m9", ReasonNew}},
		{"a shared VIP goes where its services are, pinned or not", "m9", ms, "m1", nil, allAlive, shared, Decision{"m4", ReasonAlign}},
		{"a shared VIP without an owner is placed as a new one", "m9", ms, "m1", nil, allAlive, shared[:1], Decision{"m1", ReasonPinned}},
	} {
		vs := &edgelbv1.VirtualService{Name: "web", PinnedMember: c.pin}
		got := Decide(vs, Candidates{Self: c.self, Members: c.ms, Load: c.load, Alive: c.alive, Sharing: c.sharing})
		if got != c.want {
			t.Errorf("%s: Decide = %+v, want %+v", c.name, got, c.want)
		}
	}
}

// Every reason the decisions record reads as text, and the text of each
// stays what the release before the enum wrote (members of that release and
// people reading old logs see these words).
func TestReasonText(t *testing.T) {
	for v, name := range edgelbv1.OwnershipReason_name {
		r := edgelbv1.OwnershipReason(v)
		if (Text(r) == "") != (r == edgelbv1.OwnershipReason_OWNERSHIP_REASON_UNSPECIFIED) {
			t.Errorf("%s reads %q", name, Text(r))
		}
	}
	if Text(ReasonOwnerDown) != "owner unreachable" || Text(ReasonAlign) != "VIP shared with another service" {
		t.Errorf("texts changed: %q, %q", Text(ReasonOwnerDown), Text(ReasonAlign))
	}
}
