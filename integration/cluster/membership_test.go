package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Operator mistakes and faults around membership, against real lbd processes
// driven by the real lbctl (issue 17). Each case used to break the cluster
// or pass silently.

// newMember adds a member that is not started yet (fresh data dir, free
// ports, the cluster's config) and that joins through join.
func (c *cluster) newMember(t *testing.T, id string, join []string) *member {
	t.Helper()
	m := &member{
		id:   id,
		api:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		raft: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		dir:  filepath.Join(filepath.Dir(c.members[0].dir), id),
		cfg:  c.members[0].cfg,
		join: join,
	}
	c.members = append(c.members, m)
	return m
}

func (c *cluster) byID(t *testing.T, id string) *member {
	t.Helper()
	for _, m := range c.members {
		if m.id == id {
			return m
		}
	}
	t.Fatalf("no member %s", id)
	return nil
}

// refused runs lbctl and fails the test unless it exits with code and
// reports the typed reason (lbctl prints the ErrorInfo reason in brackets).
func refused(t *testing.T, eps []string, code int, reason string, args ...string) {
	t.Helper()
	out, errs, got := lbctl(t, eps, args...)
	if got != code || !strings.Contains(errs, "["+reason+"]") {
		t.Errorf("lbctl %s: exit %d, stderr %q, stdout %q; want exit %d with reason %s", strings.Join(args, " "), got, errs, out, code, reason)
		return
	}
	t.Logf("lbctl %s: exit %d: %s", strings.Join(args, " "), got, strings.TrimSpace(errs))
}

// memberIDs is `lbctl member list` as id → suffrage.
func memberIDs(t *testing.T, eps []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range items(t, mustLbctl(t, eps, "member", "list", "-o", "json")) {
		id, _ := m["id"].(string)
		s, _ := m["suffrage"].(string)
		out[id] = s
	}
	return out
}

// statusOf is `lbctl status -o json`.
type statusOf struct {
	Health   string   `json:"health"`
	Problems []string `json:"problems"`
	Members  []struct {
		ID        string `json:"id"`
		Reachable bool   `json:"reachable"`
		Lag       uint64 `json:"lag"`
		Ready     bool   `json:"ready"`
		NotReady  string `json:"notReady"`
	} `json:"members"`
}

func clusterStatus(t *testing.T, eps []string) (statusOf, error) {
	t.Helper()
	var st statusOf
	out, errs, code := lbctl(t, eps, "status", "-o", "json")
	if code != 0 {
		return st, fmt.Errorf("status: exit %d: %s", code, errs)
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("decode status %q: %v", out, err)
	}
	return st, nil
}

func waitHealthy(t *testing.T, eps []string) {
	t.Helper()
	eventually(t, 60*time.Second, "lbctl status says healthy", func() error {
		st, err := clusterStatus(t, eps)
		if err != nil {
			return err
		}
		if st.Health != "healthy" {
			return fmt.Errorf("%s: %v", st.Health, st.Problems)
		}
		return nil
	})
}

func leaderTerm(t *testing.T, eps []string) string {
	t.Helper()
	v, _ := decode(t, mustLbctl(t, eps, "leader", "-o", "json"))["term"].(string)
	return v
}

func loopback(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }

// The first report: on a fresh single member, a wildcard add was
// accepted, the leader flapped and `member remove` failed. Bad adds are now
// refused before anything is committed and the member keeps leading.
func TestMembershipBadAddsOnSingleMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts lbd; skipped with -short")
	}
	c := newCluster(t, 1)
	solo := c.members[0]
	solo.start(t)
	all := c.endpoints()
	c.waitVoters(t, all, 1)
	waitHealthy(t, all)
	term := leaderTerm(t, all)

	refused(t, all, 3, "MEMBER_ADDRESS_WILDCARD", "member", "add", "ghost", "--raft-addr", "0.0.0.0:7701", "--api-addr", "0.0.0.0:7700")
	refused(t, all, 3, "MEMBER_ADDRESS_WILDCARD", "member", "add", "ghost", "--raft-addr", "[::]:7701", "--api-addr", loopback(t))
	// Nothing listens there.
	refused(t, all, 6, "MEMBER_UNREACHABLE", "member", "add", "ghost", "--raft-addr", loopback(t), "--api-addr", loopback(t))
	// The member's own raft address under another name.
	_, port, _ := net.SplitHostPort(solo.raft)
	refused(t, all, 5, "MEMBER_ADDRESS_IN_USE", "member", "add", "ghost", "--raft-addr", "localhost:"+port, "--api-addr", loopback(t))

	// Nothing changed: one voter, no election, writes and removal answer.
	if ms := memberIDs(t, all); len(ms) != 1 || ms[solo.id] != "voter" {
		t.Errorf("members after refused adds: %v; want only %s, a voter", ms, solo.id)
	}
	mustLbctl(t, all, "pool", "create", "public", "--range", "192.0.2.0/24")
	mustLbctl(t, all, "vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11")
	if _, errs, code := lbctl(t, all, "member", "remove", "ghost"); code != exitNotFound {
		t.Errorf("member remove ghost: exit %d (%s); want 4: it was never added", code, errs)
	}
	if got := leaderTerm(t, all); got != term {
		t.Errorf("leader term went from %s to %s: elections happened", term, got)
	}
	waitHealthy(t, all)
}

// On three members: an existing member's address in another spelling, the
// same member added twice, and adds while a member is down.
func TestMembershipAddsOnThreeMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts lbd; skipped with -short")
	}
	c, all := startedCluster(t, 3)
	edge2 := c.members[1]

	_, port, _ := net.SplitHostPort(edge2.raft)
	refused(t, all, 5, "MEMBER_ADDRESS_IN_USE", "member", "add", "edge9", "--raft-addr", "localhost:"+port, "--api-addr", loopback(t))

	t.Run("the same member twice", func(t *testing.T) {
		// The same id and addresses: nothing to do, both times.
		for range 2 {
			mustLbctl(t, all, "member", "add", edge2.id, "--raft-addr", edge2.raft, "--api-addr", edge2.api)
		}
		// The same id at other addresses would re-point raft at another host.
		refused(t, all, 5, "MEMBER_ID_IN_USE", "member", "add", edge2.id, "--raft-addr", loopback(t), "--api-addr", loopback(t))
		ms := memberIDs(t, all)
		if len(ms) != 3 || ms[edge2.id] != "voter" {
			t.Errorf("members after adding %s again: %v", edge2.id, ms)
		}
		for _, m := range items(t, mustLbctl(t, all, "member", "list", "-o", "json")) {
			if m["id"] == edge2.id && (m["raftAddress"] != edge2.raft || m["apiAddress"] != edge2.api) {
				t.Errorf("%s's addresses changed: %v", edge2.id, m)
			}
		}
	})

	t.Run("adds while a member is down", func(t *testing.T) {
		leader := c.leader(t, all)
		var down *member
		for _, m := range c.members {
			if m != leader {
				down = m
				break
			}
		}
		var other *member // the follower that stays up
		for _, m := range c.members {
			if m != leader && m != down {
				other = m
			}
		}
		mustLbctl(t, all, "pool", "create", "public", "--range", "192.0.2.0/24")
		web := decode(t, mustLbctl(t, all, "vip", "create", "web", "--port", "tcp/80", "--backend", "10.0.0.11", "-o", "json"))
		mustLbctl(t, all, "vip", "move", web["vip"].(string), down.id)
		down.kill()
		rest := c.endpoints(down)
		// With one of three down, a fourth voter that never answers would
		// have cost the quorum: refused before anything is committed.
		refused(t, rest, 6, "MEMBER_UNREACHABLE", "member", "add", "ghost", "--raft-addr", loopback(t), "--api-addr", loopback(t))
		// Once the leader has noticed the silence (its VIP moves), removing
		// a member that answers would leave one of two voters: refused.
		eventually(t, 30*time.Second, "web moves off the down member", func() error {
			if o := vipOf(t, rest, "web")["owner"]; o == down.id || o == nil || o == "" {
				return fmt.Errorf("owner %v", o)
			}
			return nil
		})
		refused(t, rest, 6, "QUORUM_AT_RISK", "member", "remove", other.id)
		refused(t, rest, 6, "QUORUM_AT_RISK", "member", "remove", leader.id)

		// A real new member joins by itself and is promoted once caught up.
		edge4 := c.newMember(t, "edge4", rest)
		edge4.start(t)
		c.waitVoters(t, rest, 4) // the down member is still a voter
		writeLbctl(t, rest, exitAlreadyExists, "vip", "create", "while-down", "--port", "tcp/80", "--backend", "10.0.0.11")
		eventually(t, 30*time.Second, "edge4 holds the new service", func() error {
			if _, errs, code := lbctl(t, []string{edge4.api}, "vip", "get", "while-down"); code != 0 {
				return fmt.Errorf("exit %d: %s", code, errs)
			}
			return nil
		})
		down.start(t)
		waitHealthy(t, c.endpoints())
		if ms := memberIDs(t, c.endpoints()); len(ms) != 4 || ms["ghost"] != "" {
			t.Errorf("members: %v; want edge1-4 and no ghost", ms)
		}
	})
}

// Removing the leader hands leadership over first: the old leader is
// removed as a follower, and the cluster keeps taking writes.
func TestMembershipRemoveLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts lbd; skipped with -short")
	}
	c, all := startedCluster(t, 3)
	mustLbctl(t, all, "pool", "create", "public", "--range", "192.0.2.0/24")
	mustLbctl(t, all, "vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11")
	leader := c.leader(t, all)
	var via *member
	for _, m := range c.members {
		if m != leader {
			via = m
			break
		}
	}
	// Through a follower: it forwards to the leader.
	mustLbctl(t, []string{via.api}, "member", "remove", leader.id)
	rest := c.endpoints(leader)
	if _, ok := memberIDs(t, rest)[leader.id]; ok {
		t.Errorf("%s is still listed after its removal", leader.id)
	}
	// A leader removing itself shuts its raft down mid-term; handed over
	// first, it was removed as a follower and its raft still runs.
	st := decode(t, mustLbctl(t, []string{leader.api}, "member", "status", "-o", "json"))
	if s := st["raftState"]; s == "Shutdown" || s == "Leader" {
		t.Errorf("the removed leader's raft is %v; want it handed over (Follower) before removal", s)
	}
	leader.kill()
	c.waitVoters(t, rest, 2)
	if nl := c.leader(t, rest); nl == leader {
		t.Fatalf("the removed member still leads")
	}
	writeLbctl(t, rest, exitAlreadyExists, "vip", "create", "after-remove", "--port", "tcp/8080", "--backend", "10.0.0.12")
	eventually(t, 30*time.Second, "web moves off the removed leader", func() error {
		if o := vipOf(t, rest, "web")["owner"]; o == leader.id || o == nil || o == "" {
			return fmt.Errorf("owner %v", o)
		}
		return nil
	})
	waitHealthy(t, rest)
}

// Down to one member and back to three.
func TestMembershipShrinkToOneAndGrowBack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts lbd; skipped with -short")
	}
	c, all := startedCluster(t, 3)
	mustLbctl(t, all, "pool", "create", "public", "--range", "192.0.2.0/24")
	mustLbctl(t, all, "vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11")

	first := c.members[0]
	one := []string{first.api}
	for _, victim := range []*member{c.members[2], c.members[1]} {
		// Whichever leads: removing the leader hands over first.
		mustLbctl(t, one, "member", "remove", victim.id)
		victim.kill()
	}
	c.waitVoters(t, one, 1)
	refused(t, one, 6, "LAST_VOTER", "member", "remove", first.id)
	writeLbctl(t, one, exitAlreadyExists, "vip", "create", "solo", "--port", "tcp/443", "--backend", "10.0.0.12")

	// Grow back with fresh hosts that join.
	for _, id := range []string{"edge4", "edge5"} {
		c.newMember(t, id, one).start(t)
	}
	c.waitVoters(t, one, 3)
	grown := []string{first.api, c.byID(t, "edge4").api, c.byID(t, "edge5").api}
	for _, ep := range grown[1:] {
		eventually(t, 30*time.Second, "services replicated to "+ep, func() error {
			for _, name := range []string{"web", "solo"} {
				if _, errs, code := lbctl(t, []string{ep}, "vip", "get", name); code != 0 {
					return fmt.Errorf("get %s: exit %d: %s", name, code, errs)
				}
			}
			return nil
		})
	}
	if ms := memberIDs(t, grown); len(ms) != 3 || ms["edge1"] != "voter" || ms["edge4"] != "voter" || ms["edge5"] != "voter" {
		t.Errorf("members after growing back: %v", ms)
	}
	// The order member add --help teaches: lbd --join first, then
	// (optionally) member add with the same addresses, e.g. for --interface.
	help := mustLbctl(t, grown, "member", "add", "--help")
	if !strings.Contains(help, "--join") || !strings.Contains(help, "lbctl member add lb4 --raft-addr 10.1.0.4:7701 --api-addr 10.1.0.4:7700 --interface eth1") {
		t.Errorf("member add --help does not teach lbd --join, then member add:\n%s", help)
	}
	edge4 := c.byID(t, "edge4")
	mustLbctl(t, grown, "member", "add", edge4.id, "--raft-addr", edge4.raft, "--api-addr", edge4.api, "--interface", "eth1")
	for _, m := range items(t, mustLbctl(t, grown, "member", "list", "-o", "json")) {
		if m["id"] == edge4.id && (m["dataInterface"] != "eth1" || m["suffrage"] != "voter") {
			t.Errorf("after member add with --interface: %v", m)
		}
	}
	waitHealthy(t, grown)
}

// A restarted member that cannot catch up (here: it listens for raft where
// the cluster does not dial it) answers its API; status must not call the
// cluster healthy, and must name it and its lag.
func TestMembershipStatusNotHealthyWhileRestartedMemberLags(t *testing.T) {
	if testing.Short() {
		t.Skip("starts lbd; skipped with -short")
	}
	c, all := startedCluster(t, 3)
	waitHealthy(t, all)
	leader := c.leader(t, all)
	var lagger *member
	for _, m := range c.members {
		if m != leader {
			lagger = m
		}
	}
	lagger.stop(t)
	rest := c.endpoints(lagger)
	const writes = 60 // well past status's bound of 32 entries
	for i := range writes {
		writeLbctl(t, rest, exitAlreadyExists, "pool", "create", fmt.Sprintf("p%02d", i), "--range", fmt.Sprintf("10.%d.0.0/24", i+1))
	}
	raftAddr := lagger.raft
	lagger.raft = loopback(t)
	lagger.start(t)
	eventually(t, 30*time.Second, "status reports the restarted member", func() error {
		st, err := clusterStatus(t, all)
		if err != nil {
			return err
		}
		for _, m := range st.Members {
			if m.ID != lagger.id {
				continue
			}
			if !m.Reachable {
				return fmt.Errorf("%s not answering yet", m.ID)
			}
			if st.Health == "healthy" {
				t.Fatalf("status is healthy while %s lags %d entries behind: %+v", m.ID, m.Lag, st)
			}
			if m.Lag < writes || m.Ready {
				t.Fatalf("%s: lag %d, ready %v; want a lag of at least %d and not ready: %+v", m.ID, m.Lag, m.Ready, writes, st)
			}
			named := false
			for _, p := range st.Problems {
				named = named || strings.Contains(p, lagger.id) && strings.Contains(p, fmt.Sprint(m.Lag))
			}
			if !named {
				t.Fatalf("no problem names %s and its lag %d: %v", m.ID, m.Lag, st.Problems)
			}
			t.Logf("while %s lags: %s %v", m.ID, st.Health, st.Problems)
			return nil
		}
		return fmt.Errorf("%s not in the status", lagger.id)
	})
	// Back where the cluster dials it, it catches up and status is healthy again.
	lagger.kill()
	lagger.raft = raftAddr
	lagger.start(t)
	waitHealthy(t, all)
}

// A member removed while it was down never gets the entry that removes it
// (hashicorp/raft sends it to the removed member once, best effort), and its
// peers refuse its votes: started again on its old data dir, it
// would wait for a leader for ever and answer NO_LEADER. It must say it was
// removed, learnt from a peer's newer configuration, and refuse reads and
// writes, across restarts too; the cluster goes on without it.
func TestMembershipRemovedWhileDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts lbd; skipped with -short")
	}
	c, all := startedCluster(t, 3)
	mustLbctl(t, all, "pool", "create", "public", "--range", "192.0.2.0/24")
	writeLbctl(t, all, exitAlreadyExists, "vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11")
	victim := c.members[2]
	rest := c.endpoints(victim)
	victim.stop(t)
	writeLbctl(t, rest, exitNotFound, "member", "remove", victim.id)
	c.waitVoters(t, rest, 2)

	for range 2 {
		victim.start(t)
		removedRefusal(t, victim, "vip", "list", "-A")
		_, errs, _ := lbctl(t, []string{victim.api}, "vip", "list", "-A")
		if !strings.Contains(errs, "configuration as member") {
			t.Errorf("%s refused, but not from a peer's configuration: %s", victim.id, errs)
		}
		removedRefusal(t, victim, "vip", "create", "via-removed", "--port", "tcp/81", "--backend", "10.0.0.12")
		// /readyz says why it is not ready.
		if st := decode(t, mustLbctl(t, []string{victim.api}, "--stale", "member", "status", "-o", "json")); !strings.Contains(fmt.Sprint(st), "removed from the cluster") {
			t.Errorf("%s's member status does not say it was removed: %v", victim.id, st)
		}
		victim.stop(t)
	}
	writeLbctl(t, rest, exitAlreadyExists, "vip", "create", "after", "--port", "tcp/82:30082", "--backend", "10.0.0.12")
	if ms := memberIDs(t, rest); len(ms) != 2 || ms[victim.id] != "" {
		t.Errorf("members: %v; want two, without %s", ms, victim.id)
	}
}
