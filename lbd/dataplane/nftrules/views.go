package nftrules

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/google/nftables"

	"github.com/edgelb/edgelb/lbd/dataplane/snat"
	"github.com/edgelb/edgelb/lbd/dataplane/srcrange"
)

// Backend names the rule engine.
const Backend = "nftables"

// SNAT is the table seen as the SNAT rules and takeover guard (snat.Rules).
type SNAT struct{ *Table }

// Filter is the table seen as the source-range filter (srcrange.Enforcer).
type Filter struct{ *Table }

var (
	_ snat.Rules        = SNAT{}
	_ srcrange.Enforcer = Filter{}
)

// Backend names the rule engine.
func (SNAT) Backend() string { return Backend }

// Backend names the rule engine.
func (Filter) Backend() string { return Backend }

// Set makes the SNAT set hold exactly the VIPs given and, with the guard on,
// the served set exactly their VIP . TCP port pairs: one batch.
func (s SNAT) Set(ctx context.Context, vips []snat.VIP) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := s.Table
	want := map[string]map[string]nftables.SetElement{}
	for fm := range 2 {
		want[setSNAT[fm]] = map[string]nftables.SetElement{}
		want[setServed[fm]] = map[string]nftables.SetElement{}
	}
	for _, v := range vips {
		fm := fam(v.Addr)
		e := nftables.SetElement{Key: addrKey(v.Addr)}
		want[setSNAT[fm]][elemID(e)] = e
		if t.guard <= 0 {
			continue
		}
		for _, p := range v.TCPPorts {
			e := nftables.SetElement{Key: append(addrKey(v.Addr), portKey(p)...)}
			want[setServed[fm]][elemID(e)] = e
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := t.sync(want); err != nil {
		return err
	}
	t.synced(true)
	return nil
}

// Present reports whether the kernel holds a's SNAT element (as read or
// last applied).
func (s SNAT) Present(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := setSNAT[fam(a)]
	if !s.known[n] {
		if err := s.readSet(n); err != nil {
			return false
		}
	}
	_, ok := s.applied[n][elemID(nftables.SetElement{Key: addrKey(a)})]
	return ok
}

// Guard opens VIP a's takeover window: an element of the takeover set that
// the kernel removes when the window ends. One netlink batch.
func (s SNAT) Guard(a netip.Addr) error {
	if s.guard <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.sets[setTakeover[fam(a)]]
	if err := s.conn.SetAddElements(set, []nftables.SetElement{{Key: addrKey(a), Timeout: s.guard}}); err != nil {
		return fmt.Errorf("takeover guard for %s: %w", a, err)
	}
	if err := s.flush(); err != nil {
		return fmt.Errorf("takeover guard for %s: %w", a, err)
	}
	return nil
}

// interval is a range of addresses, first to last inclusive.
type interval struct{ first, last netip.Addr }

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// merge sorts ranges of one family and joins those that overlap or touch:
// an interval set refuses overlapping elements.
func merge(ps []netip.Prefix) []interval {
	ivs := make([]interval, 0, len(ps))
	for _, p := range ps {
		ivs = append(ivs, interval{p.Masked().Addr(), lastOf(p)})
	}
	sort.Slice(ivs, func(i, j int) bool { return ivs[i].first.Less(ivs[j].first) })
	var out []interval
	for _, iv := range ivs {
		if n := len(out); n > 0 {
			prev := &out[n-1]
			if next := prev.last.Next(); !next.IsValid() || iv.first.Compare(next) <= 0 {
				if iv.last.Compare(prev.last) > 0 {
					prev.last = iv.last
				}
				continue
			}
		}
		out = append(out, iv)
	}
	return out
}

// elements is v's source-range elements: per port, the port's key in the
// ports set and one interval per merged range in the allow set.
func elements(v srcrange.VIP) (ports, allow []nftables.SetElement) {
	fm := fam(v.Addr)
	type pk struct {
		proto byte
		port  uint16
	}
	ranges := map[pk][]netip.Prefix{}
	var keys []pk
	for _, s := range v.Services {
		for _, p := range s.Ports {
			n, ok := protoNum(p.Proto)
			if !ok {
				continue
			}
			k := pk{n, p.Port}
			if _, seen := ranges[k]; !seen {
				keys = append(keys, k)
				ranges[k] = []netip.Prefix{}
			}
			for _, r := range s.Ranges {
				if fam(r.Addr()) == fm {
					ranges[k] = append(ranges[k], r)
				}
			}
		}
	}
	for _, k := range keys {
		base := append(addrKey(v.Addr), pad4([]byte{k.proto})...)
		base = append(base, portKey(k.port)...)
		ports = append(ports, nftables.SetElement{Key: slices.Clone(base)})
		for _, iv := range merge(ranges[k]) {
			allow = append(allow, nftables.SetElement{
				Key:    append(slices.Clone(base), addrKey(iv.first)...),
				KeyEnd: append(slices.Clone(base), addrKey(iv.last)...),
			})
		}
	}
	return ports, allow
}

func fingerprint(ports, allow []nftables.SetElement) string {
	ids := make([]string, 0, len(ports)+len(allow))
	for _, e := range ports {
		ids = append(ids, "p"+elemID(e))
	}
	for _, e := range allow {
		ids = append(ids, "a"+elemID(e))
	}
	slices.Sort(ids)
	return strings.Join(ids, "\n")
}

// filterMemo is a VIP's elements as last built, valid while its services
// are the same objects (srcrange.VIP: they are immutable once handed over).
type filterMemo struct {
	svcs         []*srcrange.Service
	ports, allow []nftables.SetElement
	fp           string
}

// built is v's elements and fingerprint, remembered; the caller holds mu.
func (t *Table) built(v srcrange.VIP) filterMemo {
	if m, ok := t.memo[v.Addr]; ok && slices.Equal(m.svcs, v.Services) {
		return m
	}
	ports, allow := elements(v)
	m := filterMemo{svcs: slices.Clone(v.Services), ports: ports, allow: allow, fp: fingerprint(ports, allow)}
	if t.memo == nil {
		t.memo = map[netip.Addr]filterMemo{}
	}
	t.memo[v.Addr] = m
	return m
}

// Set makes the kernel filter exactly vips: one batch of element changes.
func (f Filter) Set(ctx context.Context, vips []srcrange.VIP) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := f.Table
	t.mu.Lock()
	defer t.mu.Unlock()
	want := map[string]map[string]nftables.SetElement{}
	for fm := range 2 {
		want[setSRPorts[fm]] = map[string]nftables.SetElement{}
		want[setSRAllow[fm]] = map[string]nftables.SetElement{}
	}
	listed := make(map[netip.Addr]bool, len(vips))
	for _, v := range vips {
		if len(v.Services) == 0 {
			continue
		}
		listed[v.Addr] = true
		fm := fam(v.Addr)
		m := t.built(v)
		ports, allow := m.ports, m.allow
		for _, e := range ports {
			want[setSRPorts[fm]][elemID(e)] = e
		}
		for _, e := range allow {
			want[setSRAllow[fm]][elemID(e)] = e
		}
	}
	for a := range t.memo {
		if !listed[a] {
			delete(t.memo, a)
		}
	}
	_, err := t.sync(want)
	if err != nil {
		t.rehold() // what is known of the kernel now
	} else {
		// The sets hold want exactly: each listed VIP's elements.
		t.held = make(map[netip.Addr]string, len(listed))
		for a := range listed {
			t.held[a] = t.memo[a].fp
		}
	}
	if err != nil {
		return fmt.Errorf("source-range rules: %w", err)
	}
	t.synced(false)
	return nil
}

// rehold recomputes each VIP's fingerprint from what the kernel holds as
// far as known; the caller holds mu.
func (t *Table) rehold() {
	ports := map[netip.Addr][]nftables.SetElement{}
	allow := map[netip.Addr][]nftables.SetElement{}
	for fm := range 2 {
		for _, e := range t.applied[setSRPorts[fm]] {
			a := keyAddr(fm, e.Key)
			ports[a] = append(ports[a], e)
		}
		for _, e := range t.applied[setSRAllow[fm]] {
			a := keyAddr(fm, e.Key)
			allow[a] = append(allow[a], e)
		}
	}
	t.held = make(map[netip.Addr]string, len(ports))
	for a, p := range ports {
		t.held[a] = fingerprint(p, allow[a])
	}
}

// Holds reports whether the kernel filters v as wanted now: exactly v's
// elements, nothing more for its address.
func (f Filter) Holds(v srcrange.VIP) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	h, ok := f.held[v.Addr]
	return ok && h == f.built(v).fp
}

// Dropped reads the packets each VIP's ports have dropped from the ports
// sets' element counters. Totals only grow: an element's last reading is
// kept when the element goes (its ranges or ports changed).
func (f Filter) Dropped(ctx context.Context) (map[netip.Addr]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := map[netip.Addr]map[string]uint64{}
	f.mu.Lock()
	for fm := range 2 {
		n := setSRPorts[fm]
		if len(f.applied[n]) == 0 {
			continue
		}
		var els []nftables.SetElement
		err := f.call(func() (err error) { els, err = f.conn.GetSetElements(f.sets[n]); return err })
		if err != nil {
			f.mu.Unlock()
			return nil, fmt.Errorf("read source-range counters (set %s): %w", n, err)
		}
		for _, e := range els {
			a := keyAddr(fm, e.Key)
			if now[a] == nil {
				now[a] = map[string]uint64{}
			}
			var c uint64
			if e.Counter != nil {
				c = e.Counter.Packets
			}
			now[a][string(e.Key)] = c
		}
	}
	f.mu.Unlock()
	f.dropsMu.Lock()
	defer f.dropsMu.Unlock()
	res := map[netip.Addr]uint64{}
	for a, d := range f.drops {
		if _, ok := now[a]; !ok {
			for _, c := range d.last {
				d.base += c
			}
			d.last = map[string]uint64{}
		}
	}
	for a, cur := range now {
		d := f.drops[a]
		if d == nil {
			d = &dropCount{last: map[string]uint64{}}
			f.drops[a] = d
		}
		for k, c := range d.last {
			if nc, ok := cur[k]; !ok || nc < c {
				d.base += c // the element went, or was made again
			}
		}
		d.last = cur
		total := d.base
		for _, c := range cur {
			total += c
		}
		res[a] = total
	}
	return res, nil
}
