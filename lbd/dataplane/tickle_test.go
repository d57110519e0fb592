package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsconn"
	"golang.org/x/sys/unix"
)

// The tickle ACKs and the handover sync take the established TCP
// connections to the VIP only: not another VIP's, not TIME_WAIT, not UDP or
// SCTP, IPv4 and IPv6 (as the kernel prints it, ip_vs_conn_seq_show).
func TestEstablishedTo(t *testing.T) {
	table := `Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A0000C8 C350 0A0000D2 0050 0A000101 7786 ESTABLISHED     877
TCP 0A0000C9 C351 0A0000D2 0050 0A000102 7786 TIME_WAIT        60
UDP 0A0000C8 C350 0A0000D2 0035 0A000101 0035 UDP             200
SCTP 0A0000C8 C354 0A0000D2 0B59 0A000101 0B59 ESTABLISHED     877
TCP 0A0000C8 C352 0A0000D3 0050 0A000101 7786 ESTABLISHED     877
TCP 2001:db8::c8 C353 2001:db8::d2 0050 2001:db8::101 7786 ESTABLISHED     877
TCP 2001:0db8:0000:0000:0000:0000:0000:00c9 C355 2001:0db8:0000:0000:0000:0000:0000:00d2 0050 2001:0db8:0000:0000:0000:0000:0000:0101 7786 ESTABLISHED     877
`
	conns, err := ipvsconn.Read(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	got := establishedTo(conns, netip.MustParseAddr("10.0.0.210"))
	want := ipvsconn.Conn{Proto: ipvsconn.TCP, Client: ap("10.0.0.200:50000"), VIP: ap("10.0.0.210:80"), Backend: ap("10.0.1.1:30598"), State: "ESTABLISHED"}
	if len(got) != 1 || got[0] != want {
		t.Errorf("connections %v, want %v (established TCP to the VIP only)", got, want)
	}
	got = establishedTo(conns, netip.MustParseAddr("2001:db8::d2"))
	if len(got) != 2 || got[0].Client != ap("[2001:db8::c8]:50003") || got[1].Client != ap("[2001:db8::c9]:50005") || got[1].Backend != ap("[2001:db8::101]:30598") {
		t.Errorf("IPv6 connections %v", got)
	}
}

// The segment's checksum verifies: summing it with the pseudo-header gives
// 0xffff, for IPv4 and IPv6.
func TestTickleSegment(t *testing.T) {
	for _, c := range [][2]string{{"10.0.0.210:80", "10.0.0.200:50000"}, {"[2001:db8::d2]:443", "[2001:db8::c8]:40000"}} {
		from, to := netip.MustParseAddrPort(c[0]), netip.MustParseAddrPort(c[1])
		seg := tickleSegment(from, to)
		if binary.BigEndian.Uint16(seg[0:]) != from.Port() || binary.BigEndian.Uint16(seg[2:]) != to.Port() {
			t.Errorf("%s → %s: ports %x", from, to, seg[:4])
		}
		if seq, ack := binary.BigEndian.Uint32(seg[4:]), binary.BigEndian.Uint32(seg[8:]); seq != 0 || ack != 0 {
			t.Errorf("seq %d ack %d, want 0 0", seq, ack)
		}
		if seg[13] != 0x10 {
			t.Errorf("flags %#x, want ACK only", seg[13])
		}
		if got := tcpChecksum(from.Addr(), to.Addr(), seg); got != 0 {
			t.Errorf("%s → %s: the checksum does not verify (%#x)", from, to, got)
		}
	}
}

// The IP packet around the segment: the header's checksum verifies, the
// lengths and addresses are the connection's, IPv4 and IPv6.
func TestTickleIPPacket(t *testing.T) {
	from, to := netip.MustParseAddrPort("10.0.0.210:80"), netip.MustParseAddrPort("10.0.0.200:50000")
	p := tickleIPPacket(from, to)
	if len(p) != 40 || p[0] != 0x45 || binary.BigEndian.Uint16(p[2:]) != 40 || p[9] != unix.IPPROTO_TCP || p[8] == 0 {
		t.Errorf("IPv4 header % x", p[:20])
	}
	if ipv4Checksum(p[:20]) != 0 {
		t.Error("the IPv4 header checksum does not verify")
	}
	if netip.AddrFrom4([4]byte(p[12:16])) != from.Addr() || netip.AddrFrom4([4]byte(p[16:20])) != to.Addr() {
		t.Errorf("addresses % x", p[12:20])
	}
	if tcpChecksum(from.Addr(), to.Addr(), p[20:]) != 0 {
		t.Error("the segment's checksum does not verify inside the packet")
	}
	from6, to6 := netip.MustParseAddrPort("[2001:db8::d2]:443"), netip.MustParseAddrPort("[2001:db8::c8]:40000")
	p = tickleIPPacket(from6, to6)
	if len(p) != 60 || p[0]>>4 != 6 || binary.BigEndian.Uint16(p[4:]) != 20 || p[6] != unix.IPPROTO_TCP || p[7] == 0 {
		t.Errorf("IPv6 header % x", p[:40])
	}
	if netip.AddrFrom16([16]byte(p[8:24])) != from6.Addr() || netip.AddrFrom16([16]byte(p[24:40])) != to6.Addr() {
		t.Errorf("IPv6 addresses % x", p[8:40])
	}
}

// On loopback, with the real kernel: a tickle ACK to the client of an
// established connection makes the client's stack answer at once with an
// ACK carrying its real acknowledgement number (the point of the tickle).
func TestTickleElicitsTheClientsACK(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("raw sockets need root")
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if _, err := srv.Write([]byte("hello")); err != nil { // the client's ACK number moves past the handshake
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := cli.Read(buf); err != nil {
		t.Fatal(err)
	}
	server := netip.MustParseAddrPort(ln.Addr().String())
	client := netip.MustParseAddrPort(cli.LocalAddr().String())

	// A raw TCP socket sees every TCP segment the host receives.
	rfd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
	unix.SetsockoptTimeval(rfd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)

	pkt := make([]byte, 1500)
	// clientACK waits up to d for an ACK from the client to the server
	// with a non-zero acknowledgement number.
	clientACK := func(d time.Duration) bool {
		for deadline := time.Now().Add(d); time.Now().Before(deadline); {
			n, _, err := unix.Recvfrom(rfd, pkt, 0)
			if err != nil || n < 40 {
				continue
			}
			ihl := int(pkt[0]&0x0f) * 4
			tcp := pkt[ihl:n]
			sport, dport := binary.BigEndian.Uint16(tcp[0:]), binary.BigEndian.Uint16(tcp[2:])
			if sport == client.Port() && dport == server.Port() && tcp[13]&0x10 != 0 && binary.BigEndian.Uint32(tcp[8:]) != 0 {
				return true
			}
		}
		return false
	}
	clientACK(300 * time.Millisecond) // the client's delayed ACK of "hello", if not sent yet
	if clientACK(300 * time.Millisecond) {
		t.Fatal("the idle client sent an ACK without a tickle: the check below would prove nothing")
	}
	tk := newTickler()
	defer tk.close()
	if err := tk.send(server, client); err != nil {
		t.Fatal(err)
	}
	if !clientACK(3 * time.Second) {
		t.Fatal("the client's stack did not answer the tickle ACK within 3s")
	}
}

// A next hop that cannot be found is looked for once per round, however
// many connections its client has, and again in the next round.
func TestTicklerRemembersFailuresForARound(t *testing.T) {
	tk := newTickler()
	a := netip.MustParseAddr("192.0.2.1")
	tk.hops[a] = nextHop{err: errUnresolved}
	if h := tk.hop(a); h.err == nil {
		t.Fatal("a failure remembered for the round was looked up again")
	}
	tk.nextRound()
	if _, ok := tk.hops[a]; ok {
		t.Error("the next round kept the failure")
	}
	ok := nextHop{ifi: &net.Interface{Index: 1}, hw: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
	tk.hops[a] = ok
	tk.nextRound()
	if h := tk.hops[a]; h.err != nil || h.ifi == nil {
		t.Error("the next round forgot a next hop that was found")
	}
}
