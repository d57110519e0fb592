package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// failoverProfiles are lbd timing settings the control-plane failover is
// measured with: lbd's defaults (issue 19 made them the sub-second profile;
// the former "fast" profile, which cut raft's timers to 120 ms, is gone).
var failoverProfiles = []struct{ name, yaml string }{
	{"lan", ""},
	// The defaults without the provisional takeover: a lost leader-owner's
	// VIPs wait for the next leader's commit. Only its leader case differs.
	{"commit", "ownership:\n  provisionalTakeover: false\n"},
}

// BenchmarkFailoverControlPlane measures, on three real lbd processes on
// loopback (control plane only), the time from losing a VIP's owner to the
// commit that gives the VIP to a survivor, as a survivor's API shows it:
// sigkill (the process dies; its peers see connections refused) and sigstop
// (the host hangs or is cut off: nothing answers, nothing refuses) of an
// owner that is not the leader; and leader (SIGKILL of the raft leader that
// owns the VIP), where the time is until a survivor's data plane serves the
// VIP (its member status lists it: the provisional takeover precedes the
// next leader's commit, reported apart as commit-p99-ms; the "commit"
// profile turns the provisional takeover off), while a second VIP,
// owned by a member that is not the leader, must stay served throughout. The data
// plane's part of a takeover (one address, a GARP burst) is measured in the
// guest by integration/ha. EDGELB_FAILOVER_ROUNDS sets the failovers per
// case (default 20; make bench runs fewer to fit its time).
func BenchmarkFailoverControlPlane(b *testing.B) {
	rounds := 20
	if v := os.Getenv("EDGELB_FAILOVER_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("EDGELB_FAILOVER_ROUNDS=%q: want a positive number of failovers per case", v)
		}
		rounds = n
	}
	for _, p := range failoverProfiles {
		for _, kind := range []string{"sigkill", "sigstop", "leader"} {
			if p.name == "commit" && kind != "leader" {
				continue
			}
			b.Run(p.name+"/"+kind, func(b *testing.B) {
				var took, commit []time.Duration
				for i := 0; i < b.N; i++ {
					t, c := failoverRounds(b, p.yaml, kind, rounds)
					took, commit = append(took, t...), append(commit, c...)
				}
				slices.Sort(took)
				b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
				b.ReportMetric(ms(took[min(len(took)-1, int(0.99*float64(len(took))))]), "p99-ms")
				b.ReportMetric(ms(took[len(took)-1]), "max-ms")
				b.ReportMetric(float64(len(took)), "rounds")
				if len(commit) > 0 {
					slices.Sort(commit)
					b.ReportMetric(ms(commit[min(len(commit)-1, int(0.99*float64(len(commit))))]), "commit-p99-ms")
				}
			})
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// foHarness is three real lbd processes on loopback (control plane only)
// with a pool, two VIPs (fo and other) and API clients to each member.
type foHarness struct {
	tb      testing.TB
	c       *cluster
	clients map[string]edgelbv1.VirtualServiceServiceClient
	cluster map[string]edgelbv1.ClusterServiceClient
}

func newFailoverHarness(tb testing.TB, yaml string) *foHarness {
	h := &foHarness{tb: tb, c: newCluster(tb, 3), clients: map[string]edgelbv1.VirtualServiceServiceClient{},
		cluster: map[string]edgelbv1.ClusterServiceClient{}}
	c := h.c
	for _, m := range c.members {
		if err := os.WriteFile(m.cfg, []byte(yaml), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	for _, m := range c.members {
		cc, err := grpc.NewClient(m.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { cc.Close() })
		h.clients[m.id] = edgelbv1.NewVirtualServiceServiceClient(cc)
		h.cluster[m.id] = edgelbv1.NewClusterServiceClient(cc)
	}
	ctx := context.Background()
	c.members[0].start(tb)
	h.until("edge1 answers", func() bool {
		_, err := h.cluster["edge1"].ListMembers(ctx, &edgelbv1.ListMembersRequest{})
		return err == nil
	})
	for _, m := range c.members[1:] {
		m.start(tb)
	}
	h.until("3 voters", func() bool {
		r, err := h.cluster["edge1"].ListMembers(ctx, &edgelbv1.ListMembersRequest{})
		n := 0
		for _, m := range r.GetMembers() {
			if m.Suffrage == "voter" && m.ApiAddress != "" {
				n++
			}
		}
		return err == nil && n == 3
	})
	pools := edgelbv1.NewAddressPoolServiceClient(must(grpc.NewClient(c.members[0].api, grpc.WithTransportCredentials(insecure.NewCredentials()))))
	h.until("pool created", func() bool {
		_, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/24"}}})
		return err == nil
	})
	for name, vip := range map[string]string{"fo": "192.0.2.10", "other": "192.0.2.11"} {
		h.until("vip created", func() bool {
			_, err := h.clients["edge1"].CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
				Name: name, Vip: vip, Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80}},
			}})
			return err == nil
		})
	}
	return h
}

func (h *foHarness) until(what string, f func() bool) {
	h.tb.Helper()
	for deadline := time.Now().Add(30 * time.Second); !f(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			h.tb.Fatalf("%s: not within 30s", what)
		}
	}
}

func (h *foHarness) ownerOf(via, name string) string {
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := h.clients[via].GetVirtualService(cctx, &edgelbv1.GetVirtualServiceRequest{Name: name})
	if err != nil {
		return ""
	}
	return r.GetService().GetOwner()
}

// serves reports whether member id's data plane programs vip (its own
// member status), and whether it answered at all.
func (h *foHarness) serves(id, vip string) (bool, bool) {
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := h.cluster[id].GetMemberStatus(cctx, &edgelbv1.GetMemberStatusRequest{})
	if err != nil {
		return false, false
	}
	return slices.Contains(r.GetStatus().GetOwnedVips(), vip), true
}

func (h *foHarness) leader(via string) string {
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := h.cluster[via].GetLeader(cctx, &edgelbv1.GetLeaderRequest{})
	if err != nil {
		return ""
	}
	return r.GetLeader().GetId()
}

func (h *foHarness) move(vip, to string) {
	l := h.leader("edge1")
	if l == "" {
		return
	}
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	h.clients[l].MoveVIP(cctx, &edgelbv1.MoveVIPRequest{Vip: vip, Member: to})
	cancel()
}

// failoverRounds runs rounds failovers of kind (sigkill, sigstop, leader) and
// returns the takeover times and, for leader, the times to the commit.
func failoverRounds(b *testing.B, yaml string, kind string, rounds int) (took, commits []time.Duration) {
	how := syscall.SIGKILL
	if kind == "sigstop" {
		how = syscall.SIGSTOP
	}
	h := newFailoverHarness(b, yaml)
	c, clients, cluster, ctx := h.c, h.clients, h.cluster, context.Background()
	until, ownerOf, serves, leader, move := h.until, h.ownerOf, h.serves, h.leader, h.move
	owner := func(via string) string { return ownerOf(via, "fo") }

	for r := 0; r < rounds; r++ {
		if kind == "leader" {
			took1, commit1 := leaderRound(b, c, until, owner, ownerOf, leader, serves, move)
			took, commits = append(took, took1), append(commits, commit1)
			continue
		}
		// The victim owns the VIP and is not the leader (leader: below).
		var victim *member
		until("an owner that is not the leader", func() bool {
			o, l := owner("edge1"), leader("edge1")
			if o == "" || l == "" {
				return false
			}
			if o == l {
				for _, m := range c.members {
					if m.id != l {
						cctx, cancel := context.WithTimeout(ctx, time.Second)
						clients[l].MoveVIP(cctx, &edgelbv1.MoveVIPRequest{Vip: "192.0.2.10", Member: m.id})
						cancel()
						break
					}
				}
				return false
			}
			for _, m := range c.members {
				if m.id == o {
					victim = m
				}
			}
			return true
		})
		var via string
		for _, m := range c.members {
			if m != victim {
				via = m.id
				break
			}
		}
		t0 := time.Now()
		victim.cmd.Process.Signal(how)
		until("a survivor owns the VIP", func() bool {
			o := owner(via)
			return o != "" && o != victim.id
		})
		took = append(took, time.Since(t0))
		if how == syscall.SIGSTOP {
			victim.cmd.Process.Signal(syscall.SIGCONT)
		} else {
			victim.cmd.Wait()
			victim.start(b)
		}
		until(victim.id+" back", func() bool {
			_, err := cluster[victim.id].ListMembers(ctx, &edgelbv1.ListMembersRequest{})
			return err == nil && leader(victim.id) != ""
		})
		time.Sleep(500 * time.Millisecond) // heartbeats resume before the next round
	}
	fmt.Fprintf(os.Stderr, "failover rounds (%s): %v\n", kind, took)
	if len(commits) > 0 {
		fmt.Fprintf(os.Stderr, "failover rounds (%s), to the commit: %v\n", kind, commits)
	}
	return took, commits
}

// leaderRound SIGKILLs the raft leader while it owns "fo", and returns the
// time until a survivor serves fo and until a survivor's API shows the commit
// giving it away. "other", owned by a member that is not the leader, must be
// served by its owner at every look until then: a leader's loss withdraws no
// VIP another member owns.
func leaderRound(b *testing.B, c *cluster, until func(string, func() bool), owner func(string) string, ownerOf func(string, string) string,
	leader func(string) string, serves func(string, string) (bool, bool), move func(string, string)) (time.Duration, time.Duration) {
	b.Helper()
	var victim, keeper *member
	until("the leader owns fo and another member owns other", func() bool {
		l := leader("edge1")
		if l == "" {
			return false
		}
		if o := owner(l); o != l {
			move("192.0.2.10", l)
			return false
		}
		other := ownerOf(l, "other")
		if other == "" || other == l {
			for _, m := range c.members {
				if m.id != l {
					move("192.0.2.11", m.id)
					break
				}
			}
			return false
		}
		ok, _ := serves(other, "192.0.2.11")
		if !ok {
			return false
		}
		for _, m := range c.members {
			switch m.id {
			case l:
				victim = m
			case other:
				keeper = m
			}
		}
		return true
	})
	var survivors []*member
	for _, m := range c.members {
		if m != victim {
			survivors = append(survivors, m)
		}
	}
	t0 := time.Now()
	victim.cmd.Process.Signal(syscall.SIGKILL)
	// The commit is polled apart: a read of the replicated state waits while
	// no leader is known, and must not delay seeing the takeover.
	commitc := make(chan time.Duration, 1)
	go func() {
		for deadline := t0.Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if o := owner(keeper.id); o != "" && o != victim.id {
				commitc <- time.Since(t0)
				return
			}
		}
		commitc <- 0
	}()
	var took time.Duration
	for deadline := t0.Add(30 * time.Second); took == 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("no survivor served fo within 30s of the leader's SIGKILL")
		}
		if ok, answered := serves(keeper.id, "192.0.2.11"); answered && !ok {
			b.Fatalf("%s stopped serving other (192.0.2.11) %s after the leader %s was killed: a leader's loss must withdraw no VIP another member owns",
				keeper.id, time.Since(t0).Round(time.Millisecond), victim.id)
		}
		for _, m := range survivors {
			if ok, _ := serves(m.id, "192.0.2.10"); ok {
				took = time.Since(t0)
			}
		}
	}
	// Until the next leader has committed, other stays served.
	var committed time.Duration
	for committed == 0 {
		select {
		case committed = <-commitc:
			if committed == 0 {
				b.Fatalf("no survivor's API showed fo given away within 30s of the leader's SIGKILL")
			}
		case <-time.After(5 * time.Millisecond):
			if ok, answered := serves(keeper.id, "192.0.2.11"); answered && !ok {
				b.Fatalf("%s stopped serving other (192.0.2.11) %s after the leader %s was killed", keeper.id, time.Since(t0).Round(time.Millisecond), victim.id)
			}
		}
	}
	var otherOwner string
	until("other's owner read back", func() bool { otherOwner = ownerOf(keeper.id, "other"); return otherOwner != "" })
	if otherOwner != keeper.id {
		b.Fatalf("other moved from %s to %s when the leader %s was killed", keeper.id, otherOwner, victim.id)
	}
	victim.cmd.Wait()
	victim.start(b)
	until(victim.id+" back", func() bool {
		return leader(victim.id) != ""
	})
	time.Sleep(500 * time.Millisecond) // heartbeats resume before the next round
	return took, committed
}

// servingSample is one look at a member's data plane: whether it served the
// VIP, between sent and got.
type servingSample struct {
	sent, got time.Time
	serving   bool
}

// overlap returns an instant at which both a and b surely served: a sample
// of a that says so, with b's last sample answered before it was sent and
// b's first sample sent after it was answered both saying so too (b cannot
// have stopped in between but for two flips within a few milliseconds).
func overlap(a, b []servingSample) (time.Time, bool) {
	for _, x := range a {
		if !x.serving {
			continue
		}
		var before, after *servingSample
		for i := range b {
			y := &b[i]
			if !y.got.After(x.sent) {
				before = y
			}
			if after == nil && y.sent.After(x.got) {
				after = y
			}
		}
		if before != nil && after != nil && before.serving && after.serving {
			return x.sent, true
		}
	}
	return time.Time{}, false
}

// TestResumedLeaderOwnerNeverServesBesideSuccessor: the raft leader owns a
// VIP and is SIGSTOPped (a hung host); a survivor takes the VIP over
// provisionally, before any new leader is elected; the old leader is
// resumed (SIGCONT) at varying times after that — before, around and after
// the election. Sampling every member's data plane every few milliseconds
// throughout, no two members ever serve the VIP at once, and after each
// round exactly one member serves it (the liveness claim keeps the resumed
// owner from renewing its lease while its successor serves: issue 19).
func TestResumedLeaderOwnerNeverServesBesideSuccessor(t *testing.T) {
	if testing.Short() {
		t.Skip("three lbd processes, several failovers")
	}
	// The successor's pass is held around the resume (the stall hook): a
	// successor slow to withdraw — a guest's pass takes a good part of a
	// second — is when a resumed owner serving again would overlap it.
	t.Setenv("EDGELB_TEST_HOOKS", "1")
	h := newFailoverHarness(t, "")
	const vip = "192.0.2.10"
	for round, resumeAfter := range []time.Duration{0, 30 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 600 * time.Millisecond, 1500 * time.Millisecond} {
		var victim *member
		h.until("the leader owns fo and serves it", func() bool {
			l := h.leader("edge1")
			if l == "" {
				return false
			}
			if o := h.ownerOf(l, "fo"); o != l {
				h.move(vip, l)
				return false
			}
			if ok, _ := h.serves(l, vip); !ok {
				return false
			}
			for _, m := range h.c.members {
				if m.id == l {
					victim = m
				}
			}
			return true
		})
		// Settled: the leader alone serves fo (a move made above has been
		// applied everywhere).
		steady := 0
		h.until("the leader alone serves fo", func() bool {
			n := 0
			for _, m := range h.c.members {
				if ok, _ := h.serves(m.id, vip); ok {
					n++
				}
			}
			if n == 1 {
				steady++
			} else {
				steady = 0
			}
			return steady >= 5
		})
		// Sample every member until told to stop.
		samples := map[string][]servingSample{}
		var mu sync.Mutex
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, m := range h.c.members {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					sent := time.Now()
					ok, answered := h.serves(m.id, vip)
					if answered {
						mu.Lock()
						samples[m.id] = append(samples[m.id], servingSample{sent, time.Now(), ok})
						mu.Unlock()
					}
					time.Sleep(time.Millisecond)
				}
			})
		}
		t0 := time.Now()
		// commitAt: no later than the first commit that gives fo away (the
		// send time of the last look before a survivor's API showed it).
		// From then on the log decides, and a committed move has its own
		// hand-over (docs/ARCHITECTURE.md): what this test checks is the
		// time before it, when only the claim keeps the resumed owner off.
		var commitAt time.Time
		for _, m := range h.c.members {
			if m == victim {
				continue
			}
			wg.Go(func() {
				last := time.Now()
				for {
					select {
					case <-stop:
						return
					default:
					}
					sent := time.Now()
					cctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
					r, err := h.clients[m.id].GetVirtualService(cctx, &edgelbv1.GetVirtualServiceRequest{Name: "fo"})
					cancel()
					if err == nil && r.GetService().GetOwner() != victim.id {
						mu.Lock()
						if commitAt.IsZero() || last.Before(commitAt) {
							commitAt = last
						}
						mu.Unlock()
						return
					}
					last = sent
					time.Sleep(time.Millisecond)
				}
			})
		}
		victim.cmd.Process.Signal(syscall.SIGSTOP)
		var successor *member
		h.until("a survivor serves fo", func() bool {
			for _, m := range h.c.members {
				if m == victim {
					continue
				}
				if ok, _ := h.serves(m.id, vip); ok {
					successor = m
					return true
				}
			}
			return false
		})
		took := time.Since(t0)
		time.Sleep(resumeAfter)
		stall := filepath.Join(successor.dir, "test-stall")
		if err := os.WriteFile(stall, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // the successor's loop enters a held pass
		victim.cmd.Process.Signal(syscall.SIGCONT)
		// Held for less than the lease: it keeps serving meanwhile.
		time.Sleep(150 * time.Millisecond)
		if err := os.Remove(stall); err != nil {
			t.Fatal(err)
		}
		// Until the committed owner serves fo, with a leader known: the
		// provisional copy, if any, has given way to the log.
		h.until("the committed owner serves fo after the resume", func() bool {
			l := h.leader("edge1")
			if l == "" {
				return false
			}
			o := h.ownerOf(l, "fo")
			if o == "" {
				return false
			}
			ok, _ := h.serves(o, vip)
			return ok
		})
		time.Sleep(300 * time.Millisecond)
		close(stop)
		wg.Wait()
		ids := []string{"edge1", "edge2", "edge3"}
		for i, a := range ids {
			for _, b := range ids[i+1:] {
				if at, ok := overlap(samples[a], samples[b]); ok && (commitAt.IsZero() || at.Before(commitAt)) {
					t.Errorf("round %d (resumed %v after the takeover): %s and %s both served %s at %s after the SIGSTOP",
						round, resumeAfter, a, b, vip, at.Sub(t0).Round(time.Millisecond))
					for _, id := range ids {
						t.Logf("%s: %s", id, timeline(samples[id], t0))
					}
					for _, m := range h.c.members {
						t.Logf("---- %s log ----\n%s", m.id, tail(m.log.String(), 12000))
					}
					t.FailNow()
				}
			}
		}
		commit := "no commit moved fo"
		if !commitAt.IsZero() {
			commit = fmt.Sprintf("a commit moved fo %v after the SIGSTOP", commitAt.Sub(t0).Round(time.Millisecond))
		}
		t.Logf("round %d: %s took fo over %v after %s's SIGSTOP; resumed %v later; %s; %d/%d/%d samples", round, successor.id,
			took.Round(time.Millisecond), victim.id, resumeAfter, commit, len(samples["edge1"]), len(samples["edge2"]), len(samples["edge3"]))
	}
}

// timeline says when a member's samples changed, for a failure's message.
func timeline(s []servingSample, t0 time.Time) string {
	var b strings.Builder
	last := -1
	for _, x := range s {
		v := 0
		if x.serving {
			v = 1
		}
		if v != last {
			fmt.Fprintf(&b, " %s→%v", x.sent.Sub(t0).Round(time.Millisecond), x.serving)
			last = v
		}
	}
	return b.String()
}
