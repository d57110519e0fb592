// Package srcrange enforces the source ranges of virtual services in the
// kernel: a VIP port whose service has source ranges drops (not resets)
// every packet from a client outside them.
//
// The rules live in the filter table's INPUT hook, in chains of our own.
// IPVS takes a VIP's packets at LOCAL_IN after packet filtering (its hooks
// sit at NF_IP_PRI_NAT_SRC-1, filter at 0: "so that filtering rules can be
// applied to IPVS", ip_vs_core.c), in nat and dr mode alike, so filter INPUT
// sees every packet a client sends to a VIP and nothing else of the VIP's
// traffic: a node's reply in nat mode is addressed to the VIP only until
// conntrack undoes the SNAT in PREROUTING, and is then forwarded to the
// client, never input. The mangle or raw PREROUTING hooks would see those
// replies still addressed to VIP:port (the SNAT keeps the client's port when
// it is free) and could drop them. A packet dropped in INPUT also never
// confirms its conntrack entry, so a flood from a denied range fills no table.
//
// INPUT's first rule jumps to EDGELB-INPUT, which holds one rule per VIP with
// source ranges, jumping to that VIP's chain EDGELB-SR-<hash>. The hash is of
// the VIP's whole rule text, so a chain's name says what it holds: a change
// of ranges creates the new chain, points the VIP's jump at it and deletes
// the old one in one iptables-restore (atomic: the table is committed whole),
// every other VIP's chain and its counters stay as they are, and a restarted
// lbd knows from the names alone which VIPs the kernel already filters as
// wanted. Our chains only RETURN or DROP, never ACCEPT, so being first in
// INPUT lets nothing through that the host's own rules would stop.
package srcrange

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgelb/edgelb/lbd/proc"
)

// Chain is the chain INPUT jumps to; ChainPrefix starts each VIP's chain.
const (
	Chain       = "EDGELB-INPUT"
	ChainPrefix = "EDGELB-SR-"
)

// Port is one port of a service.
type Port struct {
	Proto string // tcp, udp, sctp
	Port  uint16
}

// Service is one virtual service with source ranges on a VIP: its ports
// accept packets only from Ranges.
type Service struct {
	Name   string // tenant/name, in the DROP rule's comment
	Ports  []Port
	Ranges []netip.Prefix
}

// VIP is an address and its services that have source ranges (services of a
// shared VIP without ranges are not listed: their ports stay open).
type VIP struct {
	Addr netip.Addr
	// Services are immutable once handed to the Filter: it remembers the
	// rules of a VIP whose service pointers are the same as last time
	// (building and hashing them every pass cost 9 ms per 1,000 VIPs).
	Services []*Service
}

// Runner runs name with args and stdin, returning its standard output (tests
// replace it).
type Runner func(ctx context.Context, name string, args []string, stdin string) ([]byte, error)

func execRunner(ctx context.Context, name string, args []string, stdin string) ([]byte, error) {
	c := proc.CommandContext(ctx, name, args...)
	if stdin != "" {
		c.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(errb.Bytes()))
	}
	return out.Bytes(), nil
}

// Filter programs the source-range chains with one iptables flavour.
type Filter struct {
	run   Runner
	cmd   [2]string // iptables and ip6tables commands, e.g. iptables-legacy
	mu    sync.Mutex
	known [2]bool // kernel state read for the family (and not forgotten since)
	once  [2]bool // read at least once
	// repairing is set by Forget until the next Set: a family never read is
	// read then even with nothing to filter.
	repairing bool
	jump      [2]bool               // INPUT jumps to Chain
	active    map[netip.Addr]string // VIP → the chain its dispatch rule jumps to
	memo      map[netip.Addr]memo   // each VIP's rules as last built

	// Dropped keeps apart from mu, which Set holds while iptables-restore
	// runs (seconds on an emulated host): a scrape must not wait for it.
	filtered atomic.Uint32 // bit fm set: family fm has VIPs filtered
	dropsMu  sync.Mutex
	drops    map[netip.Addr]dropCount
}

// noteFiltered publishes which families have VIPs filtered; the caller holds mu.
func (f *Filter) noteFiltered() {
	var bits uint32
	for a := range f.active {
		bits |= 1 << fam(a)
	}
	f.filtered.Store(bits)
}

type memo struct {
	svcs        []*Service
	chain, text string
}

// rules is Rules(v), remembered while v's services are the same objects.
// The caller holds mu.
func (f *Filter) rules(v VIP) (chain, text string) {
	if m, ok := f.memo[v.Addr]; ok && slices.Equal(m.svcs, v.Services) {
		return m.chain, m.text
	}
	chain, text = Rules(v)
	if f.memo == nil {
		f.memo = map[netip.Addr]memo{}
	}
	f.memo[v.Addr] = memo{svcs: slices.Clone(v.Services), chain: chain, text: text}
	return chain, text
}

type dropCount struct {
	chain      string
	last, base uint64
}

// Open reads what the IPv4 filter table holds of ours (left by an earlier
// run) with cmd4, which proves the flavour works; cmd6 is for IPv6
// (iptables-legacy and ip6tables-legacy, say). The IPv6 table is read by the
// first Set that has IPv6 VIPs to filter, or else by the first repair: each
// process costs up to seconds on an emulated host, and lbd's start waits for
// this one. A host without IPv6 tables can still filter IPv4 VIPs; Set
// reports it once an IPv6 VIP needs them.
func Open(ctx context.Context, cmd4, cmd6 string, run Runner) (*Filter, error) {
	if run == nil {
		run = execRunner
	}
	f := &Filter{run: run, cmd: [2]string{cmd4, cmd6}, active: map[netip.Addr]string{}, drops: map[netip.Addr]dropCount{}}
	if err := f.read(ctx, 0); err != nil {
		return nil, err
	}
	return f, nil
}

// Backend names the flavour in use.
func (f *Filter) Backend() string { return f.cmd[0] }

// read lists family fam's filter table and takes from it the jump from INPUT
// and the VIP chains the dispatch chain points at. The caller holds mu or
// has the only reference.
func (f *Filter) read(ctx context.Context, fam int) error {
	out, err := f.run(ctx, f.cmd[fam]+"-save", []string{"-t", "filter"}, "")
	if err != nil {
		return fmt.Errorf("read the filter table: %w", err)
	}
	jump, active := parse(out, nil)
	for a := range f.active {
		if a.Is6() == (fam == 1) {
			delete(f.active, a)
		}
	}
	for a, ch := range active {
		if a.Is6() == (fam == 1) {
			f.active[a] = ch
		}
	}
	f.jump[fam], f.known[fam], f.once[fam] = jump, true, true
	f.noteFiltered()
	return nil
}

// has reports whether any VIP of family fm is filtered; the caller holds mu.
func (f *Filter) has(fm int) bool {
	for a := range f.active {
		if fam(a) == fm {
			return true
		}
	}
	return false
}

// parse reads an iptables-save listing of the filter table: whether INPUT
// jumps to Chain, which chain each VIP's dispatch rule points at (only chains
// the listing declares), and, given counts, the packets each VIP chain's DROP
// rules counted (a listing with -c).
func parse(listing []byte, counts map[string]uint64) (jump bool, active map[netip.Addr]string) {
	active = map[netip.Addr]string{}
	declared := map[string]bool{}
	for l := range strings.Lines(string(listing)) {
		l = strings.TrimSpace(l)
		var n uint64
		if strings.HasPrefix(l, "[") { // [packets:bytes] with -c
			end := strings.IndexByte(l, ']')
			if end < 0 {
				continue
			}
			n, _ = strconv.ParseUint(strings.SplitN(l[1:end], ":", 2)[0], 10, 64)
			l = strings.TrimSpace(l[end+1:])
		}
		if strings.HasPrefix(l, ":"+ChainPrefix) {
			declared[strings.Fields(l[1:])[0]] = true
			continue
		}
		fl := strings.Fields(l)
		if len(fl) < 4 || fl[0] != "-A" {
			continue
		}
		target := fl[len(fl)-1]
		if fl[len(fl)-2] != "-j" {
			continue
		}
		switch {
		case fl[1] == "INPUT" && target == Chain:
			jump = true
		case fl[1] == Chain && strings.HasPrefix(target, ChainPrefix):
			if i := slices.Index(fl, "-d"); i > 0 && i+1 < len(fl) {
				if p, err := netip.ParsePrefix(fl[i+1]); err == nil {
					active[p.Addr()] = target
				}
			}
		case strings.HasPrefix(fl[1], ChainPrefix) && target == "DROP" && counts != nil:
			counts[fl[1]] += n
		}
	}
	for a, ch := range active {
		if !declared[ch] {
			delete(active, a)
		}
	}
	return jump, active
}

// Rules is the text of v's chain (named by its hash): per service and
// protocol, a RETURN for each range on the service's ports, then a DROP of
// the rest on those ports. Ports of other services on the VIP match neither.
func Rules(v VIP) (chain, rules string) {
	var b strings.Builder
	svcs := slices.Clone(v.Services)
	slices.SortFunc(svcs, func(x, y *Service) int { return strings.Compare(x.Name, y.Name) })
	for _, s := range svcs {
		byProto := map[string][]uint16{}
		for _, p := range s.Ports {
			byProto[p.Proto] = append(byProto[p.Proto], p.Port)
		}
		protos := make([]string, 0, len(byProto))
		for p := range byProto {
			protos = append(protos, p)
		}
		slices.Sort(protos)
		ranges := slices.Clone(s.Ranges)
		slices.SortFunc(ranges, func(x, y netip.Prefix) int {
			if c := x.Addr().Compare(y.Addr()); c != 0 {
				return c
			}
			return x.Bits() - y.Bits()
		})
		ranges = slices.Compact(ranges)
		for _, proto := range protos {
			ports := byProto[proto]
			slices.Sort(ports)
			ports = slices.Compact(ports)
			for c := range slices.Chunk(ports, 15) { // multiport's limit
				list := make([]string, len(c))
				for i, p := range c {
					list[i] = strconv.Itoa(int(p))
				}
				match := fmt.Sprintf("-p %s -m multiport --dports %s", proto, strings.Join(list, ","))
				for _, r := range ranges {
					fmt.Fprintf(&b, "-A @ -s %s %s -j RETURN\n", r, match)
				}
				fmt.Fprintf(&b, "-A @ %s -m comment --comment %s -j DROP\n", match, comment(s.Name))
			}
		}
	}
	text := v.Addr.String() + "\n" + b.String()
	sum := sha256.Sum256([]byte(text))
	chain = ChainPrefix + strings.ToUpper(hex.EncodeToString(sum[:8]))
	return chain, strings.ReplaceAll(b.String(), "-A @ ", "-A "+chain+" ")
}

// comment quotes a service name for a rule's comment; the FSM's rules keep
// names to DNS syntax, and anything else is replaced rather than trusted
// inside iptables-restore's input.
func comment(name string) string {
	b := []byte("edgelb:" + name)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._/-:", c) >= 0) {
			b[i] = '_'
		}
	}
	if len(b) > 200 {
		b = b[:200]
	}
	return `"` + string(b) + `"`
}

// Holds reports whether the kernel filters v as wanted now: its chain, named
// by its rules, is the one the VIP's dispatch rule jumps to, and INPUT jumps
// to the dispatch chain. An address with source ranges goes up only then.
func (f *Filter) Holds(v VIP) bool {
	fam := fam(v.Addr)
	f.mu.Lock()
	defer f.mu.Unlock()
	chain, _ := f.rules(v)
	return f.jump[fam] && f.active[v.Addr] == chain
}

func fam(a netip.Addr) int {
	if a.Is6() {
		return 1
	}
	return 0
}

// Set makes the kernel filter exactly vips. Per family, one iptables-restore
// rewrites the dispatch chain (jumps only), creates the chains of VIPs whose
// rules are new or changed and deletes those no longer pointed at; a family
// where nothing changed runs no process. Chains of unchanged VIPs, and their
// counters, are not touched.
func (f *Filter) Set(ctx context.Context, vips []VIP) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for fm := range 2 {
		want := make(map[netip.Addr]string, len(vips))
		for _, v := range vips {
			if fam(v.Addr) != fm || len(v.Services) == 0 {
				continue
			}
			want[v.Addr], _ = f.rules(v) // the text stays in the memo for apply
		}
		if !f.known[fm] {
			if len(want) == 0 && !f.has(fm) && (f.once[fm] || !f.repairing) {
				// Nothing to filter and nothing of ours seen: no process
				// on hosts without ranges. A family never read is read
				// once by the first repair, which removes what a previous
				// run left for VIPs whose ranges went while lbd was down.
				continue
			}
			if err := f.read(ctx, fm); err != nil {
				if len(want) == 0 {
					// A host without (say) IPv6 tables that has nothing
					// to filter there: not an error, and not retried.
					f.once[fm] = true
					continue
				}
				errs = append(errs, err)
				continue
			}
		}
		if f.same(fm, want) && (f.jump[fm] || len(want) == 0) {
			continue // nothing changed, or nothing to filter (no jump needed)
		}
		have := map[netip.Addr]string{}
		for a, ch := range f.active {
			if fam(a) == fm {
				have[a] = ch
			}
		}
		if err := f.apply(ctx, fm, want, have); err != nil {
			// What the kernel holds is unknown now: read it again next time.
			f.known[fm] = false
			errs = append(errs, err)
			continue
		}
		for a := range have {
			delete(f.active, a)
		}
		for a, ch := range want {
			f.active[a] = ch
		}
		f.jump[fm] = true
		f.noteFiltered()
	}
	f.repairing = false
	if len(f.memo) > len(vips) {
		listed := make(map[netip.Addr]bool, len(vips))
		for _, v := range vips {
			listed[v.Addr] = true
		}
		for a := range f.memo {
			if !listed[a] {
				delete(f.memo, a)
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("source-range rules: %w", errors.Join(errs...))
	}
	return nil
}

func (f *Filter) apply(ctx context.Context, fm int, want, have map[netip.Addr]string) error {
	kept := map[string]bool{}
	for _, ch := range have {
		kept[ch] = true
	}
	var b strings.Builder
	b.WriteString("*filter\n:" + Chain + " - [0:0]\n")
	addrs := make([]netip.Addr, 0, len(want))
	for a := range want {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	created := map[string]bool{}
	for _, a := range addrs {
		ch := want[a]
		if kept[ch] || created[ch] {
			continue
		}
		created[ch] = true
		b.WriteString(":" + ch + " - [0:0]\n" + f.memo[a].text)
	}
	for _, a := range addrs {
		fmt.Fprintf(&b, "-A %s -d %s -j %s\n", Chain, netip.PrefixFrom(a, a.BitLen()), want[a])
	}
	wanted := map[string]bool{}
	for _, ch := range want {
		wanted[ch] = true
	}
	gone := []string{}
	for _, ch := range have {
		if !wanted[ch] && !slices.Contains(gone, ch) {
			gone = append(gone, ch)
		}
	}
	slices.Sort(gone)
	for _, ch := range gone {
		// The dispatch chain was flushed above, so nothing refers to it.
		b.WriteString("-F " + ch + "\n-X " + ch + "\n")
	}
	if !f.jump[fm] {
		// First in INPUT: a host rule that ACCEPTs the port must not come
		// before the filter.
		b.WriteString("-I INPUT 1 -j " + Chain + "\n")
	}
	b.WriteString("COMMIT\n")
	if _, err := f.run(ctx, f.cmd[fm]+"-restore", []string{"--noflush"}, b.String()); err != nil {
		return err
	}
	return nil
}

// Forget makes the next Set read the kernel again before it compares (the
// periodic repair, in case someone flushed our chains).
func (f *Filter) Forget() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.known = [2]bool{}
	f.repairing = true
}

// Dropped reads the packets each VIP's DROP rules have counted. The totals
// only grow: when a VIP's chain is replaced (its ranges changed) the old
// chain's last reading is carried over, so only drops between that reading
// and the change are lost. A family with no VIP filtered runs no process.
func (f *Filter) Dropped(ctx context.Context) (map[netip.Addr]uint64, error) {
	bits := f.filtered.Load()
	counts := map[string]uint64{}
	active := map[netip.Addr]string{}
	for fm := range 2 {
		if bits&(1<<fm) == 0 {
			continue
		}
		out, err := f.run(ctx, f.cmd[fm]+"-save", []string{"-c", "-t", "filter"}, "")
		if err != nil {
			return nil, fmt.Errorf("read source-range counters: %w", err)
		}
		_, act := parse(out, counts)
		for a, ch := range act {
			if fam(a) == fm {
				active[a] = ch
			}
		}
	}
	f.dropsMu.Lock()
	defer f.dropsMu.Unlock()
	res := map[netip.Addr]uint64{}
	for a, ch := range active {
		d := f.drops[a]
		n := counts[ch]
		if d.chain != ch {
			d.base += d.last
			d.chain, d.last = ch, 0
		}
		if n < d.last { // rewritten under the same name (a repair)
			d.base += d.last
		}
		d.last = n
		f.drops[a] = d
		res[a] = d.base + d.last
	}
	// A VIP no longer filtered drops out of the result but keeps its total
	// here, so a series that comes back continues rather than restarts.
	return res, nil
}

// same reports whether the VIPs of family fm the kernel filters are exactly
// want, with the same chains; the caller holds mu.
func (f *Filter) same(fm int, want map[netip.Addr]string) bool {
	n := 0
	for a, ch := range f.active {
		if fam(a) != fm {
			continue
		}
		if want[a] != ch {
			return false
		}
		n++
	}
	return n == len(want)
}

// Enforcer is the source-range filter as the data plane uses it: Filter
// (iptables) or the nftables rule engine (package nftrules).
type Enforcer interface {
	Set(ctx context.Context, vips []VIP) error
	// Holds reports whether the kernel filters v as wanted now.
	Holds(v VIP) bool
	// Forget makes the next Set read the kernel before it compares.
	Forget()
	Dropped(ctx context.Context) (map[netip.Addr]uint64, error)
	Backend() string
}
