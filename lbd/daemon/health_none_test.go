package daemon

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// A --data-plane=none member with the default config (health.enabled true)
// sends nothing to backends: the README's first look must not probe
// 10.0.0.11:30080 from the user's machine. Before, the checker ran and
// connected to every backend of the VIPs the member owned.
func TestDataPlaneNoneProbesNoBackend(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a raft member")
	}
	def := config.Default()
	if !def.Health.Enabled || def.Health.WithoutDataPlane {
		t.Fatalf("defaults changed: health %+v; this test is about the defaults", def.Health)
	}
	onLoopback(t)
	ds := startCluster(t, 1, func(c *config.Config) { c.Health = def.Health })
	if ds[0].checker != nil {
		t.Error("a data-plane-none member started the health checker")
	}

	// And on the wire: the README's backend 10.0.0.11, its probes (if any)
	// sent to a loopback listener that counts connection attempts, gets none,
	// though the VIP is owned and its check would run every 100ms.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var attempts atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			attempts.Add(1)
			c.Close()
		}
	}()
	setupPool(t, ds[0].Addr())
	c := client(t, ds[0].Addr())
	if _, err := c.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: checkedWeb(backendIP, l.Addr().(*net.TCPAddr).Port)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := c.GetVirtualService(context.Background(), &edgelbv1.GetVirtualServiceRequest{Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		if r.Service.Owner != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the VIP got no owner")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // 15 check intervals
	if n := attempts.Load(); n != 0 {
		t.Errorf("the backend got %d connection attempts from a data-plane-none member", n)
	}
}

// With health.withoutDataPlane the checker runs, as asked.
func TestDataPlaneNoneProbesWhenAsked(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a raft member")
	}
	ds := startCluster(t, 1, func(c *config.Config) { c.Health.Enabled, c.Health.WithoutDataPlane = true, true })
	if ds[0].checker == nil {
		t.Fatal("health.withoutDataPlane set, but no health checker")
	}
}
