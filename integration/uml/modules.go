package uml

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultModules are the kernel modules the guest loads at boot: everything lbd's data
// plane and the test topology use. Names are module names (file name without .ko);
// their dependencies are resolved from modules.dep, so the order here does not matter.
// A name the kernel has built in, or does not ship, is skipped (and reported in the
// console log) rather than failing the boot.
var DefaultModules = []string{
	// IPv6, conntrack, IPVS and its schedulers (SCTP support is built into ip_vs).
	"ipv6", "nf_conntrack", "nf_conntrack_netlink", "ip_vs",
	"ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_sh", "ip_vs_mh",
	// Links for the topology.
	"veth", "dummy", "bridge", "tun",
	// Legacy iptables (the guest kernel's nftables has no ip/inet family).
	"x_tables", "ip_tables", "ip6_tables", "iptable_filter", "ip6table_filter",
	"iptable_nat", "ip6table_nat", "iptable_mangle", "ip6table_mangle", "iptable_raw", "ip6table_raw",
	"nf_nat", "xt_ipvs", "xt_nat", "xt_MASQUERADE", "xt_conntrack", "xt_state",
	"xt_tcpudp", "xt_comment", "xt_mark", "xt_multiport", "xt_addrtype", "xt_sctp",
	"ipt_REJECT", "ip6t_REJECT",
	// lbd's takeover guard (lbd/dataplane/snat), loaded with ModuleParams.
	"xt_recent",
	// SCTP sockets (for SCTP VIP scenarios).
	"sctp",
}

// ModuleParams are load parameters by module name: xt_recent sized as
// packaging's modprobe.d file sizes it on a host (snat.RecentCapacity).
var ModuleParams = map[string]string{"xt_recent": "ip_list_tot=16384"}

// ModuleDir is where Debian's user-mode-linux package keeps the guest's modules.
const ModuleDir = "/usr/lib/uml/modules"

// KernelVersion returns the single kernel version under ModuleDir.
func KernelVersion() (string, error) {
	ents, err := os.ReadDir(ModuleDir)
	if err != nil {
		return "", fmt.Errorf("uml: no guest modules (%w); install user-mode-linux (scripts/uml-deps.sh)", err)
	}
	for _, e := range ents {
		if e.IsDir() {
			return e.Name(), nil
		}
	}
	return "", fmt.Errorf("uml: no kernel version under %s", ModuleDir)
}

// ModuleIndex is modules.dep and modules.builtin of one kernel version.
type ModuleIndex struct {
	Dir     string              // /usr/lib/uml/modules/<version>
	Path    map[string]string   // module name -> path relative to Dir
	Deps    map[string][]string // module name -> dependency names, as modules.dep lists them
	Builtin map[string]bool
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

// LoadModuleIndex reads modules.dep (and modules.builtin when present) from dir.
func LoadModuleIndex(dir string) (*ModuleIndex, error) {
	idx := &ModuleIndex{Dir: dir, Path: map[string]string{}, Deps: map[string][]string{}, Builtin: map[string]bool{}}
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		mod, deps, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		name := ModName(mod)
		idx.Path[name] = mod
		for _, d := range strings.Fields(deps) {
			idx.Deps[name] = append(idx.Deps[name], ModName(d))
			if _, seen := idx.Path[ModName(d)]; !seen {
				idx.Path[ModName(d)] = d
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			idx.Builtin[ModName(l)] = true
		}
	}
	return idx, nil
}

// LoadOrder returns the module paths (relative to Dir) to insert, dependencies first,
// each once, for the wanted module names. Built-in modules are left out; unknown
// names are returned in missing.
func (idx *ModuleIndex) LoadOrder(want []string) (order []string, missing []string) {
	done := map[string]bool{}
	var visit func(name string, stack map[string]bool)
	visit = func(name string, stack map[string]bool) {
		if done[name] || stack[name] {
			return
		}
		stack[name] = true
		// modules.dep already lists the transitive closure; visiting each dependency's
		// own line as well makes the order right however that list is ordered.
		for _, d := range idx.Deps[name] {
			visit(d, stack)
		}
		done[name] = true
		order = append(order, idx.Path[name])
	}
	for _, w := range want {
		w = strings.ReplaceAll(w, "-", "_")
		if idx.Builtin[w] {
			continue
		}
		if _, ok := idx.Path[w]; !ok {
			missing = append(missing, w)
			continue
		}
		visit(w, map[string]bool{})
	}
	return order, missing
}
