package fsm

import (
	"net/netip"

	"google.golang.org/grpc/codes"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	"github.com/edgelb/edgelb/raft/rules"
)

// Reasons recorded with the events of a restore (they show in Watch).
const (
	ReasonRestored         = "restored from snapshot"
	ReasonRemovedByRestore = "not in restored snapshot"
)

// restoreState replaces the virtual services and address pools with a
// snapshot's (lbctl snapshot restore). It is all or nothing: a snapshot that
// fails any check changes nothing.
//
// What is taken from the snapshot and what is kept:
//   - services and pools: the snapshot's;
//   - the member table: the running cluster's (members are hosts, which a
//     backup does not bring back);
//   - a service's owner: its current owner when it exists now and that owner
//     is a member (a restore does not move VIPs that need not move), else the
//     snapshot's owner when that is a member, else none (the leader's assigner
//     gives it one);
//   - backend health: the current verdict for the same backend of the same
//     service, else none (an old verdict from the backup would be a lie that
//     the owner, publishing only transitions, might never correct);
//   - generation: above both the current and the snapshot's, so a client
//     holding a generation read before the restore cannot update blindly.
//
// Watchers see a DELETE for everything that goes and a PUT for everything
// restored, all at this entry's revision.
func (a *applier) restoreState(c *raftv1.RestoreState) *Result {
	snap := c.GetSnapshot()
	if snap == nil {
		return fail(codes.InvalidArgument, "restore: the command carries no snapshot")
	}
	if snap.Version > snapshotVersion {
		return fail(codes.FailedPrecondition, "restore: snapshot version %d is newer than this member understands (%d); upgrade lbd first", snap.Version, snapshotVersion)
	}
	old := a.st()
	st := newState()
	for _, p := range snap.AddressPools {
		if p == nil || p.Name == "" {
			return fail(codes.InvalidArgument, "restore: the snapshot holds an address pool without a name")
		}
		if err := rules.StoredPool(p, rules.Legacy); err != nil {
			return refused("restore: address pool "+p.Name, err)
		}
		if _, dup := st.pools[p.Name]; dup {
			return fail(codes.InvalidArgument, "restore: the snapshot holds address pool %s twice", p.Name)
		}
		if err := st.putPool(clonePool(p)); err != nil {
			return fail(codes.InvalidArgument, "restore: address pool %s: %v", p.Name, err)
		}
	}
	names := st.sortedPoolNames()
	for i, n := range names {
		for _, m := range names[i+1:] {
			if st.parsed[n].Overlaps(st.parsed[m]) {
				return fail(codes.FailedPrecondition, "restore: address pools %s and %s overlap; pools must not share addresses", n, m)
			}
		}
	}
	// The services go through the same pool and sharing checks as a create,
	// against the state being built: a backup may be old, hand-edited or from
	// another cluster, and a state no sequence of commands could reach would
	// mislead allocation and pool deletion later.
	scratch := &applier{f: &FSM{log: a.f.log, st: st}, idx: a.idx, time: a.time}
	for _, in := range snap.VirtualServices {
		if in == nil || in.Name == "" {
			return fail(codes.InvalidArgument, "restore: the snapshot holds a virtual service without a name")
		}
		k := KeyOf(in)
		if _, err := netip.ParseAddr(in.Vip); err != nil {
			return fail(codes.InvalidArgument, "restore: virtual service %s has VIP %q, which is not an IP address", k, in.Vip)
		}
		if _, dup := st.services[k]; dup {
			return fail(codes.InvalidArgument, "restore: the snapshot holds virtual service %s twice", k)
		}
		for _, b := range in.Backends {
			if b == nil {
				return fail(codes.InvalidArgument, "restore: virtual service %s has an empty backend", k)
			}
			if _, err := netip.ParseAddr(b.Address); err != nil {
				return fail(codes.InvalidArgument, "restore: virtual service %s has backend %q, which is not an IP address", k, b.Address)
			}
		}
		// A backup's services were accepted once, maybe before today's rules
		// (Strict): they are held to the rules every release enforced, so a
		// backup of an upgraded cluster still restores, and a hand-edited one
		// stores nothing the API never accepted.
		if err := rules.Stored(in, rules.Legacy); err != nil {
			return refused("restore: virtual service "+k.String(), err)
		}
		vs := cloneVS(in)
		cur := old.services[k]
		vs.Owner = ""
		switch {
		case cur != nil && cur.Owner != "" && old.members[cur.Owner] != nil:
			vs.Owner = cur.Owner
		case in.Owner != "" && old.members[in.Owner] != nil:
			vs.Owner = in.Owner
		}
		for _, b := range vs.Backends {
			b.Health = nil
			if cur != nil {
				if j := findBackend(cur.Backends, b.Address, b.Port); j >= 0 && cur.Backends[j].Health != nil {
					b.Health = cur.Backends[j].Health // immutable once stored: sharing is safe
				}
			}
		}
		if cur != nil {
			vs.Generation = max(vs.Generation, cur.Generation) + 1
		} else {
			vs.Generation++
		}
		vs.UpdateTime = a.time
		if r := scratch.placeVIP(vs, nil); r != nil {
			return fail(r.Code, "restore: virtual service %s: %s", k, r.Message)
		}
		st.putService(vs)
	}
	// Members are the running cluster's; the map moves to the new state as is.
	st.members = old.members
	// So are the heartbeats: they say which clusters are alive now, which a
	// backup cannot know.
	st.heartbeats = old.heartbeats
	st.orphans = old.orphans

	for _, k := range old.sortedKeys() {
		if _, ok := st.services[k]; !ok {
			a.emit(del, ReasonRemovedByRestore, old.services[k])
		}
	}
	for _, n := range old.sortedPoolNames() {
		if _, ok := st.pools[n]; !ok {
			a.emit(del, ReasonRemovedByRestore, old.pools[n])
		}
	}
	for _, n := range st.sortedPoolNames() {
		a.emit(put, ReasonRestored, st.pools[n])
	}
	for _, k := range st.sortedKeys() {
		a.emit(put, ReasonRestored, st.services[k])
	}
	a.f.st = st
	a.f.log.Warn("state replaced from a snapshot", "index", a.idx, "snapshot_revision", snap.Revision,
		"services", len(st.services), "pools", len(st.pools), "requested_by", c.GetRequestedBy())
	return &Result{}
}
