package dataplane

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/conntrack"
)

// recordingForgetter keeps each Forget call and whether the addresses it
// named were up on the interface at that moment.
type recordingForgetter struct {
	fa    *fakeAddrs
	calls [][]netip.Addr
	up    []bool
	reqs  []conntrack.Request
	// leave is what a bounded call reports it had no time for.
	leave map[conntrack.Tuple]bool
}

func (r *recordingForgetter) Forget(req conntrack.Request) (conntrack.Result, error) {
	r.calls = append(r.calls, slices.Clone(req.VIPs))
	r.reqs = append(r.reqs, req)
	up := false
	n := map[netip.Addr]int{}
	for _, a := range req.VIPs {
		up = up || r.fa.on[a]
		n[a] = 1
	}
	r.up = append(r.up, up)
	if !req.Until.IsZero() {
		return conntrack.Result{Deleted: n, Left: r.leave}, nil
	}
	return conntrack.Result{Deleted: n}, nil
}

func (r *recordingForgetter) take() ([][]netip.Addr, []bool) {
	c, u := r.calls, r.up
	r.calls, r.up = nil, nil
	return c, u
}

// The conntrack entries of a VIP are deleted when this member takes it over
// (before its address goes up) and when it is deleted; not when it is
// created here, not when it is handed over to another member (packets still
// reaching this member are translated with them), not when the fence
// withdraws it and not when it comes back after a fence (its connections'
// entries must outlive that), and not on passes that change nothing.
func TestConntrackForgottenOnTakeoverAndRelease(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	f := &recordingForgetter{fa: fa}
	e.ct = f
	vs := many(1, 2)[0]
	a := netip.MustParseAddr(vs.Vip)
	want := func(what string, calls int, up bool) {
		t.Helper()
		c, u := f.take()
		if len(c) != calls {
			t.Fatalf("%s: Forget calls %v, want %d", what, c, calls)
		}
		for i := range c {
			if !slices.Equal(c[i], []netip.Addr{a}) || u[i] != up {
				t.Fatalf("%s: Forget(%v) with the address up %v; want Forget([%s]) with it up %v", what, c[i], u[i], a, up)
			}
		}
	}

	reconcileAs(t, e, "me", vs)
	want("created here", 0, false)
	reconcileAs(t, e, "me", vs)
	want("unchanged", 0, false)

	reconcileAs(t, e, "me", ownedBy(vs, "other"))
	want("moved, handover pending", 0, false)
	e.endHandovers(a, time.Now())
	want("handed over", 0, false)

	reconcileAs(t, e, "me", ownedBy(vs, "me"))
	want("taken back", 1, false)
	if !fa.on[a] {
		t.Fatal("the VIP taken back is not up")
	}

	reconcileAs(t, e, "", ownedBy(vs, "me"))
	want("fenced pass", 0, false)
	if fa.on[a] {
		t.Fatal("a fenced pass kept the address")
	}
	reconcileAs(t, e, "me", ownedBy(vs, "me"))
	want("back from the fence", 0, false)

	e.cfg.NoHandover = true
	reconcileAs(t, e, "me", ownedBy(vs, "other"))
	want("moved away at once (no handover)", 0, false)
	if fa.on[a] {
		t.Fatal("moved without a handover: the address stayed")
	}
	reconcileAs(t, e, "me", ownedBy(vs, "me"))
	want("taken back again", 1, false)

	reconcileAs(t, e, "me")
	want("deleted", 1, false)
}

// A takeover's clean-up is bounded (the pull's bound): the address does not
// wait for every stale entry. What the bounded call left is deleted in the
// same pass once the address is up, by tuple, and only then.
func TestConntrackRestAfterTheAddress(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	vs := many(1, 2)[0]
	a := netip.MustParseAddr(vs.Vip)
	stale := conntrack.Tuple{Proto: 6, Src: netip.MustParseAddrPort("10.0.0.100:40000"), Dst: netip.AddrPortFrom(a, 80)}
	f := &recordingForgetter{fa: fa, leave: map[conntrack.Tuple]bool{stale: true}}
	e.ct = f
	reconcileAs(t, e, "me", ownedBy(vs, "other"))
	f.take()
	f.reqs = nil

	t0 := time.Now()
	reconcileAs(t, e, "me", ownedBy(vs, "me"))
	c, up := f.take()
	if len(c) != 2 || len(f.reqs) != 2 {
		t.Fatalf("Forget calls %v, want the bounded one and the rest", c)
	}
	first, rest := f.reqs[0], f.reqs[1]
	if first.Until.Before(t0) || first.Until.After(time.Now().Add(e.pullWait())) || first.Only != nil || up[0] {
		t.Errorf("first call: until %s (pass began %s, bound %s), only %v, address up %v; want bounded by the pull's wait, before the address", first.Until, t0, e.pullWait(), first.Only, up[0])
	}
	if !rest.Until.IsZero() || len(rest.Only) != 1 || !rest.Only[stale] || !slices.Equal(rest.VIPs, []netip.Addr{a}) || !up[1] {
		t.Errorf("second call: %+v, address up %v; want only the left tuple, unbounded, after the address", rest, up[1])
	}
	if !fa.on[a] {
		t.Fatal("the VIP taken over is not up")
	}
}
