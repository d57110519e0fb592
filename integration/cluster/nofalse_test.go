package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// TestNoFalseFailover runs three members with lbd's defaults for
// EDGELB_NOFALSE_MINUTES minutes (make bench: 10) while a CPU stress loop
// keeps every core busy, and counts the VIP moves: with nothing lost there
// must be none. The stress is stress-ng --cpu when installed, else a shell
// busy loop per core, both at the members' own priority. It prints a
// BENCH-JSON line: moves, the members' lease lapses (an owner that withdrew
// for lack of a majority's answers, a blink but no move) and the minutes.
// Skipped unless EDGELB_NOFALSE_MINUTES is set: it is long and loads the host.
func TestNoFalseFailover(t *testing.T) {
	v := os.Getenv("EDGELB_NOFALSE_MINUTES")
	if v == "" {
		t.Skip("set EDGELB_NOFALSE_MINUTES (e.g. 10) to run: it keeps every core busy for that long")
	}
	minutes, err := strconv.ParseFloat(v, 64)
	if err != nil || minutes <= 0 {
		t.Fatalf("EDGELB_NOFALSE_MINUTES=%q: want a positive number of minutes", v)
	}
	c, apis := startCluster(t, 3)
	first := apis[c.members[0].id]
	names := []string{"nf1", "nf2", "nf3", "nf4", "nf5", "nf6"}
	for _, n := range names {
		waitFor(t, 30*time.Second, "create "+n, func(ctx context.Context) error {
			_, err := first.vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: newService(n)})
			return err
		})
	}
	owners := func() map[string]string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, a := range apis {
			r, err := a.vs.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{})
			if err != nil {
				continue // under stress a read may time out: ask another member
			}
			out := map[string]string{}
			for _, vs := range r.Services {
				out[vs.Name] = vs.Owner
			}
			return out
		}
		return nil
	}
	var last map[string]string
	waitFor(t, 30*time.Second, "every VIP owned", func(context.Context) error {
		last = owners()
		for _, n := range names {
			if last[n] == "" {
				return fmt.Errorf("%s has no owner", n)
			}
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(minutes*float64(time.Minute))+time.Minute)
	defer cancel()
	var stress []*exec.Cmd
	if path, err := exec.LookPath("stress-ng"); err == nil {
		stress = append(stress, exec.CommandContext(ctx, path, "--cpu", strconv.Itoa(runtime.NumCPU()), "--timeout", fmt.Sprintf("%ds", int(minutes*60)+60)))
	} else {
		for range runtime.NumCPU() {
			stress = append(stress, exec.CommandContext(ctx, "sh", "-c", "while :; do :; done"))
		}
	}
	for _, s := range stress {
		if err := s.Start(); err != nil {
			t.Fatalf("start the CPU stress %v: %v", s.Args, err)
		}
	}
	defer func() {
		for _, s := range stress {
			s.Process.Kill()
			s.Wait()
		}
	}()
	t.Logf("CPU stress on %d cores (%s) for %.1f min", runtime.NumCPU(), stress[0].Args[0], minutes)

	moves := 0
	end := time.Now().Add(time.Duration(minutes * float64(time.Minute)))
	for time.Now().Before(end) {
		time.Sleep(100 * time.Millisecond)
		now := owners()
		if now == nil {
			continue
		}
		for _, n := range names {
			if o := now[n]; o != last[n] {
				moves++
				t.Errorf("%s moved from %s to %q at %s under CPU stress, with every member running", n, last[n], o, time.Now().Format(time.RFC3339Nano))
			}
		}
		last = now
	}
	for _, s := range stress {
		s.Process.Kill()
	}
	lapses := 0
	for _, m := range c.members {
		m.stop(t)
		lapses += strings.Count(m.log.String(), "within the lease; not serving VIPs")
	}
	line, _ := json.Marshal(map[string]any{"name": "no-false-failover", "moves": moves, "lapses": lapses, "minutes": minutes})
	t.Logf("BENCH-JSON %s", line)
}
