package conntrack

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
)

// Entries are selected by their original destination only: a node's reply
// tuple names the VIP too (SNAT), but as its destination of the reply
// direction, which must not match another VIP's entries; IPv4 in either of
// the library's forms matches.
func TestMatchByOriginalDestination(t *testing.T) {
	vip, other := netip.MustParseAddr("10.0.0.215"), netip.MustParseAddr("10.0.0.216")
	m := NewMatch(vip, netip.MustParseAddr("fd00::215"))
	flow := func(dst, replyDst string) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{SrcIP: net.ParseIP("10.0.0.100"), DstIP: net.ParseIP(dst)},
			Reverse: netlink.IPTuple{SrcIP: net.ParseIP("10.0.0.21"), DstIP: net.ParseIP(replyDst)},
		}
	}
	for _, c := range []struct {
		f    *netlink.ConntrackFlow
		want bool
	}{
		{flow("10.0.0.215", "10.0.0.215"), true},
		{&netlink.ConntrackFlow{Forward: netlink.IPTuple{DstIP: net.ParseIP("10.0.0.215").To4()}}, true},
		{flow("fd00::215", "fd00::215"), true},
		{flow("10.0.0.216", "10.0.0.215"), false}, // another VIP's connection
		{flow("10.0.0.21", "10.0.0.100"), false},
		{&netlink.ConntrackFlow{}, false},
	} {
		if got := m.MatchConntrackFlow(c.f); got != c.want {
			t.Errorf("%v → %v: matched %v, want %v", c.f.Forward.SrcIP, c.f.Forward.DstIP, got, c.want)
		}
	}
	if m.Seen[vip] != 2 || m.Seen[netip.MustParseAddr("fd00::215")] != 1 || m.Seen[other] != 0 {
		t.Errorf("counted %v, want 2 for %s and 1 for fd00::215", m.Seen, vip)
	}
}

// With Unnated, only the entries of those services whose reply comes from
// the VIP's own address and port are selected, whatever IPVS carries: a
// packet forwarded by a member that did not hold the VIP. An entry IPVS
// rewrote (reply from a node), a node's packet to VIP:client-port (the
// takeover guard's) and another service's port are left.
func TestMatchUnnated(t *testing.T) {
	ap := netip.MustParseAddrPort
	m := NewMatch(netip.MustParseAddr("10.0.0.215"))
	m.Unnated = map[Service]bool{{Proto: 6, Dst: ap("10.0.0.215:80")}: true}
	t0 := Tuple{Proto: 6, Src: ap("10.0.0.100:40000"), Dst: ap("10.0.0.215:80")}
	m.Live = map[Tuple]netip.AddrPort{t0: ap("10.0.0.21:30080")}
	flow := func(proto uint8, src, dst, replySrc netip.AddrPort) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{Protocol: proto, SrcIP: src.Addr().AsSlice(), SrcPort: src.Port(), DstIP: dst.Addr().AsSlice(), DstPort: dst.Port()},
			Reverse: netlink.IPTuple{Protocol: proto, SrcIP: replySrc.Addr().AsSlice(), SrcPort: replySrc.Port(), DstIP: src.Addr().AsSlice(), DstPort: src.Port()},
		}
	}
	for _, c := range []struct {
		what string
		f    *netlink.ConntrackFlow
		want bool
	}{
		{"forwarded, IPVS carries the tuple", flow(6, t0.Src, t0.Dst, t0.Dst), true},
		{"forwarded", flow(6, ap("10.0.0.100:40002"), ap("10.0.0.215:80"), ap("10.0.0.215:80")), true},
		{"NATed by IPVS", flow(6, t0.Src, t0.Dst, ap("10.0.0.21:30080")), false},
		{"NATed to an old backend", flow(6, ap("10.0.0.100:40004"), t0.Dst, ap("10.0.0.22:30080")), false},
		{"a node's packet to the client's port", flow(6, ap("10.0.0.21:30080"), ap("10.0.0.215:40006"), ap("10.0.0.215:40006")), false},
		{"another port", flow(6, ap("10.0.0.100:40008"), ap("10.0.0.215:443"), ap("10.0.0.215:443")), false},
		{"another protocol", flow(17, ap("10.0.0.100:40010"), ap("10.0.0.215:80"), ap("10.0.0.215:80")), false},
	} {
		if got := m.MatchConntrackFlow(c.f); got != c.want {
			t.Errorf("%s: matched %v, want %v", c.what, got, c.want)
		}
	}
}

// The IPVS connection table as the kernel prints it: opening and
// established connections are live, closing and closed ones not (SCTP's
// CLOSED too); IPv4 in hex and IPv6 in full colon form. A table with a line
// the kernel never writes fails the read: nothing is deleted on a guess.
func TestLiveIPVS(t *testing.T) {
	table := `Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A000064 AF8C 0A0000D7 0050 0A000015 7580 ESTABLISHED    899
TCP 0A000064 AF8E 0A0000D7 0050 0A000016 7580 TIME_WAIT      119
TCP 0A000064 AF90 0A0000D7 0050 0A000017 7580 CLOSE            9
TCP 0A000064 AF92 0A0000D7 0050 0A000015 7580 FIN_WAIT       100
UDP 0A000064 D431 0A0000D7 0050 0A000015 7580 UDP            299
SCTP 0A000064 8AE1 0A0000D7 0B59 0A000015 0B59 COOKIE_ECHOED  59
SCTP 0A000064 8AE3 0A0000D7 0B59 0A000015 0B59 CLOSED          9
TCP fd00:0000:0000:0000:0000:0000:0000:0100 AF8C fd00:0000:0000:0000:0000:0000:0000:0210 0050 fd00:0000:0000:0000:0000:0000:0000:0021 7580 SYN_RECV 59
`
	path := filepath.Join(t.TempDir(), "ip_vs_conn")
	if err := os.WriteFile(path, []byte(table), 0o600); err != nil {
		t.Fatal(err)
	}
	live, err := LiveIPVS(path)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	want := map[Tuple]netip.AddrPort{
		{6, ap("10.0.0.100:44940"), ap("10.0.0.215:80")}:     ap("10.0.0.21:30080"),
		{17, ap("10.0.0.100:54321"), ap("10.0.0.215:80")}:    ap("10.0.0.21:30080"),
		{132, ap("10.0.0.100:35553"), ap("10.0.0.215:2905")}: ap("10.0.0.21:2905"),
		{6, ap("[fd00::100]:44940"), ap("[fd00::210]:80")}:   ap("[fd00::21]:30080"),
	}
	if len(live) != len(want) {
		t.Fatalf("live %v, want %v", live, want)
	}
	for k, be := range want {
		if got, ok := live[k]; !ok || got != be {
			t.Errorf("%v: backend %v (present %v), want %v", k, got, ok, be)
		}
	}
	if err := os.WriteFile(path, []byte(table+"TCP zz 0050 0A0000D7 0050 0A000015 7580 ESTABLISHED 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if live, err := LiveIPVS(path); err == nil {
		t.Errorf("a malformed line read: %v", live)
	}
}

// An entry of a connection IPVS carries is kept when its reply comes from
// the connection's backend: the node's packets of it are translated with
// that entry. One from another backend is an older connection's that used
// the same client port (the guest's drain reset two held connections that
// way): it is deleted, so the client's next packet makes an entry that
// names the right node.
func TestMatchKeepsLiveConnections(t *testing.T) {
	ap := netip.MustParseAddrPort
	m := NewMatch(netip.MustParseAddr("10.0.0.215"))
	m.Live = map[Tuple]netip.AddrPort{
		{6, ap("10.0.0.100:44940"), ap("10.0.0.215:80")}: ap("10.0.0.22:30080"),
		{6, ap("10.0.0.100:44944"), ap("10.0.0.215:80")}: ap("10.0.0.22:30080"),
	}
	f := func(sport uint16, node string, nport uint16) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{Protocol: 6, SrcIP: net.ParseIP("10.0.0.100"), SrcPort: sport, DstIP: net.ParseIP("10.0.0.215"), DstPort: 80},
			Reverse: netlink.IPTuple{Protocol: 6, SrcIP: net.ParseIP(node), SrcPort: nport, DstIP: net.ParseIP("10.0.0.215"), DstPort: sport},
		}
	}
	if m.MatchConntrackFlow(f(44940, "10.0.0.22", 30080)) {
		t.Error("the live connection's entry was selected")
	}
	if !m.MatchConntrackFlow(f(44942, "10.0.0.22", 30080)) {
		t.Error("an entry IPVS does not carry was kept")
	}
	if !m.MatchConntrackFlow(f(44944, "10.0.0.23", 30080)) {
		t.Error("an entry of the client's tuple that names another node was kept")
	}
	if !m.MatchConntrackFlow(f(44944, "10.0.0.22", 30081)) {
		t.Error("an entry of the client's tuple that names another port of the node was kept")
	}
	if m.Seen[netip.MustParseAddr("10.0.0.215")] != 3 {
		t.Errorf("counted %v, want 3", m.Seen)
	}
}

// A bounded Match selects until its Stop closes and records the rest in
// Left (not counted as deleted); with Only it selects those tuples alone,
// and still keeps one IPVS now carries to the entry's backend. The IPVS
// table is read once, at the first entry; an error there selects nothing.
func TestMatchStopOnlyAndLiveRead(t *testing.T) {
	ap := netip.MustParseAddrPort
	vip := netip.MustParseAddr("10.0.0.215")
	f := func(sport uint16) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{Protocol: 6, SrcIP: net.ParseIP("10.0.0.100"), SrcPort: sport, DstIP: net.ParseIP("10.0.0.215"), DstPort: 80},
			Reverse: netlink.IPTuple{Protocol: 6, SrcIP: net.ParseIP("10.0.0.22"), SrcPort: 30080, DstIP: net.ParseIP("10.0.0.215"), DstPort: sport},
		}
	}
	tuple := func(sport uint16) Tuple {
		return Tuple{6, netip.AddrPortFrom(netip.MustParseAddr("10.0.0.100"), sport), ap("10.0.0.215:80")}
	}
	stop := make(chan struct{})
	m := NewMatch(vip)
	m.Stop = stop
	if !m.MatchConntrackFlow(f(1)) {
		t.Fatal("selected nothing before Stop")
	}
	close(stop)
	if m.MatchConntrackFlow(f(2)) || m.MatchConntrackFlow(f(3)) {
		t.Fatal("selected after Stop")
	}
	if m.Seen[vip] != 1 || len(m.Left) != 2 || !m.Left[tuple(2)] || !m.Left[tuple(3)] {
		t.Fatalf("counted %v, left %v; want 1 counted and ports 2 and 3 left", m.Seen, m.Left)
	}

	rest := NewMatch(vip)
	rest.Only = m.Left
	reads := 0
	rest.ReadLive = func() (map[Tuple]netip.AddrPort, error) {
		reads++
		return map[Tuple]netip.AddrPort{tuple(3): ap("10.0.0.22:30080")}, nil // synced meanwhile
	}
	if rest.MatchConntrackFlow(f(4)) {
		t.Error("selected an entry the bounded run did not leave")
	}
	if !rest.MatchConntrackFlow(f(2)) {
		t.Error("kept an entry the bounded run left")
	}
	if rest.MatchConntrackFlow(f(3)) {
		t.Error("selected a left entry whose connection IPVS now carries to its backend")
	}
	if reads != 1 {
		t.Errorf("IPVS table read %d times, want once", reads)
	}

	broken := NewMatch(vip)
	broken.ReadLive = func() (map[Tuple]netip.AddrPort, error) { return nil, os.ErrNotExist }
	if broken.MatchConntrackFlow(f(5)) || broken.liveErr == nil {
		t.Error("selected an entry without the IPVS table")
	}
}
