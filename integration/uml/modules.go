package uml

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultModules are the kernel features the guest must have: everything lbd's data
// plane and the test topology use, by module name (file name without .ko). The
// project's guest kernel (kernel.config) has them all built in, so nothing is loaded
// at boot; Run checks each against the kernel's modules.builtin and refuses to boot a
// kernel that lacks one, naming it, rather than letting a test fail later on an
// obscure EOPNOTSUPP.
var DefaultModules = []string{
	// IPv6, conntrack, IPVS and its schedulers (SCTP support is built into ip_vs).
	"ipv6", "nf_conntrack", "nf_conntrack_netlink", "ip_vs",
	"ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_sh", "ip_vs_mh",
	// Links for the topology.
	"veth", "dummy", "bridge", "tun",
	// Legacy iptables (today's SNAT rules and takeover guard).
	"x_tables", "ip_tables", "ip6_tables", "iptable_filter", "ip6table_filter",
	"iptable_nat", "ip6table_nat", "iptable_mangle", "ip6table_mangle", "iptable_raw", "ip6table_raw",
	"nf_nat", "xt_ipvs", "xt_nat", "xt_MASQUERADE", "xt_conntrack", "xt_state",
	"xt_tcpudp", "xt_comment", "xt_mark", "xt_multiport", "xt_addrtype", "xt_sctp",
	"ipt_REJECT", "ip6t_REJECT",
	// nftables with the ip, ip6 and inet families (issue 21), NAT, conntrack, masquerade.
	"nf_tables", "nft_ct", "nft_nat", "nft_masq", "nft_chain_nat", "nft_reject_inet",
	// ipset (set lookups over netlink).
	"ip_set", "ip_set_hash_ip", "ip_set_hash_ipport",
	// lbd's takeover guard (lbd/dataplane/snat), sized with ModuleParams.
	"xt_recent",
	// SCTP sockets (for SCTP VIP scenarios). An SCTP listener signs its
	// cookies with hmac(md5) (net.sctp.cookie_hmac_alg); without hmac
	// listen() fails with ENOSYS.
	"sctp", "hmac",
}

// ModuleParams are module parameters by module name: xt_recent sized as packaging's
// modprobe.d file sizes it on a host (snat.RecentCapacity). The modules are built in,
// so Run passes these on the kernel command line as module.param=value.
var ModuleParams = map[string]string{"xt_recent": "ip_list_tot=16384"}

// paramArgs turns ModuleParams into kernel command-line arguments, in a fixed order.
func paramArgs(params map[string]string) []string {
	var args []string
	for mod, ps := range params {
		for _, p := range strings.Fields(ps) {
			args = append(args, mod+"."+p)
		}
	}
	sort.Strings(args)
	return args
}

// ModName turns "kernel/net/netfilter/ipvs/ip_vs.ko" into "ip_vs". Like modprobe, it
// treats '-' and '_' as the same.
func ModName(path string) string {
	b := filepath.Base(path)
	b = strings.TrimSuffix(b, ".xz")
	b = strings.TrimSuffix(b, ".zst")
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

// builtinFile is the kernel build's list of built-in modules, kept beside the kernel
// binary by scripts/uml-kernel.sh.
const builtinFile = "modules.builtin"

// LoadBuiltin reads the names of the modules built into the kernel at kernelPath from
// the modules.builtin beside it.
func LoadBuiltin(kernelPath string) (map[string]bool, error) {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(kernelPath), builtinFile))
	if err != nil {
		return nil, fmt.Errorf("uml: reading the guest kernel's list of built-in modules: %w (build the kernel with scripts/uml-kernel.sh)", err)
	}
	m := map[string]bool{}
	for _, l := range strings.Fields(string(b)) {
		m[ModName(l)] = true
	}
	return m, nil
}

// MissingModules returns the wanted names that are not built in, in the order given.
func MissingModules(builtin map[string]bool, want []string) []string {
	var missing []string
	for _, w := range want {
		if !builtin[strings.ReplaceAll(w, "-", "_")] {
			missing = append(missing, w)
		}
	}
	return missing
}
