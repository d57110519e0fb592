package dataplane

import (
	"cmp"
	"context"
	"errors"
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
// (nftables where the kernel has nf_tables' inet family, else the iptables
// flavours: older kernels keep working), or none (no SNAT; the filter on
// nftables, else the first iptables that works). A nil filter with a nil error never happens; a
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
	auto := cfg.SNAT == "auto" || cfg.SNAT == ""
	var nftErr error
	if cfg.SNAT == "nftables" || auto {
		r, f, err := openNft()
		if err == nil {
			return r, f, nil, nil
		}
		if !iptablesFallback(cfg.SNAT, err) {
			return nil, nil, nil, fmt.Errorf("snat mode %s: nftables: %w (use a kernel with nf_tables and its inet family, or set snat to iptables-legacy)", cmp.Or(cfg.SNAT, "auto"), err)
		}
		nftErr = err
	}
	rules, err = snat.Open(ctx, cfg.SNAT, cfg.TakeoverGuard)
	if err != nil {
		if nftErr != nil {
			return nil, nil, nil, fmt.Errorf("snat mode auto: neither nftables (%w) nor iptables (%w) works", nftErr, err)
		}
		return nil, nil, nil, err
	}
	if nftErr != nil {
		cfg.Logger.Warn("the kernel has no usable nftables: SNAT, the takeover guard and source ranges run on iptables, one process per change", "snat", rules.Backend(), "nftables_error", nftErr)
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

// iptablesFallback says whether openRules, in mode, goes on to iptables
// after nftables failed with err: only auto does, and only when the kernel
// refused nftables' table itself. Anything else (a timeout, a rule refused
// after the table was made) may have left the table in the kernel, acting on
// packets with nobody updating it, so lbd stops with the error instead.
func iptablesFallback(mode string, err error) bool {
	return (mode == "auto" || mode == "") && errors.Is(err, nftrules.ErrUnsupported)
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
