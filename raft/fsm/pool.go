package fsm

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/ipam"
)

// checkPoolPlace refuses pool p (parsed) when it shares addresses with
// another pool, or holds an address a member reported as its own or as its
// gateway and the pool does not allow that.
func (a *applier) checkPoolPlace(p *edgelbv1.AddressPool, parsed *ipam.Pool) *Result {
	st := a.st()
	for _, n := range st.sortedPoolNames() {
		if n != p.Name && st.parsed[n].Overlaps(parsed) {
			return fail(codes.FailedPrecondition, "address pool %s overlaps pool %s; pools must not share addresses", p.Name, n)
		}
	}
	if p.AllowHostAddresses {
		return nil
	}
	if c, ok := firstHostConflict(parsed, st.sortedMembers()); ok {
		return failInfo(codes.FailedPrecondition, errinfo.HostAddressInPool,
			map[string]string{"pool": p.Name, "address": c.addr.String(), "member": c.member, "kind": c.kind},
			"address pool %s: range %s holds %s, the %s of member %s; a VIP there would be announced over the host's own traffic. Leave the address out of the range, or, if it is meant to be a VIP, pass --allow-host-addresses (allow_host_addresses)",
			p.Name, rangeText(c.rng), c.addr, c.kind, c.member)
	}
	return nil
}

// hostConflict is a member's address inside a pool's range.
type hostConflict struct {
	member, kind string
	addr         netip.Addr
	rng          ipam.Range
}

// hostConflicts lists the addresses of members that pool p holds, in member
// order. Addresses a member reported that do not parse are skipped: the API
// validated them, and a refusal here could not be fixed by the caller.
func hostConflicts(p *ipam.Pool, members []*edgelbv1.Member) []hostConflict {
	var out []hostConflict
	for _, m := range members {
		check := func(list []string, kind string) {
			for _, s := range list {
				ad, err := netip.ParseAddr(s)
				if err != nil {
					continue
				}
				for _, r := range p.Ranges {
					if r.Contains(ad) {
						out = append(out, hostConflict{member: m.Id, kind: kind, addr: ad.Unmap(), rng: r})
					}
				}
			}
		}
		iface := "data interface address"
		if m.DataInterface != "" {
			iface = "address of data interface " + m.DataInterface
		}
		check(m.InterfaceAddresses, iface)
		check(m.Gateways, "default gateway")
	}
	return out
}

func firstHostConflict(p *ipam.Pool, members []*edgelbv1.Member) (hostConflict, bool) {
	cs := hostConflicts(p, members)
	if len(cs) == 0 {
		return hostConflict{}, false
	}
	return cs[0], true
}

// updatePool changes a pool's ranges, tenants and flags. It refuses, and
// changes nothing, while a VIP allocated from the pool would end up outside
// it or owned by a tenant it no longer admits: a VIP must always be in a
// pool open to its tenant, or deleting and re-creating it would fail.
func (a *applier) updatePool(c *raftv1.UpdateAddressPool) *Result {
	st := a.st()
	old, ok := st.pools[c.Name]
	if !ok {
		return fail(codes.NotFound, "address pool %s not found (lbctl pool list)", c.Name)
	}
	if c.ExpectedGeneration != 0 && c.ExpectedGeneration != old.Generation {
		return failInfo(codes.Aborted, errinfo.PoolGenerationMismatch,
			map[string]string{"pool": old.Name, "generation": fmt.Sprint(old.Generation)},
			"address pool %s is at generation %d, not %d: it changed since you read it; read it again and retry", old.Name, old.Generation, c.ExpectedGeneration)
	}
	p := clonePool(old)
	oldParsed := st.parsed[old.Name]
	drop := map[int]bool{}
	for _, s := range c.RemoveRanges {
		r, err := ipam.ParseRange(s)
		if err != nil {
			return fail(codes.InvalidArgument, "remove_ranges: %v", err)
		}
		i := slices.IndexFunc(oldParsed.Ranges, func(o ipam.Range) bool { return o.First == r.First && o.Last == r.Last })
		if i < 0 {
			return failInfo(codes.NotFound, errinfo.PoolRangeNotFound, map[string]string{"pool": old.Name, "range": s},
				"address pool %s has no range %s (its ranges: %s); name a range as lbctl pool get %s lists it",
				old.Name, s, strings.Join(old.Ranges, ", "), old.Name)
		}
		drop[i] = true
	}
	p.Ranges = nil
	for i, s := range old.Ranges {
		if !drop[i] {
			p.Ranges = append(p.Ranges, s)
		}
	}
	p.Ranges = append(p.Ranges, c.AddRanges...)
	if c.SetTenants {
		p.Tenants = slices.Clone(c.Tenants)
	}
	if c.Manual != nil {
		p.Manual = *c.Manual
	}
	if c.AllowHostAddresses != nil {
		p.AllowHostAddresses = *c.AllowHostAddresses
	}
	// With no range left every VIP of the pool is outside: say which first.
	var parsed *ipam.Pool
	if len(p.Ranges) > 0 {
		var err error
		if parsed, err = ipam.ParsePool(p.Ranges); err != nil {
			return fail(codes.InvalidArgument, "pool %s: %v", p.Name, err)
		}
	}
	var outside, closed []string
	for _, vs := range st.sortedServices() {
		if vs.Pool != old.Name {
			continue
		}
		if parsed == nil || !parsed.Contains(netip.MustParseAddr(vs.Vip)) {
			outside = append(outside, vs.Vip+" ("+KeyOf(vs).String()+")")
		} else if !PoolOpenTo(p, vs.Tenant) {
			closed = append(closed, vs.Vip+" ("+KeyOf(vs).String()+")")
		}
	}
	if len(outside) > 0 {
		return failInfo(codes.FailedPrecondition, errinfo.PoolRangeInUse,
			map[string]string{"pool": old.Name, "vips": strings.Join(vipsOnly(outside), ",")},
			"address pool %s: %d allocated VIPs would fall outside the pool: %s; delete those virtual services or move them to another address first, then remove the range",
			old.Name, len(outside), listSome(outside))
	}
	if len(closed) > 0 {
		return failInfo(codes.FailedPrecondition, errinfo.PoolTenantInUse,
			map[string]string{"pool": old.Name, "vips": strings.Join(vipsOnly(closed), ",")},
			"address pool %s: %d allocated VIPs belong to tenants the pool would no longer admit: %s; keep their tenants in --tenants, or delete those virtual services first",
			old.Name, len(closed), listSome(closed))
	}
	if parsed == nil {
		return failInfo(codes.FailedPrecondition, errinfo.PoolWouldBeEmpty, map[string]string{"pool": old.Name},
			"address pool %s would have no range left; add one (--add-range) or delete the pool (lbctl pool delete %s)", old.Name, old.Name)
	}
	if r := a.checkPoolPlace(p, parsed); r != nil {
		return r
	}
	p.Generation = old.Generation + 1
	p.UpdateTime = a.time
	st.putParsedPool(p, parsed)
	a.emit(put, "updated", p)
	return &Result{Pool: clonePool(p)}
}

// listSome joins up to 5 items and counts the rest: enough to act on,
// short enough for a terminal.
func listSome(items []string) string {
	if len(items) <= 5 {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:5], ", "), len(items)-5)
}

func vipsOnly(items []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range items {
		v, _, _ := strings.Cut(s, " ")
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// HostConflicts describes, for member id, every address it reported that a
// pool without allow_host_addresses holds (a member registered after the
// pool was created: creation could not check it). Empty when there is none.
func (f *FSM) HostConflicts(id string) []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	m, ok := f.st.members[id]
	if !ok {
		return nil
	}
	var out []string
	for _, name := range f.st.sortedPoolNames() {
		if f.st.pools[name].AllowHostAddresses {
			continue
		}
		for _, c := range hostConflicts(f.st.parsed[name], []*edgelbv1.Member{m}) {
			out = append(out, fmt.Sprintf("address pool %s (range %s) holds %s, the %s of member %s: a VIP allocated there would be announced over it; remove the range (lbctl pool update %s --remove-range ...) or allow it (--allow-host-addresses)",
				name, rangeText(c.rng), c.addr, c.kind, c.member, name))
		}
	}
	return out
}

// rangeText is a range as an operator wrote it: its CIDR when it has one.
func rangeText(r ipam.Range) string {
	if r.Prefix.IsValid() {
		return r.Prefix.String()
	}
	return r.String()
}
