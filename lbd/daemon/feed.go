package daemon

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
)

// changeFeed is what the reconcile loop knows from the FSM's change feed:
// the services changed since the last pass, and the services this member
// owns (their count and VIPs), kept up to date from the same changes, so an
// iteration costs in proportion to what changed rather than to the number
// of services.
type changeFeed struct {
	cur fsm.Cursor
	// full: the next pass must be a full one (the start, or the feed could
	// not say what changed: behind its history, or a snapshot restore).
	full     bool
	lastFull time.Time
	pending  map[dataplane.ServiceKey]*edgelbv1.VirtualService
	owned    map[fsm.Key]string // this member's services → their VIP
	vipRefs  map[string]int     // those VIPs → how many of its services
	// vipsDirty: the set of owned VIPs changed since it was last published.
	vipsDirty bool
	lastOwner string
	// sorted: the owned VIPs, sorted, as last published; nil when they
	// must be sorted afresh (the start, a full pass). added and removed:
	// the VIPs that joined or left the set since, so a commit that adds one
	// VIP merges it in rather than sorting every owned VIP again.
	sorted         []string
	added, removed map[string]struct{}
}

func newChangeFeed() *changeFeed {
	return &changeFeed{full: true, pending: map[dataplane.ServiceKey]*edgelbv1.VirtualService{},
		owned: map[fsm.Key]string{}, vipRefs: map[string]int{},
		added: map[string]struct{}{}, removed: map[string]struct{}{}}
}

// follow collects what changed in f since the last look.
func (c *changeFeed) follow(f *fsm.FSM, self string) {
	if c.full {
		return // the full pass reads everything
	}
	ch, now, ok := f.ChangesSince(c.cur)
	if !ok {
		c.full = true
		return
	}
	c.cur = now
	if len(ch.Services) == 0 {
		return
	}
	f.Lookup(ch.Services, func(k fsm.Key, vs *edgelbv1.VirtualService) {
		c.pending[dataplane.ServiceKey{Tenant: k.Tenant, Name: k.Name}] = vs
		c.setOwned(k, vs, self)
	})
}

// resync returns the whole state for a full pass, from where the feed
// continues (the cursor is taken first: a change landing in between is
// reported again, which is harmless).
func (c *changeFeed) resync(f *fsm.FSM, self string) []*edgelbv1.VirtualService {
	c.cur = f.Cursor()
	all, _ := f.All()
	c.full, c.lastFull = false, time.Now()
	clear(c.pending)
	c.ownedFrom(all, self)
	return all
}

// take returns the changes collected since the last pass.
func (c *changeFeed) take() map[dataplane.ServiceKey]*edgelbv1.VirtualService {
	p := c.pending
	c.pending = make(map[dataplane.ServiceKey]*edgelbv1.VirtualService, len(p))
	return p
}

func (c *changeFeed) setOwned(k fsm.Key, vs *edgelbv1.VirtualService, self string) {
	if vip, ok := c.owned[k]; ok {
		delete(c.owned, k)
		if c.vipRefs[vip]--; c.vipRefs[vip] <= 0 {
			delete(c.vipRefs, vip)
			c.vipsDirty = true
			if _, ok := c.added[vip]; ok {
				delete(c.added, vip)
			} else {
				c.removed[vip] = struct{}{}
			}
		}
	}
	if vs != nil && vs.Owner == self {
		c.owned[k] = vs.Vip
		if c.vipRefs[vs.Vip]++; c.vipRefs[vs.Vip] == 1 {
			c.vipsDirty = true
			if _, ok := c.removed[vs.Vip]; ok {
				delete(c.removed, vs.Vip)
			} else {
				c.added[vs.Vip] = struct{}{}
			}
		}
	}
}

// ownedFrom rebuilds the owned services from all.
func (c *changeFeed) ownedFrom(all []*edgelbv1.VirtualService, self string) {
	clear(c.owned)
	clear(c.vipRefs)
	for _, vs := range all {
		c.setOwned(fsm.KeyOf(vs), vs, self)
	}
	c.vipsDirty = true
	c.sorted = nil // sorted afresh from vipRefs
}

// vips returns the VIPs served as owner ("" when fenced: none), and false
// when they are as last returned.
func (c *changeFeed) vips(owner string) ([]string, bool) {
	if !c.vipsDirty && owner == c.lastOwner {
		return nil, false
	}
	c.vipsDirty, c.lastOwner = false, owner
	c.sortedVIPs()
	if owner == "" {
		return []string{}, true
	}
	return c.sorted, true
}

// sortedVIPs brings c.sorted up to date with vipRefs: a new slice (the
// published one is shared, never modified), merged from the last one and
// the changes since, in proportion to the owned VIPs' count without the
// comparisons of a sort.
func (c *changeFeed) sortedVIPs() {
	if c.sorted == nil {
		c.sorted = slices.Sorted(maps.Keys(c.vipRefs))
	} else if len(c.added) > 0 || len(c.removed) > 0 {
		add := slices.Sorted(maps.Keys(c.added))
		out := make([]string, 0, len(c.sorted)+len(add))
		for _, v := range c.sorted {
			for len(add) > 0 && add[0] < v {
				out, add = append(out, add[0]), add[1:]
			}
			if _, gone := c.removed[v]; !gone {
				out = append(out, v)
			}
		}
		c.sorted = append(out, add...)
	}
	clear(c.added)
	clear(c.removed)
}

// served is how many VIPs and services this member serves as owner.
func (c *changeFeed) served(owner string) (vips, services int) {
	if owner == "" {
		return 0, 0
	}
	return len(c.vipRefs), len(c.owned)
}

// changedReconciler is a data plane that plans only the services that
// changed (lbd/dataplane's ReconcileChanged); changed maps each to its
// current object, nil when deleted.
type changedReconciler interface {
	ReconcileChanged(ctx context.Context, changed map[dataplane.ServiceKey]*edgelbv1.VirtualService, owner string) error
}

// changedReconcilerOf returns dp's incremental side, seen through the
// metrics wrapper; nil when dp plans only from the whole state (test fakes).
func changedReconcilerOf(dp DataPlane) changedReconciler {
	if i, ok := dp.(*instrumentedDataPlane); ok {
		if _, ok := i.DataPlane.(changedReconciler); !ok {
			return nil
		}
		return i
	}
	c, _ := dp.(changedReconciler)
	return c
}
