// Package addr adds and removes VIP addresses on an interface over rtnetlink
// (mdlayher/netlink), as /32 or /128, IPv6 without duplicate-address detection
// so a taken-over VIP answers at once.
package addr

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

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
type Netlink struct{ c *netlink.Conn }

// Open dials rtnetlink in the current network namespace.
func Open() (*Netlink, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return nil, fmt.Errorf("dial rtnetlink: %w", err)
	}
	return &Netlink{c: c}, nil
}

// Close closes the socket.
func (n *Netlink) Close() error { return n.c.Close() }

func ifaddrmsg(a netip.Addr, ifindex int) []byte {
	b := make([]byte, 8)
	fam, bits := unix.AF_INET, 32
	if a.Is6() {
		fam, bits = unix.AF_INET6, 128
	}
	b[0], b[1], b[2], b[3] = byte(fam), byte(bits), 0, unix.RT_SCOPE_UNIVERSE
	binary.NativeEndian.PutUint32(b[4:], uint32(ifindex))
	return b
}

func (n *Netlink) change(typ netlink.HeaderType, flags netlink.HeaderFlags, ifindex int, a netip.Addr) error {
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.IFA_LOCAL, a.AsSlice())
	ae.Bytes(unix.IFA_ADDRESS, a.AsSlice())
	if a.Is6() {
		ae.Uint32(unix.IFA_FLAGS, unix.IFA_F_NODAD)
	}
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = n.c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   append(ifaddrmsg(a, ifindex), attrs...),
	})
	return err
}

// Add adds a as a host address (/32, /128); adding one already there is not an error.
func (n *Netlink) Add(ifindex int, a netip.Addr) error {
	err := n.change(unix.RTM_NEWADDR, netlink.Create|netlink.Replace, ifindex, a)
	if err != nil {
		return fmt.Errorf("add %s to interface %d: %w", a, ifindex, err)
	}
	return nil
}

// Remove removes a; removing one that is not there is not an error.
func (n *Netlink) Remove(ifindex int, a netip.Addr) error {
	err := n.change(unix.RTM_DELADDR, 0, ifindex, a)
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s from interface %d: %w", a, ifindex, err)
	}
	return nil
}

// List returns the host addresses (/32, /128) on the interface.
func (n *Netlink) List(ifindex int) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, fam := range []byte{unix.AF_INET, unix.AF_INET6} {
		req := make([]byte, 8)
		req[0] = fam
		msgs, err := n.c.Execute(netlink.Message{
			Header: netlink.Header{Type: unix.RTM_GETADDR, Flags: netlink.Request | netlink.Dump},
			Data:   req,
		})
		if err != nil {
			return nil, fmt.Errorf("list addresses: %w", err)
		}
		for _, m := range msgs {
			if len(m.Data) < 8 {
				continue
			}
			prefix, idx := m.Data[1], int(binary.NativeEndian.Uint32(m.Data[4:8]))
			if idx != ifindex || (m.Data[0] == unix.AF_INET && prefix != 32) || (m.Data[0] == unix.AF_INET6 && prefix != 128) {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[8:])
			if err != nil {
				continue
			}
			var local, address netip.Addr
			for ad.Next() {
				switch ad.Type() {
				case unix.IFA_LOCAL:
					local, _ = netip.AddrFromSlice(ad.Bytes())
				case unix.IFA_ADDRESS:
					address, _ = netip.AddrFromSlice(ad.Bytes())
				}
			}
			if local.IsValid() {
				out = append(out, local)
			} else if address.IsValid() {
				out = append(out, address)
			}
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
