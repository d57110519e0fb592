package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/edgelb/edgelb/internal/freeport"
	"github.com/edgelb/edgelb/lbd/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// freeAddr is a loopback address for a listener the test starts later: below
// the ephemeral range, where no outgoing connection (nor another test
// package's ":0") can take it in between (a race run failed on that).
func freeAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", freeport.Loopback(t))
}

// startCluster runs n control-plane-only members in this process.
func startCluster(t testing.TB, n int, opts ...func(*config.Config)) []*Daemon {
	var ds []*Daemon
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := 0; i < n; i++ {
		cfg := config.Default()
		cfg.ID = fmt.Sprintf("m%d", i+1)
		cfg.DataDir = filepath.Join(dir, cfg.ID)
		cfg.APIAddr, cfg.RaftAddr = freeAddr(t), freeAddr(t)
		cfg.DataPlane.Mode = "none"
		// The write path itself: no per-identity limit, and no health checks of
		// the made-up backends adding their own writes.
		cfg.Auth.WriteRate = 0
		cfg.Health.Enabled = false
		// Three members in one test process (ten times slower under -race,
		// on a shared CPU) starve each other's probes far beyond what the
		// 250 ms default lease rides out on real hosts: every lapse fences
		// and makes the member catch up (reads refused meanwhile). These
		// tests check behaviour, not failover time: give the lease room.
		cfg.Ownership.Lease.Duration, cfg.Ownership.Grace.Duration = 2*time.Second, 2500*time.Millisecond
		for _, o := range opts {
			o(&cfg)
		}
		if i > 0 {
			cfg.Join = []string{ds[0].Addr()}
		}
		d, err := Start(context.Background(), cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Stop() })
		ds = append(ds, d)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		servers, _ := ds[0].Node().Servers()
		registered := 0
		for _, d := range ds {
			if _, ok := ds[0].Node().FSM.Member(d.cfg.ID); ok {
				registered++
			}
		}
		// Each member answers reads once it has a leader and has caught up.
		serving := 0
		for _, d := range ds {
			if d.ReadsRefused(context.Background()) == nil {
				serving++
			}
		}
		if len(servers) == n && registered == n && serving == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster of %d did not form: %d in raft, %d registered, %d serving reads", n, len(servers), registered, serving)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return ds
}

func client(t testing.TB, addr string) edgelbv1.VirtualServiceServiceClient {
	return edgelbv1.NewVirtualServiceServiceClient(dial(t, addr))
}

func leaderAndFollower(t testing.TB, ds []*Daemon) (leader, follower *Daemon) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no member became raft leader within 30s")
		}
		leader, follower = nil, nil
		for _, d := range ds {
			if d.Node().IsLeader() {
				leader = d
			} else {
				follower = d
			}
		}
		if leader != nil && follower != nil {
			return
		}
	}
}

func setupPool(t testing.TB, addr string) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = edgelbv1.NewAddressPoolServiceClient(cc).CreateAddressPool(context.Background(),
		&edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "bench", Ranges: []string{"10.128.0.0/9"}}})
	if err != nil {
		t.Fatal(err)
	}
}

func newService(i int) *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{
		Name:     fmt.Sprintf("svc-%d", i),
		Ports:    []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}},
		Backends: []*edgelbv1.Backend{{Address: "10.0.0.21"}, {Address: "10.0.0.22"}, {Address: "10.0.0.23"}},
	}
}

// BenchmarkCreateVirtualService measures one write through the whole path
// (gRPC, validation, raft commit on a 3-member loopback cluster, FSM apply,
// VIP allocation), sequentially for latency and with 32 clients for throughput.
// Every run starts on a fresh cluster with an empty table, so a figure does
// not depend on what earlier runs left: with one cluster for all of them, the
// table grew past the per-tenant limit over -count 3, and later runs measured
// a bigger table (each commit wakes passes over every service) or failed.
func BenchmarkCreateVirtualService(b *testing.B) {
	fresh := func(b *testing.B, via string) (edgelbv1.VirtualServiceServiceClient, func()) {
		b.StopTimer()
		defer b.StartTimer()
		ds := startCluster(b, 3)
		leader, follower := leaderAndFollower(b, ds)
		setupPool(b, leader.Addr())
		d := leader
		if via == "follower" {
			d = follower
		}
		return client(b, d.Addr()), func() {
			for _, d := range ds {
				d.Stop()
			}
		}
	}
	for _, via := range []string{"leader", "follower"} {
		b.Run("sequential/via-"+via, func(b *testing.B) {
			c, stop := fresh(b, via)
			defer stop()
			lat := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := c.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: newService(i + 1)}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			reportLatency(b, lat)
		})
		b.Run("parallel32/via-"+via, func(b *testing.B) {
			c, stop := fresh(b, via)
			defer stop()
			var seq atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(16) // 2 cores × 16 = 32 clients
			cpu0 := processCPU(b)
			t0 := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					s := time.Now()
					if _, err := c.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: newService(int(seq.Add(1)))}); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(s))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "writes/s")
			// The CPU the whole write path took (three members and the
			// clients share this process): on a shared machine the
			// throughput follows the load of others, this much less.
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/write")
			reportLatency(b, lat)
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// TestInProcessCluster checks the in-process cluster the benchmark relies on,
// including a write through a follower being visible there at once.
func TestInProcessCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three raft members")
	}
	ds := startCluster(t, 3)
	leader, follower := leaderAndFollower(t, ds)
	setupPool(t, follower.Addr())
	c := client(t, follower.Addr())
	r, err := c.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: newService(1)})
	if err != nil {
		t.Fatal(err)
	}
	if r.Service.Vip != "10.128.0.1" {
		t.Errorf("allocated %s, want 10.128.0.1", r.Service.Vip)
	}
	if _, ok := follower.Node().FSM.Service(fsmKey("default", "svc-1")); !ok {
		t.Error("the follower that forwarded the write does not show it yet")
	}
	if leader.Node().FSM.Revision() < r.Service.Generation {
		t.Error("leader revision behind")
	}

	cc, err := grpc.NewClient(follower.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	// The gRPC health service answers SERVING on a member that knows its leader.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		h, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && h.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health: %v %v; want SERVING", h, err)
		}
	}
	// Server reflection lists the API, so grpcurl works without .proto files.
	stream, err := reflectpb.NewServerReflectionClient(cc).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		names[s.Name] = true
	}
	for _, want := range []string{"edgelb.v1.VirtualServiceService", "edgelb.v1.AddressPoolService", "edgelb.v1.ClusterService", "edgelb.v1.WatchService", "grpc.health.v1.Health"} {
		if !names[want] {
			t.Errorf("reflection does not list %s (got %v)", want, names)
		}
	}
}
