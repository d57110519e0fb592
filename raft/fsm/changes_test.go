package fsm

import (
	"bytes"
	"io"
	"maps"
	"net/netip"
	"slices"
	"testing"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

func keysOf(ch Changes) []Key {
	ks := slices.Collect(maps.Keys(ch.Services))
	slices.SortFunc(ks, compareKeys)
	return ks
}

// The change feed names exactly the services changed after a cursor, says
// when members or pools changed, and tells a consumer that fell behind the
// history or across a snapshot restore to resynchronise.
func TestChangesSince(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/24")))
	h.ok(member("m1"))
	h.ok(create(svc("t", "a", "")))
	h.ok(create(svc("t", "b", "")))
	c0 := h.f.Cursor()

	ch, c1, ok := h.f.ChangesSince(c0)
	if !ok || len(ch.Services) != 0 || ch.Others || c1 != c0 {
		t.Fatalf("nothing changed: %v %+v %v; want ok, empty, same cursor", ok, ch, c1)
	}
	h.ok(owners(assign("t", "a", "m1")))
	h.ok(create(svc("t", "c", "")))
	h.ok(deleteVS("t", "b"))
	ch, c1, ok = h.f.ChangesSince(c0)
	if want := []Key{{"t", "a"}, {"t", "b"}, {"t", "c"}}; !ok || !slices.Equal(keysOf(ch), want) || ch.Others {
		t.Fatalf("after an assignment, a create and a delete: %v %v others=%v; want %v, no others", ok, keysOf(ch), ch.Others, want)
	}
	if c1.Revision != h.f.Revision() {
		t.Fatalf("cursor at %d, FSM at %d", c1.Revision, h.f.Revision())
	}
	// A deleted service is named, and Lookup says it is gone.
	got := map[Key]bool{}
	h.f.Lookup(ch.Services, func(k Key, vs *edgelbv1.VirtualService) { got[k] = vs != nil })
	if want := map[Key]bool{{"t", "a"}: true, {"t", "b"}: false, {"t", "c"}: true}; !maps.Equal(got, want) {
		t.Fatalf("Lookup: %v, want %v", got, want)
	}
	h.ok(member("m2"))
	ch, c2, ok := h.f.ChangesSince(c1)
	if !ok || len(ch.Services) != 0 || !ch.Others {
		t.Fatalf("a member joined: %v %+v; want ok, others", ok, ch)
	}

	// Past the retained history: resynchronise.
	for i := 0; i < 2*maxHistory+1; i++ {
		h.ok(owners(assign("t", "a", []string{"m1", "m2"}[i%2])))
	}
	if _, _, ok := h.f.ChangesSince(c2); ok {
		t.Fatal("a cursor older than the history was answered")
	}

	// Across a raft snapshot restore: resynchronise, even at the same revision.
	c3 := h.f.Cursor()
	b := persist(t, h.f)
	if err := h.f.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := h.f.ChangesSince(c3); ok {
		t.Fatal("a cursor from before a snapshot restore was answered")
	}
	if _, _, ok := h.f.ChangesSince(h.f.Cursor()); !ok {
		t.Fatal("a cursor taken after the restore was refused")
	}
}

// The feed names the addresses a change touched, a moved or deleted
// service's old one too, and Groups answers every service at them with the
// addresses each owner holds besides.
func TestChangesVIPsAndGroups(t *testing.T) {
	h := newHarness(t)
	h.ok(member("m1"))
	h.ok(member("m2"))
	h.ok(createPool(pool("p", "10.0.0.0/24")))
	h.ok(createOwned(svc("t", "a", "10.0.0.1"), "m1"))
	h.ok(createOwned(shared(svc("t", "b", "10.0.0.2", tcp(80)), "k"), "m1"))
	h.ok(createOwned(shared(svc("t", "c", "10.0.0.2", tcp(81)), "k"), "m1"))
	h.ok(createOwned(svc("t", "d", "10.0.0.3"), "m2"))
	c := h.f.Cursor()
	h.ok(deleteVS("t", "b"))
	ch, _, ok := h.f.ChangesSince(c)
	a2 := netip.MustParseAddr("10.0.0.2")
	if _, has := ch.VIPs[a2]; !ok || len(ch.VIPs) != 1 || !has {
		t.Fatalf("after deleting b: VIPs %v, want only 10.0.0.2", ch.VIPs)
	}
	vss, others := h.f.Groups(ch.VIPs)
	if len(vss) != 1 || vss[0].Name != "c" {
		t.Fatalf("Groups: %v, want c alone", vss)
	}
	if others["m1"] != 1 || others["m2"] != 1 {
		t.Fatalf("others %v, want m1:1 (10.0.0.1) m2:1", others)
	}
}
