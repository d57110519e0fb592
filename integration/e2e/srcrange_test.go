package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/topo"
)

// sourceRanges: a VIP with source ranges, IPv4 and IPv6 in nat mode and
// IPv4 in dr mode. From an address in the ranges the client reaches a node;
// from one outside, its connect times out (dropped, no RST), and the owner's
// metric counts the drops. The VIP then moves to a standby, which held the
// filter before it held the address: the denied client, dialling throughout
// the move, is dropped from the takeover on; the allowed one gets through.
func (s *scenarios) sourceRanges(t *testing.T) {
	// The client's extra IPv6 address outside the VIP's range (on the LAN,
	// so the owner's replies need no route).
	const denied6 = "fd00::101"
	if _, err := topo.Run(client, "ip", "-6", "addr", "add", denied6+"/64", "dev", "eth0", "nodad"); err != nil {
		t.Fatal(err)
	}
	defer topo.Run(client, "ip", "-6", "addr", "del", denied6+"/64", "dev", "eth0")
	for _, c := range []struct {
		name, vip, rng  string
		allowed, denied string
		node            func(i int) string
		dr              bool
	}{
		// 10.1.0.1 is one of the client's many addresses (routed via
		// 10.0.0.100); 10.0.0.100 itself is outside the range.
		{"srcr4", "10.0.0.212", "10.1.0.0/16", "10.1.0.1", topo.ClientHost().V4.String(), func(i int) string { return topo.NodeHost(i).V4.String() }, false},
		{"srcr6", "fd00::212", "fd00::100/128", topo.ClientHost().V6.String(), denied6, func(i int) string { return "[" + topo.NodeHost(i).V6.String() + "]" }, false},
		// Direct routing: the node answers the client itself; the filter
		// sits where the packet enters the edge, as in nat mode.
		{"srcr4dr", "10.0.0.213", "10.1.0.0/16", "10.1.0.1", topo.ClientHost().V4.String(), func(i int) string { return topo.NodeHost(i).V4.String() }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"--vip", c.vip, "--port", "tcp/80:30080", "--source-range", c.rng}
			port := "80"
			for i := 1; i <= 3; i++ {
				args = append(args, "--backend", fmt.Sprintf("%s:%d", c.node(i), topo.NodePort))
			}
			if c.dr {
				// As directRouting sets the nodes up: the VIP on lo, no
				// ARP answers for it; dr keeps the VIP's port.
				port = strconv.Itoa(topo.NodePort)
				args = []string{"--vip", c.vip, "--mode", "dr", "--port", "tcp/" + port, "--source-range", c.rng}
				for i := 1; i <= 3; i++ {
					args = append(args, "--backend", c.node(i))
					ns := topo.NodeHost(i).Name
					for _, kv := range [][2]string{{"net.ipv4.conf.all.arp_ignore", "1"}, {"net.ipv4.conf.all.arp_announce", "2"}} {
						if err := netns.WriteSysctl(ns, kv[0], kv[1]); err != nil {
							t.Fatal(err)
						}
					}
					if _, err := topo.IP(ns, "addr", "add", c.vip+"/32", "dev", "lo"); err != nil {
						t.Fatal(err)
					}
					defer func() {
						topo.IP(ns, "addr", "del", c.vip+"/32", "dev", "lo")
						netns.WriteSysctl(ns, "net.ipv4.conf.all.arp_ignore", "0")
						netns.WriteSysctl(ns, "net.ipv4.conf.all.arp_announce", "0")
					}()
				}
			}
			connectFrom := func(src, vip string) (string, error) { return connectFrom(src, vip, port) }
			// createVIP's wait would connect from the client's default
			// address, which may be the denied one: wait from the allowed.
			owner := s.createVIP(t, c.name, args)
			defer s.deleteVIP_(t, c.name)
			for t0 := time.Now(); ; time.Sleep(100 * time.Millisecond) {
				_, err := connectFrom(c.allowed, c.vip)
				if err == nil {
					t.Logf("%s answers %s after %s", c.vip, c.allowed, time.Since(t0).Round(time.Millisecond))
					break
				}
				if time.Since(t0) > guestWait {
					s.dumpMember(t, owner)
					t.Fatalf("%s does not answer the allowed client %s within %s: %v", c.vip, c.allowed, guestWait, err)
				}
			}
			check := func(m *lab.Member, when string) {
				t.Helper()
				node, err := connectFrom(c.allowed, c.vip)
				if err != nil {
					t.Errorf("%s, %s: allowed client %s → %s: %v", when, m.ID, c.allowed, c.vip, err)
				}
				t0 := time.Now()
				got, err := connectFrom(c.denied, c.vip)
				var ne net.Error
				switch {
				case err == nil:
					t.Errorf("%s, %s: denied client %s reached %s through %s", when, m.ID, c.denied, got, c.vip)
				case !errors.As(err, &ne) || !ne.Timeout():
					t.Errorf("%s, %s: denied client %s → %s: %v; want a timeout (dropped), not a reset", when, m.ID, c.denied, c.vip, err)
				}
				t.Logf("%s, owner %s: %s reached %s; %s dropped (%v after %s)", when, m.ID, c.allowed, node, c.denied, err, time.Since(t0).Round(time.Millisecond))
			}
			check(owner, "created")
			waitDrops(t, owner, c.vip)

			to := s.otherMember(t, owner)
			waitFiltered(t, to, c.vip)
			// The denied client keeps trying through the move: no attempt
			// may connect or be reset, from the takeover's first packet on.
			stop, done := make(chan struct{}), make(chan []string)
			go func() {
				var bad []string
				for tries := 0; ; tries++ {
					select {
					case <-stop:
						done <- append(bad, fmt.Sprintf("%d attempts", tries))
						return
					default:
					}
					_, err := connectFrom(c.denied, c.vip)
					var ne net.Error
					if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
						bad = append(bad, fmt.Sprintf("attempt %d: %v", tries, err))
					}
				}
			}()
			moveVIP(t, s.l, c.vip, to.ID)
			for t0 := time.Now(); !to.HasAddr(c.vip) || owner.HasAddr(c.vip); time.Sleep(50 * time.Millisecond) {
				if time.Since(t0) > guestWait {
					close(stop)
					<-done
					t.Fatalf("%s did not move from %s to %s within %s", c.vip, owner.ID, to.ID, guestWait)
				}
			}
			check(to, "after the takeover")
			close(stop)
			if got := <-done; len(got) > 1 {
				t.Errorf("denied client %s during the move to %s: %v", c.denied, to.ID, got)
			} else {
				t.Logf("denied client %s during the move: all dropped (%s)", c.denied, got[0])
			}
			waitDrops(t, to, c.vip)
		})
	}
}

// connectFrom connects from the client's address src to vip:port, sends a
// line and returns the node that answered.
func connectFrom(src, vip, port string) (string, error) {
	var c net.Conn
	err := netns.Do(client, func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 3 * time.Second}
		c, err = d.Dial("tcp", net.JoinHostPort(vip, port))
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// waitFiltered waits until m's filter table sends vip to a source-range chain:
// the standby is ready to take the VIP over closed.
func waitFiltered(t *testing.T, m *lab.Member, vip string) {
	t.Helper()
	for t0 := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		ok, err := m.FiltersVIP(vip)
		if err == nil && ok {
			return
		}
		if time.Since(t0) > guestWait {
			t.Fatalf("%s does not filter %s after %s (%s): %v", m.ID, vip, guestWait, m.RuleEngine(), err)
		}
	}
}

// waitDrops waits until m's metrics count a dropped packet for vip.
func waitDrops(t *testing.T, m *lab.Member, vip string) {
	t.Helper()
	for t0 := time.Now(); ; time.Sleep(500 * time.Millisecond) {
		ms, _, err := m.Metrics()
		v, found := ms.Sum("edgelb_source_range_dropped_packets_total", `vip="`+vip+`"`)
		if err == nil && found && v >= 1 {
			t.Logf("%s: edgelb_source_range_dropped_packets_total{vip=%q} = %v", m.ID, vip, v)
			return
		}
		if time.Since(t0) > guestWait {
			t.Fatalf("%s counts no dropped packet for %s (%v, found %v): %v", m.ID, vip, v, found, err)
		}
	}
}
