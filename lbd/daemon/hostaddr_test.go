package daemon

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/edgelb/edgelb/lbd/config"
)

// withHostAddrs makes the member read ifaddrs as its data interface's
// addresses and route4 as /proc/net/route (no IPv6 routes), for one test.
func withHostAddrs(t *testing.T, ifaddrs []string, route4 string) {
	t.Helper()
	prev := hostAddrs
	hostAddrs = hostAddrSource{
		ifaceAddrs: func(string) ([]netip.Prefix, error) {
			var out []netip.Prefix
			for _, s := range ifaddrs {
				out = append(out, netip.MustParsePrefix(s))
			}
			return out, nil
		},
		routes4: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(route4)), nil },
		routes6: func() (io.ReadCloser, error) { return nil, os.ErrNotExist },
	}
	t.Cleanup(func() { hostAddrs = prev })
}

// A /proc/net/route of a little-endian host: default via 192.0.2.1 on eth0.
const procRoute = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	00000000	010200C0	0003	0	0	100	00000000	0	0	0
eth0	000200C0	00000000	0001	0	0	100	00FFFFFF	0	0	0
`

func TestReportedAddresses(t *testing.T) {
	if nativeBigEndian {
		t.Skip("the fixture is a little-endian host's /proc/net/route")
	}
	withHostAddrs(t, []string{"192.0.2.5/24", "192.0.2.77/32", "2001:db8::5/64", "fe80::1/64"}, procRoute)
	cfg := config.Default()
	cfg.DataPlane.Gateways = []string{"198.51.100.1"}
	ifs, gws, err := hostAddrs.reportedAddresses(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The /32 is how VIPs are added; link-local is never in a pool.
	if !slices.Equal(ifs, []string{"192.0.2.5", "2001:db8::5"}) || !slices.Equal(gws, []string{"192.0.2.1", "198.51.100.1"}) {
		t.Errorf("reported %v, gateways %v", ifs, gws)
	}
	// Control-plane-only: nothing from the kernel, only the configuration.
	cfg.DataPlane.Mode = "none"
	cfg.DataPlane.InterfaceAddresses = []string{"192.0.2.9"}
	ifs, gws, err = hostAddrs.reportedAddresses(cfg)
	if err != nil || !slices.Equal(ifs, []string{"192.0.2.9"}) || !slices.Equal(gws, []string{"198.51.100.1"}) {
		t.Errorf("none mode: %v %v %v", ifs, gws, err)
	}
	// An unreadable interface stops the start: a member that cannot say
	// what its addresses are cannot be protected from pools holding them.
	hostAddrs.ifaceAddrs = func(string) ([]netip.Prefix, error) { return nil, errors.New("no such interface") }
	cfg.DataPlane.Mode = "ipvs"
	if _, _, err := hostAddrs.reportedAddresses(cfg); err == nil || !strings.Contains(err.Error(), "eth0") {
		t.Errorf("unreadable interface: %v", err)
	}
}

func TestDefaultGateways6(t *testing.T) {
	const route6 = `00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000000000000000000000001 00000400 00000001 00000000 00000003 eth0
20010db8000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0
`
	gws, err := defaultGateways6(strings.NewReader(route6))
	if err != nil || len(gws) != 1 || gws[0] != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("defaultGateways6 = %v %v", gws, err)
	}
}
