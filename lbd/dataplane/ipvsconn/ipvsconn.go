// Package ipvsconn reads the kernel's IPVS connection table,
// /proc/net/ip_vs_conn (IPVS offers no netlink dump of it). It only parses:
// which connections matter is each caller's business (conntrack keeps the
// live ones, the tickle ACKs and the handover sync take the established TCP
// ones to a VIP).
//
// The format is ip_vs_conn_seq_show's (net/netfilter/ipvs/ip_vs_conn.c):
//
//	Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
//	TCP 0A000064 AF8C 0A0000D7 0050 0A000015 7580 ESTABLISHED     899
//
// IPv4 addresses as %08X, IPv6 ones as %pI6 (eight groups of four lowercase
// hex digits, never compressed), every port as %04X. The client and VIP share
// the connection's family; the backend has its own (a tunnel may carry an IPv4
// service to IPv6 backends).
package ipvsconn

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Path is where the kernel lists the IPVS connections of the reader's
// network namespace.
const Path = "/proc/net/ip_vs_conn"

// IP protocol numbers of the protocols IPVS balances.
const (
	TCP  = 6
	UDP  = 17
	SCTP = 132
)

var protos = map[string]uint8{"TCP": TCP, "UDP": UDP, "SCTP": SCTP}

// Conn is one line of the table: client → VIP, forwarded to backend.
type Conn struct {
	Proto   uint8
	Client  netip.AddrPort
	VIP     netip.AddrPort
	Backend netip.AddrPort
	// State is the kernel's name for it: ESTABLISHED, SYN_RECV, TIME_WAIT
	// … for TCP, UDP for UDP, SCTP's own (ESTABLISHED, CLOSED …).
	State string
}

// ReadFile reads the table at path (Path, or a test's copy).
func ReadFile(path string) ([]Conn, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read the IPVS connections: %w", err)
	}
	defer f.Close()
	conns, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("read the IPVS connections from %s: %w", path, err)
	}
	return conns, nil
}

// Read parses the table, in its order. The header is skipped, and so are
// the connections of protocols IPVS balances none of (the kernel names any
// protocol: ICMP, IP_47 …). A connection line it cannot read is an error
// naming the line: the kernel never writes one, so a caller that went on
// would be reading something else than it thinks.
func Read(r io.Reader) ([]Conn, error) {
	var out []Conn
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		c, ok, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
		if ok {
			out = append(out, c)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// parseLine reads one line; ok is false for one that holds no connection
// of a protocol it knows (the header, a blank line, ICMP's).
func parseLine(line string) (c Conn, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] == "Pro" {
		return Conn{}, false, nil
	}
	proto, known := protos[f[0]]
	if !known {
		return Conn{}, false, nil
	}
	// Expires is always printed; PEName and PEData only with a persistence
	// engine.
	if len(f) < 9 {
		return Conn{}, false, fmt.Errorf("%d fields, want at least 9", len(f))
	}
	client, err1 := addrPort(f[1], f[2])
	vip, err2 := addrPort(f[3], f[4])
	backend, err3 := addrPort(f[5], f[6])
	if err := errors.Join(err1, err2, err3); err != nil {
		return Conn{}, false, err
	}
	if client.Addr().Is4() != vip.Addr().Is4() {
		return Conn{}, false, fmt.Errorf("client %s and VIP %s of different families", client, vip)
	}
	if _, err := strconv.ParseUint(f[8], 10, 32); err != nil {
		return Conn{}, false, fmt.Errorf("expires %q: not a number of seconds", f[8])
	}
	return Conn{Proto: proto, Client: client, VIP: vip, Backend: backend, State: f[7]}, true, nil
}

// addrPort reads an address and a port as the kernel prints them.
func addrPort(a, p string) (netip.AddrPort, error) {
	if len(p) != 4 {
		return netip.AddrPort{}, fmt.Errorf("port %q: not 4 hex digits", p)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: not 4 hex digits", p)
	}
	ip, err := addr(a)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ip, uint16(port)), nil
}

func addr(s string) (netip.Addr, error) {
	if strings.Contains(s, ":") {
		// netip takes %pI6's full form (leading zeros included) as well as
		// the compressed one; the kernel prints no zone.
		ip, err := netip.ParseAddr(s)
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return netip.Addr{}, fmt.Errorf("address %q: not an IPv6 address", s)
		}
		return ip, nil
	}
	if len(s) != 8 {
		return netip.Addr{}, fmt.Errorf("address %q: not an IPv4 address in 8 hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("address %q: not an IPv4 address in 8 hex digits", s)
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
}
