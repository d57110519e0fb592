package nftrules

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/lbd/dataplane/snat"
	"github.com/edgelb/edgelb/lbd/dataplane/srcrange"
	"github.com/edgelb/edgelb/lbd/proc"
)

func sh(t testing.TB, script string) {
	t.Helper()
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

// lab makes three namespaces of the test's own: nftt-e the edge (the rule
// engine's table lives there), nftt-c a client with an allowed (.2) and a
// denied (.100) address, nftt-b a backend behind the edge. All traffic stays
// inside them.
func lab(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	exec.Command("sh", "-c", "ip netns del nftt-e; ip netns del nftt-c; ip netns del nftt-b").Run()
	sh(t, `ip netns add nftt-e && ip netns add nftt-c && ip netns add nftt-b &&
ip -n nftt-e link add v0 type veth peer name v1 netns nftt-c &&
ip -n nftt-e link add b0 type veth peer name b1 netns nftt-b &&
ip -n nftt-e link set lo up && ip -n nftt-e link set v0 up && ip -n nftt-e link set b0 up &&
ip -n nftt-e addr add 10.96.0.1/24 dev v0 && ip -n nftt-e addr add 10.96.0.10/32 dev v0 &&
ip -n nftt-e addr add 10.97.0.1/24 dev b0 &&
ip -n nftt-e -6 addr add fd96::1/64 dev v0 nodad && ip -n nftt-e -6 addr add fd96::10/128 dev v0 nodad &&
ip -n nftt-c link set lo up && ip -n nftt-c link set v1 up &&
ip -n nftt-c addr add 10.96.0.2/24 dev v1 && ip -n nftt-c addr add 10.96.0.100/24 dev v1 &&
ip -n nftt-c -6 addr add fd96::2/64 dev v1 nodad && ip -n nftt-c -6 addr add fd96::100/64 dev v1 nodad &&
ip -n nftt-b link set lo up && ip -n nftt-b link set b1 up &&
ip -n nftt-b addr add 10.97.0.2/24 dev b1 && ip -n nftt-b route add default via 10.97.0.1`)
	// Not `ip netns exec … sysctl`: that hangs in the UML guest.
	if err := netns.Do("nftt-e", func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("sh", "-c", "ip netns del nftt-e; ip netns del nftt-c; ip netns del nftt-b").Run()
	})
}

// listen serves in namespace ns at addr, writing each connection's remote
// address.
func listen(t *testing.T, ns, addr string) {
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
			c.Close()
		}
	}()
}

// dial connects from the client namespace, from src, to dst and returns what
// the server wrote (the source it saw), or the error.
func dial(t *testing.T, src, dst string) (string, error) {
	var c net.Conn
	err := netns.Do("nftt-c", func() (err error) {
		d := net.Dialer{Timeout: 700 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err = d.Dial("tcp", dst)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return strings.TrimSpace(string(b)), err
}

func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func openLab(t *testing.T, guard time.Duration) *Table {
	var tab *Table
	err := netns.Do("nftt-e", func() (err error) {
		tab, err = Open(context.Background(), guard, slog.New(slog.NewTextHandler(io.Discard, nil)))
		return err
	})
	if err != nil {
		t.Skipf("this kernel cannot hold the nftables table (no nf_tables inet family?): %v", err)
	}
	t.Cleanup(func() { tab.Close() })
	return tab
}

// The source-range filter by set lookups, IPv4 and IPv6: an allowed
// source connects, a denied one is dropped (a timeout, no RST) and counted,
// overlapping ranges are merged, deny_all_sources closes the port to all,
// and a VIP no longer filtered is open again.
func TestKernelNftSourceRanges(t *testing.T) {
	lab(t)
	listen(t, "nftt-e", "10.96.0.10:80")
	listen(t, "nftt-e", "[fd96::10]:80")
	tab := openLab(t, 0)
	f := Filter{tab}
	ctx := context.Background()
	started := proc.Started()
	svc := &srcrange.Service{Name: "t/web", Ports: []srcrange.Port{{Proto: "tcp", Port: 80}},
		Ranges: []netip.Prefix{netip.MustParsePrefix("10.96.0.2/32"), netip.MustParsePrefix("10.96.0.0/30"), netip.MustParsePrefix("fd96::2/128")}}
	v4 := srcrange.VIP{Addr: netip.MustParseAddr("10.96.0.10"), Services: []*srcrange.Service{svc}}
	v6 := srcrange.VIP{Addr: netip.MustParseAddr("fd96::10"), Services: []*srcrange.Service{svc}}
	if f.Holds(v4) {
		t.Fatal("Holds before any Set")
	}
	if err := f.Set(ctx, []srcrange.VIP{v4, v6}); err != nil {
		t.Fatal(err)
	}
	if !f.Holds(v4) || !f.Holds(v6) {
		t.Fatal("Holds false after Set")
	}
	for _, c := range []struct{ src, dst string }{{"10.96.0.2", "10.96.0.10:80"}, {"fd96::2", "[fd96::10]:80"}} {
		if got, err := dial(t, c.src, c.dst); err != nil || got != c.src {
			t.Errorf("allowed %s → %s: %q, %v", c.src, c.dst, got, err)
		}
	}
	for _, c := range []struct{ src, dst string }{{"10.96.0.100", "10.96.0.10:80"}, {"fd96::100", "[fd96::10]:80"}} {
		if _, err := dial(t, c.src, c.dst); !timedOut(err) {
			t.Errorf("denied %s → %s: %v, want a timeout (dropped)", c.src, c.dst, err)
		}
	}
	drops, err := f.Dropped(ctx)
	if err != nil || drops[v4.Addr] == 0 || drops[v6.Addr] == 0 {
		t.Errorf("Dropped = %v, %v; want packets counted for both VIPs", drops, err)
	}
	if !tab.Intact(ctx) {
		t.Error("Intact false right after Set")
	}

	// deny_all_sources: the port with no range.
	closed := srcrange.VIP{Addr: v4.Addr, Services: []*srcrange.Service{{Name: "t/web", Ports: svc.Ports}}}
	if f.Holds(closed) {
		t.Error("Holds the closed VIP while ranges are applied")
	}
	if err := f.Set(ctx, []srcrange.VIP{closed, v6}); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, "10.96.0.2", "10.96.0.10:80"); !timedOut(err) {
		t.Errorf("deny all: %v, want a timeout", err)
	}
	after, _ := f.Dropped(ctx)
	if after[v4.Addr] <= drops[v4.Addr] {
		t.Errorf("drops went from %d to %d across a change of ranges; totals only grow", drops[v4.Addr], after[v4.Addr])
	}

	// Drift: an element removed by hand is seen and put back.
	if err := tab.conn.SetDeleteElements(tab.sets[setSRPorts[1]], []nftables.SetElement{{Key: append(addrKey(v6.Addr), append(pad4([]byte{unix.IPPROTO_TCP}), portKey(80)...)...)}}); err != nil {
		t.Fatal(err)
	}
	if err := tab.conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if tab.Intact(ctx) {
		t.Error("Intact true with an element deleted behind lbd's back")
	}
	tab.Forget()
	if err := f.Set(ctx, []srcrange.VIP{closed, v6}); err != nil {
		t.Fatal(err)
	}
	if !tab.Intact(ctx) {
		t.Error("not repaired by Forget and Set")
	}
	if _, err := dial(t, "fd96::100", "[fd96::10]:80"); !timedOut(err) {
		t.Errorf("denied IPv6 after the repair: %v, want a timeout", err)
	}

	if err := f.Set(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := dial(t, "10.96.0.100", "10.96.0.10:80"); err != nil || got != "10.96.0.100" {
		t.Errorf("no ranges: %q, %v; want open", got, err)
	}
	if n := proc.Started() - started; n != 0 {
		t.Errorf("the filter started %d processes", n)
	}
}

// SNAT by conntrack's original destination. IPVS is not in every kernel a
// test runs in, so a DNAT rule (in a table of the test's) plays its part:
// like IPVS with conntrack on, it leaves the connection's original tuple
// naming the VIP and sends the packet on to the backend through
// POSTROUTING. A VIP in the set: the backend sees the VIP as the source; out
// of it: the client.
func TestKernelNftSNAT(t *testing.T) {
	lab(t)
	listen(t, "nftt-b", "10.97.0.2:8080")
	tab := openLab(t, 5*time.Second)
	s := SNAT{tab}
	ctx := context.Background()
	started := proc.Started()
	err := netns.Do("nftt-e", func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tt := c.AddTable(&nftables.Table{Name: "ipvs-standin", Family: nftables.TableFamilyIPv4})
		ch := c.AddChain(&nftables.Chain{Name: "pre", Table: tt, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
		c.AddRule(&nftables.Rule{Table: tt, Chain: ch, Exprs: []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 96, 0, 10}},
			&expr.Immediate{Register: 1, Data: []byte{10, 97, 0, 2}},
			&expr.Immediate{Register: 2, Data: []byte{0x1f, 0x90}},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2},
		}})
		return c.Flush()
	})
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("10.96.0.10")
	if got, err := dial(t, "10.96.0.2", "10.96.0.10:80"); err != nil || got != "10.96.0.2" {
		t.Fatalf("without SNAT the backend saw %q (%v), want the client", got, err)
	}
	if err := s.Set(ctx, []snat.VIP{{Addr: vip, TCPPorts: []uint16{80}}}); err != nil {
		t.Fatal(err)
	}
	if !s.Present(vip) {
		t.Error("Present false after Set")
	}
	if got, err := dial(t, "10.96.0.2", "10.96.0.10:80"); err != nil || got != vip.String() {
		t.Errorf("with the VIP in the set the backend saw %q (%v), want the VIP", got, err)
	}
	// The guard's window is an element that expires by itself.
	if err := s.Guard(vip); err != nil {
		t.Fatal(err)
	}
	els, err := tab.conn.GetSetElements(tab.sets[setTakeover[0]])
	if err != nil || len(els) != 1 || netip.AddrFrom4([4]byte(els[0].Key)) != vip || els[0].Timeout != 5*time.Second {
		t.Errorf("takeover set after Guard: %+v, %v", els, err)
	}
	// A restarted lbd takes the table over with its elements.
	var again *Table
	if err := netns.Do("nftt-e", func() (err error) { again, err = Open(ctx, 5*time.Second, nil); return err }); err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if !(SNAT{again}).Present(vip) {
		t.Error("a reopened table lost the SNAT element")
	}
	if err := s.Set(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if s.Present(vip) {
		t.Error("Present after the VIP went")
	}
	if got, err := dial(t, "10.96.0.2", "10.96.0.10:80"); err != nil || got != "10.96.0.2" {
		t.Errorf("VIP removed: backend saw %q (%v), want the client", got, err)
	}
	if n := proc.Started() - started; n != 0 {
		t.Errorf("SNAT and guard started %d processes", n)
	}

	// A VIP no longer here (moved to another host: here, the backend's
	// namespace) is still in this host's set for a moment; a client's
	// packet this host forwards to it keeps its source. SNAT to the VIP
	// would reach the new holder from its own address and be dropped.
	sh(t, "ip -n nftt-b addr add 10.97.0.50/32 dev lo && ip -n nftt-c route add 10.97.0.0/24 via 10.96.0.1")
	listen(t, "nftt-b", "10.97.0.50:80")
	moved := netip.MustParseAddr("10.97.0.50")
	if err := s.Set(ctx, []snat.VIP{{Addr: moved, TCPPorts: []uint16{80}}}); err != nil {
		t.Fatal(err)
	}
	if got, err := dial(t, "10.96.0.2", "10.97.0.50:80"); err != nil || got != "10.96.0.2" {
		t.Errorf("forwarded to a VIP held elsewhere: %q (%v); want the client's own address, not SNAT", got, err)
	}
}

// The upgrade: an older lbd's iptables chains (all three tables, with the
// jumps to them) are removed, and nothing else.
func TestKernelRemoveLegacy(t *testing.T) {
	lab(t)
	if _, err := exec.LookPath("iptables-legacy-restore"); err != nil {
		t.Skip("needs iptables-legacy")
	}
	old := `*nat
:EDGELB-POSTROUTING - [0:0]
-A POSTROUTING -j EDGELB-POSTROUTING
-A POSTROUTING -d 10.99.0.0/24 -j MASQUERADE
-A EDGELB-POSTROUTING -d 10.96.0.10/32 -j SNAT --to-source 10.96.0.10
COMMIT
*mangle
:EDGELB-PREROUTING - [0:0]
-A PREROUTING -p tcp ! --syn -m conntrack --ctstate NEW -j EDGELB-PREROUTING
-A EDGELB-PREROUTING -p tcp -m multiport --dports 80 -j RETURN
COMMIT
*filter
:EDGELB-INPUT - [0:0]
:EDGELB-SR-0123456789ABCDEF - [0:0]
-I INPUT 1 -j EDGELB-INPUT
-A INPUT -p tcp --dport 22 -j ACCEPT
-A EDGELB-INPUT -d 10.96.0.10/32 -j EDGELB-SR-0123456789ABCDEF
-A EDGELB-SR-0123456789ABCDEF -s 10.96.0.2/32 -p tcp -m multiport --dports 80 -j RETURN
-A EDGELB-SR-0123456789ABCDEF -p tcp -m multiport --dports 80 -j DROP
COMMIT
`
	save := func() string {
		var out []byte
		if err := netns.Do("nftt-e", func() (err error) { out, err = exec.Command("iptables-legacy-save").Output(); return err }); err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	err := netns.Do("nftt-e", func() error {
		c := exec.Command("iptables-legacy-restore", "--noflush")
		c.Stdin = strings.NewReader(old)
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Skipf("iptables-legacy does not work in this kernel: %v", err)
	}
	if !strings.Contains(save(), "EDGELB-SR-0123456789ABCDEF") {
		t.Fatal("the old chains were not made")
	}
	var n int
	if err := netns.Do("nftt-e", func() (err error) { n, err = RemoveLegacy(context.Background()); return err }); err != nil {
		t.Fatal(err)
	}
	after := save()
	if strings.Contains(after, "EDGELB-") || n != 4 {
		t.Errorf("removed %d chains (want 4); left:\n%s", n, after)
	}
	for _, kept := range []string{"-A POSTROUTING -d 10.99.0.0/24 -j MASQUERADE", "--dport 22 -j ACCEPT"} {
		if !strings.Contains(after, kept) {
			t.Errorf("the host's own rule %q went too:\n%s", kept, after)
		}
	}
	// Nothing left: nothing to do, and no error.
	if err := netns.Do("nftt-e", func() (err error) { n, err = RemoveLegacy(context.Background()); return err }); err != nil || n != 0 {
		t.Errorf("second removal: %d, %v", n, err)
	}
}
