package daemon

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/health"
	"github.com/edgelb/edgelb/lbd/ownership"
	"github.com/edgelb/edgelb/raft/fsm"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// backendIP is the address the health tests give their backend. The API
// refuses loopback backends, so onLoopback sends the probes meant for it to
// the loopback listener on the same port: no test traffic leaves loopback.
const backendIP = "10.0.0.11"

// onLoopback points every health probe of the daemons started after it at
// 127.0.0.1, on the port the probe was meant for.
func onLoopback(t *testing.T) {
	prev := healthDial
	healthDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
	}
	t.Cleanup(func() { healthDial = prev })
}

func serve(t *testing.T, addr string) net.Listener {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l
}

// checkedWeb is a service "web" with one backend ip:port, checked by TCP
// every 100 ms (rise 1, fall 2).
func checkedWeb(ip string, port int) *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{
		Name:     "web",
		Ports:    []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: uint32(port)}},
		Backends: []*edgelbv1.Backend{{Address: ip}},
		HealthCheck: &edgelbv1.HealthCheck{Type: edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP,
			Interval: durationpb.New(100 * time.Millisecond), Timeout: durationpb.New(50 * time.Millisecond), Rise: 1, Fall: 2},
	}
}

// The owner checks its backends and publishes transitions through raft: the
// stored service shows the backend unhealthy when it stops answering and
// healthy again when it returns, with no change of generation.
func TestOwnerPublishesBackendHealth(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a raft member")
	}
	onLoopback(t)
	ip := backendIP
	l := serve(t, "127.0.0.1:0")
	addr := l.Addr().(*net.TCPAddr)
	ds := startCluster(t, 1, func(c *config.Config) { c.Health.Enabled, c.Health.WithoutDataPlane = true, true })
	setupPool(t, ds[0].Addr())
	c := client(t, ds[0].Addr())
	_, err := c.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: checkedWeb(ip, addr.Port)})
	if err != nil {
		t.Fatal(err)
	}
	wait := func(want edgelbv1.BackendHealthState) *edgelbv1.VirtualService {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := c.GetVirtualService(context.Background(), &edgelbv1.GetVirtualServiceRequest{Name: "web"})
			if err != nil {
				t.Fatal(err)
			}
			if r.Service.Backends[0].GetHealth().GetState() == want {
				return r.Service
			}
			if time.Now().After(deadline) {
				t.Fatalf("backend health %v, want %v", r.Service.Backends[0].GetHealth(), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wait(edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY)
	l.Close()
	vs := wait(edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY)
	if vs.Backends[0].Health.LastError == "" || vs.Generation != 1 {
		t.Errorf("unhealthy backend: %+v, generation %d (health must not bump it)", vs.Backends[0].Health, vs.Generation)
	}
	l2 := serve(t, addr.String())
	defer l2.Close()
	wait(edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY)
}

// The member that would inherit a VIP checks its backends too, and only the
// owner reports. When the owner dies, a backend that failed meanwhile (nobody
// left to report it) is reported by the new owner from its own standby checks,
// so traffic does not go to it after the takeover.
func TestSuccessorChecksAndReportsOnTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs raft members")
	}
	onLoopback(t)
	ip := backendIP
	l := serve(t, "127.0.0.1:0")
	addr := l.Addr().(*net.TCPAddr)
	ds := startCluster(t, 3, func(c *config.Config) { c.Health.Enabled, c.Health.WithoutDataPlane = true, true })
	leader, _ := leaderAndFollower(t, ds)
	var pin *Daemon
	for _, d := range ds {
		if d != leader {
			pin = d
			break
		}
	}
	setupPool(t, leader.Addr())
	c := client(t, leader.Addr())
	web := checkedWeb(ip, addr.Port)
	web.PinnedMember = pin.cfg.ID
	_, err := c.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: web})
	if err != nil {
		t.Fatal(err)
	}
	get := func() *edgelbv1.VirtualService {
		t.Helper()
		r, err := c.GetVirtualService(context.Background(), &edgelbv1.GetVirtualServiceRequest{Name: "web"})
		if err != nil {
			t.Fatal(err)
		}
		return r.Service
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; service: %v", what, get())
			}
		}
	}
	waitFor("the pinned owner's report", func() bool {
		vs := get()
		return vs.Owner == pin.cfg.ID && vs.Backends[0].GetHealth().GetState() == edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY
	})
	vss, _ := leader.Node().FSM.Shared(fsm.Filter{})
	succID := ownership.Successors(vss, leader.Node().FSM.Members())[get().Vip]
	var succ, other *Daemon
	for _, d := range ds {
		switch d.cfg.ID {
		case pin.cfg.ID:
		case succID:
			succ = d
		default:
			other = d
		}
	}
	if succ == nil || other == nil {
		t.Fatalf("successor %q of %s: not one of the other two members", succID, pin.cfg.ID)
	}
	spec, _ := health.SpecFromProto(get().HealthCheck)
	key := health.Key{Addr: netip.MustParseAddr(ip), Port: uint16(addr.Port), Spec: spec}
	state := func(d *Daemon) (health.State, bool) {
		st, ok := d.checker.Status(key)
		return st.State, ok
	}
	waitFor("the successor's standby check", func() bool { st, _ := state(succ); return st == health.Healthy })
	if _, ok := state(other); ok {
		t.Errorf("%s checks %s: it neither owns nor would inherit the VIP", other.cfg.ID, key.Addr)
	}

	// The owner stops; the backend fails before the VIP moves.
	pin.Stop()
	l.Close()
	waitFor("the successor's standby check to fail", func() bool { st, _ := state(succ); return st == health.Unhealthy })
	// Only the owner reports: while pin still owns the VIP nobody may have
	// published the successor's verdict. (With the 350 ms grace the takeover
	// may already have happened by now; then there is nothing to check here.)
	if vs := get(); vs.Owner == pin.cfg.ID && vs.Backends[0].GetHealth().GetState() != edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_HEALTHY {
		t.Fatalf("published state %v before the takeover: only the owner reports", vs.Backends[0].GetHealth().GetState())
	}
	waitFor("the takeover and the new owner's report", func() bool {
		vs := get()
		return vs.Owner == succ.cfg.ID && vs.Backends[0].GetHealth().GetState() == edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY
	})
}
