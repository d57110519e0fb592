// Package conntrack deletes the stale connection-tracking entries of VIPs
// a member takes over or deletes (vishvananda/netlink over
// NETLINK_NETFILTER).
//
// Why: a member that had a VIP before keeps the conntrack entries of the
// connections it carried then. Those that moved on with the VIP to another
// member and closed there stay ESTABLISHED here (5 days by default). When the
// VIP comes back and a client reuses the source port of one of them, its SYN
// meets that entry: conntrack ignores a SYN on an established entry, and
// IPVS (conn_reuse_mode, with the synced connection closed) drops a SYN whose
// conntrack entry is an old, confirmed one, so the client waits for its SYN
// retransmit (1 s; measured in the guest, docs/OPERATIONS.md, "New
// connections wait a second"). When IPVS holds no connection for the tuple,
// the stale entry's NAT would send the SYN on with a mapping the node's
// answer does not match, and the retransmits would fail alike (read from the
// kernel's code, not captured).
//
// Entries of connections IPVS still carries (synced from the member that
// serves them, opening or established) to the same backend are kept: their
// NAT mapping is the one the node knows, and a node's packet that comes
// before the client's is translated with them rather than met by the host's
// stack. An entry whose client tuple IPVS carries but to another backend is
// an older connection's that reused the client's port: kept, it would let the
// client's packets through (conntrack matches the original direction) while
// the node's answers, which name the new backend, match nothing, are dropped
// by the takeover guard and, once its window ends, reset by the host's
// stack (measured in the guest: held connections reset 10 s after a drain).
// It is deleted with the entries of connections that ended elsewhere or that
// IPVS no longer knows.
package conntrack

import (
	"fmt"
	"net/netip"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsconn"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Forgetter deletes the stale conntrack entries of VIPs (see Forget).
// Netlink is the real one; tests use a fake.
type Forgetter interface {
	Forget(Request) (Result, error)
}

// Request says which entries Forget deletes.
type Request struct {
	// VIPs: entries whose original destination is one of them, unless IPVS
	// carries their connection to the backend they name.
	VIPs []netip.Addr
	// Only, when not nil, narrows that to these tuples: the entries an
	// earlier, bounded Forget left.
	Only map[Tuple]bool
	// Stop, when not nil, bounds the deletions: once it is closed Forget
	// selects no more and returns the rest in Result.Left. Each deletion is
	// a netlink round trip (tens of µs on a real host, 1–2 ms in the
	// emulated guest), and a takeover deletes before its address goes up.
	Stop <-chan struct{}
	// Unnated, when not nil, selects instead the entries of these services
	// that no NAT rewrote (their reply comes from the VIP's own address and
	// port), whatever IPVS carries. Only forwarding makes one: a member
	// that routed a client's packet on to a VIP it did not hold (the old
	// owner just after a move, or any member a stale neighbour entry sent
	// it to) confirmed its entry there. Once the VIP is up on that member,
	// IPVS cannot rewrite the confirmed entry: the client's packets on that
	// tuple go to the node un-SNATed and the node answers around the edge,
	// so the connection fails, and so does every reuse of the tuple until
	// the entry expires (120 s for an unanswered SYN). Ports the VIP serves
	// only: a node's packet to VIP:client-port is the takeover guard's.
	Unnated map[Service]bool
}

// Service is a port a VIP serves: protocol and the VIP's address and port.
type Service struct {
	Proto uint8
	Dst   netip.AddrPort
}

// Result is what Forget did.
type Result struct {
	Deleted map[netip.Addr]int // per VIP, those with none left out
	Left    map[Tuple]bool     // selected but not deleted: Stop was closed
}

// Netlink is a Forgetter over a conntrack netlink socket.
type Netlink struct{ h *netlink.Handle }

// Open dials conntrack's netlink in the current network namespace (the
// kernel loads nf_conntrack_netlink on demand).
func Open() (*Netlink, error) {
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("open conntrack netlink: %w", err)
	}
	return &Netlink{h: h}, nil
}

// Close closes the socket.
func (n *Netlink) Close() { n.h.Close() }

// Forget deletes the entries r selects: one dump of the conntrack table per
// address family among the VIPs, each followed by one read of the IPVS
// connection table, so a takeover of many VIPs costs one pass, not one per
// VIP. The IPVS table is read after the dump (on the dump's first entry):
// an entry in the dump was confirmed after IPVS made its connection, so a
// connection that opened just before is known and its entry kept. The
// library takes no context: a dump is bounded by the table's size, and the
// deletions by r.Stop. Without the IPVS table it deletes nothing (what it
// would delete is not known). With r.Unnated it reads no IPVS table: an
// entry no NAT rewrote is never one IPVS made.
func (n *Netlink) Forget(r Request) (Result, error) {
	res := Result{Deleted: map[netip.Addr]int{}}
	if len(r.VIPs) == 0 {
		return res, nil
	}
	f := NewMatch(r.VIPs...)
	f.Seen, f.Only, f.Stop, f.Unnated = res.Deleted, r.Only, r.Stop, r.Unnated
	fams := map[netlink.InetFamily]bool{}
	for _, a := range r.VIPs {
		if a.Is4() || a.Is4In6() {
			fams[unix.AF_INET] = true
		} else {
			fams[unix.AF_INET6] = true
		}
	}
	for fam := range fams {
		if r.Unnated == nil { // an entry no NAT rewrote is never IPVS's
			f.ReadLive = func() (map[Tuple]netip.AddrPort, error) { return LiveIPVS(ipvsconn.Path) }
		}
		_, err := n.h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
		if f.liveErr != nil {
			err = f.liveErr
		}
		if err != nil {
			return res, fmt.Errorf("delete the conntrack entries of %d VIPs: %w", len(r.VIPs), err)
		}
	}
	if len(f.Left) > 0 {
		res.Left = f.Left
	}
	return res, nil
}

// Tuple is a connection's original direction: client to VIP.
type Tuple struct {
	Proto    uint8
	Src, Dst netip.AddrPort
}

// Match selects entries by their original destination address, except
// those of a connection in Live whose reply comes from the backend Live
// names, and counts what it selected per address in Seen (the library
// deletes each it selects; one that vanished meanwhile is counted too).
// With Only it selects only those tuples, and with Unnated only the
// entries of those services that no NAT rewrote (Request.Unnated); once
// Stop is closed it selects nothing more and records what it would have
// selected in Left.
type Match struct {
	want map[netip.Addr]bool
	// Live maps a connection IPVS carries (client → VIP) to its backend.
	Live map[Tuple]netip.AddrPort
	// ReadLive, when set, fills Live at the first entry, after the
	// library's dump; an error selects nothing (liveErr).
	ReadLive func() (map[Tuple]netip.AddrPort, error)
	liveErr  error
	Seen     map[netip.Addr]int
	Only     map[Tuple]bool
	Unnated  map[Service]bool
	Stop     <-chan struct{}
	Left     map[Tuple]bool
}

// NewMatch selects entries to vips.
func NewMatch(vips ...netip.Addr) *Match {
	m := &Match{want: map[netip.Addr]bool{}, Seen: map[netip.Addr]int{}, Left: map[Tuple]bool{}}
	for _, a := range vips {
		m.want[a.Unmap()] = true
	}
	return m
}

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (m *Match) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if m.ReadLive != nil {
		m.Live, m.liveErr = m.ReadLive()
		m.ReadLive = nil
	}
	if m.liveErr != nil {
		return false
	}
	dst, ok := netip.AddrFromSlice(flow.Forward.DstIP)
	if !ok || !m.want[dst.Unmap()] {
		return false
	}
	src, _ := netip.AddrFromSlice(flow.Forward.SrcIP)
	t := Tuple{Proto: flow.Forward.Protocol, Src: netip.AddrPortFrom(src.Unmap(), flow.Forward.SrcPort), Dst: netip.AddrPortFrom(dst.Unmap(), flow.Forward.DstPort)}
	if m.Only != nil && !m.Only[t] {
		return false
	}
	// The reply direction comes from the backend: an entry NATed by IPVS
	// for this connection names it there.
	node, _ := netip.AddrFromSlice(flow.Reverse.SrcIP)
	from := netip.AddrPortFrom(node.Unmap(), flow.Reverse.SrcPort)
	if m.Unnated != nil && (!m.Unnated[Service{t.Proto, t.Dst}] || from != t.Dst) {
		return false
	}
	if be, ok := m.Live[t]; ok && be == from {
		return false
	}
	if m.stopped() {
		m.Left[t] = true
		return false
	}
	m.Seen[dst.Unmap()]++
	return true
}

func (m *Match) stopped() bool {
	select {
	case <-m.Stop:
		return true
	default:
		return false // also with no Stop: a nil channel never receives
	}
}

// LiveIPVS reads the IPVS connection table at path and returns the
// client→VIP tuples, with their backends, of the connections IPVS carries:
// opening or established, not closing or closed.
func LiveIPVS(path string) (map[Tuple]netip.AddrPort, error) {
	conns, err := ipvsconn.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return live(conns), nil
}

// live keeps the connections not ended or ending: connection sync reports a
// close as FIN_WAIT, then TIME_WAIT or CLOSE, and a SYN meeting one of the
// last two and an old conntrack entry is what IPVS drops.
func live(conns []ipvsconn.Conn) map[Tuple]netip.AddrPort {
	m := map[Tuple]netip.AddrPort{}
	for _, c := range conns {
		switch c.State {
		case "NONE", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "CLOSED":
			continue // ended or ending (CLOSED: SCTP's)
		}
		m[Tuple{Proto: c.Proto, Src: c.Client, Dst: c.VIP}] = c.Backend
	}
	return m
}
