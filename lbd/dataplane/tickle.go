package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsconn"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Tickle ACKs (issue 19: no long stalls after a takeover). After an
// unplanned takeover, a node's retransmission can reach the new owner before
// any packet of the client's, and the takeover guard drops it (it may not
// reset a connection it has not seen); the node sends again only on its next
// backoff timer, up to ~13 s later, and a silent client waits that long. So,
// as CTDB does, the new owner sends each client of a connection the IPVS
// sync daemon gave it a bare ACK from the VIP with sequence and
// acknowledgement numbers of 0: out of the window, which makes the client's
// stack answer at once with an ACK carrying its real numbers (RFC 793 §3.9,
// RFC 5961 §4). That answer goes through the new owner, which sees the
// connection (the guard lets the node's next packet through) and forwards
// it to the node, which learns what the client has received.

// tickleRounds are when, after the address goes up, the ACKs are sent: at
// once and every 550 ms up to 3.3 s, because the client answers only once
// its ARP cache points here (the gratuitous ARP burst runs beside this),
// Linux answers out-of-window segments at most once per 500 ms per socket
// (tcp_invalid_ratelimit), and a connection established just before the
// takeover reaches this host's IPVS table only when the old owner's sync
// daemon sends its buffer (when full, else up to 2 s later, checked every
// second). Several answers reach a node that still has data in flight as
// duplicate ACKs: three of them make it retransmit at once.
var tickleRounds = []time.Duration{0, 550 * time.Millisecond, 1100 * time.Millisecond, 1650 * time.Millisecond,
	2200 * time.Millisecond, 2750 * time.Millisecond, 3300 * time.Millisecond}

// establishedTo keeps the established TCP connections to vip, synced ones
// included (the sync daemon puts them in the same table).
func establishedTo(conns []ipvsconn.Conn, vip netip.Addr) []ipvsconn.Conn {
	var out []ipvsconn.Conn
	for _, c := range conns {
		if c.Proto == ipvsconn.TCP && c.State == "ESTABLISHED" && c.VIP.Addr() == vip {
			out = append(out, c)
		}
	}
	return out
}

// establishedConns reads the kernel's IPVS connection table for the
// established TCP connections to vip.
func establishedConns(vip netip.Addr) ([]ipvsconn.Conn, error) {
	conns, err := ipvsconn.ReadFile(ipvsconn.Path)
	if err != nil {
		return nil, err
	}
	return establishedTo(conns, vip), nil
}

// tickleSegment is a bare TCP ACK from → to with sequence and
// acknowledgement 0 (the TCP header only: the kernel adds the IP header).
func tickleSegment(from, to netip.AddrPort) []byte {
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], from.Port())
	binary.BigEndian.PutUint16(seg[2:], to.Port())
	// seq and ack stay 0: out of any window.
	seg[12] = 5 << 4                           // data offset: 5 words, no options
	seg[13] = 0x10                             // ACK
	binary.BigEndian.PutUint16(seg[14:], 1234) // window, as CTDB sends
	binary.BigEndian.PutUint16(seg[16:], tcpChecksum(from.Addr(), to.Addr(), seg))
	return seg
}

// tcpChecksum is the TCP checksum of seg (its checksum field zero) with the
// IPv4 or IPv6 pseudo-header.
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	sum += unix.IPPROTO_TCP + uint32(len(seg))
	add(seg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// tickleIPPacket is tickleSegment inside an IPv4 or IPv6 header: the packet
// goes out on a packet socket, below netfilter, so the IP header is ours.
func tickleIPPacket(from, to netip.AddrPort) []byte {
	seg := tickleSegment(from, to)
	if from.Addr().Is4() {
		h := make([]byte, 20, 20+len(seg))
		h[0] = 0x45                                            // IPv4, 5 words
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(seg))) // total length
		binary.BigEndian.PutUint16(h[6:], 0x4000)              // don't fragment
		h[8], h[9] = 64, unix.IPPROTO_TCP
		src, dst := from.Addr().As4(), to.Addr().As4()
		copy(h[12:], src[:])
		copy(h[16:], dst[:])
		binary.BigEndian.PutUint16(h[10:], ipv4Checksum(h))
		return append(h, seg...)
	}
	h := make([]byte, 40, 40+len(seg))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(seg)))
	h[6], h[7] = unix.IPPROTO_TCP, 64
	src, dst := from.Addr().As16(), to.Addr().As16()
	copy(h[8:], src[:])
	copy(h[24:], dst[:])
	return append(h, seg...)
}

func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// tickler sends tickle ACKs on packet sockets, below netfilter. Sent from a
// raw IP socket, the ACK passed through LOCAL_OUT, where conntrack took it
// for a new connection VIP:port → client; the client's answer then matched
// that entry as its reply direction, was never SNATed to the VIP, and the
// node, seeing the client's own address, could not place it: every held
// connection broke in the guest (2026-12-05). A packet socket needs the
// next hop's link-layer address, which the neighbour table gives (and which
// the kernel is asked to resolve when it is missing).
type tickler struct {
	conns map[[2]int]*packet.Conn // per interface index and EtherType
	hops  map[netip.Addr]nextHop  // per client address, for one run
}

type nextHop struct {
	ifi *net.Interface
	hw  net.HardwareAddr
	err error
}

func newTickler() *tickler {
	return &tickler{conns: map[[2]int]*packet.Conn{}, hops: map[netip.Addr]nextHop{}}
}

func (t *tickler) close() {
	for _, c := range t.conns {
		c.Close()
	}
}

// resolveWait is how long a round waits, once, for the kernel to resolve
// the next hops it did not know (an ARP or NDP round trip on the segment)
// before it tickles those clients.
const resolveWait = 100 * time.Millisecond

// hop finds the interface and link-layer address towards dst. A next hop
// the neighbour table does not know is handed to the kernel to resolve
// (NTF_USE) and reported as errUnresolved; a failure is remembered until
// nextRound, so many connections of one client look it up once.
func (t *tickler) hop(dst netip.Addr) nextHop {
	if h, ok := t.hops[dst]; ok {
		return h
	}
	h := findHop(dst)
	t.hops[dst] = h
	return h
}

// nextRound forgets the next hops that could not be found, to try them again.
func (t *tickler) nextRound() {
	for a, h := range t.hops {
		if h.err != nil {
			delete(t.hops, a)
		}
	}
}

var errUnresolved = errors.New("next hop not resolved yet")

// takeNothing is a socket filter that accepts no packet.
var takeNothing = func() []bpf.RawInstruction {
	r, err := bpf.Assemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})
	if err != nil {
		panic(err)
	}
	return r
}()

func findHop(dst netip.Addr) nextHop {
	routes, err := netlink.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return nextHop{err: fmt.Errorf("route to %s: %v", dst, err)}
	}
	r := routes[0]
	ifi, err := net.InterfaceByIndex(r.LinkIndex)
	if err != nil {
		return nextHop{err: fmt.Errorf("interface %d of the route to %s: %w", r.LinkIndex, dst, err)}
	}
	if ifi.Flags&net.FlagLoopback != 0 || len(ifi.HardwareAddr) == 0 {
		return nextHop{ifi: ifi, hw: make(net.HardwareAddr, 6)} // no link-layer addresses here
	}
	via := dst
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && gw.IsValid() && !gw.IsUnspecified() {
		via = gw.Unmap()
	}
	family := netlink.FAMILY_V4
	if via.Is6() {
		family = netlink.FAMILY_V6
	}
	lookup := func() net.HardwareAddr {
		ns, err := netlink.NeighList(r.LinkIndex, family)
		if err != nil {
			return nil
		}
		for _, n := range ns {
			a, _ := netip.AddrFromSlice(n.IP)
			usable := n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT) != 0
			if a.Unmap() == via && usable && len(n.HardwareAddr) > 0 {
				return n.HardwareAddr
			}
		}
		return nil
	}
	if hw := lookup(); hw != nil {
		return nextHop{ifi: ifi, hw: hw}
	}
	// Ask the kernel to resolve it, as if a packet were waiting for it.
	if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: r.LinkIndex, Family: family, IP: via.AsSlice(), Flags: netlink.NTF_USE}); err != nil {
		return nextHop{err: fmt.Errorf("resolve %s on %s: %w", via, ifi.Name, err)}
	}
	return nextHop{err: fmt.Errorf("%s on %s: %w", via, ifi.Name, errUnresolved)}
}

// send sends one tickle ACK from the VIP to the client.
func (t *tickler) send(from, to netip.AddrPort) error {
	h := t.hop(to.Addr())
	if h.err != nil {
		return h.err
	}
	proto := unix.ETH_P_IP
	if to.Addr().Is6() {
		proto = unix.ETH_P_IPV6
	}
	key := [2]int{h.ifi.Index, proto}
	c := t.conns[key]
	if c == nil {
		var err error
		// The socket only sends: a filter that takes nothing keeps the
		// host's traffic from being copied to it.
		if c, err = packet.Listen(h.ifi, packet.Datagram, proto, &packet.Config{Filter: takeNothing}); err != nil {
			return fmt.Errorf("open a packet socket on %s: %w", h.ifi.Name, err)
		}
		t.conns[key] = c
	}
	if _, err := c.WriteTo(tickleIPPacket(from, to), &packet.Addr{HardwareAddr: h.hw}); err != nil {
		return fmt.Errorf("send a tickle ACK %s → %s on %s: %w", from, to, h.ifi.Name, err)
	}
	return nil
}

// tickle sends the tickle ACKs for every established connection to vip in
// the IPVS table, in tickleRounds, until ctx ends. It runs beside the pass
// that took vip over, never in it: the pass must not wait for it.
func (e *Engine) tickle(ctx context.Context, vip netip.Addr, tenant string) {
	start := time.Now()
	tk := newTickler()
	defer tk.close()
	sent, failed := 0, 0
	var lastErr error
	for _, at := range tickleRounds {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(at))):
		}
		conns, err := establishedConns(vip)
		if err != nil {
			e.log.Warn("tickle ACKs not sent", "vip", vip, "tenant", tenant, "err", err)
			return
		}
		tk.nextRound()
		var unresolved []ipvsconn.Conn
		for _, c := range conns {
			if err := tk.send(c.VIP, c.Client); err != nil {
				if errors.Is(err, errUnresolved) {
					unresolved = append(unresolved, c)
					continue
				}
				failed++
				lastErr = err
				continue
			}
			sent++
		}
		if len(unresolved) == 0 {
			continue
		}
		// Once per round, for every next hop the kernel was asked to
		// resolve: the next round is half a second away.
		select {
		case <-ctx.Done():
			return
		case <-time.After(resolveWait):
		}
		tk.nextRound()
		for _, c := range unresolved {
			if err := tk.send(c.VIP, c.Client); err != nil {
				failed++
				lastErr = err
				continue
			}
			sent++
		}
	}
	if failed > 0 {
		e.log.Warn("some tickle ACKs could not be sent", "vip", vip, "tenant", tenant, "sent", sent, "failed", failed, "err", lastErr)
	} else if sent > 0 {
		e.log.Info("tickle ACKs sent to the clients of the connections synced for a VIP taken over", "vip", vip, "tenant", tenant,
			"acks", sent, "rounds", len(tickleRounds))
	}
}
