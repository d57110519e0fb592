package dataplane

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/conntrack"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// recordingForgetter keeps each Forget call and whether the addresses it
// named were up on the interface at that moment.
type recordingForgetter struct {
	fa    *fakeAddrs
	calls [][]netip.Addr
	up    []bool
	reqs  []conntrack.Request
	on    []map[netip.Addr]bool // the addresses up at each call
	// leave is what a bounded call reports it had no time for.
	leave map[conntrack.Tuple]bool
	// unnated keeps the calls for entries no NAT rewrote apart, with
	// whether every address they named was up.
	unnated   []conntrack.Request
	unnatedUp []bool
}

func (r *recordingForgetter) Forget(req conntrack.Request) (conntrack.Result, error) {
	if req.Unnated != nil {
		up := len(req.VIPs) > 0
		for _, a := range req.VIPs {
			up = up && r.fa.on[a]
		}
		r.unnated, r.unnatedUp = append(r.unnated, req), append(r.unnatedUp, up)
		return conntrack.Result{}, nil
	}
	r.calls = append(r.calls, slices.Clone(req.VIPs))
	r.reqs = append(r.reqs, req)
	r.on = append(r.on, maps.Clone(r.fa.on))
	up := false
	n := map[netip.Addr]int{}
	for _, a := range req.VIPs {
		up = up || r.fa.on[a]
		n[a] = 1
	}
	r.up = append(r.up, up)
	if req.Stop != nil {
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
	e.ct, e.ctAfter = f, f
	vs := many(1, 2)[0]
	a := netip.MustParseAddr(vs.Vip)
	want := func(what string, calls int, up bool) {
		t.Helper()
		e.afterWG.Wait() // the clean-up after the pass
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

// A takeover's clean-up is bounded by the pull's wait (here nothing is
// pulled, so its Stop is closed from the start): the address does not wait
// for the stale entries. What the bounded call left is deleted once the
// address is up, by tuple, after the pass; so are the entries of a VIP the
// same pass withdrew.
func TestConntrackRestAfterTheAddress(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	vss := many(2, 2)
	taken, deleted := vss[0], vss[1]
	a, d := netip.MustParseAddr(taken.Vip), netip.MustParseAddr(deleted.Vip)
	stale := conntrack.Tuple{Proto: 6, Src: netip.MustParseAddrPort("10.0.0.100:40000"), Dst: netip.AddrPortFrom(a, 80)}
	f := &recordingForgetter{fa: fa, leave: map[conntrack.Tuple]bool{stale: true}}
	e.ct, e.ctAfter = f, f
	reconcileAs(t, e, "me", ownedBy(taken, "other"), deleted)
	e.endHandovers(a, time.Now())
	e.afterWG.Wait()
	f.take()
	f.reqs, f.on = nil, nil

	reconcileAs(t, e, "me", ownedBy(taken, "me"))
	e.afterWG.Wait() // the rest runs after the pass, beside the loop
	if !fa.on[a] || fa.on[d] {
		t.Fatalf("addresses up %v: want %s taken over and %s withdrawn", fa.on, a, d)
	}
	var bounded, rest, gone *conntrack.Request
	var restOn, goneOn map[netip.Addr]bool
	for i := range f.reqs {
		r := &f.reqs[i]
		switch {
		case slices.Equal(r.VIPs, []netip.Addr{a}) && r.Only == nil:
			bounded = r
			if f.on[i][a] {
				t.Error("the bounded clean-up ran with the address already up")
			}
		case slices.Equal(r.VIPs, []netip.Addr{a}):
			rest, restOn = r, f.on[i]
		case slices.Equal(r.VIPs, []netip.Addr{d}):
			gone, goneOn = r, f.on[i]
		}
	}
	if bounded == nil || rest == nil || gone == nil {
		t.Fatalf("Forget calls %+v: want the takeover's bounded one, its rest and the withdrawn VIP's", f.reqs)
	}
	select {
	case <-bounded.Stop:
	default:
		t.Error("with nothing to pull, the bounded clean-up's Stop is not closed: the address would wait for it")
	}
	if rest.Stop != nil || len(rest.Only) != 1 || !rest.Only[stale] || !restOn[a] {
		t.Errorf("the rest: %+v with %s up %v; want only the left tuple, unbounded, after the address", rest, a, restOn[a])
	}
	if gone.Stop != nil || gone.Only != nil || !goneOn[a] {
		t.Errorf("the withdrawn VIP's clean-up: %+v with %s up %v; want it unbounded, after the taken-over address", gone, a, goneOn[a])
	}
}

// blockingForgetter holds every unbounded Forget (the clean-up after a
// pass) until release is closed.
type blockingForgetter struct {
	release chan struct{}
	started chan conntrack.Request
}

func (b *blockingForgetter) Forget(req conntrack.Request) (conntrack.Result, error) {
	if req.Unnated != nil {
		return conntrack.Result{}, nil // TestUnnatedEntriesGoOnceTheAddressIsUp's
	}
	if req.Stop != nil {
		return conntrack.Result{Left: map[conntrack.Tuple]bool{{Proto: 6, Src: netip.MustParseAddrPort("10.0.0.100:40000"), Dst: netip.AddrPortFrom(req.VIPs[0], 80)}: true}}, nil
	}
	b.started <- req
	<-b.release
	return conntrack.Result{}, nil
}

// The rest of a takeover's clean-up runs beside the loop, not in the pass:
// a pass that waited for it could outlast the lease its loop renews (seen
// in the guest: the fence withdrew the VIP just taken over). The next pass
// does not wait for it either, and jobs run in order, one at a time.
func TestConntrackRestDoesNotHoldThePass(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	vs := many(1, 2)[0]
	a := netip.MustParseAddr(vs.Vip)
	b := &blockingForgetter{release: make(chan struct{}), started: make(chan conntrack.Request, 4)}
	e.ct, e.ctAfter = b, b
	reconcileAs(t, e, "me", ownedBy(vs, "other"))
	e.endHandovers(a, time.Now())

	done := make(chan struct{})
	go func() {
		defer close(done)
		reconcileAs(t, e, "me", ownedBy(vs, "me")) // taken over: leaves one tuple
		reconcileAs(t, e, "me")                    // deleted: its own clean-up
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the passes waited for the clean-up after them")
	}
	if fa.on[a] {
		t.Fatalf("%s still up after its deletion", a)
	}
	first := <-b.started
	if first.Only == nil {
		t.Fatalf("first job %+v: want the takeover's rest (by tuple)", first)
	}
	select {
	case r := <-b.started:
		t.Fatalf("a second job %+v started while the first still ran", r)
	case <-time.After(50 * time.Millisecond):
	}
	close(b.release)
	e.afterWG.Wait()
	if n := len(b.started); n != 1 {
		t.Fatalf("%d more jobs after the first; want the deleted VIP's", n)
	}
	if r := <-b.started; r.Only != nil || !slices.Equal(r.VIPs, []netip.Addr{a}) {
		t.Fatalf("second job %+v: want the deleted VIP's, whole", r)
	}
}

// Every address a pass puts up (created here, taken over, back after the
// fence) is followed, once it is up, by one deletion of the entries no NAT
// rewrote on the ports its nat-mode services serve: a packet this member
// forwarded while it did not hold the VIP confirmed such an entry, and IPVS
// cannot rewrite it (seen in the guest: a drain's new connections failed on
// them, and again when the client reused their ports). So is a port created
// on an address already up (its packets met the host's stack until then).
// Not a DR service's ports (no NAT is what DR's entries are), not a pass
// that puts nothing up.
func TestUnnatedEntriesGoOnceTheAddressIsUp(t *testing.T) {
	e, _, fa, _ := fakeEngine(t)
	f := &recordingForgetter{fa: fa}
	e.ct, e.ctAfter = f, f
	vss := many(2, 2)
	nat, dr := vss[0], vss[1]
	nat.Ports = append(nat.Ports, &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: 53, BackendPort: 30053})
	dr.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	dr.Ports[0].BackendPort = 80
	a := netip.MustParseAddr(nat.Vip)
	all := map[conntrack.Service]bool{
		{Proto: 6, Dst: netip.AddrPortFrom(a, 80)}:  true,
		{Proto: 17, Dst: netip.AddrPortFrom(a, 53)}: true,
	}
	step := func(what string, want map[conntrack.Service]bool) {
		t.Helper()
		e.afterWG.Wait()
		got, up := f.unnated, f.unnatedUp
		f.unnated, f.unnatedUp = nil, nil
		if want == nil {
			if len(got) != 0 {
				t.Fatalf("%s: deletions of unnated entries %+v, want none", what, got)
			}
			return
		}
		if len(got) != 1 {
			t.Fatalf("%s: %d deletions of unnated entries %+v, want 1", what, len(got), got)
		}
		if r := got[0]; !maps.Equal(r.Unnated, want) || !slices.Equal(r.VIPs, []netip.Addr{a}) || !up[0] {
			t.Fatalf("%s: deleted unnated entries of %v %v with the address up %v; want %v of [%s], after it", what, r.VIPs, r.Unnated, up[0], want, a)
		}
	}
	reconcileAs(t, e, "me", nat, dr)
	step("created here", all)
	reconcileAs(t, e, "me", nat, dr)
	step("unchanged", nil)
	reconcileAs(t, e, "me", ownedBy(nat, "other"), dr)
	e.endHandovers(a, time.Now())
	step("moved away", nil)
	reconcileAs(t, e, "me", nat, dr)
	step("taken back", all)
	reconcileAs(t, e, "", nat, dr)
	step("fenced", nil)
	reconcileAs(t, e, "me", nat, dr)
	step("back from the fence", all)

	more := ownedBy(nat, "me")
	more.Ports = append(more.Ports, &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: 123, BackendPort: 30123})
	reconcileAs(t, e, "me", more, dr)
	step("a port created on the address up", map[conntrack.Service]bool{{Proto: 17, Dst: netip.AddrPortFrom(a, 123)}: true})
	drMore := ownedBy(dr, "me")
	drMore.Ports = append(drMore.Ports, &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: 123, BackendPort: 123})
	reconcileAs(t, e, "me", more, drMore)
	step("a DR port created on the address up", nil)
}
