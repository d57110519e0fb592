package ha

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"sigs.k8s.io/yaml"

	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/topo"
	"github.com/edgelb/edgelb/lbd/config"
)

// arpWatch asks for the VIP from the client every 50 ms (one ARP request,
// then 50 ms of listening) and records which hosts answered each time:
// whoever answers ARP for the VIP gets its traffic, so two answers in one
// sample is the split this suite exists to rule out. It also records every
// gratuitous ARP for the VIP and who sent it.
type arpWatch struct {
	stop, done chan struct{}
	mu         sync.Mutex
	samples    int
	answered   map[string]int // replies per hardware address
	multi      []string       // samples where more than one host answered
	garps      []arpSeen
	lastAnswer map[string]time.Time // per hardware address, its latest reply
	lastErr    error
}

type arpSeen struct {
	mac string
	at  time.Time
}

func watchARP(t *testing.T) *arpWatch {
	t.Helper()
	var c *arp.Client
	if err := netns.Do(client, func() error {
		ifi, err := net.InterfaceByName(topo.Interface)
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi) // the socket stays in the client's namespace
		return err
	}); err != nil {
		t.Fatalf("ARP socket in %s: %v", client, err)
	}
	target := netip.MustParseAddr(vip)
	w := &arpWatch{stop: make(chan struct{}), done: make(chan struct{}), answered: map[string]int{}, lastAnswer: map[string]time.Time{}}
	go func() {
		defer close(w.done)
		defer c.Close()
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			seen := map[string]bool{}
			var order []string
			err := c.Request(target)
			end := time.Now().Add(50 * time.Millisecond)
			c.SetReadDeadline(end)
			for time.Now().Before(end) {
				p, _, rerr := c.Read()
				if rerr != nil {
					break // the deadline: this sample is over
				}
				if p.SenderIP != target {
					continue
				}
				mac := strings.ToLower(p.SenderHardwareAddr.String())
				switch {
				case p.Operation == arp.OperationReply:
					if !seen[mac] {
						seen[mac] = true
						order = append(order, mac)
					}
				case p.TargetIP == target: // gratuitous: an announcement
					w.mu.Lock()
					w.garps = append(w.garps, arpSeen{mac: mac, at: time.Now()})
					w.mu.Unlock()
				}
			}
			w.mu.Lock()
			w.samples++
			if err != nil {
				w.lastErr = err
			}
			for _, m := range order {
				w.answered[m]++
				w.lastAnswer[m] = time.Now()
			}
			if len(order) > 1 {
				w.multi = append(w.multi, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), order))
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// count returns how many samples hw answered in so far.
func (w *arpWatch) count(hw string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.answered[strings.ToLower(hw)]
}

// garpsFrom returns the gratuitous ARPs hw sent after since.
func (w *arpWatch) garpsFrom(hw string, since time.Time) []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []time.Time
	for _, g := range w.garps {
		if g.mac == strings.ToLower(hw) && g.at.After(since) {
			out = append(out, g.at)
		}
	}
	return out
}

// lastFrom is when hw last answered ARP (zero: never).
func (w *arpWatch) lastFrom(hw string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastAnswer[strings.ToLower(hw)]
}

func (w *arpWatch) finish() (samples int, multi []string, err error) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.multi, w.lastErr
}

// lease is the ownership lease of the profile in use: the profile read over
// lbd's defaults, as lbd reads its config file (the lan profile is empty).
func (s *suite) lease(t *testing.T) time.Duration {
	t.Helper()
	c := config.Default()
	if err := yaml.UnmarshalStrict([]byte(profiles[s.profile]), &c); err != nil {
		t.Fatalf("profile %q: %v", s.profile, err)
	}
	return c.Ownership.Lease.Duration
}

// hung makes the VIP's owner hang, as a member of the cluster, and checks
// that the fence takes its address away within the lease, that at every
// 50 ms sample at most one host answers ARP for the VIP, that a survivor
// serves, and that no second host answers once the hung lbd runs again:
//
//	sigstop  SIGSTOP the owner's lbd (its fence child keeps running), then
//	         SIGCONT it
//	leader   the same with the raft leader as the owner
//	pass     hold the owner's reconcile pass (the EDGELB_TEST_HOOKS stall
//	         file: what an iptables-restore or a netlink call that never
//	         returns does) and cut its link, so the cluster moves the VIP
//	         (raft, still running beside the held pass, would otherwise keep
//	         it there); heal the link while the pass is still held, then
//	         release it
//
// Without the fence's lease both fail: the owner keeps the address (only
// its stuck loop would withdraw it) and answers ARP beside the survivor.
func (s *suite) hung(t *testing.T, kind string) {
	lease := s.lease(t)
	leader := s.leader(t)
	if kind == "leader" {
		// The raft leader owns the VIP: after SIGCONT it believes it
		// still leads for a moment, and its own FSM still names it the
		// owner; it must catch up before it serves anything.
		s.moveTo(t, leader)
	} else if o := s.owner(t); o == leader {
		// A follower owns the VIP: what is checked is the fence, not an
		// election.
		for _, m := range s.l.Members {
			if m != leader && m.Running() {
				s.moveTo(t, m)
				break
			}
		}
	}
	old := s.owner(t)
	oldMAC, err := old.MAC()
	if err != nil {
		t.Fatal(err)
	}
	s.waitSoleHolder(t, old) // not in a planned move's overlap
	w := watchARP(t)
	finished := false
	defer func() {
		if !finished {
			w.finish()
		}
	}()
	// The watch must see the owner answer before anything happens, or it
	// could not see two hosts answer either.
	waitUntil(t, 10*time.Second, "the client sees "+old.ID+" answer ARP for the VIP", func() bool { return w.count(oldMAC) >= 3 })

	stall := filepath.Join(old.DataDir, "test-stall")
	t0 := time.Now()
	switch kind {
	case "sigstop", "leader":
		if err := syscall.Kill(old.Pid(), syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		defer syscall.Kill(old.Pid(), syscall.SIGCONT) // whatever happens below
	case "pass":
		if err := os.WriteFile(stall, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(stall)
		waitUntil(t, 30*time.Second, old.ID+" holds a reconcile pass", func() bool {
			return strings.Contains(old.LogTail(200), "TEST HOOK: reconcile pass held")
		})
		t0 = time.Now() // renewals stopped at the latest here
	}

	// The fence withdraws within the lease: lbd's last renewal ran to at
	// most t0 + lease. The margin is for the guest's one CPU.
	waitUntil(t, lease+10*time.Second, old.ID+"'s fence withdraws the address", func() bool { return !old.HasAddr(vip) })
	withdrew := time.Since(t0)
	t.Logf("%s: %s's address gone %s after the hang began (lease %s)", kind, old.ID, withdrew.Round(time.Millisecond), lease)
	if withdrew > lease+time.Second {
		t.Errorf("%s's address was withdrawn %s after the hang began; want within the lease (%s)", old.ID, withdrew.Round(time.Millisecond), lease)
	}
	if kind == "pass" {
		// A held pass does not stop raft: the cluster keeps the VIP with
		// this member. Cut it off so that the VIP moves.
		if err := old.Cut(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if old.IsCut() {
				old.Heal()
			}
		}()
	}

	// A survivor takes the VIP over and serves it.
	var survivor *lab.Member
	waitUntil(t, 60*time.Second, "a survivor holds "+vip, func() bool {
		for _, m := range s.l.Members {
			if m != old && m.Running() && m.HasAddr(vip) {
				survivor = m
				return true
			}
		}
		return false
	})
	if old.HasAddr(vip) {
		t.Errorf("%s holds %s again while %s serves it", old.ID, vip, survivor.ID)
	}
	if _, err := topo.WaitAnswer(s.tcp(time.Second), 30*time.Second); err != nil {
		t.Errorf("the VIP does not answer from %s: %v", survivor.ID, err)
	}
	survivorMAC, _ := survivor.MAC()
	waitUntil(t, 10*time.Second, "the client sees "+survivor.ID+" answer ARP", func() bool { return w.count(survivorMAC) >= 3 })

	// The hung lbd comes back: it must not take the address again.
	back := time.Now()
	switch kind {
	case "sigstop", "leader":
		if err := syscall.Kill(old.Pid(), syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	case "pass":
		if err := old.Heal(); err != nil {
			t.Fatal(err)
		}
		// Back on the segment with the pass still held: only the fence
		// keeps it from answering. Let the watch sample that for a while.
		time.Sleep(2 * lease)
		if err := os.Remove(stall); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 30*time.Second, old.ID+" releases its pass", func() bool {
			return strings.Contains(old.LogTail(200), "TEST HOOK: reconcile pass released")
		})
	}
	if err := old.WaitServing(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Some leases after it is back, as it catches up and reconciles.
	time.Sleep(2 * lease)
	holder, other := survivor, old // who answers for the VIP once settled
	if final := s.owner(t); final == old {
		holder, other = old, survivor
		// The hang ended before the cluster committed a move (a short hang:
		// no election yet, the double profile): the survivor's copy was
		// provisional and the VIP goes back to its owner. Break before make:
		// the owner may announce only once the survivor has stopped
		// answering, and the survivor must let go.
		t.Logf("%s: back before the cluster committed a move; the VIP returned to %s from %s's provisional copy", kind, old.ID, survivor.ID)
		waitUntil(t, 10*time.Second, survivor.ID+" withdraws its provisional copy", func() bool { return !survivor.HasAddr(vip) })
		last := w.lastFrom(survivorMAC)
		for _, g := range w.garpsFrom(oldMAC, t0.Add(lease)) {
			if !g.After(last) {
				t.Errorf("%s announced %s at %s while %s still answered ARP for it (last at %s)", old.ID, vip, g.Format("15:04:05.000"), survivor.ID, last.Format("15:04:05.000"))
				break
			}
		}
	} else {
		if old.HasAddr(vip) {
			t.Errorf("%s took %s back after it ran again; %s owns it", old.ID, vip, final.ID)
		}
		if g := w.garpsFrom(oldMAC, t0.Add(lease)); len(g) > 0 {
			t.Errorf("%s sent %d gratuitous ARPs for %s after its lease ran out (first at %s); they draw traffic to a host without the address",
				old.ID, len(g), vip, g[0].Format("15:04:05.000"))
		}
	}
	samples, multi, werr := w.finish()
	finished = true
	if werr != nil {
		t.Logf("ARP watch: a request failed: %v", werr)
	}
	t.Logf("%s: %d ARP samples (every 50 ms) from the hang to %s after %s was back; %s answered %d, %s answered %d",
		kind, samples, time.Since(back).Round(time.Millisecond), old.ID, old.ID, w.count(oldMAC), survivor.ID, w.count(survivorMAC))
	if len(multi) > 0 {
		t.Errorf("two hosts answered ARP for %s in %d of %d samples: %v", vip, len(multi), samples, multi)
	}
	// Settled: the holder answers, the other does not.
	holderMAC, _ := holder.MAC()
	otherMAC, _ := other.MAC()
	w2 := watchARP(t)
	waitUntil(t, 10*time.Second, holder.ID+" answers ARP", func() bool { return w2.count(holderMAC) >= 5 })
	w2.finish()
	if n := w2.count(otherMAC); n > 0 {
		t.Errorf("%s still answers ARP for %s (%d samples) after %s is back; %s holds it", other.ID, vip, n, old.ID, holder.ID)
	}
	if _, err := topo.WaitAnswer(s.tcp(time.Second), 30*time.Second); err != nil {
		t.Errorf("the VIP does not answer after %s is back: %v", old.ID, err)
	}
}

// waitUntil polls cond every 50 ms until it holds, or fails the test.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
	}
}
