package e2e

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/probe"
	"github.com/edgelb/edgelb/integration/topo"
	"github.com/edgelb/edgelb/lbd/dataplane/nftrules"
)

// needNft skips a scenario about the nftables rule engine unless every
// member runs on it (the default on a guest kernel with nftables' inet
// family, the project's; Debian's UML kernel has none, and
// EDGELB_E2E_SNAT=iptables-legacy asks for the fallback).
func (s *scenarios) needNft(t *testing.T) {
	t.Helper()
	for _, m := range s.l.Members {
		if !m.Running() {
			continue
		}
		switch e := m.RuleEngine(); e {
		case "nftables":
		case "iptables":
			t.Skipf("%s runs on iptables: run on a guest kernel with nftables, without EDGELB_E2E_SNAT=iptables-*", m.ID)
		default:
			t.Fatalf("%s: rule engine %s", m.ID, e)
		}
	}
}

// legacyChains lists the EDGELB- chains in m's legacy iptables.
func legacyChains(m *lab.Member) ([]string, error) {
	var out []string
	for _, save := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
		s, err := topo.Run(m.Host.Name, save)
		if err != nil {
			return nil, err
		}
		for l := range strings.Lines(s) {
			if strings.HasPrefix(l, ":"+nftrules.LegacyPrefix) {
				out = append(out, strings.Fields(l[1:])[0])
			}
		}
	}
	return out, nil
}

// dropNftTable removes lbd's nftables table in m's namespace: the host as an
// older lbd left it, which never made one.
func dropNftTable(m *lab.Member) error {
	return netns.Do(m.Host.Name, func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		c.DelTable(&nftables.Table{Name: nftrules.TableName, Family: nftables.TableFamilyINet})
		return c.Flush()
	})
}

// The upgrade: the owner of a VIP with held connections runs the old way
// (iptables-legacy: its SNAT, guard and filter chains), then is restarted on
// nftables under traffic. It installs its sets, removes the old chains, and
// no held connection breaks and no new one fails.
func (s *scenarios) upgradeFromIptables(t *testing.T) {
	s.needNft(t)
	const name = "upgrade"
	vip := "10.0.0.217"
	leader := s.leader(t)
	var pin *lab.Member
	for _, m := range s.l.Members {
		if m.ID != leader && m.Running() {
			pin = m
			break
		}
	}
	// The old way: lbd on iptables, on a host without the nftables table.
	restart := func(args ...string) {
		t.Helper()
		if err := pin.Signal(syscall.SIGTERM, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		pin.ExtraArgs = args
		if err := pin.Start(); err != nil {
			t.Fatal(err)
		}
		if err := pin.WaitServing(restartWithin); err != nil {
			t.Fatal(err)
		}
	}
	if err := pin.Signal(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := dropNftTable(pin); err != nil {
		t.Fatal(err)
	}
	pin.ExtraArgs = []string{"--snat", "iptables-legacy"}
	if err := pin.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pin.ExtraArgs = nil }()
	if err := pin.WaitServing(restartWithin); err != nil {
		t.Fatal(err)
	}
	tcp := probe.Options{Addr: vip + ":80", NetNS: client, Timeout: 3 * time.Second, NoRetransmit: true}
	owner := s.createVIP(t, name, []string{"--vip", vip, "--pin", pin.ID, "--port", "tcp/80:30080",
		"--source-range", "0.0.0.0/0",
		"--backend", nodeBackend(1, 1), "--backend", nodeBackend(2, 1), "--backend", nodeBackend(3, 1)}, tcp)
	defer s.deleteVIP_(t, name)
	if owner != pin {
		t.Fatalf("owner %s, pinned to %s", owner.ID, pin.ID)
	}
	old, err := legacyChains(pin)
	if err != nil || !slices.Contains(old, "EDGELB-POSTROUTING") || !slices.Contains(old, "EDGELB-INPUT") {
		t.Fatalf("%s on iptables-legacy has chains %v (%v); want the old SNAT and filter chains", pin.ID, old, err)
	}
	if pin.RuleEngine() != "iptables" {
		t.Fatalf("%s has an nftables table while on iptables", pin.ID)
	}

	hold, steady := startRestartTraffic(t, tcp)
	time.Sleep(time.Second)
	steady.Mark()
	t0 := time.Now()
	restart("--snat", "nftables") // the new version, on nftables
	t.Logf("%s restarted on nftables, serving after %s", pin.ID, time.Since(t0).Round(time.Millisecond))
	var left []string
	for deadline := time.Now().Add(guestWait); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		if left, err = legacyChains(pin); err == nil && len(left) == 0 {
			break
		}
	}
	time.Sleep(2 * time.Second)
	hr := hold.Stop()
	sr := steady.Stop(false)
	t.Logf("upgrade of %s: old chains %v → %v; held %d/%d kept, %d pings; new tcp %d/%d ok, longest outage %s",
		pin.ID, old, left, hr.Kept, hr.Opened, hr.Pings, sr.OK, sr.Attempts, sr.LongestOutage.Round(time.Millisecond))
	if len(left) > 0 || err != nil {
		t.Errorf("%s kept the older version's chains %v (%v)", pin.ID, left, err)
	}
	if vips, err := pin.SNATVIPs(); err != nil || !slices.Contains(vips, vip) || pin.RuleEngine() != "nftables" {
		t.Errorf("%s after the upgrade: engine %s, SNAT %v (%v); want %s in the nftables set", pin.ID, pin.RuleEngine(), vips, err, vip)
	}
	if ok, err := pin.FiltersVIP(vip); err != nil || !ok {
		t.Errorf("%s after the upgrade does not filter %s: %v", pin.ID, vip, err)
	}
	reportBroken(t, "held", hr)
	if sr.Failed > 0 {
		t.Errorf("new connections failed during the upgrade: %d of %d", sr.Failed, sr.Attempts)
	}
}

// processes reads every running member's edgelb_dataplane_processes_started_total.
func (s *scenarios) processes(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range s.l.Members {
		if !m.Running() {
			continue
		}
		ms, _, err := m.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		v, found := ms.Sum("edgelb_dataplane_processes_started_total")
		if !found {
			t.Fatalf("%s exports no edgelb_dataplane_processes_started_total", m.ID)
		}
		out[m.ID] = v
	}
	return out
}

// No process on the VIP path: across creating a nat VIP with source
// ranges (every member programs it), moving it to another member and back
// (each move a takeover with the guard), and deleting it, no member starts
// a process.
func (s *scenarios) noProcess(t *testing.T) {
	s.needNft(t)
	const name = "noproc"
	vip := "10.0.0.218"
	// Let any start-up work (the upgrade's removal) finish first.
	time.Sleep(2 * time.Second)
	before := s.processes(t)
	tcp, owner, other := s.movableVIP(t, name, vip)
	deleted := false
	defer func() {
		if !deleted {
			s.deleteVIP_(t, name)
		}
	}()
	mustLBCTL(t, s.l, "vip", "update", name, "--source-range", "0.0.0.0/0")
	move := func(to *lab.Member) {
		t.Helper()
		waitStandby(t, to, vip)
		moveVIP(t, s.l, vip, to.ID)
		for t0 := time.Now(); !to.HasAddr(vip); time.Sleep(100 * time.Millisecond) {
			if time.Since(t0) > guestWait {
				t.Fatalf("%s did not move to %s within %s", vip, to.ID, guestWait)
			}
		}
		if _, err := topo.WaitAnswer(tcp, guestWait); err != nil {
			t.Fatalf("%s after the move to %s: %v", vip, to.ID, err)
		}
	}
	move(other)
	move(owner)
	s.deleteVIP_(t, name)
	deleted = true
	// The delete is done once no member holds the VIP's SNAT any more.
	for t0 := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		held := false
		for _, m := range s.l.Members {
			if vips, err := m.SNATVIPs(); m.Running() && (err != nil || slices.Contains(vips, vip)) {
				held = true
			}
		}
		if !held {
			break
		}
		if time.Since(t0) > guestWait {
			t.Fatalf("%s still programmed %s after its deletion", time.Since(t0).Round(time.Second), vip)
		}
	}
	after := s.processes(t)
	var changed []string
	for id, n := range before {
		if a, ok := after[id]; ok && a != n {
			changed = append(changed, fmt.Sprintf("%s: %v → %v", id, n, a))
		}
	}
	t.Logf("processes started, before %v, after %v", before, after)
	if len(changed) > 0 {
		t.Errorf("lbd started processes on the VIP path (create, move, take over, delete): %s", strings.Join(changed, "; "))
	}
}
