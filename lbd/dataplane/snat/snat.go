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
// the node sends it again once the client's next packet has set the
// connection up here. The guard is lifted after the window: at other times
// those packets are the late ones of closed connections, and the RST is what
// tells the node a connection is gone (without it, a new connection reusing
// the client port stalls).
//
// The rules live in chains of our own, jumped to from POSTROUTING (nat) and
// PREROUTING (mangle, only packets that open a conntrack entry without a SYN);
// nothing else is touched. A change replaces our chains in one
// iptables-restore --noflush call per family.
package snat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
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

// VIP is a nat-mode VIP: its SNAT rule, and with Guard the takeover guard for
// the TCP ports it serves.
type VIP struct {
	Addr     netip.Addr
	TCPPorts []uint16
	Guard    bool
}

// Rules programs a set of VIPs.
type Rules interface {
	Set(ctx context.Context, vips []VIP) error
	Backend() string
}

// Tables is Rules over iptables/ip6tables binaries of one flavour.
type Tables struct {
	v4, v6 string // iptables and ip6tables commands, e.g. iptables-legacy
	// last is the rule text last applied per family (nil: unknown, so the
	// next Set writes it and checks the POSTROUTING jump). Starting a process
	// is the expensive part of a change (hundreds of milliseconds on a small
	// or emulated host), so a change touches only the family that changed.
	last [2]*string
}

// Open picks the backend. mode: auto (iptables-legacy if it can list the nat
// table, else iptables-nft), iptables-legacy, iptables-nft, none (nil Rules).
// Plain nft is refused: nftables has no IPVS match, which this design needs.
func Open(ctx context.Context, mode string) (Rules, error) {
	try := func(v4, v6 string) error {
		out, err := exec.CommandContext(ctx, v4, "-t", "nat", "-S", "POSTROUTING").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s -t nat -S: %v: %s", v4, err, bytes.TrimSpace(out))
		}
		return nil
	}
	switch mode {
	case "none":
		return nil, nil
	case "nft":
		return nil, errors.New("snat mode nft: nftables has no IPVS match (xt_ipvs); use iptables-nft, which reaches it through nft_compat, or iptables-legacy")
	case "iptables-legacy":
		if err := try("iptables-legacy", "ip6tables-legacy"); err != nil {
			return nil, fmt.Errorf("snat mode iptables-legacy: %w", err)
		}
		return &Tables{v4: "iptables-legacy", v6: "ip6tables-legacy"}, nil
	case "iptables-nft":
		if err := try("iptables-nft", "ip6tables-nft"); err != nil {
			return nil, fmt.Errorf("snat mode iptables-nft: %w", err)
		}
		return &Tables{v4: "iptables-nft", v6: "ip6tables-nft"}, nil
	case "auto", "":
		errL := try("iptables-legacy", "ip6tables-legacy")
		if errL == nil {
			return &Tables{v4: "iptables-legacy", v6: "ip6tables-legacy"}, nil
		}
		errN := try("iptables-nft", "ip6tables-nft")
		if errN == nil {
			return &Tables{v4: "iptables-nft", v6: "ip6tables-nft"}, nil
		}
		return nil, fmt.Errorf("no usable iptables for SNAT (install iptables; or set --snat=none if replies return some other way): legacy: %v; nft: %v", errL, errN)
	}
	return nil, fmt.Errorf("unknown snat mode %q: use auto, iptables-legacy, iptables-nft or none", mode)
}

// Backend names the flavour in use.
func (t *Tables) Backend() string { return t.v4 }

// Set makes our chains hold exactly one SNAT rule per VIP, and the guard for
// those that ask for it.
func (t *Tables) Set(ctx context.Context, vips []VIP) error {
	sort.Slice(vips, func(i, j int) bool { return vips[i].Addr.Less(vips[j].Addr) })
	var nat, guard [2]strings.Builder
	for _, v := range vips {
		fam, plen := 0, 32
		if v.Addr.Is6() {
			fam, plen = 1, 128
		}
		fmt.Fprintf(&nat[fam], "-A %s -m ipvs --vaddr %s/%d -j SNAT --to-source %s\n", Chain, v.Addr, plen, v.Addr)
		if !v.Guard || len(v.TCPPorts) == 0 {
			continue
		}
		ports := slices.Clone(v.TCPPorts)
		slices.Sort(ports)
		ports = slices.Compact(ports)
		for c := range slices.Chunk(ports, 15) { // multiport's limit
			list := make([]string, len(c))
			for i, p := range c {
				list[i] = strconv.Itoa(int(p))
			}
			fmt.Fprintf(&guard[fam], "-A %s -d %s/%d -p tcp -m multiport --dports %s -j RETURN\n", GuardChain, v.Addr, plen, strings.Join(list, ","))
		}
		fmt.Fprintf(&guard[fam], "-A %s -d %s/%d -j DROP\n", GuardChain, v.Addr, plen)
	}
	for i, cmd := range []string{t.v4, t.v6} {
		input := "*nat\n:" + Chain + " - [0:0]\n" + nat[i].String() + "COMMIT\n" +
			"*mangle\n:" + GuardChain + " - [0:0]\n" + guard[i].String() + "COMMIT\n"
		if t.last[i] != nil && *t.last[i] == input {
			continue
		}
		if err := apply(ctx, cmd, input, t.last[i] == nil); err != nil {
			if i == 1 && nat[i].Len() == 0 {
				// A host without IPv6 NAT and no IPv6 VIPs is fine; do not
				// try again until there is an IPv6 VIP.
				t.last[i] = &input
				continue
			}
			return err
		}
		t.last[i] = &input
	}
	return nil
}

// apply replaces our chains with input and, with checkJump, makes sure
// POSTROUTING (nat) and PREROUTING (mangle) jump to them.
func apply(ctx context.Context, cmd, input string, checkJump bool) error {
	c := exec.CommandContext(ctx, cmd+"-restore", "--noflush") // iptables-legacy-restore, ip6tables-nft-restore...
	c.Stdin = strings.NewReader(input)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", c.Path, err, bytes.TrimSpace(out))
	}
	if !checkJump {
		return nil
	}
	for _, j := range []struct {
		table, chain string
		rule         []string
	}{{"nat", "POSTROUTING", []string{"-j", Chain}}, {"mangle", "PREROUTING", guardJump}} {
		check := append([]string{"-t", j.table, "-C", j.chain}, j.rule...)
		if err := exec.CommandContext(ctx, cmd, check...).Run(); err != nil {
			add := append([]string{"-t", j.table, "-A", j.chain}, j.rule...)
			if out, err := exec.CommandContext(ctx, cmd, add...).CombinedOutput(); err != nil {
				return fmt.Errorf("%s %s: %v: %s", cmd, strings.Join(add, " "), err, bytes.TrimSpace(out))
			}
		}
	}
	return nil
}

// Forget drops the memory of the last applied rules, so the next Set rewrites
// them (after a resync, in case someone flushed the chain).
func (t *Tables) Forget() { t.last = [2]*string{} }
