package bgp

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// fakeAddrs is an addr.Manager in memory (the kernel's side is exercised in
// the guest scenarios).
type fakeAddrs struct {
	on   []netip.Addr
	fail netip.Addr
}

func (f *fakeAddrs) List(int) ([]netip.Addr, error) { return slices.Clone(f.on), nil }
func (f *fakeAddrs) Add(_ int, a netip.Addr) error {
	if a == f.fail {
		return errors.New("refused")
	}
	f.on = append(f.on, a)
	return nil
}
func (f *fakeAddrs) Remove(_ int, a netip.Addr) error {
	f.on = slices.DeleteFunc(f.on, func(x netip.Addr) bool { return x == a })
	return nil
}

func TestLocalAddrs(t *testing.T) {
	a1, a2, a3 := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("2001:db8::3")
	f := &fakeAddrs{on: []netip.Addr{a3}, fail: a2}
	l, err := newLocal(f, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.on) != 0 {
		t.Fatalf("a stale VIP from a previous run stayed: %v", f.on)
	}
	if err := l.Add([]netip.Addr{a1, a2, a3}); err == nil {
		t.Error("Add hid a failure")
	}
	if !l.Holds(a1) || l.Holds(a2) || !l.Holds(a3) || l.Held() != 2 {
		t.Errorf("held after Add: %v", f.on)
	}
	// A route is kept only when a VIP it covers is held.
	routes := []Route{{Prefix: netip.MustParsePrefix("198.51.100.1/32")}, {Prefix: netip.MustParsePrefix("198.51.100.2/32")}, {Prefix: netip.MustParsePrefix("2001:db8::/64")}}
	got := heldOnly(routes, []netip.Addr{a1, a2, a3}, l)
	if len(got) != 2 || got[0].Prefix != routes[0].Prefix || got[1].Prefix != routes[2].Prefix {
		t.Errorf("heldOnly = %v", got)
	}
	if err := l.Keep([]netip.Addr{a3}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.on, []netip.Addr{a3}) || l.Holds(a1) {
		t.Errorf("after Keep: %v", f.on)
	}
}
