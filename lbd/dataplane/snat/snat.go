// Package snat keeps the SNAT rules that make replies from backends return
// through the edge host in nat mode: packets IPVS forwards for a VIP leave with
// the VIP itself as source (SNAT --to-source VIP, matched with xt_ipvs). SNAT
// to the VIP rather than to the host's own address is what lets connection sync
// carry a connection to another edge host: its reply path does not name the
// host that died.
//
// For a while after a host takes a VIP over, a guard in the mangle table
// (EDGELB-PREROUTING) drops TCP packets to that VIP that would open a conntrack
// entry mid-stream on a port the VIP does not serve: a node's reply (to
// VIP:client-port) reaching the new owner before any packet of the client's
// has. Let through, that reply is answered with a RST by the host's own stack,
// and its conntrack entry takes the tuple the connection's SNAT needs; dropped,
// the node sends it again once the client's next packet has set the connection
// up here. Outside the window those packets are the late ones of closed
// connections, and the RST is what tells the node a connection is gone
// (without it, a new connection reusing the client port stalls).
//
// The window is kept by the kernel: the DROP rule matches only destinations
// added to the xt_recent list edgelb-takeover within the last N seconds, and
// Guard adds one by writing to /proc/net/xt_recent. A takeover thus costs no
// iptables run (hundreds of milliseconds to seconds on a small or emulated
// host) and nothing has to lift the guard.
//
// The rules live in chains of our own, jumped to from POSTROUTING (nat) and
// PREROUTING (mangle, only packets that open a conntrack entry without a SYN);
// nothing else is touched. A change replaces our chains in one
// iptables-restore --noflush call per family.
package snat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgelb/edgelb/lbd/proc"
)

// Chain is the chain we own in the nat table; GuardChain the one in mangle.
const (
	Chain      = "EDGELB-POSTROUTING"
	GuardChain = "EDGELB-PREROUTING"
)

// guardJump selects, in mangle PREROUTING, the packets the guard looks at:
// TCP without SYN that conntrack has not seen before (rare: established
// connections' packets never walk the per-VIP rules).
var guardJump = []string{"-p", "tcp", "!", "--syn", "-m", "conntrack", "--ctstate", "NEW", "-j", GuardChain}

// RecentList is the xt_recent list of VIPs taken over within the window.
const RecentList = "edgelb-takeover"

// VIP is a nat-mode VIP and the TCP ports it serves (which the guard lets
// through: a client's packet of a synced connection is what sets it up here).
type VIP struct {
	Addr     netip.Addr
	TCPPorts []uint16
}

// Rules programs a set of VIPs.
type Rules interface {
	Set(ctx context.Context, vips []VIP) error
	// Guard opens the takeover window for a VIP about to be added here.
	Guard(a netip.Addr) error
	// Present reports whether the kernel holds a's SNAT rule now: read at
	// Open (left by a previous run), then as Set last applied it.
	Present(a netip.Addr) bool
	Backend() string
}

// Tables is Rules over iptables/ip6tables binaries of one flavour.
type Tables struct {
	v4, v6 string // iptables and ip6tables commands, e.g. iptables-legacy
	// guard is the takeover window in whole seconds (0: no guard); recent
	// the xt_recent list's file.
	guard  int
	recent string
	// last is the rule text last applied per family and table (nil:
	// unknown, so the next Set writes it and checks the jumps). A change
	// runs a process only for a family that changed and replaces only the
	// tables that changed: on a small or emulated host each costs hundreds
	// of milliseconds to seconds.
	last [2][2]*string // [family][nat, mangle]
	// guarded is every TCP port a nat VIP has served since Open, per
	// family: the guard's RETURN lists them all. It only grows, so the
	// mangle table is rewritten only when a port appears that no VIP served
	// before, not each time a VIP comes or goes (a VIP deleted and another
	// created on the same port would otherwise rewrite it twice).
	guarded [2]map[uint16]bool
	// present is the VIPs whose SNAT rule the kernel holds (Present).
	present map[netip.Addr]bool
	// held is, per family, whether Open saw our nat chain (and, for IPv4,
	// the jump to it) in the kernel; record is where Set keeps what it
	// applied (Remember).
	held   [2]bool
	record string
	// mu guards last against Intact, which reads it beside the passes.
	mu sync.Mutex
}

// Open picks the backend. mode: auto (iptables-legacy if it can list the nat
// table, else iptables-nft), iptables-legacy, iptables-nft, none (nil Rules).
// "nft" is refused with a pointer to the nftables rule engine (mode nftables,
// package nftrules), which matches IPVS traffic by conntrack instead of xt_ipvs.
// guard is the takeover window (rounded up to whole seconds; 0: no guard).
func Open(ctx context.Context, mode string, guard time.Duration) (Rules, error) {
	// The probe lists the whole nat table: it proves the flavour works and
	// shows the SNAT rules a previous run left (one process either way).
	var nat4 []byte
	try := func(v4, v6 string) error {
		out, err := proc.CommandContext(ctx, v4, "-t", "nat", "-S").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s -t nat -S: %v: %s", v4, err, bytes.TrimSpace(out))
		}
		nat4 = out
		return nil
	}
	tables := func(v4, v6 string) *Tables {
		t := &Tables{v4: v4, v6: v6, recent: filepath.Join("/proc/net/xt_recent", RecentList), present: map[netip.Addr]bool{}}
		if snatRules(nat4, t.present) {
			t.held[0] = hasJump(nat4, "POSTROUTING", Chain)
			// A restart: look for IPv6 ones too (none to find after a boot).
			out, err := proc.CommandContext(ctx, v6, "-t", "nat", "-S", Chain).Output()
			snatRules(out, t.present)
			t.held[1] = err == nil
		}
		if guard > 0 {
			t.guard = int((guard + time.Second - 1) / time.Second)
			loadRecent(ctx)
		}
		return t
	}
	switch mode {
	case "none":
		return nil, nil
	case "nft":
		return nil, errors.New("snat mode nft: the nftables rule engine is mode nftables (package nftrules); iptables-nft and iptables-legacy are the iptables ones")
	case "iptables-legacy":
		if err := try("iptables-legacy", "ip6tables-legacy"); err != nil {
			return nil, fmt.Errorf("snat mode iptables-legacy: %w", err)
		}
		return tables("iptables-legacy", "ip6tables-legacy"), nil
	case "iptables-nft":
		if err := try("iptables-nft", "ip6tables-nft"); err != nil {
			return nil, fmt.Errorf("snat mode iptables-nft: %w", err)
		}
		return tables("iptables-nft", "ip6tables-nft"), nil
	case "auto", "":
		errL := try("iptables-legacy", "ip6tables-legacy")
		if errL == nil {
			return tables("iptables-legacy", "ip6tables-legacy"), nil
		}
		errN := try("iptables-nft", "ip6tables-nft")
		if errN == nil {
			return tables("iptables-nft", "ip6tables-nft"), nil
		}
		return nil, fmt.Errorf("no usable iptables for SNAT (install iptables; or set --snat=none if replies return some other way): legacy: %v; nft: %v", errL, errN)
	}
	return nil, fmt.Errorf("unknown snat mode %q: use auto, nftables, iptables-legacy, iptables-nft or none", mode)
}

// snatRules adds to present the VIPs that have a rule of ours in an
// `iptables -S` listing, and reports whether the listing had our chain.
func snatRules(listing []byte, present map[netip.Addr]bool) (chain bool) {
	for l := range strings.Lines(string(listing)) {
		f := strings.Fields(l)
		if len(f) == 2 && f[0] == "-N" && f[1] == Chain {
			chain = true
		}
		if len(f) < 2 || f[0] != "-A" || f[1] != Chain {
			continue
		}
		if i := slices.Index(f, "--to-source"); i > 0 && i+1 < len(f) {
			if a, err := netip.ParseAddr(f[i+1]); err == nil {
				present[a] = true
			}
		}
	}
	return chain
}

// Present reports whether the kernel holds a's SNAT rule now.
func (t *Tables) Present(a netip.Addr) bool { return t.present[a] }

// RecentCapacity is how many addresses an xt_recent list holds when lbd
// loads the module: VIPs taken over within one window beyond it push the
// oldest out of the guard. The module's default, 100, is small for a member
// that takes over a dead peer's thousands.
const RecentCapacity = 16384

// loadRecent loads xt_recent with room for RecentCapacity addresses, unless
// it is loaded already (its size is fixed at load; GuardCapacity tells).
// Failing is not fatal: iptables loads the module itself, with its default.
func loadRecent(ctx context.Context) {
	if _, err := os.Stat("/sys/module/xt_recent"); err == nil {
		return
	}
	proc.CommandContext(ctx, "modprobe", "xt_recent", "ip_list_tot="+strconv.Itoa(RecentCapacity)).Run()
}

// GuardCapacity is how many VIPs one takeover window can guard (the loaded
// xt_recent's ip_list_tot), or 0 if unknown.
func GuardCapacity() int {
	b, err := os.ReadFile("/sys/module/xt_recent/parameters/ip_list_tot")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// Backend names the flavour in use.
func (t *Tables) Backend() string { return t.v4 }

// Guard opens VIP a's takeover window: packets to it that the guard looks at
// are dropped for the next t.guard seconds (the kernel keeps the time).
func (t *Tables) Guard(a netip.Addr) error {
	if t.guard == 0 {
		return nil
	}
	f, err := os.OpenFile(t.recent, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("takeover guard for %s: %w", a, err)
	}
	defer f.Close()
	if _, err := f.WriteString("+" + a.String()); err != nil {
		return fmt.Errorf("takeover guard for %s: write %s: %w", a, t.recent, err)
	}
	return nil
}

// Set makes our chains hold exactly one SNAT rule per VIP and, with the guard
// on, the guard's rules: a RETURN for the TCP ports nat VIPs serve or have
// served since Open, then the DROP of what goes to a VIP in its takeover
// window. The RETURN names ports, not VIP:port pairs, and never forgets one,
// so creating or deleting a VIP rewrites only the nat table unless it brings
// a new port (on an emulated host each table replaced costs seconds); the
// price is that a node's packet to a client port some VIP serves or served is
// not guarded.
func (t *Tables) Set(ctx context.Context, vips []VIP) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	sort.Slice(vips, func(i, j int) bool { return vips[i].Addr.Less(vips[j].Addr) })
	var nat [2]strings.Builder
	var ports [2][]uint16
	for _, v := range vips {
		fam, plen := 0, 32
		if v.Addr.Is6() {
			fam, plen = 1, 128
		}
		fmt.Fprintf(&nat[fam], "-A %s -m ipvs --vaddr %s/%d -j SNAT --to-source %s\n", Chain, v.Addr, plen, v.Addr)
		for _, p := range v.TCPPorts {
			if t.guarded[fam] == nil {
				t.guarded[fam] = map[uint16]bool{}
			}
			t.guarded[fam][p] = true
		}
	}
	for fam := range ports {
		ports[fam] = slices.Collect(maps.Keys(t.guarded[fam]))
	}
	for i, cmd := range []string{t.v4, t.v6} {
		tables := [2]string{"*nat\n:" + Chain + " - [0:0]\n" + nat[i].String() + "COMMIT\n", "*mangle\n:" + GuardChain + " - [0:0]\n"}
		if t.guard > 0 {
			ps := ports[i]
			slices.Sort(ps)
			var b strings.Builder
			for c := range slices.Chunk(ps, 15) { // multiport's limit
				list := make([]string, len(c))
				for i, p := range c {
					list[i] = strconv.Itoa(int(p))
				}
				fmt.Fprintf(&b, "-A %s -p tcp -m multiport --dports %s -j RETURN\n", GuardChain, strings.Join(list, ","))
			}
			fmt.Fprintf(&b, "-A %s -m recent --name %s --rdest --rcheck --seconds %d -j DROP\n", GuardChain, RecentList, t.guard)
			tables[1] += b.String()
		}
		tables[1] += "COMMIT\n"
		input := ""
		for k, tab := range tables {
			if t.last[i][k] == nil || *t.last[i][k] != tab {
				input += tab
			}
		}
		if input == "" {
			continue
		}
		first := t.last[i][0] == nil
		if err := apply(ctx, cmd, input, first, t.guard > 0); err != nil {
			if i == 1 && nat[i].Len() == 0 {
				// A host without IPv6 NAT and no IPv6 VIPs is fine; do not
				// try again until there is an IPv6 VIP.
				t.last[i] = [2]*string{&tables[0], &tables[1]}
				continue
			}
			return err
		}
		t.last[i] = [2]*string{&tables[0], &tables[1]}
		t.save()
		for a := range t.present {
			if a.Is6() == (i == 1) {
				delete(t.present, a)
			}
		}
		for _, v := range vips {
			if v.Addr.Is6() == (i == 1) {
				t.present[v.Addr] = true
			}
		}
	}
	return nil
}

// apply replaces our chains with input and, with checkJump, makes sure
// POSTROUTING (nat) and, with guard, PREROUTING (mangle) jump to them: one
// iptables-save to look, and the missing jumps go into the same restore (each
// process costs up to a second on an emulated host, and lbd's start waits for
// them). With the guard off our mangle chain is kept empty, in case a jump to
// it is left from a run that had it on.
func apply(ctx context.Context, cmd, input string, checkJump, guard bool) error {
	if checkJump {
		out, err := proc.CommandContext(ctx, cmd+"-save").Output() // iptables-legacy-save, ...
		if err != nil {
			return fmt.Errorf("%s-save: %w", cmd, err)
		}
		has := func(chain, target string) bool { return hasJump(out, chain, target) }
		// The tables in input end with COMMIT; a jump goes just before.
		addJump := func(table, rule string) {
			head := "*" + table + "\n"
			at := strings.Index(input, head)
			if at < 0 {
				return
			}
			end := at + strings.Index(input[at:], "COMMIT\n")
			input = input[:end] + rule + "\n" + input[end:]
		}
		if !has("POSTROUTING", Chain) {
			addJump("nat", "-A POSTROUTING -j "+Chain)
		}
		if guard && !has("PREROUTING", GuardChain) {
			addJump("mangle", "-A PREROUTING "+strings.Join(guardJump, " "))
		}
	}
	c := proc.CommandContext(ctx, cmd+"-restore", "--noflush") // iptables-legacy-restore, ip6tables-nft-restore...
	c.Stdin = strings.NewReader(input)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", c.Path, err, bytes.TrimSpace(out))
	}
	return nil
}

// Forget drops the memory of the last applied rules, so the next Set rewrites
// them (after a resync, in case someone flushed the chain).
func (t *Tables) Forget() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.last = [2][2]*string{}
}

// Intact reports whether the kernel still holds the rules Set last applied:
// our nat chain with exactly those VIPs, the jump to it and, with the guard
// on, the jump to the guard chain and its DROP rule. It reads them with one
// iptables-save per family that has VIPs, and is meant to run beside the
// passes (the periodic repair): a blind rewrite runs in a pass, where on a
// loaded host it took 12 s, longer than the lease the pass's loop renews,
// and the fence withdrew the owner's VIPs. False (or a failed read) means the
// next Set should rewrite them (Forget).
func (t *Tables) Intact(ctx context.Context) bool {
	t.mu.Lock()
	last := t.last
	t.mu.Unlock()
	for fam, cmd := range []string{t.v4, t.v6} {
		if last[fam][0] == nil {
			return false
		}
		want := map[netip.Addr]bool{}
		snatRules([]byte(*last[fam][0]), want)
		if fam == 1 && len(want) == 0 {
			continue // no IPv6 VIP depends on them (and many hosts have no IPv6 nat)
		}
		out, err := proc.CommandContext(ctx, cmd+"-save").Output()
		if err != nil {
			return false
		}
		have := map[netip.Addr]bool{}
		snatRules(out, have)
		if !maps.Equal(want, have) || !hasJump(out, "POSTROUTING", Chain) {
			return false
		}
		if t.guard > 0 && (!hasJump(out, "PREROUTING", GuardChain) || !strings.Contains(string(out), "-A "+GuardChain+" ") || !strings.Contains(string(out), RecentList)) {
			return false
		}
	}
	return true
}

// hasJump reports whether an iptables listing (-S or -save) has a rule in
// chain that jumps to target.
func hasJump(listing []byte, chain, target string) bool {
	for l := range strings.Lines(string(listing)) {
		l = strings.TrimRight(l, "\n")
		if strings.HasPrefix(l, "-A "+chain+" ") && strings.HasSuffix(l, "-j "+target) {
			return true
		}
	}
	return false
}

// applied is what Set last wrote, kept in lbd's state directory.
type applied struct {
	Tables  [2][2]string `json:"tables"` // [family][nat, mangle]; "" not applied
	Guarded [2][]uint16  `json:"guarded"`
}

// Remember makes t keep what Set applies in path, and takes what path
// records as applied when the kernel holds it still: the nat chain Open
// found names exactly the recorded VIPs (and IPv4's jump to it is there). A
// restarted lbd then runs no iptables for rules the kernel serves with
// already: each run takes seconds on a loaded host, and the first pass
// waits for it while its VIPs' lease is not renewed (seen in the guest: a
// 7.5 s pass, 7.5 s of it in SNAT, made the fence withdraw the VIP a
// restarted owner had kept). The mangle table (the takeover guard) is
// trusted with the nat table it was written with; the periodic SNAT repair
// (Forget) rewrites both.
func (t *Tables) Remember(path string) {
	t.record = path
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var r applied
	if json.Unmarshal(b, &r) != nil {
		return
	}
	for fam := range 2 {
		nat, mangle := r.Tables[fam][0], r.Tables[fam][1]
		if nat == "" || mangle == "" || !t.held[fam] {
			continue
		}
		rec := map[netip.Addr]bool{}
		snatRules([]byte(nat), rec)
		same := true
		for a := range t.present {
			if a.Is6() == (fam == 1) && !rec[a] {
				same = false
			}
		}
		for a := range rec {
			if !t.present[a] {
				same = false
			}
		}
		if !same {
			continue
		}
		t.last[fam] = [2]*string{&nat, &mangle}
		for _, p := range r.Guarded[fam] {
			if t.guarded[fam] == nil {
				t.guarded[fam] = map[uint16]bool{}
			}
			t.guarded[fam][p] = true
		}
	}
}

// save records what Set applied (Remember); a failure only costs the next
// restart an iptables run.
func (t *Tables) save() {
	if t.record == "" {
		return
	}
	var r applied
	for fam := range 2 {
		for k := range 2 {
			if t.last[fam][k] != nil {
				r.Tables[fam][k] = *t.last[fam][k]
			}
		}
		r.Guarded[fam] = slices.Sorted(maps.Keys(t.guarded[fam]))
	}
	b, err := json.Marshal(r)
	if err == nil {
		tmp := t.record + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, t.record)
		}
	}
	if err != nil {
		os.Remove(t.record) // a stale record must not be taken as the kernel's state
	}
}

// Repairable is Rules that can check the kernel against what they applied
// and be told to rewrite on the next Set (the periodic repair).
type Repairable interface {
	Intact(ctx context.Context) bool
	Forget()
}
