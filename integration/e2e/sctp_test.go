package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/probe"
	"github.com/edgelb/edgelb/integration/topo"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// sctpPort is where each node's SCTP server listens (its "NodePort").
const sctpPort = 30090

// sctpServe starts a nodeserver in node i's namespace that answers each
// SCTP association on sctpPort with the node's name (its TCP/UDP port,
// sctpPort+1, is unused here).
func (s *scenarios) sctpServe(t *testing.T, i int) *exec.Cmd {
	t.Helper()
	ns := topo.NodeHost(i).Name
	cmd, err := topo.StartLogged(ns, filepath.Join(s.l.Cfg.Work, ns+"-sctp.log"), filepath.Join(s.l.Cfg.Bin, "nodeserver"),
		"--name", ns, "--port", fmt.Sprint(sctpPort+1), "--health-port", "0", "--sctp-port", fmt.Sprint(sctpPort))
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

func stop(cmd *exec.Cmd) {
	if cmd != nil && cmd.Process != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// sctpCount opens n SCTP associations one after another from the client
// and fails t for any that was slow or failed for a reason port reuse does
// not explain (probe.SCTPReuseWindow). The client's kernel picks each
// association's port at random, so now and then one comes round within
// seconds of its last use; IPVS drops that INIT once and the client sends
// it again after 3 s (SCTP's initial RTO). The 6 s timeout lets that
// retransmit be answered.
func sctpCount(t *testing.T, ctx context.Context, c *probe.SCTPClient, addr string, n int) probe.CountResult {
	t.Helper()
	r, slow := c.Count(ctx, addr, n)
	for _, s := range slow {
		if s.Explained() {
			t.Logf("slow SCTP association through %s: %s", addr, s)
		} else {
			t.Errorf("slow SCTP association through %s: %s", addr, s)
		}
	}
	return r
}

// sctp carries SCTP through a nat VIP: associations from the client reach
// the nodes in the wrr weights' proportions (exact for one client in turn),
// and the VIP's default health check — an SCTP association with each
// backend's port, as the service has no TCP port — takes a node whose SCTP
// server is gone out of the rotation and back when it returns.
func (s *scenarios) sctp(t *testing.T) {
	const name = "sctp"
	vip := "10.0.0.214"
	addr := fmt.Sprintf("%s:80", vip)
	servers := map[int]*exec.Cmd{}
	for i := 1; i <= 3; i++ {
		servers[i] = s.sctpServe(t, i)
	}
	defer func() {
		for _, c := range servers {
			stop(c)
		}
	}()
	args := []string{"--vip", vip, "--port", fmt.Sprintf("sctp/80:%d", sctpPort), "--scheduler", "wrr",
		"--health-interval", "500ms", "--health-timeout", "400ms", "--rise", "2", "--fall", "2"}
	for i := 1; i <= 3; i++ {
		args = append(args, "--backend", fmt.Sprintf("%s,weight=%d", topo.NodeHost(i).V4, i))
	}
	owner := s.createVIP(t, name, args)
	defer s.deleteVIP_(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := &probe.SCTPClient{NS: client, Timeout: 6 * time.Second}
	for t0 := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		// Not through sctpCount: until the VIP answers, INITs go unanswered.
		if r, _ := c.Count(ctx, addr, 1); r.OK == 1 {
			break
		} else if time.Since(t0) > guestWait {
			s.dumpMember(t, owner)
			t.Fatalf("no SCTP answer through %s within %s: %v", addr, guestWait, r.Samples)
		}
	}
	// A backend whose first health check found its server not yet listening
	// (its process started just before the VIP) is at weight 0 until it
	// rises: the proportions are the configured ones only once every
	// backend is in the owner's table at its weight.
	var table []string
	for t0 := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		table, _ = owner.IPVSSave()
		in := 0
		for i := 1; i <= 3; i++ {
			for _, l := range table {
				if strings.Contains(l, fmt.Sprintf("-r %s:%d ", topo.NodeHost(i).V4, sctpPort)) && strings.HasSuffix(l, fmt.Sprintf(" -w %d", i)) {
					in++
					break
				}
			}
		}
		if in == 3 {
			break
		}
		if time.Since(t0) > guestWait {
			t.Fatalf("owner %s: the SCTP backends not all at their weights within %s:\n%s", owner.ID, guestWait, strings.Join(table, "\n"))
		}
	}
	w := map[string]int{"node1": 1, "node2": 2, "node3": 3}
	r := sctpCount(t, ctx, c, addr, 60)
	checkProportions(t, "sctp wrr 1:2:3", r, w, 0.05)
	if lines, _ := owner.IPVSSave(); !strings.Contains(strings.Join(lines, "\n"), "--sctp-service "+addr+" -s wrr") {
		t.Errorf("owner %s ipvsadm -Sn lacks the SCTP service:\n%s", owner.ID, strings.Join(lines, "\n"))
	}

	// health reads node i's health from the API; nil when the read failed
	// (a loaded guest may be between leaders for a moment).
	health := func(i int) *edgelbv1.BackendHealth {
		t.Helper()
		vs, err := s.l.VIP(name)
		if err != nil {
			t.Logf("read %s: %v", name, err)
			return nil
		}
		for _, b := range vs.Backends {
			if b.Address == topo.NodeHost(i).V4.String() {
				return b.GetHealth()
			}
		}
		t.Fatalf("node%d is not a backend", i)
		return nil
	}
	waitState := func(i int, want edgelbv1.BackendHealthState) time.Duration {
		t.Helper()
		for t0 := time.Now(); ; time.Sleep(200 * time.Millisecond) {
			if h := health(i); h != nil && h.GetState() == want {
				return time.Since(t0)
			}
			if time.Since(t0) > guestWait {
				t.Fatalf("node%d health %v, want %v", i, health(i), want)
			}
		}
	}
	// Every backend healthy: the SCTP probes associate (an unknown backend
	// becomes healthy on its first success only).
	for i := 1; i <= 3; i++ {
		waitState(i, edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY)
	}
	stop(servers[2])
	servers[2] = nil
	out := waitState(2, edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY)
	t.Logf("node2's SCTP server stopped: unhealthy after %s (%s)", out.Round(time.Millisecond), health(2).GetLastError())
	r = sctpCount(t, ctx, c, addr, 24)
	checkProportions(t, "sctp wrr with node2 unhealthy", r, map[string]int{"node1": 1, "node3": 3}, 0.05)
	if series, _, err := owner.Metrics(); err != nil {
		t.Error(err)
	} else if v, found := series.Sum("edgelb_health_checks_total", `type="sctp"`, `result="fail"`); !found || v < 1 {
		t.Errorf("owner %s: edgelb_health_checks_total{type=\"sctp\",result=\"fail\"} = %v (found %v), want ≥ 1", owner.ID, v, found)
	}
	servers[2] = s.sctpServe(t, 2)
	back := waitState(2, edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY)
	r = sctpCount(t, ctx, c, addr, 12)
	if r.Counts["node2"] == 0 || r.Errors > 0 {
		t.Errorf("node2 back healthy after %s but: %s", back, r)
	}
	t.Logf("node2's SCTP server back: healthy after %s; %s", back.Round(time.Millisecond), r)
}
