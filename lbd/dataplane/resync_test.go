package dataplane

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"
	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsdiff"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// kernelIPVS is a fake kernel that keeps its table, for tests of what the
// engine reads back. beforeDests, when set, runs at the start of every
// Destinations call (outside the table's lock), so a test can hold a read.
type kernelIPVS struct {
	mu          sync.Mutex
	svcs        map[ipvsdiff.SvcKey]ipvs.Service
	dests       map[ipvsdiff.SvcKey]map[ipvsdiff.DestKey]ipvs.Destination
	beforeDests func()
}

func newKernelIPVS() *kernelIPVS {
	return &kernelIPVS{svcs: map[ipvsdiff.SvcKey]ipvs.Service{}, dests: map[ipvsdiff.SvcKey]map[ipvsdiff.DestKey]ipvs.Destination{}}
}

func keyOf(s ipvs.Service) ipvsdiff.SvcKey {
	return ipvsdiff.SvcKey{Addr: s.Address, Proto: s.Protocol, Port: s.Port}
}

func (k *kernelIPVS) Info() (ipvs.Info, error) { return ipvs.Info{}, nil }
func (k *kernelIPVS) Services() ([]ipvs.ServiceExtended, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []ipvs.ServiceExtended
	for _, s := range k.svcs {
		out = append(out, ipvs.ServiceExtended{Service: s})
	}
	return out, nil
}
func (k *kernelIPVS) Service(s ipvs.Service) (ipvs.ServiceExtended, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return ipvs.ServiceExtended{Service: k.svcs[keyOf(s)]}, nil
}
func (k *kernelIPVS) CreateService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.svcs[keyOf(s)] = s
	k.dests[keyOf(s)] = map[ipvsdiff.DestKey]ipvs.Destination{}
	return nil
}
func (k *kernelIPVS) UpdateService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.svcs[keyOf(s)] = s
	return nil
}
func (k *kernelIPVS) RemoveService(s ipvs.Service) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.svcs, keyOf(s))
	delete(k.dests, keyOf(s))
	return nil
}
func (k *kernelIPVS) Destinations(s ipvs.Service) ([]ipvs.DestinationExtended, error) {
	if k.beforeDests != nil {
		k.beforeDests()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []ipvs.DestinationExtended
	for _, d := range k.dests[keyOf(s)] {
		out = append(out, ipvs.DestinationExtended{Destination: d})
	}
	return out, nil
}
func (k *kernelIPVS) CreateDestination(s ipvs.Service, d ipvs.Destination) error {
	return k.UpdateDestination(s, d)
}
func (k *kernelIPVS) UpdateDestination(s ipvs.Service, d ipvs.Destination) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dests[keyOf(s)][ipvsdiff.DestKey{Addr: d.Address, Port: d.Port}] = d
	return nil
}
func (k *kernelIPVS) RemoveDestination(s ipvs.Service, d ipvs.Destination) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.dests[keyOf(s)], ipvsdiff.DestKey{Addr: d.Address, Port: d.Port})
	return nil
}

// weights is the kernel's table as service → destination → weight.
func (k *kernelIPVS) weights() map[ipvsdiff.SvcKey]map[ipvsdiff.DestKey]uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[ipvsdiff.SvcKey]map[ipvsdiff.DestKey]uint32{}
	for sk, ds := range k.dests {
		out[sk] = map[ipvsdiff.DestKey]uint32{}
		for dk, d := range ds {
			out[sk][dk] = d.Weight
		}
	}
	return out
}

// syncAddrs is fakeAddrs safe for the background resync.
type syncAddrs struct {
	mu sync.Mutex
	on map[netip.Addr]bool
}

func (f *syncAddrs) List(int) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for a := range f.on {
		out = append(out, a)
	}
	return out, nil
}
func (f *syncAddrs) Add(_ int, a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.on[a] = true
	return nil
}
func (f *syncAddrs) Remove(_ int, a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.on, a)
	return nil
}

// wantWeights is what the kernel must hold for vss.
func wantWeights(t *testing.T, vss []*edgelbv1.VirtualService) map[ipvsdiff.SvcKey]map[ipvsdiff.DestKey]uint32 {
	t.Helper()
	out := map[ipvsdiff.SvcKey]map[ipvsdiff.DestKey]uint32{}
	for _, vs := range vss {
		svcs, err := ipvsdiff.FromService(vs)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range svcs {
			out[s.Key] = map[ipvsdiff.DestKey]uint32{}
			for dk, d := range s.Dests {
				out[s.Key][dk] = d.Weight
			}
		}
	}
	return out
}

func sameTable(a, b map[ipvsdiff.SvcKey]map[ipvsdiff.DestKey]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for sk, ds := range a {
		if len(ds) != len(b[sk]) {
			return false
		}
		for dk, w := range ds {
			if bw, ok := b[sk][dk]; !ok || bw != w {
				return false
			}
		}
	}
	return true
}

// A reconcile that comes while the kernel is being re-read (a takeover during
// the periodic resync) goes ahead without waiting for the read, the read does
// not undo what that reconcile applied, and what the read found changed
// behind lbd's back is repaired on the next pass.
func TestReconcileDoesNotWaitForResync(t *testing.T) {
	k, fa := newKernelIPVS(), &syncAddrs{on: map[netip.Addr]bool{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := newEngine(Config{StateDir: t.TempDir(), Interface: "fake0", GARPBurst: 1, Logger: log}, k, fa, 0, &nopSender{})
	ctx := context.Background()
	vss := many(3, 4)
	vss[2].Owner = "other" // programmed as a hot standby, address not ours yet
	if err := e.Reconcile(ctx, vss, "me"); err != nil {
		t.Fatal(err)
	}

	// Someone removes a destination of the first service by hand.
	svcs0, _ := ipvsdiff.FromService(vss[0])
	gone := ipvs.Destination{Address: netip.MustParseAddr(vss[0].Backends[0].Address), Port: 30080}
	if err := k.RemoveDestination(svcs0[0].Service(), gone); err != nil {
		t.Fatal(err)
	}

	// The periodic re-read starts with the next pass and is held mid-read.
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	k.beforeDests = func() {
		once.Do(func() { close(entered) })
		<-release
	}
	e.mu.Lock()
	e.lastResync = time.Now().Add(-2 * resyncEvery)
	e.mu.Unlock()
	passDone := make(chan error, 1)
	go func() { passDone <- e.Reconcile(ctx, vss, "me") }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the periodic re-read of the kernel never started")
	}
	waitPass := func(what string) {
		t.Helper()
		select {
		case err := <-passDone:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			close(release)
			t.Fatalf("%s waited for the kernel re-read to finish", what)
		}
	}
	waitPass("the pass that started the re-read")

	// While it is held: the second service's backend changes and the third VIP
	// comes to this host. This pass must not wait for the read.
	next := append([]*edgelbv1.VirtualService(nil), vss...)
	changed := proto.Clone(vss[1]).(*edgelbv1.VirtualService)
	changed.Backends[1].Weight = 9
	took := proto.Clone(vss[2]).(*edgelbv1.VirtualService)
	took.Owner = "me"
	next[1], next[2] = changed, took
	go func() { passDone <- e.Reconcile(ctx, next, "me") }()
	waitPass("the pass with a takeover and a backend change")
	if !fa.on[netip.MustParseAddr(took.Vip)] {
		t.Fatal("the VIP taken over during the re-read was not added")
	}

	close(release)
	e.resyncMu.Lock() // the read has finished and been merged
	e.resyncMu.Unlock()
	k.beforeDests = nil
	if err := e.Reconcile(ctx, next, "me"); err != nil {
		t.Fatal(err)
	}
	if got, want := k.weights(), wantWeights(t, next); !sameTable(got, want) {
		t.Fatalf("kernel after the re-read and one more pass:\n got %v\nwant %v", got, want)
	}
	if len(fa.on) != 3 {
		t.Fatalf("%d addresses on the interface, want 3", len(fa.on))
	}
}
