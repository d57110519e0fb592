package lab

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/edgelb/edgelb/integration/topo"
)

// SyncedConns returns the client addresses of the connections the member's
// IPVS holds because another member's sync daemon sent them
// (/proc/net/ip_vs_conn_sync, origin SYNC): the entries a takeover by this
// member continues.
func (m *Member) SyncedConns() (map[netip.AddrPort]bool, error) {
	out, err := topo.Run(m.Host.Name, "cat", "/proc/net/ip_vs_conn_sync")
	if err != nil {
		return nil, fmt.Errorf("%s: read IPVS connections: %w", m.ID, err)
	}
	return parseSyncedConns(out)
}

// ConnTable returns the member's IPVS connections with their origin
// (/proc/net/ip_vs_conn_sync) and its UDP counters (/proc/net/snmp): what
// a missing synced entry is explained by.
func (m *Member) ConnTable() (conns, udp string, err error) {
	if conns, err = topo.Run(m.Host.Name, "cat", "/proc/net/ip_vs_conn_sync"); err != nil {
		return "", "", err
	}
	snmp, err := topo.Run(m.Host.Name, "cat", "/proc/net/snmp")
	for _, l := range strings.Split(snmp, "\n") {
		if strings.HasPrefix(l, "Udp:") {
			udp += l + "\n"
		}
	}
	return conns, udp, err
}

// parseSyncedConns reads /proc/net/ip_vs_conn_sync:
//
//	Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires
//	TCP 0A000064 A65A 0A0000D2 0050 0A000016 7530 ESTABLISHED SYNC       890
//
// IPv4 addresses and all ports in hex, IPv6 addresses in colon form.
func parseSyncedConns(s string) (map[netip.AddrPort]bool, error) {
	got := map[netip.AddrPort]bool{}
	for i, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if i == 0 || len(f) == 0 {
			continue
		}
		if len(f) != 10 {
			return nil, fmt.Errorf("ip_vs_conn_sync line %d: %d fields, want 10: %q", i+1, len(f), l)
		}
		if f[8] != "SYNC" {
			continue
		}
		addr, err := procAddr(f[1])
		if err != nil {
			return nil, fmt.Errorf("ip_vs_conn_sync line %d: %w", i+1, err)
		}
		port, err := strconv.ParseUint(f[2], 16, 16)
		if err != nil {
			return nil, fmt.Errorf("ip_vs_conn_sync line %d: client port %q: %w", i+1, f[2], err)
		}
		got[netip.AddrPortFrom(addr, uint16(port))] = true
	}
	return got, nil
}

func procAddr(s string) (netip.Addr, error) {
	if len(s) == 8 && !strings.Contains(s, ":") {
		b, err := hex.DecodeString(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("IPv4 address %q: %w", s, err)
		}
		return netip.AddrFrom4([4]byte(b)), nil
	}
	return netip.ParseAddr(s)
}
