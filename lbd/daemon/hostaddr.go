package daemon

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/edgelb/edgelb/lbd/config"
)

// hostAddrSource is where a member reads the addresses it reports (its data
// interface's and its default gateways). Tests replace it, so that what a
// member reports never depends on the machine the test runs on.
type hostAddrSource struct {
	// ifaceAddrs returns the addresses with their prefix lengths on the interface.
	ifaceAddrs func(name string) ([]netip.Prefix, error)
	// routes4 and routes6 open /proc/net/route and /proc/net/ipv6_route.
	routes4, routes6 func() (io.ReadCloser, error)
}

var hostAddrs = hostAddrSource{
	ifaceAddrs: func(name string) ([]netip.Prefix, error) {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return nil, err
		}
		as, err := ifi.Addrs()
		if err != nil {
			return nil, err
		}
		var out []netip.Prefix
		for _, a := range as {
			if n, ok := a.(*net.IPNet); ok {
				ip, _ := netip.AddrFromSlice(n.IP)
				bits, _ := n.Mask.Size()
				out = append(out, netip.PrefixFrom(ip.Unmap(), bits))
			}
		}
		return out, nil
	},
	routes4: func() (io.ReadCloser, error) { return os.Open("/proc/net/route") },
	routes6: func() (io.ReadCloser, error) { return os.Open("/proc/net/ipv6_route") },
}

// reportedAddresses is what this member puts in its member record: with the
// ipvs data plane the data interface's addresses and every default gateway,
// read from the kernel, plus what the configuration adds; with none only the
// configuration's (a control-plane-only member owns no interface).
//
// Host-length addresses (/32, /128) on the data interface are left out: that
// is how the data plane adds VIPs, and a restarted member still holds its
// VIPs; reporting them would make their own pools look unsafe. Link-local
// addresses are left out too: no pool may hold them anyway.
func (s hostAddrSource) reportedAddresses(cfg config.Config) (ifAddrs, gateways []string, err error) {
	add := func(list []string, a netip.Addr) []string {
		a = a.Unmap()
		if !a.IsValid() || a.IsLinkLocalUnicast() || a.IsUnspecified() || slices.Contains(list, a.String()) {
			return list
		}
		return append(list, a.String())
	}
	if cfg.DataPlane.Mode == "ipvs" {
		ps, err := s.ifaceAddrs(cfg.DataPlane.Interface)
		if err != nil {
			return nil, nil, fmt.Errorf("read the addresses of data interface %s: %w", cfg.DataPlane.Interface, err)
		}
		for _, p := range ps {
			if p.Bits() == p.Addr().BitLen() {
				continue
			}
			ifAddrs = add(ifAddrs, p.Addr())
		}
		for _, open := range []struct {
			f     func() (io.ReadCloser, error)
			parse func(io.Reader) ([]netip.Addr, error)
		}{{s.routes4, defaultGateways4}, {s.routes6, defaultGateways6}} {
			rc, err := open.f()
			if err != nil {
				// A host without IPv6 has no ipv6_route; one without a
				// default route has no gateway: nothing to report.
				if os.IsNotExist(err) {
					continue
				}
				return nil, nil, fmt.Errorf("read the default routes: %w", err)
			}
			gws, err := open.parse(rc)
			rc.Close()
			if err != nil {
				return nil, nil, fmt.Errorf("read the default routes: %w", err)
			}
			for _, g := range gws {
				gateways = add(gateways, g)
			}
		}
	}
	for _, a := range cfg.DataPlane.InterfaceAddresses {
		ifAddrs = add(ifAddrs, netip.MustParseAddr(a)) // config.Validate parsed them
	}
	for _, a := range cfg.DataPlane.Gateways {
		gateways = add(gateways, netip.MustParseAddr(a))
	}
	return ifAddrs, gateways, nil
}

// defaultGateways4 parses /proc/net/route: the gateways of routes to
// 0.0.0.0/0 (fields: Iface Destination Gateway Flags ... Mask ..., hex in
// the kernel's byte order, which /proc writes as the in-memory bytes).
func defaultGateways4(r io.Reader) ([]netip.Addr, error) {
	var out []netip.Addr
	sc := bufio.NewScanner(r)
	for first := true; sc.Scan(); first = false {
		f := strings.Fields(sc.Text())
		if first || len(f) < 8 {
			continue // header
		}
		if f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		b, err := hex.DecodeString(f[2])
		if err != nil || len(b) != 4 {
			return nil, fmt.Errorf("/proc/net/route: gateway %q", f[2])
		}
		// The u32 is printed in host order of a network-order value: on
		// little-endian hosts the bytes come reversed.
		g := netip.AddrFrom4([4]byte{b[3], b[2], b[1], b[0]})
		if nativeBigEndian {
			g = netip.AddrFrom4([4]byte{b[0], b[1], b[2], b[3]})
		}
		if !g.IsUnspecified() {
			out = append(out, g)
		}
	}
	return out, sc.Err()
}

// defaultGateways6 parses /proc/net/ipv6_route: the next hops of routes to
// ::/0 (fields: dest destlen src srclen nexthop metric refcnt use flags iface).
func defaultGateways6(r io.Reader) ([]netip.Addr, error) {
	var out []netip.Addr
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[0] != strings.Repeat("0", 32) || f[1] != "00" {
			continue
		}
		b, err := hex.DecodeString(f[4])
		if err != nil || len(b) != 16 {
			return nil, fmt.Errorf("/proc/net/ipv6_route: next hop %q", f[4])
		}
		g := netip.AddrFrom16([16]byte(b))
		if !g.IsUnspecified() {
			out = append(out, g)
		}
	}
	return out, sc.Err()
}

// nativeBigEndian: /proc/net/route prints addresses as host-order integers.
var nativeBigEndian = binary.NativeEndian.Uint16([]byte{0, 1}) == 1
