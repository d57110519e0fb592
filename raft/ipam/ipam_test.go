package ipam

import (
	"net/netip"
	"strings"
	"testing"
)

func mustRange(t *testing.T, s string) Range {
	t.Helper()
	r, err := ParseRange(s)
	if err != nil {
		t.Fatalf("ParseRange(%q): %v", s, err)
	}
	return r
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in          string
		first, last string
		size        uint64
	}{
		// IPv4 CIDRs of /30 and wider lose their network and broadcast addresses.
		{"192.0.2.0/24", "192.0.2.1", "192.0.2.254", 254},
		{"192.0.2.0/30", "192.0.2.1", "192.0.2.2", 2},
		// /31 (point-to-point) and /32 keep every address.
		{"192.0.2.0/31", "192.0.2.0", "192.0.2.1", 2},
		{"192.0.2.7/32", "192.0.2.7", "192.0.2.7", 1},
		// Explicit ranges are taken as written, inclusive, spaces tolerated.
		{"192.0.2.10-192.0.2.20", "192.0.2.10", "192.0.2.20", 11},
		{" 192.0.2.10 - 192.0.2.10 ", "192.0.2.10", "192.0.2.10", 1},
		{"192.0.2.250-192.0.3.5", "192.0.2.250", "192.0.3.5", 12},
		// IPv6 CIDRs have no broadcast: every address counts.
		{"2001:db8::/126", "2001:db8::", "2001:db8::3", 4},
		{"2001:db8::5/128", "2001:db8::5", "2001:db8::5", 1},
		{"2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", 1 << 63},
		{"2001:db8::a-2001:db8::f", "2001:db8::a", "2001:db8::f", 6},
		// IPv4-mapped ends of a dash range are read as IPv4.
		{"::ffff:192.0.2.1-::ffff:192.0.2.2", "192.0.2.1", "192.0.2.2", 2},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r := mustRange(t, tc.in)
			if r.First != addr(tc.first) || r.Last != addr(tc.last) {
				t.Fatalf("got %s, want %s-%s", r, tc.first, tc.last)
			}
			if got := r.Size(); got != tc.size {
				t.Errorf("Size = %d, want %d", got, tc.size)
			}
			if !r.Contains(r.First) || !r.Contains(r.Last) {
				t.Errorf("%s does not contain its own ends", r)
			}
			if r.Contains(r.First.Prev()) || r.Contains(r.Last.Next()) {
				t.Errorf("%s contains an address outside its ends", r)
			}
		})
	}
}

func TestParseRangeErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty range"},
		{"   ", "empty range"},
		{"192.0.2.20-192.0.2.10", "last address is before the first"},
		{"2001:db8::2-2001:db8::1", "last address is before the first"},
		{"192.0.2.1-2001:db8::1", "mixes IPv4 and IPv6"},
		{"192.0.2.300-192.0.2.301", "first address"},
		{"192.0.2.1-nope", "last address"},
		{"192.0.2.1-", "last address"},
		{"fe80::1%eth0-fe80::2", "zoned"},
		{"192.0.2.1/24", "host bits set; did you mean 192.0.2.0/24"},
		{"192.0.2.0/33", "neither a CIDR"},
		{"192.0.2.1", "neither a CIDR"},
		{"::ffff:192.0.2.0/120", "IPv4-mapped"},
		{"not-an-address", "first address"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseRange(tc.in)
			if err == nil {
				t.Fatalf("ParseRange(%q) = %s, want an error", tc.in, r)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestRangeContains(t *testing.T) {
	v4 := mustRange(t, "192.0.2.10-192.0.2.20")
	v6 := mustRange(t, "2001:db8::/126")
	for _, tc := range []struct {
		r    Range
		a    string
		want bool
	}{
		{v4, "192.0.2.10", true},
		{v4, "192.0.2.15", true},
		{v4, "192.0.2.20", true},
		{v4, "192.0.2.9", false},
		{v4, "192.0.2.21", false},
		{v4, "::ffff:192.0.2.15", true}, // mapped addresses are unmapped
		{v4, "2001:db8::1", false},
		{v6, "2001:db8::3", true},
		{v6, "2001:db8::4", false},
		{v6, "192.0.2.15", false},
	} {
		if got := tc.r.Contains(addr(tc.a)); got != tc.want {
			t.Errorf("%s.Contains(%s) = %v, want %v", tc.r, tc.a, got, tc.want)
		}
	}
	if v4.Contains(netip.Addr{}) || v6.Contains(netip.Addr{}) {
		t.Error("a range contains the zero Addr")
	}
}

func TestRangeOverlaps(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"192.0.2.10-192.0.2.20", "192.0.2.20-192.0.2.30", true}, // touching at one address
		{"192.0.2.10-192.0.2.20", "192.0.2.21-192.0.2.30", false},
		{"192.0.2.10-192.0.2.20", "192.0.2.12-192.0.2.13", true}, // containment
		{"192.0.2.0/24", "192.0.2.128/25", true},
		{"192.0.2.0/25", "192.0.2.128/25", false},
		{"192.0.2.0/24", "2001:db8::/120", false},
		{"2000::/3", "2001:db8::1/128", true},
	} {
		a, b := mustRange(t, tc.a), mustRange(t, tc.b)
		if got := a.Overlaps(b); got != tc.want {
			t.Errorf("%s.Overlaps(%s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := b.Overlaps(a); got != tc.want {
			t.Errorf("%s.Overlaps(%s) = %v, want %v (not symmetric)", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestSizeSaturates(t *testing.T) {
	if got := mustRange(t, "8000::/1").Size(); got != 1<<63 {
		t.Errorf("Size(::/0) = %d, want 2^63", got)
	}
	if got := mustRange(t, "0.0.0.0/0").Size(); got != 1<<32-2 {
		t.Errorf("Size(0.0.0.0/0) = %d, want 2^32-2", got)
	}
	p, err := ParsePool([]string{"2001:db8::/64", "2001:db9::/64", "192.0.2.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Size(); got != 1<<63 {
		t.Errorf("pool Size = %d, want saturated 2^63", got)
	}
}

func TestParsePool(t *testing.T) {
	p, err := ParsePool([]string{"192.0.2.0/30", "198.51.100.5-198.51.100.6", "2001:db8::/127"})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Size(); got != 2+2+2 {
		t.Errorf("Size = %d, want 6", got)
	}
	for _, a := range []string{"192.0.2.1", "192.0.2.2", "198.51.100.5", "198.51.100.6", "2001:db8::", "2001:db8::1"} {
		if !p.Contains(addr(a)) {
			t.Errorf("pool does not contain %s", a)
		}
	}
	for _, a := range []string{"192.0.2.0", "192.0.2.3", "198.51.100.7", "2001:db8::2"} {
		if p.Contains(addr(a)) {
			t.Errorf("pool contains %s", a)
		}
	}

	if _, err := ParsePool(nil); err == nil || !strings.Contains(err.Error(), "at least one range") {
		t.Errorf("ParsePool(nil) = %v, want 'at least one range'", err)
	}
	_, err = ParsePool([]string{"192.0.2.0/24", "10.0.0.0/8", "192.0.2.100-192.0.2.101"})
	if err == nil || !strings.Contains(err.Error(), "ranges[2]") || !strings.Contains(err.Error(), "ranges[0]") {
		t.Errorf("overlapping ranges: err = %v, want one naming ranges[2] and ranges[0]", err)
	}
	_, err = ParsePool([]string{"192.0.2.0/24", "bogus"})
	if err == nil || !strings.Contains(err.Error(), "ranges[1]") {
		t.Errorf("bad range: err = %v, want one naming ranges[1]", err)
	}

	q, _ := ParsePool([]string{"198.51.100.6-198.51.100.9"})
	r, _ := ParsePool([]string{"203.0.113.0/24", "2001:db8::2/127"})
	if !p.Overlaps(q) || !q.Overlaps(p) {
		t.Error("pools sharing 198.51.100.6 do not overlap")
	}
	if p.Overlaps(r) || r.Overlaps(p) {
		t.Error("disjoint pools overlap")
	}
}

func TestAllocate(t *testing.T) {
	p, err := ParsePool([]string{"192.0.2.10-192.0.2.12", "2001:db8::/126", "198.51.100.0/31"})
	if err != nil {
		t.Fatal(err)
	}
	used := map[netip.Addr]bool{}
	isUsed := func(a netip.Addr) bool { return used[a] }

	// Lowest free first, ranges in their order, then the next range.
	want := []string{"192.0.2.10", "192.0.2.11", "192.0.2.12", "198.51.100.0", "198.51.100.1"}
	for _, w := range want {
		a, ok := p.Allocate(false, isUsed)
		if !ok || a != addr(w) {
			t.Fatalf("Allocate = %v %v, want %s", a, ok, w)
		}
		used[a] = true
	}
	if a, ok := p.Allocate(false, isUsed); ok {
		t.Fatalf("Allocate on a full IPv4 side = %s, want none", a)
	}
	// A freed address in the middle is found again, before later ones.
	delete(used, addr("192.0.2.11"))
	delete(used, addr("198.51.100.1"))
	if a, ok := p.Allocate(false, isUsed); !ok || a != addr("192.0.2.11") {
		t.Fatalf("Allocate after free = %v %v, want 192.0.2.11", a, ok)
	}
	// The IPv6 side is independent.
	used[addr("2001:db8::")] = true
	if a, ok := p.Allocate(true, isUsed); !ok || a != addr("2001:db8::1") {
		t.Fatalf("Allocate(v6) = %v %v, want 2001:db8::1", a, ok)
	}
	// A pool without the family has nothing to give.
	v4only, _ := ParsePool([]string{"192.0.2.0/24"})
	if a, ok := v4only.Allocate(true, func(netip.Addr) bool { return false }); ok {
		t.Fatalf("Allocate(v6) from an IPv4 pool = %s", a)
	}
}

// AllocateFrom must answer exactly as Allocate when every address before from is used:
// the FSM depends on it to stay identical across members that restored from snapshots.
func TestAllocateFromMatchesAllocate(t *testing.T) {
	p, err := ParsePool([]string{"192.0.2.10-192.0.2.14", "198.51.100.0/30", "2001:db8::/125"})
	if err != nil {
		t.Fatal(err)
	}
	var all []netip.Addr
	for _, r := range p.Ranges {
		for a := r.First; ; a = a.Next() {
			all = append(all, a)
			if a == r.Last {
				break
			}
		}
	}
	// For every "from" and a pattern of used addresses that honours the contract.
	for i, from := range all {
		used := map[netip.Addr]bool{}
		for j, a := range all {
			if a.Is6() != from.Is6() {
				continue
			}
			if j < i || (j-i)%3 == 0 && j < len(all)-1 {
				used[a] = true
			}
		}
		isUsed := func(a netip.Addr) bool { return used[a] }
		a1, ok1 := p.Allocate(from.Is6(), isUsed)
		a2, ok2 := p.AllocateFrom(from.Is6(), from, isUsed)
		if a1 != a2 || ok1 != ok2 {
			t.Errorf("from %s: Allocate = %v %v, AllocateFrom = %v %v", from, a1, ok1, a2, ok2)
		}
	}
	// A from of the other family is ignored.
	a, ok := p.AllocateFrom(false, addr("2001:db8::3"), func(netip.Addr) bool { return false })
	if !ok || a != addr("192.0.2.10") {
		t.Errorf("AllocateFrom with a v6 hint for v4 = %v %v, want 192.0.2.10", a, ok)
	}
}

func TestBefore(t *testing.T) {
	// Allocation order is range order, not address order.
	p, _ := ParsePool([]string{"198.51.100.0/31", "192.0.2.0/31"})
	if !p.Before(addr("198.51.100.1"), addr("192.0.2.0")) {
		t.Error("an address of the first range is not before one of the second")
	}
	if !p.Before(addr("192.0.2.0"), addr("192.0.2.1")) {
		t.Error("addresses of one range are not ascending")
	}
	if !p.Before(addr("192.0.2.1"), addr("10.0.0.1")) {
		t.Error("an address outside the pool is not after every address in it")
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{
		"192.0.2.0/24", "192.0.2.0/31", "192.0.2.0/32", "192.0.2.0/30", "0.0.0.0/0",
		"2001:db8::/64", "::/0", "2001:db8::1/128", "192.0.2.10-192.0.2.20", "192.0.2.20-192.0.2.10",
		"::ffff:1.2.3.4-::ffff:1.2.3.5", "::ffff:1.2.3.0/120", "fe80::1%eth0/64", "1.2.3.4-2001:db8::1",
		"  10.0.0.1 -10.0.0.1", "-", "/", "", "1.2.3.4/", "255.255.255.255/32",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		if !r.First.IsValid() || !r.Last.IsValid() {
			t.Fatalf("ParseRange(%q) = %#v: invalid ends", s, r)
		}
		if r.First.Is4() != r.Last.Is4() || r.First.Is4In6() || r.Last.Is4In6() {
			t.Fatalf("ParseRange(%q) = %s: ends of different or mapped families", s, r)
		}
		if r.First.Zone() != "" || r.Last.Zone() != "" {
			t.Fatalf("ParseRange(%q) = %s: zoned", s, r)
		}
		if r.Last.Less(r.First) {
			t.Fatalf("ParseRange(%q) = %s: last before first", s, r)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) {
			t.Fatalf("ParseRange(%q) = %s does not contain its ends", s, r)
		}
		if r.Size() < 1 {
			t.Fatalf("ParseRange(%q) = %s has size %d", s, r, r.Size())
		}
		// The String form parses back to the same range.
		back, err := ParseRange(r.String())
		// (First and Last only: the first-last form has no CIDR.)
		if err != nil || back.First != r.First || back.Last != r.Last {
			t.Fatalf("ParseRange(%q).String() = %q reparses to %s, %v", s, r.String(), back, err)
		}
		// A one-range pool allocates its first address first.
		p := &Pool{Ranges: []Range{r}}
		if a, ok := p.Allocate(r.First.Is6(), func(netip.Addr) bool { return false }); !ok || a != r.First {
			t.Fatalf("pool %s allocates %v %v first, want %s", r, a, ok, r.First)
		}
	})
}

func TestReservedAndAnycast(t *testing.T) {
	p, err := ParsePool([]string{"192.0.2.0/24", "2001:db8:1::/112", "2001:db8:2::/127", "2001:db8:3::10-2001:db8:3::20", "198.51.100.0/31"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ a, why string }{
		{"192.0.2.0", "network address"},
		{"192.0.2.255", "broadcast address"},
		{"192.0.2.1", ""},
		{"2001:db8:1::", "subnet-router anycast address"},
		{"2001:db8:1::1", ""},
		{"2001:db8:2::", ""},   // /127: RFC 6164, no anycast address
		{"2001:db8:3::10", ""}, // a first-last range has no subnet
		{"198.51.100.0", ""},   // /31: both addresses usable
	} {
		_, why, ok := p.Reserved(addr(tc.a))
		if why != tc.why || ok != (tc.why != "") {
			t.Errorf("Reserved(%s) = %q %v, want %q", tc.a, why, ok, tc.why)
		}
	}
	if got := p.Anycast(); len(got) != 1 || got[0] != addr("2001:db8:1::") {
		t.Errorf("Anycast() = %v", got)
	}
	if !p.IsAnycast(addr("2001:db8:1::")) || p.IsAnycast(addr("2001:db8:1::1")) {
		t.Error("IsAnycast")
	}
	// The anycast address stays in the range: VIPs allocated there by older
	// versions are still inside their pool.
	if !p.Contains(addr("2001:db8:1::")) {
		t.Error("the anycast address left the range")
	}
	if !p.HasFamily(true) || !p.HasFamily(false) {
		t.Error("HasFamily")
	}
	v4, _ := ParsePool([]string{"10.0.0.0/24"})
	if v4.HasFamily(true) {
		t.Error("an IPv4 pool has IPv6")
	}
}
