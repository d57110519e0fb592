// Package sysctl sets the kernel settings the data plane relies on and checks
// that they took, so a host that cannot forward fails at start with the name
// of the setting rather than later with silent packet loss.
package sysctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Setting is one sysctl and why it is needed.
type Setting struct {
	Key, Value, Why string
}

// Required lists what IPVS NAT to NodePorts needs on an edge host.
var Required = []Setting{
	{"net.ipv4.ip_forward", "1", "IPVS NAT forwards packets to the nodes"},
	{"net.ipv4.vs.conntrack", "1", "the SNAT rule needs conntrack entries for IPVS connections"},
	{"net.ipv4.vs.expire_nodest_conn", "1", "connections to a removed backend are dropped instead of black-holed (kubernetes#71358)"},
	{"net.ipv4.vs.expire_quiescent_template", "1", "persistence templates to a weight-0 backend expire, so drained and unhealthy backends get no new clients"},
}

// Optional settings are applied when the kernel has them (IPv6 may be absent).
var Optional = []Setting{
	{"net.ipv6.conf.all.forwarding", "1", "IPVS NAT for IPv6 VIPs"},
	// After a takeover, a connection whose sync message never arrived would
	// be answered with a RST by the new owner's own stack (IPVS schedules
	// only SYNs). Sloppy, IPVS schedules its next packet like a new one, and
	// with the default mh scheduler (a hash of the client address) that is
	// the same backend: the connection goes on.
	{"net.ipv4.vs.sloppy_tcp", "1", "a new owner picks up established TCP connections that connection sync missed"},
	{"net.ipv4.vs.sloppy_sctp", "1", "the same for SCTP associations"},
	// A member that gets a VIP back (a rolling restart moves it away and
	// back) still holds conntrack entries from its earlier turn, whose TCP
	// windows stopped while another member carried the connection. Strict
	// window tracking then marks the connection's packets invalid, SNAT
	// skips them, and the connection is reset.
	// IPVS syncs a TCP connection when the client's packet count reaches
	// the threshold (default 3). A connection whose client waits for the
	// server to speak first (SMTP, MySQL, SSH banners) has sent 2 by then
	// (SYN, ACK), so it reached the others only once the client spoke; a
	// takeover in between met it unknown. 2 syncs it as it is established.
	{"net.ipv4.vs.sync_threshold", "2 50", "connection sync carries a connection as soon as it is established, not at the client's first data"},
	{"net.netfilter.nf_conntrack_tcp_be_liberal", "1", "a VIP that comes back to a member keeps its established connections despite that member's stale conntrack entries"},
}

func path(root, key string) string {
	return filepath.Join(root, strings.ReplaceAll(key, ".", "/"))
}

// Apply writes and verifies the settings under root (normally /proc/sys),
// and reports every one that failed, not only the first. An optional setting
// the kernel does not have is skipped; one it has must take like a required one.
func Apply(root string, required, optional []Setting) error {
	var errs []error
	for _, s := range required {
		if err := set(root, s); err != nil {
			errs = append(errs, err)
		}
	}
	for _, s := range optional {
		if _, err := os.Stat(path(root, s.Key)); err == nil {
			if err := set(root, s); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func set(root string, s Setting) error {
	p := path(root, s.Key)
	// No O_CREATE: a sysctl that does not exist is a missing kernel feature,
	// not a file to make.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err == nil {
		_, err = f.Write([]byte(s.Value + "\n"))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		fix := "this kernel lacks it"
		if strings.HasPrefix(s.Key, "net.ipv4.vs.") {
			fix = "load IPVS first (modprobe ip_vs)"
		}
		return fmt.Errorf("sysctl %s=%s (%s): no such setting at %s; %s", s.Key, s.Value, s.Why, p, fix)
	}
	if err != nil {
		return fmt.Errorf("sysctl %s=%s (%s): %w; run lbd as root or with CAP_NET_ADMIN, or set it in /etc/sysctl.d", s.Key, s.Value, s.Why, err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: read it back: %w", s.Key, s.Value, err)
	}
	if got := strings.TrimSpace(string(b)); !sameValue(got, s.Value) {
		return fmt.Errorf("sysctl %s did not keep %s (reads %q): %s", s.Key, s.Value, got, s.Why)
	}
	return nil
}

// sameValue compares a value read back with the one written field by field:
// the kernel prints a pair (sync_threshold) with a tab between its numbers.
func sameValue(got, want string) bool {
	return slices.Equal(strings.Fields(got), strings.Fields(want))
}
