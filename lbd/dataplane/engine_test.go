package dataplane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"
	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsdiff"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// countingIPVS is a fake kernel that counts calls; it keeps no state, since
// the engine only reads the kernel on open and resync.
type countingIPVS struct{ calls int }

func (c *countingIPVS) Info() (ipvs.Info, error)                  { return ipvs.Info{}, nil }
func (c *countingIPVS) Services() ([]ipvs.ServiceExtended, error) { return nil, nil }
func (c *countingIPVS) Service(ipvs.Service) (ipvs.ServiceExtended, error) {
	return ipvs.ServiceExtended{}, nil
}
func (c *countingIPVS) CreateService(ipvs.Service) error { c.calls++; return nil }
func (c *countingIPVS) UpdateService(ipvs.Service) error { c.calls++; return nil }
func (c *countingIPVS) RemoveService(ipvs.Service) error { c.calls++; return nil }
func (c *countingIPVS) Destinations(ipvs.Service) ([]ipvs.DestinationExtended, error) {
	return nil, nil
}
func (c *countingIPVS) CreateDestination(ipvs.Service, ipvs.Destination) error { c.calls++; return nil }
func (c *countingIPVS) UpdateDestination(ipvs.Service, ipvs.Destination) error { c.calls++; return nil }
func (c *countingIPVS) RemoveDestination(ipvs.Service, ipvs.Destination) error { c.calls++; return nil }

type fakeAddrs struct{ on map[netip.Addr]bool }

func (f *fakeAddrs) List(int) ([]netip.Addr, error) {
	var out []netip.Addr
	for a := range f.on {
		out = append(out, a)
	}
	return out, nil
}
func (f *fakeAddrs) Add(_ int, a netip.Addr) error    { f.on[a] = true; return nil }
func (f *fakeAddrs) Remove(_ int, a netip.Addr) error { delete(f.on, a); return nil }

type nopSender struct{ n int }

func (s *nopSender) Announce(netip.Addr) error { s.n++; return nil }
func (s *nopSender) Close() error              { return nil }

func fakeEngine(tb testing.TB) (*Engine, *countingIPVS, *fakeAddrs, *nopSender) {
	k, fa, snd := &countingIPVS{}, &fakeAddrs{on: map[netip.Addr]bool{}}, &nopSender{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := newEngine(Config{StateDir: tb.TempDir(), Interface: "fake0", GARPBurst: 1, Logger: log}, k, fa, 0, snd)
	e.lastResync = time.Now().Add(time.Hour) // no background re-read: the tests call Resync
	return e, k, fa, snd
}

func many(n, backends int) []*edgelbv1.VirtualService {
	out := make([]*edgelbv1.VirtualService, n)
	for i := range out {
		vs := &edgelbv1.VirtualService{Tenant: "t", Name: fmt.Sprintf("s%d", i),
			Vip: netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}).String(), Owner: "me", Ports: []*edgelbv1.Port{tcp(80, 30080)}}
		for j := 0; j < backends; j++ {
			vs.Backends = append(vs.Backends, &edgelbv1.Backend{Address: netip.AddrFrom4([4]byte{10, 1, byte(j >> 8), byte(j + 1)}).String(), Weight: 1})
		}
		out[i] = vs
	}
	return out
}

func TestReconcileAddsChangesAndWithdraws(t *testing.T) {
	e, k, fa, snd := fakeEngine(t)
	ctx := context.Background()
	vss := many(3, 4)
	if err := e.Reconcile(ctx, vss, "me"); err != nil {
		t.Fatal(err)
	}
	if k.calls != 3*(1+4) || len(fa.on) != 3 || snd.n != 3 {
		t.Fatalf("cold: %d IPVS calls, %d addresses, %d announcements; want 15, 3, 3", k.calls, len(fa.on), snd.n)
	}
	k.calls = 0
	changed := proto.Clone(vss[1]).(*edgelbv1.VirtualService)
	changed.Backends[2].Weight = 7
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{vss[0], changed, vss[2]}, "me"); err != nil {
		t.Fatal(err)
	}
	if k.calls != 1 {
		t.Fatalf("one backend weight changed: %d IPVS calls, want 1", k.calls)
	}
	k.calls = 0
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{vss[0]}, "me"); err != nil {
		t.Fatal(err)
	}
	if k.calls != 2 || len(fa.on) != 1 {
		t.Fatalf("two services withdrawn: %d IPVS calls, %d addresses; want 2, 1", k.calls, len(fa.on))
	}
}

func TestPlanLeavesForeignServicesAlone(t *testing.T) {
	foreign := &ipvsdiff.Svc{Key: ipvsdiff.SvcKey{Addr: netip.MustParseAddr("10.77.0.1"), Proto: ipvs.TCP, Port: 80}}
	actual := ipvsdiff.State{foreign.Key: foreign}
	if ops := ipvsdiff.Plan(ipvsdiff.State{}, actual, func(ipvsdiff.SvcKey) bool { return false }, nil); len(ops) != 0 {
		t.Fatalf("planned %v for a service lbd does not own", ops)
	}
}

// BenchmarkReconcileCold10kx50 is the reconcile logic (diffing, planning,
// bookkeeping) for 10,000 VIPs × 50 backends from nothing, against a counting
// fake kernel: the kernel's own cost is measured in the UML guest.
func BenchmarkReconcileCold10kx50(b *testing.B) {
	vss := many(10000, 50)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e, k, _, _ := fakeEngine(b)
		b.StartTimer()
		if err := e.Reconcile(context.Background(), vss, "me"); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(k.calls), "ipvs-ops")
	}
}

// BenchmarkReconcileOneBackendChange10kx50 is the steady state at that size:
// each iteration drains or undrains one backend of one service.
func BenchmarkReconcileOneBackendChange10kx50(b *testing.B) {
	vss := many(10000, 50)
	e, k, _, _ := fakeEngine(b)
	ctx := context.Background()
	if err := e.Reconcile(ctx, vss, "me"); err != nil {
		b.Fatal(err)
	}
	alt := append([]*edgelbv1.VirtualService(nil), vss...)
	c := proto.Clone(vss[5000]).(*edgelbv1.VirtualService)
	c.Backends[25].Drained = true
	alt[5000] = c
	k.calls = 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		next := vss
		if i%2 == 0 {
			next = alt
		}
		if err := e.Reconcile(ctx, next, "me"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(k.calls)/float64(b.N), "ipvs-ops/op")
}

// BenchmarkReconcileChangedOneBackend10kx50 is the same change as the daemon
// makes it (from the FSM's change feed): only the changed service is planned
// and compared. The full pass stays as the periodic repair of drift.
func BenchmarkReconcileChangedOneBackend10kx50(b *testing.B) {
	vss := many(10000, 50)
	e, k, _, _ := fakeEngine(b)
	ctx := context.Background()
	if err := e.Reconcile(ctx, vss, "me"); err != nil {
		b.Fatal(err)
	}
	c := proto.Clone(vss[5000]).(*edgelbv1.VirtualService)
	c.Backends[25].Drained = true
	key := KeyOf(c)
	changes := []map[ServiceKey]*edgelbv1.VirtualService{{key: c}, {key: vss[5000]}}
	k.calls = 0
	full := e.Stats().FullPasses
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := e.ReconcileChanged(ctx, changes[i%2], "me"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if e.Stats().FullPasses != full {
		b.Fatal("a change made a full pass")
	}
	b.ReportMetric(float64(k.calls)/float64(b.N), "ipvs-ops/op")
}

// Withdraw (fencing before the replicated state can be trusted) removes the
// addresses and touches no IPVS service: their connection entries must
// survive for when the VIPs come back or move.
func TestWithdrawKeepsIPVS(t *testing.T) {
	e, k, fa, _ := fakeEngine(t)
	ctx := context.Background()
	if err := e.Reconcile(ctx, many(3, 4), "me"); err != nil {
		t.Fatal(err)
	}
	k.calls = 0
	if err := e.Withdraw(ctx); err != nil {
		t.Fatal(err)
	}
	if len(fa.on) != 0 || k.calls != 0 {
		t.Fatalf("after Withdraw: %d addresses left, %d IPVS calls; want 0, 0", len(fa.on), k.calls)
	}
	if err := e.Reconcile(ctx, many(3, 4), "me"); err != nil {
		t.Fatal(err)
	}
	if len(fa.on) != 3 || k.calls != 0 {
		t.Fatalf("serving again: %d addresses, %d IPVS calls; want 3, 0", len(fa.on), k.calls)
	}
}
