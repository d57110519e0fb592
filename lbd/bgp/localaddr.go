package bgp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"github.com/edgelb/edgelb/lbd/dataplane/addr"
)

// LocalInterface is the dummy interface bgp-mode VIPs are added to, so the
// kernel accepts packets for them (IPVS sees them in LOCAL_IN) without any
// ARP/NDP announcement: the route comes from BGP. lbd owns it entirely:
// every address on it is a VIP lbd added, and a start removes them all.
const LocalInterface = "edgelb-bgp"

// LocalAddrs holds bgp VIPs on LocalInterface.
type LocalAddrs struct {
	mgr     addr.Manager
	ifindex int
	held    map[netip.Addr]bool
}

// OpenLocal creates LocalInterface if needed, brings it up and removes the
// addresses a previous run left (their routes went with that run's BGP
// sessions).
func OpenLocal() (*LocalAddrs, error) {
	idx, err := ensureDummy(LocalInterface)
	if err != nil {
		return nil, err
	}
	m, err := addr.Open()
	if err != nil {
		return nil, err
	}
	return newLocal(m, idx)
}

func newLocal(m addr.Manager, idx int) (*LocalAddrs, error) {
	l := &LocalAddrs{mgr: m, ifindex: idx, held: map[netip.Addr]bool{}}
	old, err := m.List(idx)
	if err != nil {
		return nil, fmt.Errorf("list addresses on %s: %w", LocalInterface, err)
	}
	for _, a := range old {
		if err := m.Remove(idx, a); err != nil {
			return nil, fmt.Errorf("remove stale bgp VIP %s from %s: %w", a, LocalInterface, err)
		}
	}
	return l, nil
}

func ensureDummy(name string) (int, error) {
	if ifi, err := net.InterfaceByName(name); err == nil {
		return ifi.Index, setUp(ifi.Index)
	}
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return 0, fmt.Errorf("dial rtnetlink: %w", err)
	}
	defer c.Close()
	if err := c.Link.New(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{
		Name: name, Info: &rtnetlink.LinkInfo{Kind: "dummy"},
	}}); err != nil {
		return 0, fmt.Errorf("create dummy interface %s for bgp VIPs (is the dummy module available?): %w", name, err)
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("find %s after creating it: %w", name, err)
	}
	return ifi.Index, setUp(ifi.Index)
}

func setUp(idx int) error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return fmt.Errorf("dial rtnetlink: %w", err)
	}
	defer c.Close()
	if err := c.Link.Set(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Index: uint32(idx), Flags: unix.IFF_UP, Change: unix.IFF_UP}); err != nil {
		return fmt.Errorf("bring %s up: %w", LocalInterface, err)
	}
	return nil
}

// Add adds the VIPs not held yet (before their routes are advertised).
func (l *LocalAddrs) Add(vips []netip.Addr) error {
	var errs []error
	for _, a := range vips {
		if l.held[a] {
			continue
		}
		if err := l.mgr.Add(l.ifindex, a); err != nil {
			errs = append(errs, fmt.Errorf("add bgp VIP %s to %s: %w", a, LocalInterface, err))
			continue
		}
		l.held[a] = true
	}
	return errors.Join(errs...)
}

// Keep removes every held VIP not in vips (after their routes were withdrawn).
func (l *LocalAddrs) Keep(vips []netip.Addr) error {
	keep := make(map[netip.Addr]bool, len(vips))
	for _, a := range vips {
		keep[a] = true
	}
	var errs []error
	for a := range l.held {
		if keep[a] {
			continue
		}
		if err := l.mgr.Remove(l.ifindex, a); err != nil {
			errs = append(errs, fmt.Errorf("remove bgp VIP %s from %s: %w", a, LocalInterface, err))
			continue
		}
		delete(l.held, a)
	}
	return errors.Join(errs...)
}

// Holds reports whether a is held.
func (l *LocalAddrs) Holds(a netip.Addr) bool { return l.held[a] }

// Held is the number of VIPs held.
func (l *LocalAddrs) Held() int { return len(l.held) }
