// Package addr adds and removes VIP addresses on an interface over rtnetlink
// (jsimonetti/rtnetlink, on mdlayher/netlink), as /32 or /128, IPv6 without
// duplicate-address detection so a taken-over VIP answers at once.
package addr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Manager adds and removes host addresses. It is the data plane's seam for
// tests; Netlink is the real one.
type Manager interface {
	List(ifindex int) ([]netip.Addr, error)
	Add(ifindex int, a netip.Addr) error
	Remove(ifindex int, a netip.Addr) error
}

// Netlink is a Manager over an rtnetlink socket.
type Netlink struct{ c *rtnetlink.Conn }

// Open dials rtnetlink in the current network namespace.
func Open() (*Netlink, error) {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("dial rtnetlink: %w", err)
	}
	return &Netlink{c: c}, nil
}

// Close closes the socket.
func (n *Netlink) Close() error { return n.c.Close() }

// hostAddr is the message for a as a host address (/32, /128) on ifindex.
// IPv6 ones carry IFA_F_NODAD: duplicate-address detection would keep a VIP
// that moved here "tentative" (unusable) for a second or more.
func hostAddr(ifindex int, a netip.Addr) *rtnetlink.AddressMessage {
	m := &rtnetlink.AddressMessage{
		Family:       unix.AF_INET,
		PrefixLength: 32,
		Scope:        unix.RT_SCOPE_UNIVERSE,
		Index:        uint32(ifindex),
		Attributes: &rtnetlink.AddressAttributes{
			Address: net.IP(a.AsSlice()),
			Local:   net.IP(a.AsSlice()),
		},
	}
	if a.Is6() {
		m.Family, m.PrefixLength = unix.AF_INET6, 128
		m.Attributes.Flags = unix.IFA_F_NODAD
	}
	return m
}

// Add adds a as a host address (/32, /128); adding one already there is not an error.
func (n *Netlink) Add(ifindex int, a netip.Addr) error {
	// Create|Replace rather than the library's Address.New (Create|Excl): the
	// reconciler re-adds addresses it finds missing and must not trip over one
	// that is already there.
	_, err := n.c.Execute(hostAddr(ifindex, a), unix.RTM_NEWADDR,
		netlink.Request|netlink.Acknowledge|netlink.Create|netlink.Replace)
	if err != nil {
		return fmt.Errorf("add %s to interface %d: %w", a, ifindex, err)
	}
	return nil
}

// Remove removes a; removing one that is not there is not an error.
func (n *Netlink) Remove(ifindex int, a netip.Addr) error {
	err := n.c.Address.Delete(hostAddr(ifindex, a))
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s from interface %d: %w", a, ifindex, err)
	}
	return nil
}

// List returns the host addresses (/32, /128) on the interface.
func (n *Netlink) List(ifindex int) ([]netip.Addr, error) {
	msgs, err := n.c.Address.List()
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []netip.Addr
	for _, m := range msgs {
		if int(m.Index) != ifindex || m.Attributes == nil ||
			(m.Family == unix.AF_INET && m.PrefixLength != 32) ||
			(m.Family == unix.AF_INET6 && m.PrefixLength != 128) ||
			(m.Family != unix.AF_INET && m.Family != unix.AF_INET6) {
			continue
		}
		// IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on
		// point-to-point links and the only one IPv6 sends.
		ip := m.Attributes.Local
		if ip == nil {
			ip = m.Attributes.Address
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out, nil
}

// IfIndex resolves an interface name.
func IfIndex(name string) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("interface %s: %w (set --interface to the data interface)", name, err)
	}
	return ifi.Index, nil
}
