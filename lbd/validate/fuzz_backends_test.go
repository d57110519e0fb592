package validate

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// FuzzBackends: the backend-list validator (SetBackends, a service's
// backends) never panics, refuses with "field: fix", and what it accepts is
// within the limit, of the VIP's family, free of duplicates and stable.
func FuzzBackends(f *testing.F) {
	f.Add("10.0.0.1", "10.0.0.2", "10.0.0.3", uint32(8080), uint32(0), uint32(3), false, false, uint8(5), uint8(0))
	f.Add("2001:db8::1", "2001:DB8::2", "2001:db8:0::1", uint32(80), uint32(0), uint32(0), true, false, uint8(5), uint8(0)) // v6, a duplicate spelled differently
	f.Add("10.0.0.1", "2001:db8::1", "10.0.0.3", uint32(80), uint32(1), uint32(1), false, false, uint8(5), uint8(0))        // v4/v6 mix
	f.Add("10.0.0.1", "10.0.0.2", "10.0.0.3", uint32(0), uint32(0), uint32(1), false, true, uint8(5), uint8(0))             // dr, ports left 0
	f.Add("10.0.0.1", "10.0.0.2", "10.0.0.3", uint32(8080), uint32(0), uint32(1), false, true, uint8(5), uint8(0))          // dr with a port
	f.Add("10.0.0.1", "10.0.0.2", "10.0.0.3", uint32(80), uint32(1), uint32(1), false, false, uint8(2), uint8(0))           // over the limit
	f.Add("10.0.0.1", "10.0.0.2", "10.0.0.3", uint32(80), uint32(1), uint32(1), false, false, uint8(5), uint8(2))           // duplicate
	f.Add("::ffff:10.0.0.1", "127.0.0.1", "fe80::1%eth0", uint32(70000), uint32(65536), uint32(0), false, false, uint8(5), uint8(0))
	f.Fuzz(func(t *testing.T, a1, a2, a3 string, port, weight, extra uint32, want6, dr bool, limit, dup uint8) {
		bs := []*edgelbv1.Backend{
			{Address: a1, Port: port, Weight: weight},
			{Address: a2, Port: port, Weight: weight + extra},
			{Address: a3, Port: port + extra, Weight: extra},
		}
		// dup 1..3 repeats that backend at the end.
		if i := int(dup % 4); i > 0 {
			bs = append(bs, proto.Clone(bs[i-1]).(*edgelbv1.Backend))
		}
		bs[0].Health = &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY}
		lim := DefaultLimits
		lim.MaxBackends = int(limit % 8)
		in := make([]*edgelbv1.Backend, len(bs))
		for i, b := range bs {
			in[i] = proto.Clone(b).(*edgelbv1.Backend)
		}

		err := Backends("backends", bs, want6, dr, lim)
		if err != nil {
			checkErr(t, err)
			return
		}
		if len(bs) > lim.MaxBackends {
			t.Fatalf("accepted %d backends over the limit of %d", len(bs), lim.MaxBackends)
		}
		type key struct {
			a netip.Addr
			p uint32
		}
		seen := map[key]bool{}
		for i, b := range bs {
			a, err := netip.ParseAddr(b.Address)
			if err != nil || a.String() != b.Address || a.Is6() != want6 || a.Zone() != "" || a.Is4In6() {
				t.Fatalf("accepted backend %q (from %q): not a canonical address of the VIP's family (v6=%v)", b.Address, in[i].Address, want6)
			}
			if dr && b.Port != 0 {
				t.Fatalf("accepted port %d with direct routing", b.Port)
			}
			if b.Port > 65535 || b.Weight < 1 || b.Weight > 65535 || b.Health != nil {
				t.Fatalf("accepted backend %v", b)
			}
			if in[i].Weight != 0 && b.Weight != in[i].Weight {
				t.Fatalf("weight %d changed to %d", in[i].Weight, b.Weight)
			}
			k := key{a, b.Port}
			if seen[k] {
				t.Fatalf("accepted %s twice", BackendKey(b.Address, b.Port))
			}
			seen[k] = true
		}
		// What passed passes again unchanged.
		again := make([]*edgelbv1.Backend, len(bs))
		for i, b := range bs {
			again[i] = proto.Clone(b).(*edgelbv1.Backend)
		}
		if err := Backends("backends", again, want6, dr, lim); err != nil {
			t.Fatalf("validated backends refused on a second pass: %v", err)
		}
		for i := range bs {
			if !proto.Equal(bs[i], again[i]) {
				t.Fatalf("validation is not idempotent: %v → %v", bs[i], again[i])
			}
		}
	})
}
