package conntrack

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Run in the User-Mode Linux guest (docs/SANDBOX.md):
//
//	go test -c -o /tmp/conntrack.test ./lbd/dataplane/conntrack
//	EDGELB_KERNEL_TESTS=1 bin/umlrun -- /tmp/conntrack.test -test.v

// kernelConntrack skips t outside a kernel test run, else opens the
// kernel's conntrack netlink for it.
func kernelConntrack(t *testing.T) *netlink.Handle {
	t.Helper()
	if os.Getenv("EDGELB_KERNEL_TESTS") != "1" {
		t.Skip("set EDGELB_KERNEL_TESTS=1 and run in a kernel with conntrack (see docs/SANDBOX.md)")
	}
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// Forget deletes exactly the entries to the VIPs it is given, among n others
// (other VIPs, the reply direction naming the VIP), and logs what one call
// over a table of that size took: it runs on a takeover before the address
// goes up.
func TestKernelForget(t *testing.T) {
	h := kernelConntrack(t)
	vip, other := net.ParseIP("192.0.2.1").To4(), net.ParseIP("192.0.2.2").To4()
	const stale, others = 100, 5000 // the guest's nf_conntrack_max is 8192
	add := func(i int, dst net.IP) {
		src := net.IPv4(10, 9, byte(i>>8), byte(i)).To4()
		f := &netlink.ConntrackFlow{
			FamilyType: unix.AF_INET,
			Forward:    netlink.IPTuple{SrcIP: src, DstIP: dst, Protocol: unix.IPPROTO_TCP, SrcPort: uint16(20000 + i%40000), DstPort: 80},
			Reverse:    netlink.IPTuple{SrcIP: net.IPv4(10, 0, 0, 21).To4(), DstIP: dst, Protocol: unix.IPPROTO_TCP, SrcPort: 30080, DstPort: uint16(1024 + i%60000)},
			TimeOut:    600,
			ProtoInfo:  &netlink.ProtoInfoTCP{State: 3}, // ESTABLISHED
		}
		if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			t.Fatalf("create entry %d: %v", i, err)
		}
	}
	for i := 0; i < stale; i++ {
		add(i, vip)
	}
	for i := stale; i < stale+others; i++ {
		add(i, other)
	}
	count := func(dst net.IP) int {
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range flows {
			if f.Forward.DstIP.Equal(dst) {
				n++
			}
		}
		return n
	}
	if a, b := count(vip), count(other); a != stale || b != others {
		t.Fatalf("before: %d entries to the VIP, %d to the other; want %d, %d", a, b, stale, others)
	}
	n, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	vips := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("fd00::1")}
	// Bounded, with Stop already closed: nothing deleted, every stale
	// entry left for later.
	stop := make(chan struct{})
	close(stop)
	res, err := n.Forget(Request{VIPs: vips, Stop: stop})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deleted) != 0 || len(res.Left) != stale {
		t.Fatalf("bounded Forget past its bound deleted %v and left %d, want nothing deleted and %d left", res.Deleted, len(res.Left), stale)
	}
	if a := count(vip); a != stale {
		t.Fatalf("after the bounded Forget: %d entries to the VIP, want %d", a, stale)
	}
	// Only narrows: half of what was left goes, the other half stays.
	half, rest := map[Tuple]bool{}, map[Tuple]bool{}
	for tp := range res.Left {
		if len(half) < stale/2 {
			half[tp] = true
		} else {
			rest[tp] = true
		}
	}
	res, err = n.Forget(Request{VIPs: vips, Only: half})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Deleted[netip.MustParseAddr("192.0.2.1")]; got != len(half) {
		t.Fatalf("Forget of %d left tuples deleted %d", len(half), got)
	}
	if a := count(vip); a != stale-len(half) {
		t.Fatalf("after deleting %d left tuples: %d entries to the VIP, want %d", len(half), a, stale-len(half))
	}
	t0 := time.Now()
	res, err = n.Forget(Request{VIPs: vips, Only: rest})
	took := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Deleted; got[netip.MustParseAddr("192.0.2.1")] != len(rest) || len(got) != 1 {
		t.Errorf("Forget reported %v, want %d for 192.0.2.1", got, len(rest))
	}
	if a, b := count(vip), count(other); a != 0 || b != others {
		t.Errorf("after: %d entries to the VIP, %d to the other; want 0, %d", a, b, others)
	}
	t.Logf("Forget of %d of one VIP's entries (by tuple) in a table of %d took %s", len(rest), len(rest)+others, took.Round(time.Microsecond))
}

// Forget with Unnated deletes, in the kernel's table, exactly the entries of
// those services whose reply comes from the VIP itself (a packet forwarded
// while the member did not hold the VIP), and reads no IPVS table (this
// kernel may have none loaded): an entry NATed to a node, a node's packet
// to VIP:client-port and another port's unnated entry stay.
func TestKernelForgetUnnated(t *testing.T) {
	h := kernelConntrack(t)
	vip, client, node := net.ParseIP("192.0.2.9").To4(), net.ParseIP("10.9.0.1").To4(), net.ParseIP("10.0.0.21").To4()
	type entry struct {
		what         string
		src          net.IP
		sport, dport uint16
		replySrc     net.IP
		replySport   uint16
		state        uint8
		proto        uint8
		deleted      bool
	}
	entries := []entry{
		{"forwarded SYN", client, 40001, 80, vip, 80, 1, unix.IPPROTO_TCP, true},
		{"forwarded datagram", client, 40002, 53, vip, 53, 0, unix.IPPROTO_UDP, true},
		{"NATed by IPVS", client, 40003, 80, node, 30080, 3, unix.IPPROTO_TCP, false},
		{"a node's packet to VIP:client-port", node, 30080, 40004, vip, 40004, 3, unix.IPPROTO_TCP, false},
		{"another port", client, 40005, 443, vip, 443, 1, unix.IPPROTO_TCP, false},
	}
	for _, e := range entries {
		f := &netlink.ConntrackFlow{
			FamilyType: unix.AF_INET,
			Forward:    netlink.IPTuple{SrcIP: e.src, DstIP: vip, Protocol: e.proto, SrcPort: e.sport, DstPort: e.dport},
			Reverse:    netlink.IPTuple{SrcIP: e.replySrc, DstIP: e.src, Protocol: e.proto, SrcPort: e.replySport, DstPort: e.sport},
			TimeOut:    600,
		}
		if e.proto == unix.IPPROTO_TCP {
			f.ProtoInfo = &netlink.ProtoInfoTCP{State: e.state}
		}
		if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			t.Fatalf("create %s: %v", e.what, err)
		}
	}
	defer h.ConntrackTableFlush(netlink.ConntrackTable)
	n, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	a := netip.MustParseAddr("192.0.2.9")
	res, err := n.Forget(Request{VIPs: []netip.Addr{a}, Unnated: map[Service]bool{
		{Proto: unix.IPPROTO_TCP, Dst: netip.AddrPortFrom(a, 80)}: true,
		{Proto: unix.IPPROTO_UDP, Dst: netip.AddrPortFrom(a, 53)}: true,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted[a] != 2 {
		t.Errorf("deleted %v, want 2 of %s", res.Deleted, a)
	}
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		found := false
		for _, f := range flows {
			found = found || f.Forward.DstIP.Equal(vip) && f.Forward.SrcPort == e.sport && f.Forward.Protocol == e.proto
		}
		if found == e.deleted {
			t.Errorf("%s: still there %v, want deleted %v", e.what, found, e.deleted)
		}
	}
}
