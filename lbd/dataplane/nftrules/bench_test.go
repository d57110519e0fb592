package nftrules

import (
	"context"
	"net/netip"
	"testing"

	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/lbd/dataplane/snat"
	"github.com/edgelb/edgelb/lbd/dataplane/srcrange"
)

func vips(n int) []snat.VIP {
	out := make([]snat.VIP, n)
	for i := range out {
		out[i] = snat.VIP{Addr: netip.AddrFrom4([4]byte{10, 98, byte(i >> 8), byte(i)}), TCPPorts: []uint16{80, 443}}
	}
	return out
}

// One VIP added and removed beside 1,000 others: the netlink batch a
// commit that creates (or moves here) a VIP costs the rule engine.
func BenchmarkKernelNftSNATOneVIPOf1000(b *testing.B) {
	lab(b)
	tab := openLabB(b)
	s := SNAT{tab}
	ctx := context.Background()
	base := vips(1000)
	if err := s.Set(ctx, base); err != nil {
		b.Fatal(err)
	}
	more := append(vips(1000), snat.VIP{Addr: netip.MustParseAddr("10.99.0.1"), TCPPorts: []uint16{80}})
	b.ResetTimer()
	for i := range b.N {
		l := base
		if i%2 == 0 {
			l = more
		}
		if err := s.Set(ctx, l); err != nil {
			b.Fatal(err)
		}
	}
}

// The same change to the source-range filter, nftables and iptables-legacy
// (one iptables-restore per change, as before).
func BenchmarkKernelSourceRangeOneVIPOf1000(b *testing.B) {
	lab(b)
	list := func(n int) []srcrange.VIP {
		out := make([]srcrange.VIP, n)
		for i := range out {
			out[i] = srcrange.VIP{Addr: netip.AddrFrom4([4]byte{10, 98, byte(i >> 8), byte(i)}), Services: []*srcrange.Service{{Name: "t/s", Ports: []srcrange.Port{{Proto: "tcp", Port: 80}},
				Ranges: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}}}
		}
		return out
	}
	// The services of a VIP are the same objects from pass to pass (the
	// FSM's are immutable), as the engine hands them over.
	more := list(1001)
	base := more[:1000]
	run := func(b *testing.B, f srcrange.Enforcer) {
		ctx := context.Background()
		if err := f.Set(ctx, base); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := range b.N {
			l := base
			if i%2 == 0 {
				l = more
			}
			if err := f.Set(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("nftables", func(b *testing.B) { run(b, Filter{openLabB(b)}) })
	b.Run("iptables-legacy", func(b *testing.B) {
		var f *srcrange.Filter
		// The filter's processes start in the namespace: Do's thread.
		err := netns.Do("nftt-e", func() (err error) {
			f, err = srcrange.Open(context.Background(), "iptables-legacy", "ip6tables-legacy", nil)
			if err != nil {
				return err
			}
			run(b, f)
			return nil
		})
		if err != nil {
			b.Skip(err)
		}
	})
}

func openLabB(b *testing.B) *Table {
	var tab *Table
	if err := netns.Do("nftt-e", func() (err error) { tab, err = Open(context.Background(), 0, nil); return err }); err != nil {
		b.Skip(err)
	}
	b.Cleanup(func() { tab.Close() })
	return tab
}
