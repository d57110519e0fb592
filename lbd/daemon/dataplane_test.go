package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/internal/logcapture"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/health"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node"
)

// soloConfig is a one-member configuration on loopback with the default
// (ipvs) data plane and no metrics listener.
func soloConfig(t *testing.T) config.Config {
	cfg := config.Default()
	cfg.ID = "m1"
	cfg.DataDir = filepath.Join(t.TempDir(), "m1")
	cfg.APIAddr, cfg.RaftAddr = freeAddr(t), freeAddr(t)
	cfg.MetricsAddr = ""
	return cfg
}

// withKernel replaces the IPVS opener for one test. Start calls it before
// anything else that acts on the host (after only validating the
// configuration), so with a fake nothing of the host's IPVS, addresses or
// sysctls is touched.
func withKernel(t *testing.T, open func(context.Context, config.Config, *slog.Logger) (DataPlane, string, error)) {
	t.Helper()
	prev := openKernel
	openKernel = open
	t.Cleanup(func() { openKernel = prev })
	withHostAddrs(t, nil, "")
}

// The default data plane is ipvs: when IPVS cannot be opened, Start fails —
// it does not carry on as control-plane-only — and says how to ask for that.
func TestStartFailsWithoutIPVS(t *testing.T) {
	cause := errors.New("IPVS is not available (genetlink: no such family)")
	var opened []string
	withKernel(t, func(_ context.Context, cfg config.Config, _ *slog.Logger) (DataPlane, string, error) {
		opened = append(opened, cfg.DataPlane.Interface)
		return nil, "", cause
	})
	var logs logcapture.Buffer
	cfg := soloConfig(t)
	if cfg.DataPlane.Mode != "ipvs" {
		t.Fatalf("default data plane %q, want ipvs", cfg.DataPlane.Mode)
	}
	d, err := Start(context.Background(), cfg, logs.Logger())
	if err == nil {
		d.Stop()
		t.Fatal("Start succeeded without IPVS")
	}
	if d != nil {
		t.Errorf("Start returned a daemon along with %v", err)
	}
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), "--data-plane=none") || !strings.Contains(err.Error(), cfg.DataPlane.Interface) {
		t.Errorf("error %q: want the cause, the interface and --data-plane=none", err)
	}
	// The flag is named once, by the daemon (the data plane's errors
	// never name it; the daemon adds it without reading their text).
	if strings.Count(err.Error(), "--data-plane=none") != 1 {
		t.Errorf("error %v: want --data-plane=none named once", err)
	}
	if len(opened) != 1 || opened[0] != cfg.DataPlane.Interface {
		t.Errorf("IPVS opened for %v, want once for %s", opened, cfg.DataPlane.Interface)
	}
	for _, r := range logs.MustRecords(t) {
		if msg, _ := r["msg"].(string); strings.Contains(msg, "CONTROL-PLANE-ONLY") {
			t.Errorf("fell back to control-plane-only: %v", r)
		}
	}
	// Nothing came up: the API address is free, no raft state was written.
	l, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		t.Errorf("API address still taken after the failed start: %v", err)
	} else {
		l.Close()
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "raft")); err == nil {
		t.Error("raft state written by a start that failed")
	}

}

// --data-plane=none is never reached by accident and never quiet: it opens
// no kernel data plane and logs a loud warning.
func TestControlPlaneOnlyWarns(t *testing.T) {
	withKernel(t, func(context.Context, config.Config, *slog.Logger) (DataPlane, string, error) {
		t.Error("mode none opened the kernel data plane")
		return nil, "", errors.New("not in mode none")
	})
	var logs logcapture.Buffer
	cfg := soloConfig(t)
	cfg.DataPlane.Mode, cfg.DataPlane.Interface = "none", ""
	cfg.Health.Enabled = false
	d, err := Start(context.Background(), cfg, logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	if d.dpName != "control-plane-only" {
		t.Errorf("data plane %q, want control-plane-only", d.dpName)
	}
	var warned bool
	for _, r := range logs.MustRecords(t) {
		msg, _ := r["msg"].(string)
		if strings.Contains(msg, "CONTROL-PLANE-ONLY") {
			warned = true
			if r["level"] != "WARN" || !strings.Contains(msg, "will not answer") {
				t.Errorf("warning %v: want level WARN saying owned VIPs will not answer", r)
			}
		}
	}
	if !warned {
		t.Error("no CONTROL-PLANE-ONLY warning logged")
	}
}

// A backend health change is logged per service it concerns, each
// line naming the VIP and the tenant (a check can stand for services of
// several tenants); the standing-by lines too, at debug.
func TestHealthLogNamesVIPAndTenant(t *testing.T) {
	f := fsm.New(slog.New(slog.DiscardHandler))
	idx := uint64(0)
	apply := func(cmd *raftv1.Command) {
		idx++
		if r := f.ApplyCommand(idx, cmd); r.Err() != nil {
			t.Fatal(r.Err())
		}
	}
	apply(&raftv1.Command{Op: &raftv1.Command_CreateAddressPool{CreateAddressPool: &raftv1.CreateAddressPool{
		Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/28"}}}}})
	for _, s := range []struct{ tenant, name, vip, owner string }{
		{"acme", "web", "192.0.2.1", "m1"}, {"globex", "shop", "192.0.2.2", "m1"}, {"initech", "api", "192.0.2.3", "m2"},
	} {
		apply(&raftv1.Command{Op: &raftv1.Command_CreateVirtualService{CreateVirtualService: &raftv1.CreateVirtualService{
			Owner: s.owner, Service: &edgelbv1.VirtualService{Tenant: s.tenant, Name: s.name, Vip: s.vip,
				IpFamily: edgelbv1.IPFamily_IP_FAMILY_IPV4, Scheduler: edgelbv1.Scheduler_SCHEDULER_MH, ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_NAT,
				Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}}}}}})
	}
	var logs logcapture.Buffer
	d := &Daemon{log: logs.Logger(), node: &node.Node{FSM: f}}
	d.cfg.ID = "m1"
	check := health.Key{Port: 30080}
	st := health.Status{State: health.Unhealthy, LastError: "connection refused", LastCheck: time.Now()}
	d.logHealth([]healthLine{
		{svc: fsm.Key{Tenant: "acme", Name: "web"}, check: check, st: st, owned: true},
		{svc: fsm.Key{Tenant: "globex", Name: "shop"}, check: check, st: st, owned: true},
		{svc: fsm.Key{Tenant: "initech", Name: "api"}, check: check, st: st},
	})
	want := map[string]string{"192.0.2.1": "acme", "192.0.2.2": "globex", "192.0.2.3": "initech"}
	got := map[string]string{}
	for _, r := range logs.MustRecords(t) {
		vip, _ := r["vip"].(string)
		tenant, _ := r["tenant"].(string)
		if want[vip] != tenant || r["state"] != "unhealthy" || r["error"] != "connection refused" {
			t.Errorf("record %v: want vip, its tenant, state and error", r)
		}
		got[vip] = r["msg"].(string)
	}
	if got["192.0.2.1"] != "backend health changed" || got["192.0.2.2"] != "backend health changed" ||
		got["192.0.2.3"] != "backend health changed (standing by)" {
		t.Errorf("lines per VIP: %v; want one per service, the unowned one standing by", got)
	}
}
