package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/nftrules"
	"github.com/edgelb/edgelb/lbd/dataplane/snat"
	"github.com/edgelb/edgelb/lbd/dataplane/srcrange"
)

// openRules picks the rule engine (the SNAT rules, the takeover guard and
// the source-range filter) for mode: nftables (netlink, no process per
// change), iptables-legacy or iptables-nft (a process per change), auto
// (the iptables flavours as before where one works, else nftables: a host
// without iptables gets nftables, while the guest's HA drain and move
// scenarios still break held connections in some runs on nftables, see
// docs/DATAPLANE.md), or none (no SNAT; the filter on nftables, else the
// first iptables that works). A nil filter with a nil error never happens; a
// filter error alone is returned as filterErr (the rest works, services with
// source ranges are isolated).
func openRules(ctx context.Context, cfg Config) (rules snat.Rules, filter srcrange.Enforcer, filterErr, err error) {
	openNft := func() (snat.Rules, srcrange.Enforcer, error) {
		t, err := nftrules.Open(ctx, cfg.TakeoverGuard, cfg.Logger)
		if err != nil {
			return nil, nil, err
		}
		t.OnFirstSync(func() { removeLegacy(cfg.Logger) })
		if cfg.SNAT == "none" {
			// No SNAT (and so no guard): the table serves the filter.
			t.WithoutSNAT()
			return nil, nftrules.Filter{Table: t}, nil
		}
		return nftrules.SNAT{Table: t}, nftrules.Filter{Table: t}, nil
	}
	if cfg.SNAT == "nftables" {
		r, f, err := openNft()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("snat mode nftables: %w (use a kernel with nf_tables and its inet family, or set snat to iptables-legacy)", err)
		}
		return r, f, nil, nil
	}
	rules, err = snat.Open(ctx, cfg.SNAT, cfg.TakeoverGuard)
	if err != nil {
		if cfg.SNAT != "auto" && cfg.SNAT != "" {
			return nil, nil, nil, err
		}
		// auto without a working iptables: nftables, if the kernel has it.
		r, f, nerr := openNft()
		if nerr != nil {
			return nil, nil, nil, fmt.Errorf("%w; nftables: %w", err, nerr)
		}
		return r, f, nil, nil
	}
	if t, ok := rules.(*snat.Tables); ok {
		t.Remember(filepath.Join(cfg.StateDir, "snat.json")) // a restart rewrites no rules the kernel holds
	}
	if rules == nil { // snat: none
		if _, f, nerr := openNft(); nerr == nil {
			return nil, f, nil, nil
		}
	}
	f, ferr := openFilter(ctx, rules)
	if ferr != nil {
		return rules, nil, ferr, nil
	}
	return rules, f, nil, nil
}

// removeLegacy removes an older version's iptables chains, once the
// nftables rules hold every VIP (nftrules.RemoveLegacy).
func removeLegacy(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := nftrules.RemoveLegacy(ctx)
	if err != nil {
		log.Warn("an older version's iptables chains not (all) removed; they do what the nftables rules do, so traffic is unaffected: remove them by hand (iptables -t nat -D POSTROUTING -j EDGELB-POSTROUTING, ...)", "err", err)
	}
	if n > 0 {
		log.Info("moved from iptables to nftables: removed the older version's iptables chains", "chains", n, "prefix", nftrules.LegacyPrefix)
	}
}

// openFilter opens the source-range filter with the SNAT rules' iptables
// flavour, or, with SNAT off, the first flavour that works (legacy, then nft).
func openFilter(ctx context.Context, rules snat.Rules) (*srcrange.Filter, error) {
	if rules != nil {
		v4 := rules.Backend()
		return srcrange.Open(ctx, v4, strings.Replace(v4, "iptables", "ip6tables", 1), nil)
	}
	f, errL := srcrange.Open(ctx, "iptables-legacy", "ip6tables-legacy", nil)
	if errL == nil {
		return f, nil
	}
	f, errN := srcrange.Open(ctx, "iptables-nft", "ip6tables-nft", nil)
	if errN == nil {
		return f, nil
	}
	return nil, fmt.Errorf("no usable iptables: legacy: %w; nft: %w", errL, errN)
}
