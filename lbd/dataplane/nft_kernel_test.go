package dataplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/lbd/dataplane/nftrules"
	"github.com/edgelb/edgelb/lbd/proc"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// The engine on the nftables rule engine, with real IPVS in nat mode: the
// backend sees the VIP as the source (SNAT by conntrack's original
// destination, no xt_ipvs), the source ranges drop a denied client, a
// standby holds the sets and a takeover opens the guard's window — and
// none of it starts a process. Needs a kernel with nf_tables' inet family
// (the project's guest kernel; not Debian's UML kernel: skipped there).
func TestKernelNftEngine(t *testing.T) {
	kernelOnly(t)
	sh(t, `ip netns add nfcl && ip netns add nfbe &&
ip link add nfv0 type veth peer name nfv1 && ip link set nfv1 netns nfcl &&
ip link add nfb0 type veth peer name nfb1 && ip link set nfb1 netns nfbe &&
ip link set nfv0 up && ip addr add 10.91.0.1/24 dev nfv0 &&
ip link set nfb0 up && ip addr add 10.90.0.1/24 dev nfb0 &&
ip -n nfcl link set lo up && ip -n nfcl link set nfv1 up &&
ip -n nfcl addr add 10.91.0.2/24 dev nfv1 && ip -n nfcl addr add 10.91.0.100/24 dev nfv1 &&
ip -n nfbe link set lo up && ip -n nfbe link set nfb1 up &&
ip -n nfbe addr add 10.90.0.2/24 dev nfb1 && ip -n nfbe route add default via 10.90.0.1`)
	defer exec.Command("sh", "-c", "ip link del nfv0; ip link del nfb0; ip netns del nfcl; ip netns del nfbe").Run()
	// The table outlives the engine (a restart takes it over); the tests
	// after this one get a kernel without it.
	defer func() {
		if c, err := nftables.New(); err == nil {
			c.DelTable(&nftables.Table{Name: nftrules.TableName, Family: nftables.TableFamilyINet})
			c.Flush()
		}
	}()

	// The backend names the source it sees.
	var ln net.Listener
	if err := netns.Do("nfbe", func() (err error) { ln, err = net.Listen("tcp", "10.90.0.2:8080"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	dial := func(src string) (string, error) {
		var c net.Conn
		err := netns.Do("nfcl", func() (err error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
			c, err = d.Dial("tcp", "10.91.0.10:80")
			return err
		})
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		l, err := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(l), err
	}

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	e, err := Open(ctx, Config{Interface: "nfv0", StateDir: t.TempDir(), SNAT: "nftables", Logger: log, GARPRepeatInterval: -1,
		NoFence: true, NoHandover: true, TakeoverGuard: 10 * time.Second})
	if err != nil {
		t.Skipf("no nftables rule engine in this kernel: %v", err)
	}
	defer e.Close()
	vs := svc("web", "10.91.0.10", []*edgelbv1.Port{tcp(80, 8080)}, "10.90.0.2")
	vs.SourceRanges = []string{"10.91.0.2/32"}
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{vs}, "me"); err != nil {
		t.Fatal(err)
	}
	// The first sync starts the one-time removal of an older version's
	// iptables chains, in the background; it runs processes only where
	// legacy tables exist (in this guest, when an iptables test ran before).
	// Counted from when it is done: the steps after it must start none.
	started := proc.Started()
	for stable := time.Now(); time.Since(stable) < 2*time.Second; time.Sleep(100 * time.Millisecond) {
		if n := proc.Started(); n != started {
			started, stable = n, time.Now()
		}
	}
	if got, err := dial("10.91.0.2"); err != nil || got != "10.91.0.10" {
		t.Errorf("allowed client: backend saw %q (%v); want the VIP 10.91.0.10 (SNAT)", got, err)
	}
	var ne net.Error
	if _, err := dial("10.91.0.100"); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("denied client: %v; want a timeout (dropped)", err)
	}

	// Standby, then a takeover: the address comes back, the guard's set
	// holds the VIP for its window.
	standby := svc("web", "10.91.0.10", []*edgelbv1.Port{tcp(80, 8080)}, "10.90.0.2")
	standby.SourceRanges, standby.Owner = vs.SourceRanges, "someone-else"
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{standby}, "me"); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sh(t, "ip addr show dev nfv0"), "10.91.0.10/32") {
		t.Error("a standby holds the address")
	}
	back := svc("web", "10.91.0.10", []*edgelbv1.Port{tcp(80, 8080)}, "10.90.0.2")
	back.SourceRanges = []string{"10.91.0.2/32", "10.91.0.0/28"}
	if err := e.Reconcile(ctx, []*edgelbv1.VirtualService{back}, "me"); err != nil {
		t.Fatal(err)
	}
	if got, err := dial("10.91.0.2"); err != nil || got != "10.91.0.10" {
		t.Errorf("after the takeover: backend saw %q (%v)", got, err)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tab := &nftables.Table{Name: nftrules.TableName, Family: nftables.TableFamilyINet}
	set, err := c.GetSetByName(tab, "takeover4")
	if err != nil {
		t.Fatal(err)
	}
	if els, err := c.GetSetElements(set); err != nil || len(els) != 1 {
		t.Errorf("takeover set after the takeover: %v, %v; want the VIP", els, err)
	}
	if n := proc.Started() - started; n != 0 {
		t.Errorf("standby, takeover and a change of ranges started %d processes; want none", n)
	}

	// Withdrawn: out of the sets.
	if err := e.Reconcile(ctx, nil, "me"); err != nil {
		t.Fatal(err)
	}
	set, _ = c.GetSetByName(tab, "snat4")
	if els, err := c.GetSetElements(set); err != nil || len(els) != 0 {
		t.Errorf("snat4 after the VIP went: %d elements, %v", len(els), err)
	}

	// snat: none keeps the filter on nftables.
	e.Close()
	none, err := Open(ctx, Config{Interface: "nfv0", StateDir: t.TempDir(), SNAT: "none", Logger: log, GARPRepeatInterval: -1, NoFence: true})
	if err != nil {
		t.Fatal(err)
	}
	defer none.Close()
	if none.snat != nil || none.filter == nil || none.filter.Backend() != nftrules.Backend {
		t.Errorf("snat none: SNAT %v, filter %v; want no SNAT and the filter on nftables", none.snat, none.filter)
	}
}
