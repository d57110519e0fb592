// Package announce tells the segment where a VIP lives now: a burst of
// gratuitous ARPs (IPv4) or unsolicited neighbour advertisements (IPv6) when a
// VIP is added, then periodic repeats, because a single announcement is
// routinely missed (kube-vip#80, #382).
package announce

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// Sender sends one announcement for an address.
type Sender interface {
	Announce(a netip.Addr) error
	Close() error
}

// Wire is the real Sender on one interface.
type Wire struct {
	ifi *net.Interface
	arp *arp.Client
	ndp *ndp.Conn
	mu  sync.Mutex
}

// Open prepares raw sockets on the interface. ARP needs an IPv4 address on
// it, NDP a link-local one; a missing family is reported when first used.
func Open(ifname string) (*Wire, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	return &Wire{ifi: ifi}, nil
}

// Announce sends one gratuitous ARP request (sender = target = the VIP, to
// broadcast) or one unsolicited, overriding neighbour advertisement to all-nodes.
func (w *Wire) Announce(a netip.Addr) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a.Is4() {
		if w.arp == nil {
			c, err := arp.Dial(w.ifi)
			if err != nil {
				return fmt.Errorf("open ARP socket on %s: %w", w.ifi.Name, err)
			}
			w.arp = c
		}
		p, err := gratuitousARP(w.ifi.HardwareAddr, a)
		if err != nil {
			return err
		}
		if err := w.arp.WriteTo(p, ethernet.Broadcast); err != nil {
			return fmt.Errorf("send gratuitous ARP for %s on %s: %w", a, w.ifi.Name, err)
		}
		return nil
	}
	if w.ndp == nil {
		c, _, err := ndp.Listen(w.ifi, ndp.LinkLocal)
		if err != nil {
			return fmt.Errorf("open NDP socket on %s: %w", w.ifi.Name, err)
		}
		w.ndp = c
	}
	// The NDP socket has the kernel fill in the ICMPv6 checksum (IPV6_CHECKSUM).
	if err := w.ndp.WriteTo(unsolicitedNA(w.ifi.HardwareAddr, a), nil, netip.IPv6LinkLocalAllNodes()); err != nil {
		return fmt.Errorf("send unsolicited NA for %s on %s: %w", a, w.ifi.Name, err)
	}
	return nil
}

// gratuitousARP is the announcement of an IPv4 VIP: an ARP request from hw
// whose sender and target protocol addresses are both the VIP (RFC 5227's
// announcement), so every neighbour updates an existing entry for it.
func gratuitousARP(hw net.HardwareAddr, a netip.Addr) (*arp.Packet, error) {
	p, err := arp.NewPacket(arp.OperationRequest, hw, a, ethernet.Broadcast, a)
	if err != nil {
		return nil, fmt.Errorf("build gratuitous ARP for %s: %w", a, err)
	}
	return p, nil
}

// unsolicitedNA is the announcement of an IPv6 VIP (RFC 4861 7.2.6): not
// solicited, with the override flag so neighbours replace the old owner's
// link-layer address, which the target link-layer option carries.
func unsolicitedNA(hw net.HardwareAddr, a netip.Addr) *ndp.NeighborAdvertisement {
	return &ndp.NeighborAdvertisement{
		Override: true, TargetAddress: a,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: hw}},
	}
}

// Close closes the sockets.
func (w *Wire) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.arp != nil {
		w.arp.Close()
	}
	if w.ndp != nil {
		w.ndp.Close()
	}
	return nil
}

// Config is the announcement schedule.
type Config struct {
	Burst          int           // announcements right after a VIP is added
	BurstInterval  time.Duration // between them
	RepeatInterval time.Duration // then one every this long (≤0: never)
	// Allowed, when set, is asked before each announcement; false sends
	// nothing. The engine closes it once the fence's lease has run out: the
	// fence may have withdrawn the address, and a GARP for an address this
	// host does not hold draws the segment's traffic to it.
	Allowed func() bool
}

// Announcer runs the schedule for a changing set of addresses.
type Announcer struct {
	cfg  Config
	s    Sender
	log  *slog.Logger
	mu   sync.Mutex
	set  map[netip.Addr]string // announced addresses → their tenant, for the logs
	kick chan netip.Addr

	sent, failed uint64
	onSent       func(a netip.Addr, kind string)
}

// SetOnSent installs a callback for every announcement sent (kind "takeover"
// for the burst after a VIP is added, "repeat" for the periodic ones).
func (an *Announcer) SetOnSent(f func(a netip.Addr, kind string)) {
	an.mu.Lock()
	defer an.mu.Unlock()
	an.onSent = f
}

// New returns an Announcer; call Run.
func New(cfg Config, s Sender, log *slog.Logger) *Announcer {
	if cfg.Burst <= 0 {
		cfg.Burst = 3
	}
	if cfg.BurstInterval <= 0 {
		cfg.BurstInterval = 100 * time.Millisecond
	}
	return &Announcer{cfg: cfg, s: s, log: log, set: map[netip.Addr]string{}, kick: make(chan netip.Addr, 1024)}
}

// Added starts a burst for a, a VIP of tenant (named in log lines about it);
// the first announcement goes out at once.
func (an *Announcer) Added(a netip.Addr, tenant string) {
	an.mu.Lock()
	an.set[a] = tenant
	an.mu.Unlock()
	an.send(a, tenant, "takeover") // not queued: the first GARP is on the failover's critical path
	select {
	case an.kick <- a:
	default:
	}
}

// SetTenant names the tenant of an address already announced (one re-announced
// after a restart, before the services were known).
func (an *Announcer) SetTenant(a netip.Addr, tenant string) {
	an.mu.Lock()
	defer an.mu.Unlock()
	if _, ok := an.set[a]; ok {
		an.set[a] = tenant
	}
}

// Removed stops announcing a.
func (an *Announcer) Removed(a netip.Addr) {
	an.mu.Lock()
	delete(an.set, a)
	an.mu.Unlock()
}

// RemoveAll stops announcing every address and returns them.
func (an *Announcer) RemoveAll() []netip.Addr {
	an.mu.Lock()
	defer an.mu.Unlock()
	out := make([]netip.Addr, 0, len(an.set))
	for a := range an.set {
		out = append(out, a)
	}
	clear(an.set)
	return out
}

// Counts returns announcements sent and failed.
func (an *Announcer) Counts() (sent, failed uint64) {
	an.mu.Lock()
	defer an.mu.Unlock()
	return an.sent, an.failed
}

func (an *Announcer) send(a netip.Addr, tenant, kind string) {
	if an.cfg.Allowed != nil && !an.cfg.Allowed() {
		return
	}
	err := an.s.Announce(a)
	an.mu.Lock()
	if err != nil {
		an.failed++
	} else {
		an.sent++
	}
	f := an.onSent
	an.mu.Unlock()
	if err == nil && f != nil {
		f(a, kind)
	}
	if err != nil {
		an.log.Warn("announce VIP", "vip", a, "tenant", tenant, "kind", kind, "err", err)
	}
}

// active reports whether a is still announced, and its tenant.
func (an *Announcer) active(a netip.Addr) (tenant string, ok bool) {
	an.mu.Lock()
	defer an.mu.Unlock()
	tenant, ok = an.set[a]
	return tenant, ok
}

// Run sends the rest of each burst and the periodic repeats until ctx ends.
func (an *Announcer) Run(ctx context.Context) {
	type pending struct {
		a    netip.Addr
		left int
		at   time.Time
	}
	var bursts []pending
	var repeat <-chan time.Time
	if an.cfg.RepeatInterval > 0 {
		t := time.NewTicker(an.cfg.RepeatInterval)
		defer t.Stop()
		repeat = t.C
	}
	for {
		var next <-chan time.Time
		if len(bursts) > 0 {
			soonest := bursts[0].at
			for _, b := range bursts[1:] {
				if b.at.Before(soonest) {
					soonest = b.at
				}
			}
			next = time.After(time.Until(soonest))
		}
		select {
		case <-ctx.Done():
			return
		case a := <-an.kick:
			bursts = append(bursts, pending{a: a, left: an.cfg.Burst - 1, at: time.Now().Add(an.cfg.BurstInterval)})
		case <-next:
			now := time.Now()
			kept := bursts[:0]
			for _, b := range bursts {
				if !b.at.After(now) {
					tenant, ok := an.active(b.a)
					if b.left <= 0 || !ok {
						continue
					}
					an.send(b.a, tenant, "takeover")
					b.left--
					b.at = now.Add(an.cfg.BurstInterval)
				}
				if b.left > 0 {
					kept = append(kept, b)
				}
			}
			bursts = kept
		case <-repeat:
			an.mu.Lock()
			all := maps.Clone(an.set)
			an.mu.Unlock()
			for a, tenant := range all {
				an.send(a, tenant, "repeat")
			}
		}
	}
}
