package lab

import (
	"net/netip"
	"os/exec"
	"path/filepath"
	"reflect"
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
	hops := parseNexthops(`10.3.0.250 proto bird metric 32 
	nexthop via 10.0.0.11 dev eth0 weight 1 
	nexthop via 10.0.0.12 dev eth0 weight 1 
`)
	if want := []netip.Addr{netip.MustParseAddr("10.0.0.11"), netip.MustParseAddr("10.0.0.12")}; !reflect.DeepEqual(hops, want) {
		t.Errorf("nexthops %v, want %v", hops, want)
	}
	if one := parseNexthops("10.3.0.7 via 10.0.0.13 dev eth0 proto bird metric 32\n"); len(one) != 1 || one[0] != netip.MustParseAddr("10.0.0.13") {
		t.Errorf("single path: %v", one)
	}
	if none := parseNexthops(""); len(none) != 0 {
		t.Errorf("no route: %v", none)
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
