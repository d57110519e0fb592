package uml

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TestNftablesInGuest proves the guest kernel has what lbd's nftables rules need
// (issue 21), through the library they are written with (github.com/google/nftables):
// tables of the ip, ip6 and inet families, a set and a map looked up from rules, and
// nat chains — DNAT in output for both families, SNAT in an inet postrouting chain to
// the address a map gives. One TCP connection per family shows the rules act: to
// port 80 of a set member, it reaches a listener on another port (DNAT), and over
// IPv4 the listener sees the source the map named (SNAT). Debian's linux.uml fails
// the first batch ("Protocol not supported"): it has no ip/ip6/inet family.
func TestNftablesInGuest(t *testing.T) {
	if !InGuest() {
		runInGuest(t, "TestNftablesInGuest")
		return
	}

	// Listeners the DNAT rules send port 80 to.
	ln4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln4.Close()
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln6.Close()
	port4 := uint16(ln4.Addr().(*net.TCPAddr).Port)
	port6 := uint16(ln6.Addr().(*net.TCPAddr).Port)
	snatTo := netip.MustParseAddr("127.0.0.5") // any 127/8 address is local

	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	// ip: a set of IPv4 destinations; output nat: ip daddr @dst tcp dport 80 dnat to 127.0.0.1:port4.
	t4 := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "edgelb-kt"})
	set4 := &nftables.Set{Table: t4, Name: "dst", KeyType: nftables.TypeIPAddr}
	if err := c.AddSet(set4, []nftables.SetElement{{Key: netip.MustParseAddr("127.0.0.1").AsSlice()}}); err != nil {
		t.Fatal(err)
	}
	out4 := c.AddChain(&nftables.Chain{Name: "out", Table: t4, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	c.AddRule(&nftables.Rule{Table: t4, Chain: out4, Exprs: dnatRule(set4, 16, 4, netip.MustParseAddr("127.0.0.1"), port4, unix.NFPROTO_IPV4)})

	// ip6: the same for IPv6.
	t6 := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv6, Name: "edgelb-kt"})
	set6 := &nftables.Set{Table: t6, Name: "dst", KeyType: nftables.TypeIP6Addr}
	if err := c.AddSet(set6, []nftables.SetElement{{Key: netip.IPv6Loopback().AsSlice()}}); err != nil {
		t.Fatal(err)
	}
	out6 := c.AddChain(&nftables.Chain{Name: "out", Table: t6, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	c.AddRule(&nftables.Rule{Table: t6, Chain: out6, Exprs: dnatRule(set6, 24, 16, netip.IPv6Loopback(), port6, unix.NFPROTO_IPV6)})

	// inet: a map destination -> source; postrouting nat: meta nfproto ipv4 snat ip to ip daddr map @snat.
	ti := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "edgelb-kt"})
	snat := &nftables.Set{Table: ti, Name: "snat", IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIPAddr}
	if err := c.AddSet(snat, []nftables.SetElement{{Key: netip.MustParseAddr("127.0.0.1").AsSlice(), Val: snatTo.AsSlice()}}); err != nil {
		t.Fatal(err)
	}
	post := c.AddChain(&nftables.Chain{Name: "post", Table: ti, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	c.AddRule(&nftables.Rule{Table: ti, Chain: post, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: snat.Name, SetID: snat.ID},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}})
	if err := c.Flush(); err != nil {
		t.Fatalf("programming ip, ip6 and inet tables with sets, a map and nat chains: %v", err)
	}
	defer func() {
		for _, tb := range []*nftables.Table{t4, t6, ti} {
			c.DelTable(tb)
		}
		if err := c.Flush(); err != nil {
			t.Errorf("deleting the tables: %v", err)
		}
	}()

	// What was written reads back.
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyINet} {
		tables, err := c.ListTablesOfFamily(fam)
		if err != nil || len(tables) != 1 || tables[0].Name != "edgelb-kt" {
			t.Errorf("tables of family %d: %v, %v; want edgelb-kt", fam, tables, err)
		}
	}
	elems, err := c.GetSetElements(snat)
	if err != nil || len(elems) != 1 || !bytes.Equal(elems[0].Val, snatTo.AsSlice()) {
		t.Errorf("map elements: %+v, %v; want 127.0.0.1 : %s", elems, err, snatTo)
	}

	// The rules act: port 80 of a set member reaches the listener (DNAT), and over IPv4
	// the listener sees the source the map names (SNAT).
	for _, tc := range []struct {
		ln       net.Listener
		dial     string
		wantFrom netip.Addr
	}{
		{ln4, "127.0.0.1:80", snatTo},
		{ln6, "[::1]:80", netip.IPv6Loopback()},
	} {
		accepted := make(chan net.Addr, 1)
		go func() {
			conn, err := tc.ln.Accept()
			if err != nil {
				accepted <- nil
				return
			}
			accepted <- conn.RemoteAddr()
			conn.Close()
		}()
		conn, err := net.DialTimeout("tcp", tc.dial, 5*time.Second)
		if err != nil {
			t.Errorf("dial %s (DNAT to %s): %v", tc.dial, tc.ln.Addr(), err)
			tc.ln.Close()
			<-accepted
			continue
		}
		conn.Close()
		from := <-accepted
		if from == nil || from.(*net.TCPAddr).AddrPort().Addr().Unmap() != tc.wantFrom {
			t.Errorf("dial %s: the listener saw the connection from %v, want %s", tc.dial, from, tc.wantFrom)
		}
	}
}

// dnatRule is: <family> daddr @set tcp dport 80 dnat to to:port. off and n locate the
// destination address in the network header.
func dnatRule(set *nftables.Set, off, n uint32, to netip.Addr, port uint16, family uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, 80)},
		&expr.Immediate{Register: 1, Data: to.AsSlice()},
		&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: family, RegAddrMin: 1, RegProtoMin: 2},
	}
}
