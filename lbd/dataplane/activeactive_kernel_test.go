package dataplane

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cloudflare/ipvs"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Two members of an active-active (bgp) pool reach the same backends through
// different histories — backends added in another order, one drained from
// the start on one and healthy then drained on the other — and must still
// send every flow to the same backend: the router may move a flow between
// them at any packet. Each member is a network namespace with its own IPVS,
// fed by its own client namespace with the same address; the flows are the
// same UDP source ports to both, and each member's connection table says
// where it sent each. A second service on port 54, programmed with raw
// ipvsadm in opposite orders, is the control: the kernel's mh table does
// depend on insertion order, so the test could fail.
func TestKernelActiveActiveSameBackendOnEveryMember(t *testing.T) {
	kernelOnly(t)
	const vip = "192.0.2.50"
	for _, m := range []string{"a", "b"} {
		sh(t, fmt.Sprintf(`set -e
ip netns add e%[1]s; ip netns add c%[1]s
ip link add c0 netns c%[1]s type veth peer name e0 netns e%[1]s
ip -n e%[1]s link set lo up; ip -n e%[1]s link set e0 up
ip -n e%[1]s addr add 10.97.0.1/24 dev e0; ip -n e%[1]s addr add %[2]s/32 dev lo
ip -n e%[1]s link add d0 type dummy; ip -n e%[1]s link set d0 up; ip -n e%[1]s addr add 10.98.1.254/24 dev d0
ip netns exec e%[1]s sysctl -qw net.ipv4.ip_forward=1
ip -n c%[1]s link set lo up; ip -n c%[1]s link set c0 up
ip -n c%[1]s addr add 10.97.0.2/24 dev c0; ip -n c%[1]s route add %[2]s/32 via 10.97.0.1`, m, vip))
		defer exec.Command("ip", "netns", "del", "e"+m).Run()
		defer exec.Command("ip", "netns", "del", "c"+m).Run()
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	engine := func(ns string) *Engine {
		var e *Engine
		if err := inNetns(t, ns, func() error {
			k, err := ipvs.New() // its netlink socket stays in ns
			if err != nil {
				return err
			}
			e = newEngine(Config{StateDir: t.TempDir(), Interface: "e0", Logger: log, GARPRepeatInterval: -1,
				ActiveActive: func(*edgelbv1.VirtualService) bool { return true }}, k, &fakeAddrs{on: map[netip.Addr]bool{}}, 0, &nopSender{})
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return e
	}
	ea, eb := engine("ea"), engine("eb")

	type b struct {
		last    byte
		weight  uint32
		drained bool
	}
	vs := func(bs ...b) []*edgelbv1.VirtualService {
		// dr: nat is refused for active-active services (ipvsdiff.ActiveActive).
		v := svc("aa", vip, []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: 53}})
		v.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_DR
		for _, x := range bs {
			v.Backends = append(v.Backends, &edgelbv1.Backend{Address: fmt.Sprintf("10.98.1.%d", x.last), Weight: x.weight, Drained: x.drained})
		}
		return []*edgelbv1.VirtualService{v}
	}
	final := vs(b{1, 1, false}, b{2, 2, false}, b{3, 1, false}, b{4, 3, false}, b{5, 1, true}, b{6, 1, false})
	ctx := context.Background()
	// Owner "": no address through the (fake) address manager; IPVS is
	// programmed on every member anyway (the hot standby).
	if err := ea.Reconcile(ctx, final, ""); err != nil {
		t.Fatal(err)
	}
	for i, step := range [][]*edgelbv1.VirtualService{
		vs(b{2, 2, false}, b{4, 3, true}, b{6, 1, false}),
		vs(b{6, 1, false}, b{5, 1, false}, b{4, 3, false}, b{3, 5, false}, b{2, 2, false}, b{1, 1, false}),
		final,
	} {
		if err := eb.Reconcile(ctx, step, ""); err != nil {
			t.Fatalf("member b, step %d: %v", i, err)
		}
	}
	// The control: one service, destinations added in opposite orders.
	for m, order := range map[string][]int{"a": {1, 2, 3, 4, 5, 6}, "b": {6, 5, 4, 3, 2, 1}} {
		cmd := fmt.Sprintf("ip netns exec e%s ipvsadm -A -u %s:54 -s mh -b mh-port,mh-fallback", m, vip)
		for _, n := range order {
			cmd += fmt.Sprintf(" && ip netns exec e%s ipvsadm -a -u %s:54 -r 10.98.1.%d:30054 -m -w 1", m, vip, n)
		}
		sh(t, cmd)
	}
	list := func(m string) string { return sh(t, fmt.Sprintf("ip netns exec e%s ipvsadm -Ln -u %s:53", m, vip)) }
	if la, lb := list("a"), list("b"); la != lb {
		t.Errorf("the members' destination lists differ (order or weights):\n--- a\n%s--- b\n%s", la, lb)
	} else {
		t.Logf("both members:\n%s", la)
	}

	const flows = 300
	for _, m := range []string{"a", "b"} {
		if err := inNetns(t, "c"+m, func() error {
			for i := 0; i < flows; i++ {
				for _, port := range []int{53, 54} {
					c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 97, 0, 2), Port: 20000 + i}, &net.UDPAddr{IP: net.ParseIP(vip), Port: port})
					if err != nil {
						return err
					}
					_, err = c.Write([]byte("x"))
					c.Close()
					if err != nil {
						return err
					}
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// chosen reads a member's connection table: vport → client port → backend.
	chosen := func(m string) map[string]map[string]string {
		out := map[string]map[string]string{"53": {}, "54": {}}
		for _, l := range strings.Split(sh(t, "ip netns exec e"+m+" ipvsadm -Lnc"), "\n") {
			f := strings.Fields(l)
			if len(f) < 6 || f[0] != "UDP" {
				continue
			}
			_, cport, _ := strings.Cut(f[3], ":")
			_, vport, _ := strings.Cut(f[4], ":")
			if out[vport] != nil {
				out[vport][cport] = f[5]
			}
		}
		return out
	}
	var a, bb map[string]map[string]string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		a, bb = chosen("a"), chosen("b")
		if len(a["53"]) == flows && len(bb["53"]) == flows && len(a["54"]) == flows && len(bb["54"]) == flows {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection entries: a %d+%d, b %d+%d, want %d each", len(a["53"]), len(a["54"]), len(bb["53"]), len(bb["54"]), flows)
		}
	}
	differ, perBackend := 0, map[string]int{}
	for cport, dest := range a["53"] {
		perBackend[dest]++
		if bb["53"][cport] != dest {
			differ++
			if differ <= 5 {
				t.Errorf("flow from port %s: member a sent it to %s, member b to %s", cport, dest, bb["53"][cport])
			}
		}
	}
	if differ > 0 {
		t.Errorf("%d of %d flows went to different backends on the two members", differ, flows)
	}
	t.Logf("flows per backend on member a: %v", perBackend)
	if n := perBackend["10.98.1.5:53"]; n != 0 {
		t.Errorf("%d flows went to the drained backend", n)
	}
	for _, n := range []int{1, 2, 3, 4, 6} {
		if perBackend[fmt.Sprintf("10.98.1.%d:53", n)] == 0 {
			t.Errorf("no flow reached 10.98.1.%d", n)
		}
	}
	control := 0
	for cport, dest := range a["54"] {
		if bb["54"][cport] != dest {
			control++
		}
	}
	t.Logf("control (same destinations, added in opposite orders, no canonical order): %d of %d flows differ", control, flows)
	if control == 0 {
		t.Errorf("the control's flows all agree: this kernel's mh table does not depend on insertion order, and the test above proves nothing")
	}
}
