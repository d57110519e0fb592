package dataplane

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgelb/edgelb/internal/logcapture"
)

// pullCall is one PullHandover call as the fake saw it.
type pullCall struct {
	from string
	vips []netip.Addr
	// up: which of vips were on the interface when it answered.
	up []netip.Addr
	// left: the time left to the call's deadline when it was asked.
	left time.Duration
}

// A pass that takes VIPs over asks each previous owner once for the VIPs it
// had, all owners at once, with a deadline of a quarter of the lease (at
// most maxPullWait), and adds the addresses only after the answers. A VIP
// created here or one that stays here is not pulled; a previous owner out
// of contact costs nothing.
func TestPullBeforeTakeover(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	var buf logcapture.Buffer
	e.log = buf.Logger()
	e.cfg.FenceDelay = 200 * time.Millisecond // the bound: 50 ms
	e.cfg.SyncInterface = "eth0"              // the pull has a sync daemon to fill
	var mu sync.Mutex
	var calls []pullCall
	e.SetPullHandover(func(ctx context.Context, from string, vips []netip.Addr) (map[netip.Addr]int, error) {
		dl, _ := ctx.Deadline()
		c := pullCall{from: from, vips: slices.Clone(vips), left: time.Until(dl)}
		// As the old owner's answer takes a little while: the addresses
		// must still be down when it comes.
		time.Sleep(10 * time.Millisecond)
		for _, a := range vips {
			if fa.on[a] { // the pass waits for this call before it adds anything
				c.up = append(c.up, a)
			}
		}
		mu.Lock()
		calls = append(calls, c)
		mu.Unlock()
		if from == "dead" {
			return nil, ErrNotInContact
		}
		return map[netip.Addr]int{vips[0]: 3}, nil
	})
	fromA1 := owned("t", "a1", "192.0.2.1", "a")
	fromA2 := owned("t", "a2", "192.0.2.2", "a")
	fromDead := owned("t", "d", "192.0.2.3", "dead")
	stays := owned("t", "s", "192.0.2.4", "me")
	reconcileAs(t, e, "me", fromA1, fromA2, fromDead, stays)
	if len(calls) != 0 {
		t.Fatalf("pulled without a takeover: %+v", calls)
	}
	fresh := owned("t", "f", "192.0.2.5", "me")
	reconcileAs(t, e, "me", ownedBy(fromA1, "me"), ownedBy(fromA2, "me"), ownedBy(fromDead, "me"), stays, fresh)
	slices.SortFunc(calls, func(x, y pullCall) int { return strings.Compare(x.from, y.from) })
	if len(calls) != 2 || calls[0].from != "a" || calls[1].from != "dead" {
		t.Fatalf("pulls %+v, want one from a and one from dead", calls)
	}
	a1, a2, d := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	got := slices.Clone(calls[0].vips)
	slices.SortFunc(got, netip.Addr.Compare)
	if !slices.Equal(got, []netip.Addr{a1, a2}) || !slices.Equal(calls[1].vips, []netip.Addr{d}) {
		t.Errorf("pulled %v from a and %v from dead, want [%s %s] and [%s]", got, calls[1].vips, a1, a2, d)
	}
	for _, c := range calls {
		if len(c.up) != 0 {
			t.Errorf("%v went up before the pull from %s answered", c.up, c.from)
		}
		if c.left <= 0 || c.left > 50*time.Millisecond {
			t.Errorf("pull from %s had %v left, want at most a quarter of the 200 ms lease", c.from, c.left)
		}
	}
	for _, a := range []netip.Addr{a1, a2, d, netip.MustParseAddr("192.0.2.4"), netip.MustParseAddr("192.0.2.5")} {
		if !fa.on[a] {
			t.Errorf("%s not up after the pass", a)
		}
	}
	pulled := 0
	for _, r := range buf.MustRecords(t) {
		if strings.HasPrefix(r["msg"].(string), "connections of a VIP taken over pulled") {
			pulled++
			if r["from"] != "a" || r["took"] == nil || r["tenant"] != "t" {
				t.Errorf("pull logged as %v", r)
			}
		}
	}
	if pulled != 2 {
		t.Errorf("%d pull lines, want one per VIP pulled from a (2)", pulled)
	}

	// Nothing moved: nothing pulled.
	calls = nil
	reconcileAs(t, e, "me", ownedBy(fromA1, "me"), ownedBy(fromA2, "me"), ownedBy(fromDead, "me"), stays, fresh)
	if len(calls) != 0 {
		t.Errorf("pulled in a pass that took nothing over: %+v", calls)
	}
}

// A previous owner that does not answer in time, even one whose answer
// ignores the deadline, does not hold the takeover beyond the bound.
func TestSlowPullCutAtTheBound(t *testing.T) {
	for _, honour := range []bool{true, false} {
		e, _, fa, _ := fakeEngine(t)
		e.cfg.FenceDelay = 200 * time.Millisecond // the bound: 50 ms
		e.cfg.SyncInterface = "eth0"
		release := make(chan struct{})
		asked := make(chan struct{}, 1)
		e.SetPullHandover(func(ctx context.Context, _ string, _ []netip.Addr) (map[netip.Addr]int, error) {
			asked <- struct{}{}
			if honour {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			<-release
			return nil, nil
		})
		vs := owned("t", "a1", "192.0.2.1", "a")
		reconcileAs(t, e, "me", vs)
		t0 := time.Now()
		reconcileAs(t, e, "me", ownedBy(vs, "me"))
		took := time.Since(t0)
		close(release)
		select {
		case <-asked:
		default:
			t.Fatalf("honour=%v: not pulled", honour)
		}
		if !fa.on[netip.MustParseAddr("192.0.2.1")] {
			t.Errorf("honour=%v: the VIP did not go up after a slow pull", honour)
		}
		if took < 50*time.Millisecond || took > time.Second {
			t.Errorf("honour=%v: the takeover pass took %v, want the 50 ms bound (and not much more)", honour, took)
		}
	}
}

// Without PullHandover (a data plane no daemon wired) a takeover does not wait.
func TestNoPullHandover(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	vs := owned("t", "a1", "192.0.2.1", "a")
	reconcileAs(t, e, "me", vs)
	reconcileAs(t, e, "me", ownedBy(vs, "me"))
	if !fa.on[netip.MustParseAddr("192.0.2.1")] {
		t.Error("VIP not up")
	}
}

// A member without a sync daemon does not ask: a push would reach nothing.
func TestNoPullWithoutSync(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	asked := false
	e.SetPullHandover(func(context.Context, string, []netip.Addr) (map[netip.Addr]int, error) {
		asked = true
		return nil, nil
	})
	vs := owned("t", "a1", "192.0.2.1", "a")
	reconcileAs(t, e, "me", vs)
	reconcileAs(t, e, "me", ownedBy(vs, "me"))
	if asked || !fa.on[netip.MustParseAddr("192.0.2.1")] {
		t.Errorf("asked %v, VIP up %v; want not asked and up", asked, fa.on[netip.MustParseAddr("192.0.2.1")])
	}
}

// The bound is a quarter of the lease, never more than maxPullWait.
func TestPullWait(t *testing.T) {
	for lease, want := range map[time.Duration]time.Duration{0: maxPullWait, 250 * time.Millisecond: 62500 * time.Microsecond, 10 * time.Second: maxPullWait} {
		e := &Engine{cfg: Config{FenceDelay: lease}}
		if got := e.pullWait(); got != want {
			t.Errorf("lease %v: wait %v, want %v", lease, got, want)
		}
	}
}

// Without a sync interface the old owner sends nothing and says why, so the
// new owner warns instead of logging a pull of 0 connections.
func TestPushConnectionsWithoutSync(t *testing.T) {
	e, _, _, _ := fakeEngine(t)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	got, err := e.PushConnections(context.Background(), "b", []netip.Addr{a, b, a})
	if !errors.Is(err, errNoSyncInterface) || got[a] != 0 || got[b] != 0 {
		t.Errorf("sent %v, %v; want nothing and errNoSyncInterface", got, err)
	}
}

// The old owner's log names the tenant when its lock is free, and does not
// wait for a pass that holds it.
func TestTenantsNow(t *testing.T) {
	e, _, _, _ := fakeEngine(t)
	vs := owned("acme", "a1", "192.0.2.1", "me")
	reconcileAs(t, e, "me", vs)
	a := netip.MustParseAddr("192.0.2.1")
	if got := e.tenantsNow([]netip.Addr{a}); got[a] != "acme" {
		t.Errorf("tenant %q, want acme", got[a])
	}
	e.mu.Lock()
	done := make(chan map[netip.Addr]string)
	go func() { done <- e.tenantsNow([]netip.Addr{a}) }()
	select {
	case got := <-done:
		if got[a] != "" {
			t.Errorf("tenant %q read under a pass's lock", got[a])
		}
	case <-time.After(5 * time.Second):
		t.Error("tenantsNow waited for the engine's lock")
	}
	e.mu.Unlock()
}
