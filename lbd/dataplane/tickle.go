package dataplane

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Tickle ACKs (issue 19: no long stalls after a takeover). After an
// unplanned takeover, a node's retransmission can reach the new owner before
// any packet of the client's, and the takeover guard drops it (it may not
// reset a connection it has not seen); the node sends again only on its next
// backoff timer, up to ~13 s later, and a silent client waits that long. So,
// as CTDB does, the new owner sends each client of a connection the IPVS
// sync daemon gave it a bare ACK from the VIP with sequence and
// acknowledgement numbers of 0: out of the window, which makes the client's
// stack answer at once with an ACK carrying its real numbers (RFC 793 §3.9,
// RFC 5961 §4). That answer goes through the new owner, which sees the
// connection (the guard lets the node's next packet through) and forwards
// it to the node, which learns what the client has received.

// tickleRounds are when, after the address goes up, the ACKs are sent: at
// once and three more times, because the client answers only once its ARP
// cache points here (the gratuitous ARP burst runs beside this), and Linux
// answers out-of-window segments at most once per 500 ms per socket
// (tcp_invalid_ratelimit). Several answers reach a node that still has data
// in flight as duplicate ACKs: three of them make it retransmit at once.
var tickleRounds = []time.Duration{0, 550 * time.Millisecond, 1100 * time.Millisecond, 1650 * time.Millisecond}

// vsConn is one connection of the kernel's IPVS table: client → VIP:port.
type vsConn struct {
	client netip.AddrPort
	vip    netip.AddrPort
}

// readVSConns lists the established TCP connections to vip in the IPVS
// connection table (/proc/net/ip_vs_conn), synced ones included.
func readVSConns(r io.Reader, vip netip.Addr) ([]vsConn, error) {
	var out []vsConn
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// Pro FromIP FPrt ToIP TPrt DestIP DPrt State Expires PEName PEData
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[0] != "TCP" || f[7] != "ESTABLISHED" {
			continue
		}
		cip, err1 := parseProcAddr(f[1])
		cport, err2 := strconv.ParseUint(f[2], 16, 16)
		vaddr, err3 := parseProcAddr(f[3])
		vport, err4 := strconv.ParseUint(f[4], 16, 16)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			continue // not a connection line (the header)
		}
		if vaddr != vip {
			continue
		}
		out = append(out, vsConn{client: netip.AddrPortFrom(cip, uint16(cport)), vip: netip.AddrPortFrom(vaddr, uint16(vport))})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the IPVS connection table: %w", err)
	}
	return out, nil
}

// parseProcAddr reads an address as /proc/net/ip_vs_conn prints it: IPv4 as
// 8 hex digits, IPv6 in its text form.
func parseProcAddr(s string) (netip.Addr, error) {
	if strings.Contains(s, ":") {
		return netip.ParseAddr(s)
	}
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil || len(s) != 8 {
		return netip.Addr{}, fmt.Errorf("not an IPv4 address in hex: %q", s)
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(v))
	return netip.AddrFrom4(b), nil
}

// tickleSegment is a bare TCP ACK from → to with sequence and
// acknowledgement 0 (the TCP header only: the kernel adds the IP header).
func tickleSegment(from, to netip.AddrPort) []byte {
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], from.Port())
	binary.BigEndian.PutUint16(seg[2:], to.Port())
	// seq and ack stay 0: out of any window.
	seg[12] = 5 << 4                           // data offset: 5 words, no options
	seg[13] = 0x10                             // ACK
	binary.BigEndian.PutUint16(seg[14:], 1234) // window, as CTDB sends
	binary.BigEndian.PutUint16(seg[16:], tcpChecksum(from.Addr(), to.Addr(), seg))
	return seg
}

// tcpChecksum is the TCP checksum of seg (its checksum field zero) with the
// IPv4 or IPv6 pseudo-header.
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	sum += unix.IPPROTO_TCP + uint32(len(seg))
	add(seg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// sendTickle sends one tickle ACK from the VIP (an address of this host, so
// the raw socket may bind it) to the client.
func sendTickle(from, to netip.AddrPort) error {
	family := unix.AF_INET
	if from.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return fmt.Errorf("open a raw TCP socket: %w", err)
	}
	defer unix.Close(fd)
	var src, dst unix.Sockaddr
	if family == unix.AF_INET {
		src = &unix.SockaddrInet4{Addr: from.Addr().As4()}
		dst = &unix.SockaddrInet4{Addr: to.Addr().As4()}
	} else {
		src = &unix.SockaddrInet6{Addr: from.Addr().As16()}
		dst = &unix.SockaddrInet6{Addr: to.Addr().As16()}
	}
	if err := unix.Bind(fd, src); err != nil {
		return fmt.Errorf("bind the raw socket to %s: %w", from.Addr(), err)
	}
	if err := unix.Sendto(fd, tickleSegment(from, to), 0, dst); err != nil {
		return fmt.Errorf("send a tickle ACK %s → %s: %w", from, to, err)
	}
	return nil
}

// tickle sends the tickle ACKs for every established connection to vip in
// the IPVS table, in tickleRounds, until ctx ends. It runs beside the pass
// that took vip over, never in it: the pass must not wait for it.
func (e *Engine) tickle(ctx context.Context, vip netip.Addr, tenant string) {
	start := time.Now()
	sent, failed := 0, 0
	var lastErr error
	for _, at := range tickleRounds {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(at))):
		}
		f, err := os.Open("/proc/net/ip_vs_conn")
		if err != nil {
			e.log.Warn("tickle ACKs not sent: cannot read the IPVS connection table", "vip", vip, "tenant", tenant, "err", err)
			return
		}
		conns, err := readVSConns(f, vip)
		f.Close()
		if err != nil {
			e.log.Warn("tickle ACKs not sent", "vip", vip, "tenant", tenant, "err", err)
			return
		}
		for _, c := range conns {
			if err := sendTickle(c.vip, c.client); err != nil {
				failed++
				lastErr = err
				continue
			}
			sent++
		}
	}
	if failed > 0 {
		e.log.Warn("some tickle ACKs could not be sent", "vip", vip, "tenant", tenant, "sent", sent, "failed", failed, "err", lastErr)
	} else if sent > 0 {
		e.log.Info("tickle ACKs sent to the clients of the connections synced for a VIP taken over", "vip", vip, "tenant", tenant,
			"acks", sent, "rounds", len(tickleRounds))
	}
}
