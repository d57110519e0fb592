package rules

import (
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Stored's fast path never admits what the full check refuses, and it is
// the path a service in stored form takes (one the API normalised, with the
// FSM's own fields set). The inputs: raw services, and the same after the
// API's normalisation, then altered (a field the API would fill in unset, a
// spelling changed, a backend doubled).
func FuzzStoredFast(f *testing.F) {
	f.Add("web", "", "192.0.2.10", "10.0.0.11", uint32(0), uint32(80), uint32(30080), uint32(0), int32(0), uint8(0), true)
	f.Add("web", "t", "2001:DB8::1", "2001:db8::2", uint32(53), uint32(53), uint32(0), uint32(2), int32(2), uint8(1), true)
	f.Add("x", "", "", "10.0.0.1", uint32(30080), uint32(80), uint32(30080), uint32(1), int32(1), uint8(2), true)
	f.Add("x", "", "10.1.2.3", "10.0.0.1", uint32(0), uint32(80), uint32(0), uint32(1), int32(1), uint8(3), false)
	f.Add("Bad", "", "::ffff:1.2.3.4", "127.0.0.1", uint32(70000), uint32(0), uint32(70000), uint32(0), int32(9), uint8(4), true)
	f.Fuzz(func(t *testing.T, name, tenant, vip, baddr string, bport, port, backendPort, weight uint32, scheduler int32, alter uint8, normalise bool) {
		vs := &edgelbv1.VirtualService{Name: name, Tenant: tenant, Vip: vip,
			Ports:     []*edgelbv1.Port{{Port: port, BackendPort: backendPort}},
			Backends:  []*edgelbv1.Backend{{Address: baddr, Port: bport, Weight: weight}},
			Scheduler: edgelbv1.Scheduler(scheduler)}
		if normalise && VirtualService(vs, DefaultLimits) != nil {
			return
		}
		// The FSM's own fields, which Stored ignores.
		vs.Owner, vs.Generation, vs.CreateTime = "m1", 7, timestamppb.Now()
		if len(vs.Backends) > 0 {
			vs.Backends[0].Health = &edgelbv1.BackendHealth{}
		}
		switch alter % 5 {
		case 1:
			vs.Scheduler = edgelbv1.Scheduler_SCHEDULER_UNSPECIFIED
		case 2:
			vs.Backends = append(vs.Backends, vs.Backends[0])
		case 3:
			vs.IpFamily = edgelbv1.IPFamily_IP_FAMILY_UNSPECIFIED
		case 4:
			vs.Vip = " " + vs.Vip
		}
		for _, lvl := range []Level{Legacy, Current} {
			fast, slow := storedFast(vs, lvl), storedSlow(vs, lvl)
			if fast && slow != nil {
				t.Fatalf("level %d: the fast path admits %v; the full check refuses it: %v", lvl, vs, slow)
			}
			if normalise && alter%5 == 0 && lvl == Current && !fast {
				t.Fatalf("a normalised service %v does not take the fast path (full check: %v)", vs, slow)
			}
		}
	})
}

// BenchmarkStored is the check every member makes of each service it
// applies, on a service in stored form: the fast path, and the full check.
func BenchmarkStored(b *testing.B) {
	vs := web(&edgelbv1.Backend{Address: "10.0.0.21"}, &edgelbv1.Backend{Address: "10.0.0.22"}, &edgelbv1.Backend{Address: "10.0.0.23"})
	if err := VirtualService(vs, DefaultLimits); err != nil {
		b.Fatal(err)
	}
	vs.Owner, vs.Generation = "m1", 1
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := Stored(vs, Current); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := storedSlow(vs, Current); err != nil {
				b.Fatal(err)
			}
		}
	})
}
