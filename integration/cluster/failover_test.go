package cluster

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// failoverProfiles are lbd timing settings the control-plane failover is
// measured with: lbd's defaults, and the fast profile of docs/OPERATIONS.md
// ("Failover timing").
var failoverProfiles = []struct{ name, yaml string }{
	{"lan", ""},
	{"fast", "raft:\n  heartbeatTimeout: 120ms\n  electionTimeout: 120ms\n  leaderLeaseTimeout: 60ms\nownership:\n  lease: 250ms\n  grace: 400ms\n"},
}

// BenchmarkFailoverControlPlane measures, on three real lbd processes on
// loopback (control plane only), the time from losing a VIP's owner to the
// commit that gives the VIP to a survivor, as a survivor's API shows it:
// sigkill (the process dies; its peers see connections refused) and sigstop
// (the host hangs or is cut off: nothing answers, nothing refuses). The data
// plane's part of a takeover (one address, a GARP burst) is measured in the
// guest by integration/ha. EDGELB_FAILOVER_ROUNDS sets the failovers per
// case (default 20; make bench runs fewer to fit its time).
func BenchmarkFailoverControlPlane(b *testing.B) {
	rounds := 20
	if v := os.Getenv("EDGELB_FAILOVER_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("EDGELB_FAILOVER_ROUNDS=%q: want a positive number of failovers per case", v)
		}
		rounds = n
	}
	for _, p := range failoverProfiles {
		for _, how := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSTOP} {
			b.Run(p.name+"/"+map[syscall.Signal]string{syscall.SIGKILL: "sigkill", syscall.SIGSTOP: "sigstop"}[how], func(b *testing.B) {
				var took []time.Duration
				for i := 0; i < b.N; i++ {
					took = append(took, failoverRounds(b, p.yaml, how, rounds)...)
				}
				slices.Sort(took)
				b.ReportMetric(ms(took[len(took)/2]), "p50-ms")
				b.ReportMetric(ms(took[min(len(took)-1, int(0.99*float64(len(took))))]), "p99-ms")
				b.ReportMetric(ms(took[len(took)-1]), "max-ms")
				b.ReportMetric(float64(len(took)), "rounds")
			})
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func failoverRounds(b *testing.B, yaml string, how syscall.Signal, rounds int) []time.Duration {
	c := newCluster(b, 3)
	for _, m := range c.members {
		if err := os.WriteFile(m.cfg, []byte(yaml), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	clients := map[string]edgelbv1.VirtualServiceServiceClient{}
	cluster := map[string]edgelbv1.ClusterServiceClient{}
	for _, m := range c.members {
		cc, err := grpc.NewClient(m.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		clients[m.id] = edgelbv1.NewVirtualServiceServiceClient(cc)
		cluster[m.id] = edgelbv1.NewClusterServiceClient(cc)
	}
	ctx := context.Background()
	until := func(what string, f func() bool) {
		b.Helper()
		for deadline := time.Now().Add(30 * time.Second); !f(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("%s: not within 30s", what)
			}
		}
	}
	c.members[0].start(b)
	until("edge1 answers", func() bool {
		_, err := cluster["edge1"].ListMembers(ctx, &edgelbv1.ListMembersRequest{})
		return err == nil
	})
	for _, m := range c.members[1:] {
		m.start(b)
	}
	until("3 voters", func() bool {
		r, err := cluster["edge1"].ListMembers(ctx, &edgelbv1.ListMembersRequest{})
		n := 0
		for _, m := range r.GetMembers() {
			if m.Suffrage == "voter" && m.ApiAddress != "" {
				n++
			}
		}
		return err == nil && n == 3
	})
	pools := edgelbv1.NewAddressPoolServiceClient(must(grpc.NewClient(c.members[0].api, grpc.WithTransportCredentials(insecure.NewCredentials()))))
	until("pool created", func() bool {
		_, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/24"}}})
		return err == nil
	})
	until("vip created", func() bool {
		_, err := clients["edge1"].CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
			Name: "fo", Vip: "192.0.2.10", Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80}},
		}})
		return err == nil
	})
	owner := func(via string) string {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		r, err := clients[via].GetVirtualService(cctx, &edgelbv1.GetVirtualServiceRequest{Name: "fo"})
		if err != nil {
			return ""
		}
		return r.GetService().GetOwner()
	}
	leader := func(via string) string {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		r, err := cluster[via].GetLeader(cctx, &edgelbv1.GetLeaderRequest{})
		if err != nil {
			return ""
		}
		return r.GetLeader().GetId()
	}
	var took []time.Duration
	for r := 0; r < rounds; r++ {
		// The victim owns the VIP and is not the leader (a dead leader adds
		// an election: measured in the guest).
		var victim *member
		until("an owner that is not the leader", func() bool {
			o, l := owner("edge1"), leader("edge1")
			if o == "" || l == "" {
				return false
			}
			if o == l {
				for _, m := range c.members {
					if m.id != l {
						cctx, cancel := context.WithTimeout(ctx, time.Second)
						clients[l].MoveVIP(cctx, &edgelbv1.MoveVIPRequest{Vip: "192.0.2.10", Member: m.id})
						cancel()
						break
					}
				}
				return false
			}
			for _, m := range c.members {
				if m.id == o {
					victim = m
				}
			}
			return true
		})
		var via string
		for _, m := range c.members {
			if m != victim {
				via = m.id
				break
			}
		}
		t0 := time.Now()
		victim.cmd.Process.Signal(how)
		until("a survivor owns the VIP", func() bool {
			o := owner(via)
			return o != "" && o != victim.id
		})
		took = append(took, time.Since(t0))
		if how == syscall.SIGSTOP {
			victim.cmd.Process.Signal(syscall.SIGCONT)
		} else {
			victim.cmd.Wait()
			victim.start(b)
		}
		until(victim.id+" back", func() bool {
			_, err := cluster[victim.id].ListMembers(ctx, &edgelbv1.ListMembersRequest{})
			return err == nil && leader(victim.id) != ""
		})
		time.Sleep(500 * time.Millisecond) // heartbeats resume before the next round
	}
	fmt.Fprintf(os.Stderr, "failover rounds: %v\n", took)
	return took
}
