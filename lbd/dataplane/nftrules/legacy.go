package nftrules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/google/nftables"

	"github.com/edgelb/edgelb/lbd/proc"
)

// LegacyPrefix starts the name of every iptables chain an older lbd made:
// EDGELB-POSTROUTING (nat), EDGELB-PREROUTING (mangle), EDGELB-INPUT and
// EDGELB-SR-* (filter).
const LegacyPrefix = "EDGELB-"

// legacyTools are the iptables flavours an older lbd may have used, IPv4 and
// IPv6; the plain names cover hosts without the suffixed ones.
var legacyTools = [][2]string{
	{"iptables-legacy", "ip6tables-legacy"},
	{"iptables-nft", "ip6tables-nft"},
	{"iptables", "ip6tables"},
}

// mayHold reports, without starting a process, whether an iptables flavour
// may hold chains of ours in family fm (0: IPv4, 1: IPv6): legacy tables
// exist in a namespace only once something used them (/proc/net/
// ip_tables_names lists them); iptables-nft's chains are nftables chains,
// read over netlink. Unknown flavours (the plain name) count as maybe.
func mayHold(cmd string, fm int) bool {
	switch {
	case strings.HasSuffix(cmd, "-legacy"):
		// thread-self: /proc/net is the main thread's namespace.
		name := "/proc/thread-self/net/ip_tables_names"
		if fm == 1 {
			name = "/proc/thread-self/net/ip6_tables_names"
		}
		b, err := os.ReadFile(name)
		return err == nil && len(bytes.TrimSpace(b)) > 0
	case strings.HasSuffix(cmd, "-nft"):
		c, err := nftables.New()
		if err != nil {
			return true
		}
		fam := nftables.TableFamilyIPv4
		if fm == 1 {
			fam = nftables.TableFamilyIPv6
		}
		chains, err := c.ListChainsOfTableFamily(fam)
		if err != nil {
			return false // no such family in this kernel: no chains in it
		}
		for _, ch := range chains {
			if strings.HasPrefix(ch.Name, LegacyPrefix) {
				return true
			}
		}
		return false
	}
	return true
}

// RemoveLegacy removes the iptables chains of an older lbd, and the jumps to
// them, with every iptables flavour installed: the one place lbd on nftables
// starts processes, once, after the nftables rules hold every VIP (so no
// packet of an established connection meets neither). A host without
// iptables has no such chains: nothing to do. Connections keep their NAT
// bindings in conntrack, so removing the old SNAT rules drops none. It
// reports how many chains it removed.
func RemoveLegacy(ctx context.Context) (int, error) {
	removed := 0
	var errs []error
	seen := map[string]bool{}
	suffixed := false
	for _, pair := range legacyTools {
		for fm, cmd := range pair {
			path, err := exec.LookPath(cmd + "-save")
			if err != nil {
				continue
			}
			plain := !strings.Contains(cmd, "-")
			if !plain {
				suffixed = true
			}
			if plain && suffixed || !mayHold(cmd, fm) {
				// The plain name is one of the suffixed ones; or nothing
				// of ours can be there: no process.
				continue
			}
			out, err := proc.CommandContext(ctx, path).Output()
			if err != nil {
				// A flavour whose kernel side is missing (no ip_tables
				// module) holds nothing of ours.
				continue
			}
			script, n := legacyRemoval(out)
			if n == 0 || seen[script] {
				// The plain name is one of the suffixed ones (same
				// tables): already done.
				continue
			}
			seen[script] = true
			c := proc.CommandContext(ctx, cmd+"-restore", "--noflush")
			c.Stdin = strings.NewReader(script)
			if out, err := c.CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("remove the older version's chains with %s-restore: %v: %s", cmd, err, bytes.TrimSpace(out)))
				continue
			}
			removed += n
		}
	}
	return removed, errors.Join(errs...)
}

// legacyRemoval turns an iptables-save listing into the iptables-restore
// input that deletes every rule jumping to one of our chains and then our
// chains, table by table; n is how many chains it deletes.
func legacyRemoval(listing []byte) (script string, n int) {
	var b strings.Builder
	var table string
	var dels, chains []string
	flush := func() {
		if table != "" && (len(dels) > 0 || len(chains) > 0) {
			b.WriteString("*" + table + "\n")
			for _, d := range dels {
				b.WriteString(d + "\n")
			}
			for _, c := range chains {
				b.WriteString("-F " + c + "\n")
			}
			for _, c := range chains {
				b.WriteString("-X " + c + "\n")
			}
			b.WriteString("COMMIT\n")
			n += len(chains)
		}
		dels, chains = nil, nil
	}
	for l := range strings.Lines(string(listing)) {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "*"):
			flush()
			table = l[1:]
		case strings.HasPrefix(l, ":"+LegacyPrefix):
			chains = append(chains, strings.Fields(l[1:])[0])
		case strings.HasPrefix(l, "-A "):
			f := strings.Fields(l)
			// A rule in a chain of someone else's that jumps to ours.
			if len(f) >= 4 && !strings.HasPrefix(f[1], LegacyPrefix) && f[len(f)-2] == "-j" && strings.HasPrefix(f[len(f)-1], LegacyPrefix) {
				dels = append(dels, "-D"+l[2:])
			}
		case l == "COMMIT":
			flush()
			table = ""
		}
	}
	flush()
	return b.String(), n
}
