package syncd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
)

// Conn is one IPVS connection as a sync message carries it.
type Conn struct {
	Proto   uint8 // unix.IPPROTO_TCP, _UDP, _SCTP
	Client  netip.AddrPort
	VIP     netip.AddrPort
	Backend netip.AddrPort
	// State is the protocol's IPVS state number (TCPEstablished for an
	// established TCP connection; 0 for UDP).
	State uint16
}

// TCPEstablished is IPVS's state number of an established TCP connection
// (IP_VS_TCP_S_ESTABLISHED).
const TCPEstablished = 1

// The kernel's sync protocol, version 1 (net/netfilter/ipvs/ip_vs_sync.c):
// a header of 8 bytes (reserved 0, syncid, size, number of connections,
// version 1, spare 0), then per connection a record of 36 bytes (IPv4) or
// 72 (IPv6): type (0, or 1 for IPv6), protocol, version and size, flags,
// state, client/virtual/destination ports, firewall mark, timeout (0: the
// state's default), then the three addresses. The kernel's backup daemon
// takes such a message from any sender on its group and port.
const (
	headerLen = 8
	v4Len     = 36
	v6Len     = 72
	// Group and Port are where the kernel's daemons send and listen by
	// default (IP_VS_SYNC_GROUP, IP_VS_SYNC_PORT).
	Group = "224.0.0.81"
	Port  = 8848
)

// Encode packs conns into sync messages for syncID, each at most maxLen
// bytes (and at most 255 connections, the header's count).
func Encode(syncID uint8, conns []Conn, maxLen int) ([][]byte, error) {
	if maxLen < headerLen+v6Len {
		return nil, fmt.Errorf("sync message size %d: below one IPv6 record (%d)", maxLen, headerLen+v6Len)
	}
	var out [][]byte
	var m []byte
	n := 0
	flush := func() {
		if n == 0 {
			return
		}
		binary.BigEndian.PutUint16(m[2:], uint16(len(m)))
		m[4] = uint8(n)
		out = append(out, m)
		m, n = nil, 0
	}
	for _, c := range conns {
		rec, err := record(c)
		if err != nil {
			return nil, err
		}
		if m != nil && (len(m)+len(rec) > maxLen || n == 255) {
			flush()
		}
		if m == nil {
			m = []byte{0, syncID, 0, 0, 0, 1, 0, 0}
		}
		m = append(m, rec...)
		n++
	}
	flush()
	return out, nil
}

func record(c Conn) ([]byte, error) {
	v6 := c.VIP.Addr().Is6()
	if c.Client.Addr().Is6() != v6 || c.Backend.Addr().Is6() != v6 {
		return nil, fmt.Errorf("connection %s → %s → %s mixes address families", c.Client, c.VIP, c.Backend)
	}
	size := v4Len
	if v6 {
		size = v6Len
	}
	r := make([]byte, size)
	if v6 {
		r[0] = 1
	}
	r[1] = c.Proto
	binary.BigEndian.PutUint16(r[2:], uint16(size)) // version 0 in the top 4 bits
	// flags (r[4:8]) 0: a synced connection takes its forwarding method
	// from the destination it binds to.
	binary.BigEndian.PutUint16(r[8:], c.State)
	binary.BigEndian.PutUint16(r[10:], c.Client.Port())
	binary.BigEndian.PutUint16(r[12:], c.VIP.Port())
	binary.BigEndian.PutUint16(r[14:], c.Backend.Port())
	// fwmark (r[16:20]) and timeout (r[20:24]) 0.
	at := 24
	for _, a := range []netip.Addr{c.Client.Addr(), c.VIP.Addr(), c.Backend.Addr()} {
		at += copy(r[at:], a.AsSlice())
	}
	return r, nil
}

// Send multicasts msgs from the interface ifname to the kernel's sync group,
// where every member's backup daemon takes them in. One hop only, as the
// kernel's own master sends.
func Send(ctx context.Context, ifname string, msgs [][]byte) error {
	if len(msgs) == 0 {
		return nil
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("sync interface %s: %w", ifname, err)
	}
	var lc net.ListenConfig
	c, err := lc.ListenPacket(ctx, "udp4", "0.0.0.0:0")
	if err != nil {
		return fmt.Errorf("open a UDP socket for sync messages: %w", err)
	}
	defer c.Close()
	p := ipv4.NewPacketConn(c)
	if err := errors.Join(p.SetMulticastInterface(ifi), p.SetMulticastTTL(1), p.SetMulticastLoopback(false)); err != nil {
		return fmt.Errorf("multicast on %s: %w", ifname, err)
	}
	dst := &net.UDPAddr{IP: net.ParseIP(Group), Port: Port}
	for _, m := range msgs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, err := c.WriteTo(m, dst); err != nil {
			return fmt.Errorf("send a sync message of %d bytes on %s: %w", len(m), ifname, err)
		}
	}
	return nil
}
