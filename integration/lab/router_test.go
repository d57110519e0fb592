package lab

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/topo"
)

// Output as BIRD 2.0.12 and iproute2 print it in the guest.
func TestParseRouterState(t *testing.T) {
	protos := parseProtocols(`BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     23:50:11.460  
kernel4    Kernel     master4    up     23:50:11.460  
edge1      BGP        ---        start  23:50:11.460  Active        Socket: Connection refused
edge2      BGP        ---        up     2026-12-04 23:50:11  Established   
`)
	want := map[string]string{"device1": "up", "kernel4": "up", "edge1": "start Active Socket: Connection refused", "edge2": "up Established"}
	if !reflect.DeepEqual(protos, want) {
		t.Errorf("protocols %q, want %q", protos, want)
	}
	bfd := parseBFD(`BIRD 2.0.12 ready.
bfd1:
IP address                Interface  State      Since         Interval  Timeout
10.0.0.11                 eth0       Up         23:50:11.460    0.100    0.300
fd00::12                  eth0       Down       23:50:11.460    1.000    0.000
`)
	if want := map[netip.Addr]string{netip.MustParseAddr("10.0.0.11"): "Up", netip.MustParseAddr("fd00::12"): "Down"}; !reflect.DeepEqual(bfd, want) {
		t.Errorf("bfd %v, want %v", bfd, want)
	}
}

// Nexthops reads a kernel's single-path and multipath routes, IPv4 and
// IPv6, over netlink in a namespace made here.
func TestNexthopsInANamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a network namespace")
	}
	ns := fmt.Sprintf("edgelb-nh-%d", os.Getpid())
	if _, err := topo.IP("", "netns", "add", ns); err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { topo.IP("", "netns", "del", ns) })
	for _, args := range [][]string{
		{"link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"link", "set", "eth1", "up"},
		{"link", "set", "eth0", "up"},
		{"addr", "add", "10.9.0.1/24", "dev", "eth0"},
		{"addr", "add", "fd09::1/64", "dev", "eth0", "nodad"},
		{"route", "add", "10.3.0.250/32", "nexthop", "via", "10.9.0.11", "nexthop", "via", "10.9.0.12"},
		{"route", "add", "10.3.0.7/32", "via", "10.9.0.13"},
		{"-6", "route", "add", "fd03::100/128", "nexthop", "via", "fd09::11", "nexthop", "via", "fd09::13"},
	} {
		if _, err := topo.IP(ns, args...); err != nil {
			t.Fatal(err)
		}
	}
	r := &Router{Host: topo.Host{Name: ns}}
	for _, c := range []struct {
		addr string
		want []string
	}{
		{"10.3.0.250", []string{"10.9.0.11", "10.9.0.12"}},
		{"10.3.0.7", []string{"10.9.0.13"}},
		{"fd03::100", []string{"fd09::11", "fd09::13"}},
		{"10.3.0.8", nil},
	} {
		got, err := r.Nexthops(netip.MustParseAddr(c.addr))
		if err != nil {
			t.Fatal(err)
		}
		var gotS []string
		for _, a := range got {
			gotS = append(gotS, a.String())
		}
		slices.Sort(gotS)
		if !slices.Equal(gotS, c.want) {
			t.Errorf("nexthops of %s: %v, want %v", c.addr, gotS, c.want)
		}
	}
}

// The router's configuration is one BIRD accepts (bird -p parses it),
// with and without BFD, eBGP and iBGP.
func TestBirdConfParses(t *testing.T) {
	if _, err := exec.LookPath("bird"); err != nil {
		t.Skip("bird2 not installed (sudo bash scripts/uml-deps.sh)")
	}
	edges := []topo.Host{topo.EdgeHost(1), topo.EdgeHost(2), topo.EdgeHost(3)}
	for _, c := range []RouterConfig{
		{StaticECMP: []netip.Prefix{netip.MustParsePrefix("10.3.0.250/32"), netip.MustParsePrefix("fd03::250/128")}},
		{NoBFD: true, ASN: 65010, EdgeASN: 65010, HoldTime: 3},
		{BFDInterval: 50 * time.Millisecond, BFDMultiplier: 5},
		{StaticECMP: []netip.Prefix{netip.MustParsePrefix("10.3.0.251/32")}},
	} {
		c.defaults()
		p := filepath.Join(t.TempDir(), "bird.conf")
		if err := writeFile(p, birdConf(c, topo.RouterHost(), edges, edges[:2])); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("bird", "-p", "-c", p).CombinedOutput(); err != nil {
			t.Errorf("%+v: bird -p: %v\n%s\n%s", c, err, out, birdConf(c, topo.RouterHost(), edges, edges[:2]))
		}
	}
}
