package ipvsconn

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode"
)

// kernelLine prints c as ip_vs_conn_seq_show does (kernel 6.1):
// "%-3s %pI6 %04X %pI6 %04X %s %04X %-11s %7u%s\n", IPv4 addresses as
// %08X, %pI6 as eight groups of four lowercase hex digits.
func kernelLine(c Conn, expires uint32, pe string) string {
	name := map[uint8]string{TCP: "TCP", UDP: "UDP", SCTP: "SCTP"}[c.Proto]
	a := func(ip netip.Addr) string {
		if ip.Is4() {
			b := ip.As4()
			return fmt.Sprintf("%02X%02X%02X%02X", b[0], b[1], b[2], b[3])
		}
		b := ip.As16()
		g := make([]string, 8)
		for i := range g {
			g[i] = fmt.Sprintf("%02x%02x", b[2*i], b[2*i+1])
		}
		return strings.Join(g, ":")
	}
	return fmt.Sprintf("%-3s %s %04X %s %04X %s %04X %-11s %7d%s\n", name,
		a(c.Client.Addr()), c.Client.Port(), a(c.VIP.Addr()), c.VIP.Port(),
		a(c.Backend.Addr()), c.Backend.Port(), c.State, expires, pe)
}

const header = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"

// A table as the kernel prints it: the header skipped, every connection of
// TCP, UDP and SCTP in its order whatever its state, IPv4 in hex and IPv6 in
// %pI6's full form, a backend of another family than its VIP, persistence
// engine data after Expires, protocols IPVS balances none of skipped.
func TestRead(t *testing.T) {
	table := header +
		"TCP 0A000064 AF8C 0A0000D7 0050 0A000015 7580 ESTABLISHED     899\n" +
		"TCP 0A000064 AF8E 0A0000D7 0050 0A000016 7580 TIME_WAIT       119\n" +
		"UDP 0A000064 D431 0A0000D7 0050 0A000015 7580 UDP             299\n" +
		"UDP 0A000064 13C4 0A0000D7 13C4 0A000015 13C4 UDP             299 sip 7a3b@10.0.0.100\n" +
		"SCTP 0A000064 8AE1 0A0000D7 0B59 0A000015 0B59 ESTABLISHED    899\n" +
		"ICMP 0A000064 0000 0A0000D7 0000 0A000015 0000 ICMP            59\n" +
		"IP_47 0A000064 0000 0A0000D7 0000 0A000015 0000 ?               59\n" +
		"TCP 2001:0db8:0000:0000:0000:0000:0000:00c8 C353 2001:0db8:0000:0000:0000:0000:0000:00d2 0050 fe80:0000:0000:0000:0a00:27ff:fe4e:66a1 7786 SYN_RECV         59\n" +
		"TCP 0A000064 AF90 0A0000D7 0050 2001:0db8:0000:0000:0000:0000:0001:0001 7580 ESTABLISHED     899\n"
	got, err := Read(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	want := []Conn{
		{TCP, ap("10.0.0.100:44940"), ap("10.0.0.215:80"), ap("10.0.0.21:30080"), "ESTABLISHED"},
		{TCP, ap("10.0.0.100:44942"), ap("10.0.0.215:80"), ap("10.0.0.22:30080"), "TIME_WAIT"},
		{UDP, ap("10.0.0.100:54321"), ap("10.0.0.215:80"), ap("10.0.0.21:30080"), "UDP"},
		{UDP, ap("10.0.0.100:5060"), ap("10.0.0.215:5060"), ap("10.0.0.21:5060"), "UDP"},
		{SCTP, ap("10.0.0.100:35553"), ap("10.0.0.215:2905"), ap("10.0.0.21:2905"), "ESTABLISHED"},
		{TCP, ap("[2001:db8::c8]:50003"), ap("[2001:db8::d2]:80"), ap("[fe80::a00:27ff:fe4e:66a1]:30598"), "SYN_RECV"},
		{TCP, ap("10.0.0.100:44944"), ap("10.0.0.215:80"), ap("[2001:db8::1:1]:30080"), "ESTABLISHED"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("read\n%v\nwant\n%v", got, want)
	}
	// The lines are the kernel's own printf: the test's printer gives them
	// back, so the round trip in FuzzRead checks what the kernel writes.
	var printed strings.Builder
	for _, c := range want {
		printed.WriteString(kernelLine(c, 899, ""))
	}
	for _, l := range strings.Split(strings.TrimSpace(printed.String()), "\n") {
		if f := strings.Fields(l); !strings.Contains(table, strings.Join(f[:7], " ")) {
			t.Errorf("the kernel's printf gives %q, not in the table", l)
		}
	}
}

// The compressed IPv6 form (older fixtures; the kernel prints the full one)
// reads alike, and an empty table is no connection.
func TestReadCompressedIPv6(t *testing.T) {
	got, err := Read(strings.NewReader("TCP 2001:db8::c8 C353 2001:db8::d2 0050 2001:db8::101 7786 ESTABLISHED     877\n"))
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	if want := (Conn{TCP, ap("[2001:db8::c8]:50003"), ap("[2001:db8::d2]:80"), ap("[2001:db8::101]:30598"), "ESTABLISHED"}); len(got) != 1 || got[0] != want {
		t.Errorf("read %v, want %v", got, want)
	}
	if got, err := Read(strings.NewReader(header)); err != nil || len(got) != 0 {
		t.Errorf("the header alone: %v, %v; want no connection", got, err)
	}
}

// A connection line that is not the kernel's format fails the whole read,
// with the line in the error.
func TestReadMalformed(t *testing.T) {
	for _, line := range []string{
		"TCP zz 0050 0A0000D7 0050 0A000015 7580 ESTABLISHED 1",          // address not hex
		"TCP 0A00064 0050 0A0000D7 0050 0A000015 7580 ESTABLISHED 1",     // 7 hex digits
		"TCP 0A000064 050 0A0000D7 0050 0A000015 7580 ESTABLISHED 1",     // port of 3 digits
		"TCP 0A000064 0050 0A0000D7 005G 0A000015 7580 ESTABLISHED 1",    // port not hex
		"TCP 0A000064 0050 0A0000D7 0050 0A000015 7580 ESTABLISHED",      // no Expires
		"TCP 0A000064 0050 0A0000D7 0050 0A000015 7580 ESTABLISHED soon", // Expires not a number
		"UDP 0A000064 0050", // cut short
		"TCP fe80::1%eth0 0050 fe80::2 0050 fe80::3 7580 ESTABLISHED 1",           // a zone
		"TCP 2001:db8::1::2 0050 2001:db8::2 0050 2001:db8::3 7580 ESTABLISHED 1", // two ::
		"TCP 0A000064 0050 2001:db8::2 0050 2001:db8::3 7580 ESTABLISHED 1",       // client and VIP of two families
		"SCTP 0A000064 0050 0A0000D7 0050 0A000015 17580 ESTABLISHED 1",           // port of 5 digits
	} {
		_, err := Read(strings.NewReader(header + "TCP 0A000064 AF8C 0A0000D7 0050 0A000015 7580 ESTABLISHED     899\n" + line + "\n"))
		if err == nil {
			t.Errorf("%q: read without an error", line)
		} else if !strings.Contains(err.Error(), line) {
			t.Errorf("%q: the error does not name the line: %v", line, err)
		}
	}
}

func TestReadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ip_vs_conn")
	if err := os.WriteFile(p, []byte(header+"TCP 0A000064 AF8C 0A0000D7 0050 0A000015 7580 ESTABLISHED     899\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadFile(p); err != nil || len(got) != 1 {
		t.Errorf("read %v, %v; want one connection", got, err)
	}
	if _, err := ReadFile(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("a missing table read without an error")
	}
}

// Whatever the input, Read does not panic; what it accepts is connections
// of the protocols it knows, with valid addresses of one family for client
// and VIP, and printed back in the kernel's format they read the same.
func FuzzRead(f *testing.F) {
	f.Add(header + "TCP 0A000064 AF8C 0A0000D7 0050 0A000015 7580 ESTABLISHED     899\n")
	f.Add("SCTP 0A000064 8AE1 0A0000D7 0B59 0A000015 0B59 ESTABLISHED    899\n")
	f.Add("UDP 0A000064 13C4 0A0000D7 13C4 0A000015 13C4 UDP             299 sip 7a3b@10.0.0.100\n")
	f.Add("TCP 2001:0db8:0000:0000:0000:0000:0000:00c8 C353 2001:0db8:0000:0000:0000:0000:0000:00d2 0050 0A000015 7786 SYN_RECV         59\n")
	f.Add("TCP ::ffff:10.0.0.1 0050 ::1 0050 ::2 0050 ESTABLISHED 1\n")
	f.Add("TCP zz 0050 0A0000D7 0050 0A000015 7580 ESTABLISHED 1\n")
	f.Add("ICMP 0A000064 0000 0A0000D7 0000 0A000015 0000 ICMP            59\n\n")
	f.Fuzz(func(t *testing.T, table string) {
		conns, err := Read(strings.NewReader(table))
		if err != nil {
			return
		}
		var printed strings.Builder
		for _, c := range conns {
			if c.Proto != TCP && c.Proto != UDP && c.Proto != SCTP {
				t.Fatalf("protocol %d accepted", c.Proto)
			}
			for _, a := range []netip.AddrPort{c.Client, c.VIP, c.Backend} {
				if !a.IsValid() || a.Addr().Zone() != "" {
					t.Fatalf("address %v accepted", a)
				}
			}
			if c.Client.Addr().Is4() != c.VIP.Addr().Is4() || c.State == "" || strings.ContainsFunc(c.State, unicode.IsSpace) {
				t.Fatalf("connection %+v accepted", c)
			}
			printed.WriteString(kernelLine(c, 60, ""))
		}
		again, err := Read(strings.NewReader(header + printed.String()))
		if err != nil {
			t.Fatalf("%v read back from\n%s: %v", conns, printed.String(), err)
		}
		if len(conns) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(again, conns) {
			t.Fatalf("read %v, printed back and read again %v", conns, again)
		}
	})
}
