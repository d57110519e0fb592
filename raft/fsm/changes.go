package fsm

import (
	"net/netip"
	"slices"
	"sort"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Cursor is a consumer's place in the change feed: the revision it has
// seen and the snapshot restores it has seen. Take it with the state it
// describes (Cursor, or the one ChangesSince returns) before reading that
// state, so a change landing in between is reported again rather than lost.
type Cursor struct {
	Revision uint64
	restores uint64
}

// Changes is what changed after a cursor: the services created, changed or
// deleted (look each up: absent now means deleted), and whether members or
// address pools changed, which can affect every service.
type Changes struct {
	Services map[Key]struct{}
	// VIPs are the addresses of those services, before and after the
	// changes (a deleted or moved service's old address too).
	VIPs   map[netip.Addr]struct{}
	Others bool
}

// vipChange is the VIPs one revision changed; all: every one (a restore).
type vipChange struct {
	rev  uint64
	vips []netip.Addr
	all  bool
}

// Cursor returns the current place in the change feed.
func (f *FSM) Cursor() Cursor {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return Cursor{Revision: f.revision, restores: f.restores}
}

// ChangesSince returns what changed after c and the cursor that covers it.
// ok is false when the feed cannot say — c is older than the retained
// history (maxHistory events), or a raft snapshot was restored since — and
// the consumer must then resynchronise from the whole state (read after
// this call, so it is at least as new as the cursor returned).
//
// It is built on the Watch history, so it holds the same retained window:
// a consumer more than a few thousand events behind resynchronises.
func (f *FSM) ChangesSince(c Cursor) (ch Changes, now Cursor, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	now = Cursor{Revision: f.revision, restores: f.restores}
	if c.restores != f.restores || c.Revision < f.floor {
		return Changes{}, now, false
	}
	if c.Revision >= f.revision {
		return Changes{}, now, true
	}
	i := sort.Search(len(f.history), func(i int) bool { return f.history[i].Revision > c.Revision })
	ch.Services = make(map[Key]struct{}, len(f.history)-i)
	for _, e := range f.history[i:] {
		switch o := e.Object.(type) {
		case *edgelbv1.Event_VirtualService:
			ch.Services[KeyOf(o.VirtualService)] = struct{}{}
		default:
			ch.Others = true
		}
	}
	ch.VIPs = map[netip.Addr]struct{}{}
	j := sort.Search(len(f.vipLog), func(j int) bool { return f.vipLog[j].rev > c.Revision })
	for _, v := range f.vipLog[j:] {
		ch.Others = ch.Others || v.all
		for _, a := range v.vips {
			ch.VIPs[a] = struct{}{}
		}
	}
	return ch, now, true
}

// Lookup calls fn with the current object of each key (nil for a deleted
// service), under one read lock, without copying: the objects are
// immutable and must never be modified. fn must not call back into the FSM.
func (f *FSM) Lookup(keys map[Key]struct{}, fn func(Key, *edgelbv1.VirtualService)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for k := range keys {
		fn(k, f.st.services[k])
	}
}

// Groups returns every service at the addresses vips (a changed set's
// VIPs), ordered by tenant and name as List is, and for
// each owner how many addresses it owns besides those: what the leader's
// assigner needs to plan the changed addresses only (ownership.PlanChanged).
// The services are shared: never modify them.
func (f *FSM) Groups(vips map[netip.Addr]struct{}) (vss []*edgelbv1.VirtualService, others map[string]int) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var ks []Key
	for a := range vips {
		ks = append(ks, f.st.byVIP[a]...)
	}
	slices.SortFunc(ks, compareKeys)
	vss = make([]*edgelbv1.VirtualService, len(ks))
	for i, k := range ks {
		vss[i] = f.st.services[k]
	}
	others = make(map[string]int, len(f.st.ownerVIPs))
	for owner, m := range f.st.ownerVIPs {
		n := len(m)
		for a := range vips {
			if _, ok := m[a]; ok {
				n--
			}
		}
		others[owner] = n
	}
	return vss, others
}
