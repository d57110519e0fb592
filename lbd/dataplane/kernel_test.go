package dataplane

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/edgelb/edgelb/lbd/dataplane/snat"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// These tests need root and a kernel with IPVS: run them in the User-Mode
// Linux guest (docs/SANDBOX.md):
//
//	go test -c -o /tmp/dataplane.test ./lbd/dataplane
//	EDGELB_KERNEL_TESTS=1 bin/umlrun -- /tmp/dataplane.test -test.v

// fenceDelay is the lease the fence gives a restarted engine: long enough
// for a reopen in a slow emulated guest (each iptables start costs up to
// seconds there), since a clean Close is followed by the fence too.
const fenceDelay = 5 * time.Second

func kernelOnly(t testing.TB) {
	if os.Getenv("EDGELB_KERNEL_TESTS") != "1" {
		t.Skip("set EDGELB_KERNEL_TESTS=1 and run in a kernel with IPVS (see docs/SANDBOX.md)")
	}
}

func sh(t testing.TB, cmd string) string {
	t.Helper()
	out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, out)
	}
	return string(out)
}

func svc(name, vip string, ports []*edgelbv1.Port, backends ...string) *edgelbv1.VirtualService {
	vs := &edgelbv1.VirtualService{Tenant: "t", Name: name, Vip: vip, Ports: ports, Owner: "me"}
	for _, b := range backends {
		vs.Backends = append(vs.Backends, &edgelbv1.Backend{Address: b, Weight: 1})
	}
	return vs
}

func tcp(p, bp uint32) *edgelbv1.Port {
	return &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: p, BackendPort: bp}
}

func TestKernelReconcile(t *testing.T) {
	kernelOnly(t)
	sh(t, "ip link add lb0 type dummy && ip link set lb0 up && ip addr add 10.99.0.1/24 dev lb0 && ip -6 addr add fd99::1/64 dev lb0 nodad")
	defer exec.Command("ip", "link", "del", "lb0").Run()
	// Someone else's service, which lbd must never touch.
	sh(t, "ipvsadm -A -t 10.77.0.1:80 -s rr && ipvsadm -a -t 10.77.0.1:80 -r 10.77.0.2:80 -m")
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	open := func() *Engine {
		// NoHandover: these steps want a VIP this host stops owning gone at
		// once (handover_test.go covers keeping it until the new owner
		// announces).
		e, err := Open(ctx, Config{Interface: "lb0", StateDir: dir, SNAT: "iptables-legacy", Logger: log, GARPRepeatInterval: -1, SyncInterface: "lb0", SyncID: 7, FenceDelay: fenceDelay, TakeoverGuard: 10 * time.Second, NoHandover: true})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open()

	web := svc("web", "192.0.2.10", []*edgelbv1.Port{tcp(80, 30080), {Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: 53, BackendPort: 30053}}, "10.99.0.21", "10.99.0.22")
	web.Scheduler = edgelbv1.Scheduler_SCHEDULER_RR
	web.Persistence = &edgelbv1.Persistence{TimeoutSeconds: 600}
	v6 := svc("v6", "fd99::10", []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_SCTP, Port: 443, BackendPort: 30443}}, "fd99::21")
	dr := svc("dr", "192.0.2.11", []*edgelbv1.Port{tcp(80, 80)}, "10.99.0.23")
	dr.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	dr.Scheduler = edgelbv1.Scheduler_SCHEDULER_WLC
	all := []*edgelbv1.VirtualService{web, v6, dr}
	if err := e.Reconcile(ctx, all, "me"); err != nil {
		t.Fatal(err)
	}
	ipvs := sh(t, "ipvsadm -Ln")
	for _, want := range []string{
		"TCP  192.0.2.10:80 rr persistent 600", "UDP  192.0.2.10:53 rr persistent 600",
		"10.99.0.21:30080", "10.99.0.22:30053", "SCTP [fd99::10]:443 mh (mh-fallback,mh-port)", "[fd99::21]:30443",
		"TCP  192.0.2.11:80 wlc", "10.99.0.23:80                Route", "TCP  10.77.0.1:80 rr",
	} {
		if !strings.Contains(ipvs, want) {
			t.Errorf("ipvsadm -Ln lacks %q:\n%s", want, ipvs)
		}
	}
	addrs := sh(t, "ip addr show dev lb0")
	for _, want := range []string{"192.0.2.10/32", "192.0.2.11/32", "fd99::10/128"} {
		if !strings.Contains(addrs, want) {
			t.Errorf("lb0 lacks %s:\n%s", want, addrs)
		}
	}
	rules := sh(t, "iptables-legacy -t nat -S EDGELB-POSTROUTING; iptables-legacy -t nat -S POSTROUTING")
	if !strings.Contains(rules, "--vaddr 192.0.2.10 -j SNAT --to-source 192.0.2.10") || strings.Contains(rules, "192.0.2.11") || !strings.Contains(rules, "-A POSTROUTING -j EDGELB-POSTROUTING") {
		t.Errorf("SNAT rules (nat VIP only, jumped to from POSTROUTING):\n%s", rules)
	}

	t.Run("takeover guard: RETURN for the nat VIPs' TCP ports, DROP for VIPs in the kernel's list", func(t *testing.T) {
		guard := sh(t, "iptables-legacy -t mangle -S EDGELB-PREROUTING; iptables-legacy -t mangle -S PREROUTING")
		for _, want := range []string{
			"-A EDGELB-PREROUTING -p tcp -m multiport --dports 80 -j RETURN",
			"-A EDGELB-PREROUTING -m recent --rcheck --seconds 10 --name edgelb-takeover --mask 255.255.255.255 --rdest -j DROP",
			"--ctstate NEW -j EDGELB-PREROUTING",
		} {
			if !strings.Contains(guard, want) {
				t.Errorf("guard rules lack %q:\n%s", want, guard)
			}
		}
		if err := e.snat.Guard(netip.MustParseAddr("192.0.2.10")); err != nil {
			t.Fatal(err)
		}
		if list := sh(t, "cat /proc/net/xt_recent/edgelb-takeover"); !strings.Contains(list, "src=192.0.2.10 ") {
			t.Errorf("the kernel's list after Guard:\n%s", list)
		}
		if n := snat.GuardCapacity(); n != snat.RecentCapacity {
			t.Errorf("xt_recent holds %d addresses per list, want %d (lbd loads it)", n, snat.RecentCapacity)
		}
	})

	t.Run("connection sync daemons run as master and backup", func(t *testing.T) {
		out := sh(t, "ipvsadm -L --daemon")
		if !strings.Contains(out, "master sync daemon (mcast=lb0, syncid=7") || !strings.Contains(out, "backup sync daemon (mcast=lb0, syncid=7") {
			t.Errorf("ipvsadm -L --daemon:\n%s", out)
		}
	})

	t.Run("a no-op reconcile changes nothing", func(t *testing.T) {
		before := e.Stats().Ops
		if err := e.Reconcile(ctx, all, "me"); err != nil {
			t.Fatal(err)
		}
		if d := e.Stats().Ops - before; d != 0 {
			t.Errorf("%d IPVS operations for an unchanged state", d)
		}
	})

	t.Run("changing one backend changes only that destination", func(t *testing.T) {
		web2 := proto.Clone(web).(*edgelbv1.VirtualService)
		web2.Backends[1].Weight = 5
		before := e.Stats().Ops
		all = []*edgelbv1.VirtualService{web2, v6, dr}
		if err := e.Reconcile(ctx, all, "me"); err != nil {
			t.Fatal(err)
		}
		if d := e.Stats().Ops - before; d != 2 { // the backend is on two ports
			t.Errorf("%d operations; want 2 (one destination update per port)", d)
		}
		if out := sh(t, "ipvsadm -Ln -t 192.0.2.10:80"); !strings.Contains(out, "10.99.0.22:30080") || !strings.Contains(out, "Masq    5") {
			t.Errorf("weight not updated:\n%s", out)
		}
		// Drained and unhealthy backends get weight 0 (kept for established connections).
		web3 := proto.Clone(web2).(*edgelbv1.VirtualService)
		web3.Backends[0].Drained = true
		web3.Backends[1].Health = &edgelbv1.BackendHealth{State: edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY}
		all = []*edgelbv1.VirtualService{web3, v6, dr}
		if err := e.Reconcile(ctx, all, "me"); err != nil {
			t.Fatal(err)
		}
		if out := sh(t, "ipvsadm -Ln -t 192.0.2.10:80"); strings.Count(out, "Masq    0") != 2 {
			t.Errorf("drained/unhealthy backends should have weight 0:\n%s", out)
		}
	})

	t.Run("a restarted engine adopts the kernel state and changes nothing", func(t *testing.T) {
		before := sh(t, "ipvsadm -Ln")
		e.Close()
		e = open()
		if err := e.Reconcile(ctx, all, "me"); err != nil {
			t.Fatal(err)
		}
		if n := e.Stats().Ops; n != 0 {
			t.Errorf("%d IPVS operations after a restart with the same state", n)
		}
		if after := sh(t, "ipvsadm -Ln"); after != before {
			t.Errorf("IPVS changed across a restart:\n%s\n---\n%s", before, after)
		}
	})

	t.Run("a service deleted behind lbd's back is restored at the next resync", func(t *testing.T) {
		sh(t, "ipvsadm -D -t 192.0.2.11:80")
		if err := e.Resync(); err != nil {
			t.Fatal(err)
		}
		if err := e.Reconcile(ctx, all, "me"); err != nil {
			t.Fatal(err)
		}
		if out := sh(t, "ipvsadm -Ln"); !strings.Contains(out, "192.0.2.11:80") {
			t.Errorf("not restored:\n%s", out)
		}
	})

	t.Run("a standby holds IPVS and SNAT but no address; taking over adds only the address", func(t *testing.T) {
		before := e.Stats().Ops
		if err := e.Reconcile(ctx, all, "someone-else"); err != nil {
			t.Fatal(err)
		}
		if addrs := sh(t, "ip addr show dev lb0"); strings.Contains(addrs, "192.0.2.10/32") {
			t.Errorf("a standby holds the address:\n%s", addrs)
		}
		if ipvs := sh(t, "ipvsadm -Ln"); !strings.Contains(ipvs, "192.0.2.10:80") {
			t.Errorf("a standby dropped the IPVS service:\n%s", ipvs)
		}
		if rules := sh(t, "iptables-legacy -t nat -S EDGELB-POSTROUTING"); !strings.Contains(rules, "192.0.2.10") {
			t.Errorf("a standby dropped the SNAT rule:\n%s", rules)
		}
		if err := e.Reconcile(ctx, all, "me"); err != nil {
			t.Fatal(err)
		}
		if d := e.Stats().Ops - before; d != 0 {
			t.Errorf("standby and takeover cost %d IPVS operations; want 0", d)
		}
		if addrs := sh(t, "ip addr show dev lb0"); !strings.Contains(addrs, "192.0.2.10/32") {
			t.Errorf("takeover did not add the address:\n%s", addrs)
		}
	})

	t.Run("a crash leaves no VIP answering: the fence withdraws the addresses", func(t *testing.T) {
		// What a SIGKILL does to the fence's pipe: it closes without "keep";
		// no new engine takes over within the delay.
		e.fence.w.Close()
		start := time.Now()
		e.fence.cmd.Wait()
		if waited := time.Since(start); waited < fenceDelay-100*time.Millisecond {
			t.Errorf("the fence withdrew after %s, before the delay (%s) a restart gets", waited, fenceDelay)
		}
		addrs := sh(t, "ip addr show dev lb0")
		if strings.Contains(addrs, "192.0.2.10/32") || strings.Contains(addrs, "fd99::10/128") {
			t.Errorf("addresses left after the crash:\n%s", addrs)
		}
		if ipvs := sh(t, "ipvsadm -Ln"); !strings.Contains(ipvs, "192.0.2.10:80") {
			t.Errorf("the fence should leave IPVS (for connection sync), got:\n%s", ipvs)
		}
		// The restarted engine, still the owner, puts them back.
		e.fence = nil
		e.Close()
		e = open()
		if err := e.Reconcile(ctx, all, "me"); err != nil {
			t.Fatal(err)
		}
		if addrs := sh(t, "ip addr show dev lb0"); !strings.Contains(addrs, "192.0.2.10/32") {
			t.Errorf("addresses not restored after restart:\n%s", addrs)
		}
	})

	t.Run("withdrawing removes address, IPVS service and SNAT rule, and nothing else", func(t *testing.T) {
		if err := e.Reconcile(ctx, nil, "me"); err != nil {
			t.Fatal(err)
		}
		ipvs := sh(t, "ipvsadm -Ln")
		if strings.Contains(ipvs, "192.0.2.1") || strings.Contains(ipvs, "fd99::10") {
			t.Errorf("services left:\n%s", ipvs)
		}
		if !strings.Contains(ipvs, "10.77.0.1:80") || !strings.Contains(ipvs, "10.77.0.2:80") {
			t.Errorf("the foreign service was touched:\n%s", ipvs)
		}
		if addrs := sh(t, "ip addr show dev lb0"); strings.Contains(addrs, "192.0.2.") || strings.Contains(addrs, "fd99::10") {
			t.Errorf("addresses left:\n%s", addrs)
		}
		if rules := sh(t, "iptables-legacy -t nat -S EDGELB-POSTROUTING"); strings.Contains(rules, "SNAT") {
			t.Errorf("SNAT rules left:\n%s", rules)
		}
	})
	e.Close()
}

// Every scheduler lbd offers reaches the kernel as itself, and an IPv6 VIP is
// usable at once on an interface that does duplicate address detection: the
// veth here runs DAD for 30 s, so an address added without IFA_F_NODAD would
// stay "tentative" (unusable as a source or destination) that long.
func TestKernelSchedulersAndNoDAD(t *testing.T) {
	kernelOnly(t)
	sh(t, "ip link add lbv0 type veth peer name lbv1 && ip link set lbv1 up && "+
		"sysctl -qw net.ipv6.conf.lbv0.accept_dad=1 net.ipv6.conf.lbv0.dad_transmits=30 && "+
		"ip link set lbv0 up && ip addr add 10.96.0.1/24 dev lbv0 && ip -6 addr add fd96::1/64 dev lbv0 nodad")
	defer exec.Command("ip", "link", "del", "lbv0").Run()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	e, err := Open(ctx, Config{Interface: "lbv0", StateDir: t.TempDir(), SNAT: "none", Logger: log, GARPRepeatInterval: -1, NoFence: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	want := map[edgelbv1.Scheduler]string{
		edgelbv1.Scheduler_SCHEDULER_MH:  "mh (mh-fallback,mh-port)",
		edgelbv1.Scheduler_SCHEDULER_RR:  "rr",
		edgelbv1.Scheduler_SCHEDULER_WRR: "wrr",
		edgelbv1.Scheduler_SCHEDULER_LC:  "lc",
		edgelbv1.Scheduler_SCHEDULER_WLC: "wlc",
		edgelbv1.Scheduler_SCHEDULER_SH:  "sh (sh-fallback,sh-port)",
	}
	var all []*edgelbv1.VirtualService
	for sched := range want {
		vs := svc("s"+strconv.Itoa(int(sched)), "192.0.2.40", []*edgelbv1.Port{tcp(8000+uint32(sched), 30080)}, "10.96.0.21", "10.96.0.22")
		vs.Scheduler = sched
		all = append(all, vs)
	}
	all = append(all, svc("v6", "fd96::10", []*edgelbv1.Port{tcp(80, 30080)}, "fd96::21"))
	if err := e.Reconcile(ctx, all, "me"); err != nil {
		t.Fatal(err)
	}
	// Read the address first: DAD, had it started, is still running.
	addrs := sh(t, "ip -6 addr show dev lbv0")
	i := strings.Index(addrs, "fd96::10/128")
	if i < 0 || strings.Contains(strings.SplitN(addrs[i:], "\n", 2)[0], "tentative") {
		t.Errorf("the IPv6 VIP is missing or still tentative (duplicate address detection not skipped):\n%s", addrs)
	}
	ipvs := sh(t, "ipvsadm -Ln")
	for sched, name := range want {
		line := "TCP  192.0.2.40:" + strconv.Itoa(8000+int(sched)) + " " + name
		if !strings.Contains(ipvs, line+"\n") && !strings.Contains(ipvs, line+" ") {
			t.Errorf("ipvsadm -Ln lacks %q:\n%s", line, ipvs)
		}
	}
	if err := e.Reconcile(ctx, nil, "me"); err != nil {
		t.Fatal(err)
	}
	if ipvs := sh(t, "ipvsadm -Ln"); strings.Contains(ipvs, "192.0.2.40") || strings.Contains(ipvs, "fd96::10") {
		t.Errorf("services left after withdrawing:\n%s", ipvs)
	}
}

// BenchmarkKernelReconcile10kx50 is the reconcile row of `make bench` against the real
// IPVS of the guest: 10,000 VIPs × 50 backends programmed from nothing (IPVS
// services and destinations, addresses, one SNAT rule per VIP), then one
// backend drained and undrained at that size, then everything withdrawn. The
// first change after the cold start includes the periodic resync (a re-read
// of the whole table), hence the max.
//
//	go test -c -o /tmp/dp.test ./lbd/dataplane
//	EDGELB_KERNEL_TESTS=1 go run ./integration/cmd/umlrun -mem 2048M -- /tmp/dp.test -test.run '^$' -test.bench KernelReconcile -test.benchtime 1x
func BenchmarkKernelReconcile10kx50(b *testing.B) {
	kernelOnly(b)
	sh(b, "ip link add lb1 type dummy && ip link set lb1 up && ip addr add 10.98.0.1/24 dev lb1")
	defer exec.Command("ip", "link", "del", "lb1").Run()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	e, err := Open(ctx, Config{Interface: "lb1", StateDir: b.TempDir(), SNAT: "iptables-legacy", Logger: log, GARPRepeatInterval: -1, NoFence: true})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	// EDGELB_KERNEL_BENCH_VIPS scales it down: the emulated kernel takes
	// about 1 ms per IPVS operation, so 10k × 50 cold is minutes there.
	n := 10000
	if s := os.Getenv("EDGELB_KERNEL_BENCH_VIPS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 || v > 65536 {
			b.Fatalf("EDGELB_KERNEL_BENCH_VIPS=%q: want a number of VIPs from 1 to 65536", s)
		}
		n = v
	}
	vss := many(n, 50)
	for b.Loop() {
		t0 := time.Now()
		if err := e.Reconcile(ctx, vss, "me"); err != nil {
			b.Fatal(err)
		}
		cold := time.Since(t0)
		st := e.Stats()
		// One backend of one service drained, then back, 20 times.
		alt := slices.Clone(vss)
		c := proto.Clone(vss[n/2]).(*edgelbv1.VirtualService)
		c.Backends[25].Drained = true
		alt[n/2] = c
		var one []time.Duration
		for i := range 20 {
			next := alt
			if i%2 == 1 {
				next = vss
			}
			t1 := time.Now()
			if err := e.Reconcile(ctx, next, "me"); err != nil {
				b.Fatal(err)
			}
			one = append(one, time.Since(t1))
		}
		slices.Sort(one)
		if out := sh(b, "ipvsadm -Ln | grep -c '^TCP'"); strings.TrimSpace(out) != strconv.Itoa(n) {
			b.Fatalf("%s IPVS services after the reconcile, want %d", strings.TrimSpace(out), n)
		}
		t2 := time.Now()
		if err := e.Reconcile(ctx, nil, "me"); err != nil {
			b.Fatal(err)
		}
		withdraw := time.Since(t2)
		b.ReportMetric(cold.Seconds(), "cold-s")
		b.ReportMetric(float64(st.Ops), "cold-ipvs-ops")
		b.ReportMetric(float64(one[len(one)/2])/1e6, "one-change-p50-ms")
		b.ReportMetric(float64(one[len(one)-1])/1e6, "one-change-max-ms")
		b.ReportMetric(withdraw.Seconds(), "withdraw-s")
		b.ReportMetric(float64(n), "vips")
	}
}
