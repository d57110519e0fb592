// Package ipam parses address pools and allocates VIPs from them.
//
// Allocation is deterministic (lowest free address first) because it runs inside
// the raft FSM: every member must pick the same address for the same log entry.
package ipam

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"
)

// Range is an inclusive range of addresses of one family.
type Range struct {
	First, Last netip.Addr
	// Prefix is the CIDR the range was written as (invalid for a first-last
	// range). It names the addresses a CIDR holds but does not hand out: IPv4
	// network and broadcast, the IPv6 subnet-router anycast address.
	Prefix netip.Prefix
}

// ParseRange parses a CIDR ("192.0.2.0/24", "2001:db8::/120") or an inclusive
// range ("192.0.2.10-192.0.2.20"). For IPv4 CIDRs of /30 and wider, the network and
// broadcast addresses are left out: a VIP there would not be reachable on most LANs.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Range{}, fmt.Errorf("empty range: want a CIDR like 192.0.2.0/24 or a range like 192.0.2.10-192.0.2.20")
	}
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err := netip.ParseAddr(strings.TrimSpace(first))
		if err != nil {
			return Range{}, &parseError{fmt.Sprintf("range %q: first address %q is not an IP address", s, strings.TrimSpace(first)), err}
		}
		b, err := netip.ParseAddr(strings.TrimSpace(last))
		if err != nil {
			return Range{}, &parseError{fmt.Sprintf("range %q: last address %q is not an IP address", s, strings.TrimSpace(last)), err}
		}
		if a.Zone() != "" || b.Zone() != "" {
			return Range{}, fmt.Errorf("range %q: zoned addresses are not allowed", s)
		}
		a, b = a.Unmap(), b.Unmap()
		if a.Is4() != b.Is4() {
			return Range{}, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
		}
		if b.Less(a) {
			return Range{}, fmt.Errorf("range %q: last address is before the first", s)
		}
		return noMapped(s, Range{First: a, Last: b})
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		why := ""
		if addr, bits, ok := strings.Cut(s, "/"); ok {
			if _, aerr := netip.ParseAddr(addr); aerr != nil {
				why = fmt.Sprintf(": %q is not an IP address", addr)
			} else {
				why = fmt.Sprintf(": /%s is not a prefix length of that family", bits)
			}
		}
		return Range{}, &parseError{fmt.Sprintf("%q is neither a CIDR (192.0.2.0/24) nor a range (192.0.2.10-192.0.2.20)%s", s, why), err}
	}
	if p.Addr().Zone() != "" {
		return Range{}, fmt.Errorf("range %q: zoned addresses are not allowed", s)
	}
	if p.Addr().Is4In6() {
		return Range{}, fmt.Errorf("range %q: write IPv4 as IPv4, not IPv4-mapped IPv6", s)
	}
	if p != p.Masked() {
		return Range{}, fmt.Errorf("CIDR %q has host bits set; did you mean %s?", s, p.Masked())
	}
	first := p.Addr()
	last := lastAddr(p)
	if p.Addr().Is4() && p.Bits() <= 30 {
		first = first.Next()
		last = last.Prev()
	}
	return noMapped(s, Range{First: first, Last: last, Prefix: p})
}

// mapped is the IPv4-mapped IPv6 block: an address there is an IPv4 address
// in disguise, and a VIP allocated from it would be one the API refuses.
var mapped = Range{First: netip.MustParseAddr("::ffff:0.0.0.0"), Last: netip.MustParseAddr("::ffff:255.255.255.255")}

func noMapped(s string, r Range) (Range, error) {
	if r.First.Is6() && r.Overlaps(mapped) {
		return Range{}, fmt.Errorf("range %q includes IPv4-mapped addresses (::ffff:0:0/96); split it around them", s)
	}
	return r, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Contains reports whether a is in the range.
func (r Range) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.Is4() == r.First.Is4() && !a.Less(r.First) && !r.Last.Less(a)
}

// Overlaps reports whether two ranges share an address.
func (r Range) Overlaps(o Range) bool {
	return r.First.Is4() == o.First.Is4() && !r.Last.Less(o.First) && !o.Last.Less(r.First)
}

// Size is the number of addresses, saturating at 2^63.
func (r Range) Size() uint64 {
	a := new(big.Int).SetBytes(r.First.AsSlice())
	b := new(big.Int).SetBytes(r.Last.AsSlice())
	n := new(big.Int).Sub(b, a)
	n.Add(n, big.NewInt(1))
	if !n.IsUint64() || n.Uint64() > 1<<63 {
		return 1 << 63
	}
	return n.Uint64()
}

func (r Range) String() string {
	return r.First.String() + "-" + r.Last.String()
}

// Anycast is the subnet-router anycast address of an IPv6 CIDR range (RFC
// 4291 §2.6.1: the prefix with an all-zero host part, which routers on the
// subnet answer), and false for IPv4, first-last ranges, /127 (RFC 6164) and
// /128. The address stays in the range, so VIPs allocated there before it was
// skipped remain valid; only new allocations pass it by.
func (r Range) Anycast() (netip.Addr, bool) {
	if !r.Prefix.IsValid() || !r.Prefix.Addr().Is6() || r.Prefix.Bits() > 126 {
		return netip.Addr{}, false
	}
	return r.Prefix.Addr(), true
}

// Reserved says why a is an address of r's CIDR that is not handed out as a
// VIP: "network address" or "broadcast address" (IPv4 /30 and wider, left out
// of the range) or "subnet-router anycast address" (IPv6). "" when it is none.
func (r Range) Reserved(a netip.Addr) string {
	if !r.Prefix.IsValid() {
		return ""
	}
	a = a.Unmap()
	if r.Prefix.Addr().Is4() && r.Prefix.Bits() <= 30 {
		switch a {
		case r.Prefix.Addr():
			return "network address"
		case lastAddr(r.Prefix):
			return "broadcast address"
		}
		return ""
	}
	if x, ok := r.Anycast(); ok && a == x {
		return "subnet-router anycast address"
	}
	return ""
}

// Pool is a parsed set of ranges.
type Pool struct {
	Ranges []Range
}

// ParsePool parses every range; the ranges of one pool must not overlap.
func ParsePool(ranges []string) (*Pool, error) {
	if len(ranges) == 0 {
		return nil, fmt.Errorf("a pool needs at least one range")
	}
	p := &Pool{}
	for i, s := range ranges {
		r, err := ParseRange(s)
		if err != nil {
			return nil, fmt.Errorf("ranges[%d]: %w", i, err)
		}
		for j, o := range p.Ranges {
			if r.Overlaps(o) {
				return nil, fmt.Errorf("ranges[%d] %q overlaps ranges[%d] %q", i, s, j, ranges[j])
			}
		}
		p.Ranges = append(p.Ranges, r)
	}
	return p, nil
}

// Contains reports whether a is in any range of the pool.
func (p *Pool) Contains(a netip.Addr) bool {
	for _, r := range p.Ranges {
		if r.Contains(a) {
			return true
		}
	}
	return false
}

// Reserved finds a range of the pool whose CIDR reserves a (see
// Range.Reserved) and says why; ok is false when no range does.
func (p *Pool) Reserved(a netip.Addr) (r Range, why string, ok bool) {
	for _, r := range p.Ranges {
		if why := r.Reserved(a); why != "" {
			return r, why, true
		}
	}
	return Range{}, "", false
}

// IsAnycast reports whether a is the subnet-router anycast address of one of
// the pool's IPv6 CIDR ranges.
func (p *Pool) IsAnycast(a netip.Addr) bool {
	for _, r := range p.Ranges {
		if x, ok := r.Anycast(); ok && x == a {
			return true
		}
	}
	return false
}

// Anycast returns the subnet-router anycast addresses of the pool's IPv6
// CIDR ranges, in the pool's order.
func (p *Pool) Anycast() []netip.Addr {
	var out []netip.Addr
	for _, r := range p.Ranges {
		if x, ok := r.Anycast(); ok {
			out = append(out, x)
		}
	}
	return out
}

// HasFamily reports whether the pool holds addresses of the family (v6=false: IPv4).
func (p *Pool) HasFamily(v6 bool) bool {
	for _, r := range p.Ranges {
		if r.First.Is6() == v6 {
			return true
		}
	}
	return false
}

// Overlaps reports whether two pools share an address.
func (p *Pool) Overlaps(o *Pool) bool {
	for _, r := range p.Ranges {
		for _, q := range o.Ranges {
			if r.Overlaps(q) {
				return true
			}
		}
	}
	return false
}

// Size is the number of addresses in the pool, saturating at 2^63.
func (p *Pool) Size() uint64 {
	var n uint64
	for _, r := range p.Ranges {
		s := r.Size()
		if n+s < n || n+s > 1<<63 {
			return 1 << 63
		}
		n += s
	}
	return n
}

// Allocate returns the lowest address of the wanted family (v6=false: IPv4) for
// which used reports false. It visits at most (addresses in use)+1 addresses, so a
// huge, sparsely used IPv6 pool costs no more than its used set.
func (p *Pool) Allocate(v6 bool, used func(netip.Addr) bool) (netip.Addr, bool) {
	return p.AllocateFrom(v6, netip.Addr{}, used)
}

// AllocateFrom is Allocate for a caller that knows every address before from
// (in the pool's order) is used: it starts there. An invalid from starts at the
// beginning. The answer is the same as Allocate's; only the work differs.
func (p *Pool) AllocateFrom(v6 bool, from netip.Addr, used func(netip.Addr) bool) (netip.Addr, bool) {
	skipping := from.IsValid() && from.Is6() == v6
	for _, r := range p.Ranges {
		if r.First.Is6() != v6 {
			continue
		}
		start := r.First
		if skipping {
			if !r.Contains(from) {
				continue
			}
			start, skipping = from, false
		}
		for a := start; ; a = a.Next() {
			if !used(a) {
				return a, true
			}
			if a == r.Last {
				break
			}
		}
	}
	return netip.Addr{}, false
}

// Before reports whether a comes before b in the pool's allocation order
// (ranges in order, addresses ascending within a range). Addresses outside the
// pool come after every address in it.
func (p *Pool) Before(a, b netip.Addr) bool {
	ia, ib := p.rangeIndex(a), p.rangeIndex(b)
	if ia != ib {
		return ia < ib
	}
	return a.Less(b)
}

func (p *Pool) rangeIndex(a netip.Addr) int {
	for i, r := range p.Ranges {
		if r.Contains(a) {
			return i
		}
	}
	return len(p.Ranges)
}

// parseError words a parse failure for an operator, keeping netip's error
// (whose text names Go functions, netip.ParsePrefix(...)) for errors.Is/As.
type parseError struct {
	msg string
	err error
}

func (e *parseError) Error() string { return e.msg }
func (e *parseError) Unwrap() error { return e.err }
