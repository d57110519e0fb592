package cluster

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// procKB reads a VmRSS/VmHWM-style field (kB) of a process.
func procKB(pid int, field string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			return strconv.Atoi(strings.Fields(l)[1])
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", field, pid)
}

// BenchmarkRSS10kVIPs measures one real lbd process holding 10,000 virtual
// services of 50 backends each (a single-member cluster, control plane only:
// the figure is the daemon's own memory, the kernel's IPVS tables are not in it).
func BenchmarkRSS10kVIPs(b *testing.B) {
	const vips, backends = 10000, 50
	for i := 0; i < b.N; i++ {
		c := newCluster(b, 1)
		m := c.members[0]
		// Loading 10k services as fast as possible is not what the per-identity limit is for.
		os.WriteFile(m.cfg, []byte("auth:\n  writeRate: 0\n"), 0o644)
		m.start(b)
		cc, err := grpc.NewClient(m.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		pools := edgelbv1.NewAddressPoolServiceClient(cc)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			_, err := pools.CreateAddressPool(context.Background(), &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.64.0.0/16"}}})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal(err)
			}
		}
		vs := edgelbv1.NewVirtualServiceServiceClient(cc)
		var bs []*edgelbv1.Backend
		for j := 0; j < backends; j++ {
			bs = append(bs, &edgelbv1.Backend{Address: fmt.Sprintf("10.1.%d.%d", j/250, j%250+1)})
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Value
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					n := next.Add(1)
					if n > vips {
						return
					}
					_, err := vs.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
						Name:     fmt.Sprintf("svc-%d", n),
						Ports:    []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}},
						Backends: bs,
					}})
					if err != nil {
						failed.Store(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Second) // let the reconciler and the GC settle
		rss, err := procKB(m.cmd.Process.Pid, "VmRSS")
		if err != nil {
			b.Fatal(err)
		}
		hwm, _ := procKB(m.cmd.Process.Pid, "VmHWM")
		b.ReportMetric(float64(rss)/1024, "rss-MB")
		b.ReportMetric(float64(hwm)/1024, "peak-rss-MB")
		cc.Close()
		m.kill()
	}
}
