// Package snat keeps the SNAT rules that make replies from backends return
// through the edge host in nat mode: packets IPVS forwards for a VIP leave with
// the VIP itself as source (SNAT --to-source VIP, matched with xt_ipvs). SNAT
// to the VIP rather than to the host's own address is what lets connection sync
// carry a connection to another edge host: its reply path does not name the
// host that died.
//
// The rules live in chains of our own (EDGELB-POSTROUTING in the nat tables of
// iptables and ip6tables), jumped to from POSTROUTING; nothing else is touched.
// A change replaces our chain in one iptables-restore --noflush call.
package snat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
)

// Chain is the chain we own in the nat table.
const Chain = "EDGELB-POSTROUTING"

// Rules programs a set of VIPs.
type Rules interface {
	Set(ctx context.Context, vips []netip.Addr) error
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

// Set makes our chains hold exactly one SNAT rule per VIP.
func (t *Tables) Set(ctx context.Context, vips []netip.Addr) error {
	sort.Slice(vips, func(i, j int) bool { return vips[i].Less(vips[j]) })
	var r4, r6 strings.Builder
	for _, v := range vips {
		if v.Is4() {
			fmt.Fprintf(&r4, "-A %s -m ipvs --vaddr %s/32 -j SNAT --to-source %s\n", Chain, v, v)
		} else {
			fmt.Fprintf(&r6, "-A %s -m ipvs --vaddr %s/128 -j SNAT --to-source %s\n", Chain, v, v)
		}
	}
	for i, f := range []struct{ cmd, rules string }{{t.v4, r4.String()}, {t.v6, r6.String()}} {
		if t.last[i] != nil && *t.last[i] == f.rules {
			continue
		}
		if err := apply(ctx, f.cmd, f.rules, t.last[i] == nil); err != nil {
			if i == 1 && f.rules == "" {
				// A host without IPv6 NAT and no IPv6 VIPs is fine; do not
				// try again until there is an IPv6 VIP.
				t.last[i] = &f.rules
				continue
			}
			return err
		}
		t.last[i] = &f.rules
	}
	return nil
}

// apply replaces our chain and, with checkJump, makes sure POSTROUTING jumps
// to it.
func apply(ctx context.Context, cmd, rules string, checkJump bool) error {
	input := "*nat\n:" + Chain + " - [0:0]\n" + rules + "COMMIT\n"
	c := exec.CommandContext(ctx, cmd+"-restore", "--noflush") // iptables-legacy-restore, ip6tables-nft-restore...
	c.Stdin = strings.NewReader(input)
	if out, err := c.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", c.Path, err, bytes.TrimSpace(out))
	}
	if !checkJump {
		return nil
	}
	if err := exec.CommandContext(ctx, cmd, "-t", "nat", "-C", "POSTROUTING", "-j", Chain).Run(); err != nil {
		if out, err := exec.CommandContext(ctx, cmd, "-t", "nat", "-A", "POSTROUTING", "-j", Chain).CombinedOutput(); err != nil {
			return fmt.Errorf("%s -t nat -A POSTROUTING -j %s: %v: %s", cmd, Chain, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// Forget drops the memory of the last applied rules, so the next Set rewrites
// them (after a resync, in case someone flushed the chain).
func (t *Tables) Forget() { t.last = [2]*string{} }
