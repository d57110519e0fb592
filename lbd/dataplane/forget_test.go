package dataplane

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

// recordingForgetter keeps each Forget call and whether the addresses it
// named were up on the interface at that moment.
type recordingForgetter struct {
	fa    *fakeAddrs
	calls [][]netip.Addr
	up    []bool
}

func (r *recordingForgetter) Forget(vips []netip.Addr) (map[netip.Addr]int, error) {
	r.calls = append(r.calls, slices.Clone(vips))
	up := false
	n := map[netip.Addr]int{}
	for _, a := range vips {
		up = up || r.fa.on[a]
		n[a] = 1
	}
	r.up = append(r.up, up)
	return n, nil
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
