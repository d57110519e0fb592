package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgelb/edgelb/integration/netns"
	"github.com/edgelb/edgelb/integration/topo"
	"github.com/edgelb/edgelb/lbd/dataplane/nftrules"
)

// lbd's rules are either its nftables table (inet edgelb, package
// nftrules: where the kernel has nf_tables' inet family) or the iptables
// chains of the fallback. These helpers read whichever the member's kernel
// holds, through netlink for nftables (the guest has no nft binary).

// nftHelperTimeout bounds all of one helper's exchanges with the kernel:
// the library takes no context, and an exchange that never got its answer
// held a whole e2e run (in SetGuard, beside stress-ng) until it was killed.
// lbd bounds its own the same way (nftrules.callTimeout).
const nftHelperTimeout = 30 * time.Second

// nft opens a netlink connection in the member's namespace and its edgelb
// table, or ok false when the namespace has none.
func (m *Member) nft() (c *nftables.Conn, t *nftables.Table, ok bool, err error) {
	err = netns.Do(m.Host.Name, func() (err error) {
		c, err = nftables.New(nftables.AsLasting(), nftables.WithSockOptions(func(nl *netlink.Conn) error {
			return nl.SetDeadline(time.Now().Add(nftHelperTimeout))
		}))
		return err
	})
	if err != nil {
		return nil, nil, false, fmt.Errorf("nftables in %s: %w", m.Host.Name, err)
	}
	t, err = c.ListTableOfFamily(nftrules.TableName, nftables.TableFamilyINet)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// Not an answer: taking it for "no table" would make the member
		// look like it runs on iptables, and skip the nftables scenarios.
		c.CloseLasting()
		return nil, nil, false, fmt.Errorf("nftables in %s: %w", m.Host.Name, err)
	}
	if err != nil {
		c.CloseLasting()
		return nil, nil, false, nil // no table (or no nf_tables): the iptables fallback
	}
	return c, t, true, nil
}

// RuleEngine names what holds the member's rules: nftables or iptables.
// "unknown: …" when the kernel did not answer.
func (m *Member) RuleEngine() string {
	c, _, ok, err := m.nft()
	switch {
	case err != nil:
		return "unknown: " + err.Error()
	case ok:
		c.CloseLasting()
		return "nftables"
	}
	return "iptables"
}

func setAddrs(c *nftables.Conn, t *nftables.Table, name string) ([]netip.Addr, error) {
	s, err := c.GetSetByName(t, name)
	if err != nil {
		return nil, fmt.Errorf("nftables set %s: %w", name, err)
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("nftables set %s: %w", name, err)
	}
	var out []netip.Addr
	for _, e := range els {
		if e.IntervalEnd {
			continue
		}
		if a, ok := netip.AddrFromSlice(e.Key[:min(len(e.Key), addrLen(name))]); ok {
			out = append(out, a)
		}
	}
	return out, nil
}

func addrLen(set string) int {
	if strings.Contains(set, "6") {
		return 16
	}
	return 4
}

// SNATVIPs lists the VIPs the member SNATs to (nftables: the snat4/snat6
// sets; iptables: the --to-source of its nat chain).
func (m *Member) SNATVIPs() ([]string, error) {
	var out []string
	if c, t, ok, err := m.nft(); err != nil {
		return nil, err
	} else if ok {
		defer c.CloseLasting()
		for _, n := range []string{"snat4", "snat6"} {
			as, err := setAddrs(c, t, n)
			if err != nil {
				return nil, err
			}
			for _, a := range as {
				out = append(out, a.String())
			}
		}
		return out, nil
	}
	rules, err := m.iptablesNAT()
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		f := strings.Fields(r)
		for i := range f {
			if f[i] == "--to-source" && i+1 < len(f) {
				out = append(out, f[i+1])
			}
		}
	}
	return out, nil
}

// FiltersVIP reports whether the member's source-range filter holds vip.
func (m *Member) FiltersVIP(vip string) (bool, error) {
	a, err := netip.ParseAddr(vip)
	if err != nil {
		return false, err
	}
	if c, t, ok, err := m.nft(); err != nil {
		return false, err
	} else if ok {
		defer c.CloseLasting()
		n := "sr_ports4"
		if a.Is6() {
			n = "sr_ports6"
		}
		as, err := setAddrs(c, t, n)
		if err != nil {
			return false, err
		}
		for _, x := range as {
			if x == a {
				return true, nil
			}
		}
		return false, nil
	}
	save, plen := "iptables-legacy-save", "/32"
	if a.Is6() {
		save, plen = "ip6tables-legacy-save", "/128"
	}
	out, err := topo.Run(m.Host.Name, save, "-t", "filter")
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "-d "+vip+plen+" -j EDGELB-SR-"), nil
}

// guardDropsNft sums the counters of the guard chain's DROP rules.
func guardDropsNft(c *nftables.Conn, t *nftables.Table) (int, error) {
	rs, err := c.GetRules(t, &nftables.Chain{Name: "guard", Table: t})
	if err != nil {
		return 0, fmt.Errorf("nftables chain guard: %w", err)
	}
	n := 0
	for _, r := range rs {
		for _, e := range r.Exprs {
			if ct, ok := e.(*expr.Counter); ok {
				n += int(ct.Packets)
			}
		}
	}
	return n, nil
}

// SetGuard turns the member's takeover guard off (on false) by deleting the
// rule that sends packets to it, and back on by adding that rule again;
// lbd's periodic repair also restores it. It reports whether the guard was
// on before.
func (m *Member) SetGuard(on bool) (was bool, err error) {
	if c, t, ok, err := m.nft(); err != nil {
		return false, err
	} else if ok {
		defer c.CloseLasting()
		ch := &nftables.Chain{Name: "prerouting", Table: t}
		rs, err := c.GetRules(t, ch)
		if err != nil {
			return false, fmt.Errorf("nftables chain prerouting: %w", err)
		}
		was = len(rs) > 0
		switch {
		case on && !was:
			if m.guardRule == nil {
				return false, fmt.Errorf("no guard rule of %s saved to restore", m.ID)
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: m.guardRule})
		case !on && was:
			m.guardRule = rs[0].Exprs
			for _, r := range rs {
				if err := c.DelRule(r); err != nil {
					return was, err
				}
			}
		default:
			return was, nil
		}
		return was, c.Flush()
	}
	jump := []string{"-t", "mangle", "PREROUTING", "-p", "tcp", "!", "--syn", "-m", "conntrack", "--ctstate", "NEW", "-j", "EDGELB-PREROUTING"}
	rule := func(op string) error {
		args := append([]string{jump[0], jump[1], op}, jump[2:]...)
		_, err := topo.Run(m.Host.Name, "iptables-legacy", args...)
		return err
	}
	was = rule("-C") == nil
	switch {
	case on && !was:
		return was, rule("-A")
	case !on && was:
		return was, rule("-D")
	}
	return was, nil
}

// muteTable is the lab's own nftables table for one-way partitions: lbd
// never touches a table that is not its own, whatever its rule engine.
const muteTable = "lab_mute"

// mutePeers adds (on) or deletes the member's mute table: a filter chain on
// output that drops everything addressed to the other members. It is written
// over netlink rather than by iptables-restore: the partition is the fault
// a scenario times, and a process start in the guest stalls every lbd.
func (m *Member) mutePeers(on bool) error {
	return netns.Do(m.Host.Name, func() error {
		c, err := nftables.New(nftables.WithSockOptions(func(nl *netlink.Conn) error {
			return nl.SetDeadline(time.Now().Add(nftHelperTimeout))
		}))
		if err != nil {
			return fmt.Errorf("%s: nftables: %w", m.ID, err)
		}
		t := &nftables.Table{Name: muteTable, Family: nftables.TableFamilyINet}
		if !on {
			c.DelTable(t)
			if err := c.Flush(); err != nil {
				return fmt.Errorf("%s: delete table %s: %w", m.ID, muteTable, err)
			}
			return nil
		}
		c.AddTable(t)
		ch := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
		for _, p := range m.lab.Members {
			if p == m {
				continue
			}
			for _, a := range []netip.Addr{p.Host.V4, p.Host.V6} {
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: dropTo(a)})
			}
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("%s: add table %s: %w", m.ID, muteTable, err)
		}
		return nil
	})
}

// dropTo is a rule of an inet table that drops packets addressed to a.
func dropTo(a netip.Addr) []expr.Any {
	proto, off := byte(unix.NFPROTO_IPV4), uint32(16) // daddr in the IPv4 header
	if a.Is6() {
		proto, off = unix.NFPROTO_IPV6, 24
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}
