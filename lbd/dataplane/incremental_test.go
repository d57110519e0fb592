package dataplane

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsdiff"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// stateEngine is an engine over a fake kernel that keeps its table.
func stateEngine(t *testing.T) (*Engine, *kernelIPVS, *syncAddrs) {
	k, fa := newKernelIPVS(), &syncAddrs{on: map[netip.Addr]bool{}}
	var w io.Writer = io.Discard
	if os.Getenv("INCR_DEBUG") != "" {
		w = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(w, nil)).With("engine", t.Name()+fmt.Sprint(len(engines)))
	engines = append(engines, 1)
	e := newEngine(Config{StateDir: t.TempDir(), Interface: "fake0", GARPBurst: 1, Logger: log}, k, fa, 0, &nopSender{})
	e.lastResync = e.lastResync.Add(1 << 40) // no background re-read
	// Closed before the state dir is removed: a clean-up after a pass still
	// running would otherwise rewrite the record into a new dir in /tmp.
	t.Cleanup(func() { e.Close() })
	return e, k, fa
}

var engines []int

// kernelView is what a fake kernel holds: services with their settings and
// destinations, and the addresses up (unless fa is nil).
func kernelView(k *kernelIPVS, fa *syncAddrs) string {
	k.mu.Lock()
	keys := slices.Collect(maps.Keys(k.svcs))
	slices.SortFunc(keys, func(a, b ipvsdiff.SvcKey) int {
		return a.Addr.Compare(b.Addr)*4 + cmp.Compare(int(a.Proto), int(b.Proto))*2 + cmp.Compare(int(a.Port), int(b.Port))
	})
	out := ""
	for _, sk := range keys {
		s := k.svcs[sk]
		out += fmt.Sprintf("%s %s %d %d [", sk, s.Scheduler, s.Flags&ipvsdiff.FlagsMask, s.Timeout)
		ds := k.dests[sk]
		dks := slices.Collect(maps.Keys(ds))
		slices.SortFunc(dks, func(a, b ipvsdiff.DestKey) int {
			return a.Addr.Compare(b.Addr)*2 + cmp.Compare(int(a.Port), int(b.Port))
		})
		for _, dk := range dks {
			out += fmt.Sprintf(" %s:%d w%d f%d", dk.Addr, dk.Port, ds[dk].Weight, ds[dk].FwdMethod)
		}
		out += " ]\n"
	}
	k.mu.Unlock()
	if fa == nil {
		return out
	}
	fa.mu.Lock()
	as := slices.Collect(maps.Keys(fa.on))
	fa.mu.Unlock()
	slices.SortFunc(as, netip.Addr.Compare)
	return out + fmt.Sprintf("addresses %v\n", as)
}

// mutate returns a random change of vs (a new object; vs is never modified).
func mutate(r *rand.Rand, vs *edgelbv1.VirtualService) *edgelbv1.VirtualService {
	c := proto.Clone(vs).(*edgelbv1.VirtualService)
	switch r.IntN(9) {
	case 0:
		c.Vip = randomVIP(r) // the owner is aligned with the VIP's below
	case 1:
		if len(c.Backends) > 0 {
			b := c.Backends[r.IntN(len(c.Backends))]
			b.Drained = !b.Drained
		}
	case 2:
		if len(c.Backends) > 0 {
			c.Backends[r.IntN(len(c.Backends))].Weight = uint32(r.IntN(5))
		}
	case 3:
		c.Backends = append(c.Backends, &edgelbv1.Backend{Address: fmt.Sprintf("10.1.0.%d", 1+r.IntN(40)), Weight: 1})
	case 4:
		if len(c.Backends) > 0 {
			i := r.IntN(len(c.Backends))
			c.Backends = append(c.Backends[:i:i], c.Backends[i+1:]...)
		}
	case 5:
		c.Vip = randomVIP(r)
	case 6:
		if c.ForwardingMode == edgelbv1.ForwardingMode_FORWARDING_MODE_DR {
			c.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
		} else {
			c.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_DR
		}
	case 7:
		// Isolated (a scheduler this binary does not know, or source
		// ranges this host cannot enforce) and back.
		switch {
		case c.Scheduler == 42:
			c.Scheduler = edgelbv1.Scheduler_SCHEDULER_RR
		case len(c.SourceRanges) > 0:
			c.SourceRanges = nil
		case r.IntN(2) == 0:
			c.Scheduler = 42
		default:
			c.SourceRanges = []string{"10.9.0.0/16"}
		}
	case 8:
		c.Scheduler = []edgelbv1.Scheduler{edgelbv1.Scheduler_SCHEDULER_MH, edgelbv1.Scheduler_SCHEDULER_WRR}[r.IntN(2)]
		c.Persistence = nil
		if r.IntN(3) == 0 {
			c.Persistence = &edgelbv1.Persistence{TimeoutSeconds: 60}
		}
	}
	return c
}

// A few VIPs for many services, so services share addresses.
func randomVIP(r *rand.Rand) string { return fmt.Sprintf("192.0.2.%d", 1+r.IntN(6)) }

// Planning only what changed (ReconcileChanged) leaves the kernel exactly as
// a full pass over every service (Reconcile) does, and as a cold pass of the
// final state on a fresh engine, for random sequences of creates, deletes,
// backend, owner, VIP, mode and scheduler changes, services that become
// isolated and mended, and this member being fenced and serving again.
func TestIncrementalMatchesFull(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			inc, kInc, aInc := stateEngine(t)
			full, kFull, aFull := stateEngine(t)
			cur := map[ServiceKey]*edgelbv1.VirtualService{}
			next := 0
			owner := "me"
			vipOwner := map[string]string{}
			for step := range 60 {
				changed := map[ServiceKey]*edgelbv1.VirtualService{}
				for range 1 + r.IntN(3) {
					keys := slices.SortedFunc(maps.Keys(cur), func(a, b ServiceKey) int {
						return cmp.Compare(len(a.Name), len(b.Name))*2 + cmp.Compare(a.Name, b.Name)
					})
					switch op := r.IntN(10); {
					case op < 3 || len(keys) == 0:
						next++
						// Each service has its own ports, so services
						// sharing a VIP never claim the same port.
						vs := &edgelbv1.VirtualService{Tenant: "t", Name: fmt.Sprintf("s%d", next), Vip: randomVIP(r),
							Ports: []*edgelbv1.Port{tcp(uint32(1000+next), 30080)}}
						if r.IntN(3) == 0 {
							vs.Ports = append(vs.Ports, &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: uint32(1000 + next), BackendPort: 30053})
						}
						for j := range r.IntN(4) {
							vs.Backends = append(vs.Backends, &edgelbv1.Backend{Address: fmt.Sprintf("10.1.0.%d", 1+j), Weight: 1})
						}
						cur[KeyOf(vs)], changed[KeyOf(vs)] = vs, vs
					case op < 4:
						k := keys[r.IntN(len(keys))]
						delete(cur, k)
						changed[k] = nil
					default:
						k := keys[r.IntN(len(keys))]
						c := mutate(r, cur[k])
						cur[k], changed[k] = c, c
					}
				}
				if r.IntN(4) == 0 {
					// A VIP moves: every service at it, together (the
					// assigner keeps services of one address on one owner).
					vipOwner[randomVIP(r)] = []string{"me", "other", ""}[r.IntN(3)]
				}
				for k, vs := range cur {
					if o := vipOwner[vs.Vip]; vs.Owner != o {
						c := proto.Clone(vs).(*edgelbv1.VirtualService)
						c.Owner = o
						cur[k], changed[k] = c, c
					}
				}
				if r.IntN(12) == 0 {
					owner = []string{"me", ""}[r.IntN(2)] // fenced, and serving again
				}
				all := slices.Collect(maps.Values(cur))
				if os.Getenv("INCR_DEBUG") != "" {
					for k, vs := range changed {
						fmt.Fprintf(os.Stderr, "step %d owner %q: %v -> %v\n", step, owner, k, vs)
					}
				}
				if err := inc.ReconcileChanged(ctx, changed, owner); err != nil {
					t.Fatalf("step %d: incremental: %v", step, err)
				}
				if err := full.Reconcile(ctx, all, owner); err != nil {
					t.Fatalf("step %d: full: %v", step, err)
				}
				if a, b := kernelView(kInc, aInc), kernelView(kFull, aFull); a != b {
					t.Fatalf("step %d (changed %v, owner %q): incremental kernel\n%s\nfull kernel\n%s", step, slices.Collect(maps.Keys(changed)), owner, a, b)
				}
				if a, b := inc.Isolated(), full.Isolated(); !slices.Equal(a, b) {
					t.Fatalf("step %d: isolated %q incrementally, %q in full", step, a, b)
				}
			}
			cold, kCold, aCold := stateEngine(t)
			if err := cold.Reconcile(ctx, slices.Collect(maps.Values(cur)), owner); err != nil {
				t.Fatal(err)
			}
			// IPVS only: the engines that lived through the sequence may
			// still hold moved VIPs for their handover.
			if a, b := kernelView(kInc, nil), kernelView(kCold, nil); a != b {
				t.Fatalf("after the sequence: incremental kernel\n%s\ncold pass of the final state\n%s", a, b)
			}
			_ = aCold
			if s := inc.Stats(); s.FullPasses >= s.Reconciles {
				t.Fatalf("%d of %d passes were full: the incremental path never ran", s.FullPasses, s.Reconciles)
			}
		})
	}
}
