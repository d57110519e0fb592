package ipvsdiff

import (
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// kernelList models what ip_vs_mh.c builds its table from: the service's
// destination list (a new destination goes to the head) and each
// destination's last non-zero weight. Creating sets last_weight to the
// weight given, even 0; updating keeps it when the weight given is 0.
type kernelList struct {
	order []DestKey // head first
	last  map[DestKey]uint32
	cur   map[DestKey]uint32
}

func (k *kernelList) apply(t *testing.T, op Op) {
	t.Helper()
	switch op.Kind {
	case CreateDest:
		if slices.Contains(k.order, op.Dest) {
			t.Fatalf("%s: already there", op)
		}
		k.order = append([]DestKey{op.Dest}, k.order...)
		k.last[op.Dest], k.cur[op.Dest] = op.D.Weight, op.D.Weight
	case UpdateDest:
		if op.D.Weight != 0 {
			k.last[op.Dest] = op.D.Weight
		}
		k.cur[op.Dest] = op.D.Weight
	case RemoveDest:
		i := slices.Index(k.order, op.Dest)
		if i < 0 {
			t.Fatalf("%s: not there", op)
		}
		k.order = slices.Delete(k.order, i, i+1)
		delete(k.last, op.Dest)
		delete(k.cur, op.Dest)
	}
}

// state is what the engine believes after applying ops (as Engine.apply records).
func (k *kernelList) state(s *Svc) *Svc {
	a := &Svc{Key: s.Key, Scheduler: s.Scheduler, Flags: s.Flags, Dests: map[DestKey]Dest{}}
	for _, dk := range k.order {
		a.Dests[dk] = Dest{Weight: k.cur[dk], Slots: k.last[dk]}
	}
	return a
}

func backendsVS(bs []*edgelbv1.Backend) *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{Tenant: "t", Name: "aa", Vip: "192.0.2.1", ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_DR,
		Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 30080}}, Backends: bs}
}

// TestCanonicalOrderWhateverTheHistory drives two members through different
// histories of the same backends and checks that both end with the
// destination list descending by address and every destination's last
// non-zero weight equal to its configured weight: the inputs of the mh table.
func TestCanonicalOrderWhateverTheHistory(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	pool := make([]*edgelbv1.Backend, 8)
	for i := range pool {
		pool[i] = &edgelbv1.Backend{Address: fmt.Sprintf("10.0.0.%d", 20+i), Weight: uint32(1 + i%3)}
	}
	plan := func(k *kernelList, bs []*edgelbv1.Backend, first bool) {
		svcs, err := FromService(backendsVS(bs))
		if err != nil {
			t.Fatal(err)
		}
		if err := ActiveActive(svcs); err != nil {
			t.Fatal(err)
		}
		d := svcs[0]
		actual := State{}
		if !first {
			actual[d.Key] = k.state(d)
		}
		for _, op := range Plan(State{d.Key: d}, actual, func(SvcKey) bool { return true }, nil) {
			k.apply(t, op)
		}
	}
	for round := 0; round < 200; round++ {
		// The final set: some backends, some drained, some with another weight.
		var final []*edgelbv1.Backend
		for _, b := range pool {
			if rng.Intn(3) > 0 {
				c := &edgelbv1.Backend{Address: b.Address, Weight: b.Weight, Drained: rng.Intn(4) == 0}
				final = append(final, c)
			}
		}
		// Member A builds it at once; member B reaches it through random steps.
		a := &kernelList{last: map[DestKey]uint32{}, cur: map[DestKey]uint32{}}
		plan(a, final, true)
		b := &kernelList{last: map[DestKey]uint32{}, cur: map[DestKey]uint32{}}
		first := true
		for step := 0; step < 4; step++ {
			var mid []*edgelbv1.Backend
			for _, x := range pool {
				if rng.Intn(2) == 0 {
					mid = append(mid, &edgelbv1.Backend{Address: x.Address, Weight: uint32(1 + rng.Intn(4)), Drained: rng.Intn(3) == 0})
				}
			}
			rng.Shuffle(len(mid), func(i, j int) { mid[i], mid[j] = mid[j], mid[i] })
			plan(b, mid, first)
			first = false
		}
		shuffled := slices.Clone(final)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		plan(b, shuffled, first)

		for name, k := range map[string]*kernelList{"built at once": a, "built in steps": b} {
			if !slices.IsSortedFunc(k.order, func(x, y DestKey) int {
				if destLess(y, x) {
					return -1
				}
				if destLess(x, y) {
					return 1
				}
				return 0
			}) {
				t.Fatalf("round %d, %s: destination list %v is not descending", round, name, k.order)
			}
			if len(k.order) != len(final) {
				t.Fatalf("round %d, %s: %d destinations, want %d", round, name, len(k.order), len(final))
			}
			for _, fb := range final {
				dk := DestKey{netip.MustParseAddr(fb.Address), 30080}
				if k.last[dk] != Configured(fb) || k.cur[dk] != Weight(fb) {
					t.Fatalf("round %d, %s: %s has weight %d (last non-zero %d), want %d (%d)", round, name, dk.Addr, k.cur[dk], k.last[dk], Weight(fb), Configured(fb))
				}
			}
		}
	}
}

// TestActiveActiveRefusesPerHostSchedulersAndNAT: rr or lc would send the
// same flow to other backends on each member; nat's answers return through
// any member.
func TestActiveActiveRefusesPerHostSchedulersAndNAT(t *testing.T) {
	vs := backendsVS([]*edgelbv1.Backend{{Address: "10.0.0.20"}})
	vs.Scheduler = edgelbv1.Scheduler_SCHEDULER_RR
	svcs, err := FromService(vs)
	if err != nil {
		t.Fatal(err)
	}
	if err := ActiveActive(svcs); err == nil {
		t.Fatal("rr accepted for an active-active service")
	}
	vs.Scheduler = edgelbv1.Scheduler_SCHEDULER_UNSPECIFIED
	svcs, _ = FromService(vs)
	if err := ActiveActive(svcs); err != nil || !svcs[0].Canonical {
		t.Fatalf("mh: %v, canonical %v", err, svcs[0].Canonical)
	}
	vs.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
	svcs, _ = FromService(vs)
	if err := ActiveActive(svcs); err == nil || !strings.Contains(err.Error(), "use dr") {
		t.Fatalf("nat accepted for an active-active service: %v", err)
	}
}

// TestCanonicalAppendsWithoutRebuild: a backend above every kept one costs
// one creation, nothing removed (the common case of a new node).
func TestCanonicalAppendsWithoutRebuild(t *testing.T) {
	mk := func(addrs ...string) *Svc {
		var bs []*edgelbv1.Backend
		for _, a := range addrs {
			bs = append(bs, &edgelbv1.Backend{Address: a})
		}
		svcs, _ := FromService(backendsVS(bs))
		ActiveActive(svcs)
		return svcs[0]
	}
	have, want := mk("10.0.0.20", "10.0.0.21"), mk("10.0.0.20", "10.0.0.21", "10.0.0.22")
	ops := Plan(State{want.Key: want}, State{have.Key: have}, func(SvcKey) bool { return true }, nil)
	if len(ops) != 1 || ops[0].Kind != CreateDest {
		t.Fatalf("ops %v, want one creation", ops)
	}
	want = mk("10.0.0.19", "10.0.0.20", "10.0.0.21")
	ops = Plan(State{want.Key: want}, State{have.Key: have}, func(SvcKey) bool { return true }, nil)
	var kinds []string
	for _, op := range ops {
		kinds = append(kinds, op.String())
	}
	if len(ops) != 5 {
		t.Fatalf("a backend below the kept ones: %d ops, want 2 removals and 3 creations:\n%v", len(ops), kinds)
	}
}
