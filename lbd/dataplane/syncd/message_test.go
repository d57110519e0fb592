package syncd

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// The layout the kernel's backup parses (ip_vs_sync.c, version 1): header,
// then 36-byte IPv4 and 72-byte IPv6 records, addresses in network order.
func TestEncodeLayout(t *testing.T) {
	ap := netip.MustParseAddrPort
	conns := []Conn{
		{Proto: unix.IPPROTO_TCP, Client: ap("10.0.0.100:50000"), VIP: ap("10.0.0.210:80"), Backend: ap("10.0.0.23:30080"), State: TCPEstablished},
		{Proto: unix.IPPROTO_TCP, Client: ap("[fd00::100]:40000"), VIP: ap("[fd00::210]:443"), Backend: ap("[fd00::23]:30443"), State: TCPEstablished},
	}
	msgs, err := Encode(7, conns, 1472)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if len(m) != headerLen+v4Len+v6Len || m[0] != 0 || m[1] != 7 || int(binary.BigEndian.Uint16(m[2:])) != len(m) || m[4] != 2 || m[5] != 1 || m[6] != 0 || m[7] != 0 {
		t.Fatalf("header % x (length %d)", m[:headerLen], len(m))
	}
	r := m[headerLen:]
	if r[0] != 0 || r[1] != unix.IPPROTO_TCP || binary.BigEndian.Uint16(r[2:]) != v4Len || binary.BigEndian.Uint32(r[4:]) != 0 || binary.BigEndian.Uint16(r[8:]) != TCPEstablished {
		t.Errorf("IPv4 record head % x", r[:10])
	}
	if binary.BigEndian.Uint16(r[10:]) != 50000 || binary.BigEndian.Uint16(r[12:]) != 80 || binary.BigEndian.Uint16(r[14:]) != 30080 {
		t.Errorf("IPv4 ports % x", r[10:16])
	}
	if netip.AddrFrom4([4]byte(r[24:28])) != conns[0].Client.Addr() || netip.AddrFrom4([4]byte(r[28:32])) != conns[0].VIP.Addr() || netip.AddrFrom4([4]byte(r[32:36])) != conns[0].Backend.Addr() {
		t.Errorf("IPv4 addresses % x", r[24:36])
	}
	r = r[v4Len:]
	if r[0] != 1 || binary.BigEndian.Uint16(r[2:]) != v6Len || binary.BigEndian.Uint16(r[12:]) != 443 {
		t.Errorf("IPv6 record head % x", r[:16])
	}
	if netip.AddrFrom16([16]byte(r[24:40])) != conns[1].Client.Addr() || netip.AddrFrom16([16]byte(r[56:72])) != conns[1].Backend.Addr() {
		t.Errorf("IPv6 addresses % x", r[24:72])
	}
}

// Messages stay within the size asked for and the header's count of 255;
// every connection is in exactly one.
func TestEncodeSplits(t *testing.T) {
	var conns []Conn
	for i := range 600 {
		conns = append(conns, Conn{Proto: unix.IPPROTO_TCP, Client: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.100"), uint16(10000+i)),
			VIP: netip.MustParseAddrPort("10.0.0.210:80"), Backend: netip.MustParseAddrPort("10.0.0.21:30080"), State: TCPEstablished})
	}
	for _, max := range []int{256, 1472, 65000} {
		msgs, err := Encode(1, conns, max)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, m := range msgs {
			if len(m) > max || m[4] == 0 || int(binary.BigEndian.Uint16(m[2:])) != len(m) || len(m) != headerLen+int(m[4])*v4Len {
				t.Errorf("max %d: a message of %d bytes holding %d", max, len(m), m[4])
			}
			total += int(m[4])
		}
		if total != len(conns) {
			t.Errorf("max %d: %d connections encoded, want %d", max, total, len(conns))
		}
	}
	if msgs, _ := Encode(1, nil, 1472); len(msgs) != 0 {
		t.Errorf("no connections gave %d messages", len(msgs))
	}
	if _, err := Encode(1, conns, 40); err == nil {
		t.Error("a size below one record was taken")
	}
	mixed := Conn{Proto: unix.IPPROTO_TCP, Client: netip.MustParseAddrPort("[fd00::1]:1"), VIP: netip.MustParseAddrPort("10.0.0.210:80"), Backend: netip.MustParseAddrPort("10.0.0.21:30080")}
	if _, err := Encode(1, []Conn{mixed}, 1472); err == nil {
		t.Error("a connection mixing families was encoded")
	}
}
