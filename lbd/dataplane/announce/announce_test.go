package announce

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"

	"github.com/edgelb/edgelb/internal/logcapture"
)

// sent is one announcement as the Sender saw it, with its kind as the
// Announcer reported it to the onSent hook.
type sent struct {
	a    netip.Addr
	kind string
	at   time.Time
}

// recorder is a Sender that records every announcement (and can fail them).
type recorder struct {
	mu   sync.Mutex
	got  []sent
	fail error
}

func (r *recorder) Announce(a netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	r.got = append(r.got, sent{a: a, at: time.Now()})
	return nil
}

func (r *recorder) Close() error { return nil }

// of returns what was sent for a, with kinds filled in from kinds (in order:
// the Announcer reports each success right after the Sender returns; one
// not reported yet is left out).
func (r *recorder) of(a netip.Addr, kinds *kindLog) []sent {
	ks := kinds.of(a)
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []sent
	for _, s := range r.got {
		if s.a == a && len(out) < len(ks) {
			s.kind = ks[len(out)]
			out = append(out, s)
		}
	}
	return out
}

func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

// kindLog collects the onSent callbacks.
type kindLog struct {
	mu sync.Mutex
	m  map[netip.Addr][]string
}

func (k *kindLog) add(a netip.Addr, kind string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[a] = append(k.m[a], kind)
}

func (k *kindLog) of(a netip.Addr) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.m[a]...)
}

func start(t *testing.T, cfg Config, s Sender, log *slog.Logger) (*Announcer, *kindLog) {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	an := New(cfg, s, log)
	kinds := &kindLog{m: map[netip.Addr][]string{}}
	an.SetOnSent(kinds.add)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { an.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return an, kinds
}

// waitFor polls cond; the limit is generous, since only counts and order
// are asserted, never how fast they came.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func kindsOf(ss []sent) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.kind)
	}
	return out
}

// A VIP added gets its burst — the first at once, from Added itself, the
// rest at least the burst interval apart — and then periodic repeats; a
// second VIP gets a burst of its own. IPv6 goes through the same schedule
// (the Sender picks ARP or NDP by family).
func TestBurstThenRepeats(t *testing.T) {
	const burst, burstEvery, repeatEvery = 4, 40 * time.Millisecond, 250 * time.Millisecond
	r := &recorder{}
	an, kinds := start(t, Config{Burst: burst, BurstInterval: burstEvery, RepeatInterval: repeatEvery}, r, nil)
	v4, v6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")

	an.Added(v4, "acme")
	if got := r.of(v4, kinds); len(got) != 1 {
		t.Fatalf("right after Added: %d announcements, want the first one sent at once", len(got))
	}
	an.Added(v6, "acme")
	if got := r.of(v6, kinds); len(got) != 1 {
		t.Fatalf("right after Added (IPv6): %d announcements, want 1", len(got))
	}

	for _, a := range []netip.Addr{v4, v6} {
		waitFor(t, "the burst and two repeats for "+a.String(), func() bool { return len(r.of(a, kinds)) >= burst+2 })
		got := r.of(a, kinds)
		for i, s := range got[:burst+2] {
			want := "takeover"
			if i >= burst {
				want = "repeat"
			}
			if s.kind != want {
				t.Fatalf("%s: kinds %v, want %d takeover then repeat", a, kindsOf(got), burst)
			}
		}
		// Timers never fire early: the burst is spread by at least its
		// interval, less the time between the Announcer taking "now" and
		// the Sender recording (generous: a loaded host may stall it).
		for i := 1; i < burst; i++ {
			if gap := got[i].at.Sub(got[i-1].at); gap < burstEvery/2 {
				t.Errorf("%s: burst announcements %d and %d only %v apart, want ≥ %v", a, i-1, i, gap, burstEvery)
			}
		}
	}

	// Repeats come from a ticker: about one per interval per VIP (a tick
	// that waited in the channel may follow the next closely: one spare).
	time.Sleep(2 * repeatEvery)
	for _, a := range []netip.Addr{v4, v6} {
		got := r.of(a, kinds)
		span := got[len(got)-1].at.Sub(got[0].at)
		if repeats := len(got) - burst; repeats > int(span/repeatEvery)+2 {
			t.Errorf("%s: %d repeats within %v, want about one per %v", a, repeats, span, repeatEvery)
		}
	}
	waitFor(t, "Counts to agree with the sender", func() bool {
		sent, failed := an.Counts()
		return failed == 0 && sent == uint64(r.total())
	})
}

// Nothing is sent for a VIP after Removed: neither the rest of its burst nor
// repeats; other VIPs go on.
func TestNoneAfterRemoved(t *testing.T) {
	const burstEvery, repeatEvery = 50 * time.Millisecond, 40 * time.Millisecond
	r := &recorder{}
	an, kinds := start(t, Config{Burst: 5, BurstInterval: burstEvery, RepeatInterval: repeatEvery}, r, nil)
	gone, stays := netip.MustParseAddr("192.0.2.20"), netip.MustParseAddr("192.0.2.21")

	an.Added(stays, "acme")
	an.Added(gone, "acme")
	an.Removed(gone) // well before the burst's second announcement is due
	// A repeat already under way when Removed ran may still go out: wait
	// for the stayer to get several, then expect no more for the removed.
	waitFor(t, "announcements for the VIP that stays", func() bool { return len(r.of(stays, kinds)) >= 7 })
	before := len(r.of(gone, kinds))
	if before > 2 {
		t.Fatalf("removed VIP: %d announcements (%v), want the first and at most one repeat in flight", before, kindsOf(r.of(gone, kinds)))
	}
	n := len(r.of(stays, kinds))
	waitFor(t, "more announcements for the VIP that stays", func() bool { return len(r.of(stays, kinds)) >= n+3 })
	if after := len(r.of(gone, kinds)); after != before {
		t.Errorf("removed VIP: %d announcements after Removed settled, then %d", before, after)
	}

	// Added again, it is announced again.
	an.Added(gone, "acme")
	waitFor(t, "the re-added VIP's burst", func() bool { return len(r.of(gone, kinds)) >= before+2 })
}

// A burst of 1 and no repeat interval: exactly one announcement.
func TestSingleAnnouncement(t *testing.T) {
	r := &recorder{}
	an, kinds := start(t, Config{Burst: 1, BurstInterval: 5 * time.Millisecond, RepeatInterval: -1}, r, nil)
	a := netip.MustParseAddr("192.0.2.30")
	an.Added(a, "acme")
	time.Sleep(100 * time.Millisecond)
	if got := r.of(a, kinds); len(got) != 1 {
		t.Errorf("%d announcements (%v), want 1", len(got), kindsOf(got))
	}
}

// A failed announcement is counted and logged with the VIP and its tenant
// (to grep by either); the tenant of an address re-announced after a restart is filled
// in with SetTenant.
func TestFailureLogged(t *testing.T) {
	var buf logcapture.Buffer
	r := &recorder{fail: errors.New("network is down")}
	an, _ := start(t, Config{Burst: 2, BurstInterval: 100 * time.Millisecond}, r, slog.New(slog.NewJSONHandler(&buf, nil)))
	a, b := netip.MustParseAddr("192.0.2.40"), netip.MustParseAddr("2001:db8::40")
	an.Added(a, "acme")
	an.Added(b, "")
	an.SetTenant(b, "globex")
	an.SetTenant(netip.MustParseAddr("192.0.2.99"), "nobody") // not announced: ignored
	waitFor(t, "both bursts to fail", func() bool { _, failed := an.Counts(); return failed >= 4 })
	if sent, _ := an.Counts(); sent != 0 {
		t.Errorf("%d counted as sent", sent)
	}
	tenants := map[string]map[string]bool{}
	for _, rec := range buf.MustRecords(t) {
		if rec["msg"] != "announce VIP" {
			continue
		}
		vip, _ := rec["vip"].(string)
		tenant, ok := rec["tenant"].(string)
		if !ok || rec["err"] != "network is down" {
			t.Errorf("log record %v lacks the tenant or the error", rec)
		}
		if tenants[vip] == nil {
			tenants[vip] = map[string]bool{}
		}
		tenants[vip][tenant] = true
	}
	if !tenants["192.0.2.40"]["acme"] || !tenants["2001:db8::40"]["globex"] {
		t.Errorf("tenants logged per VIP: %v; want acme for 192.0.2.40 and globex for 2001:db8::40 (after SetTenant)", tenants)
	}
}

var hw = net.HardwareAddr{0x02, 0x00, 0x5e, 0x10, 0x20, 0x30}

// The IPv4 announcement on the wire: an ARP request (RFC 5227's
// announcement) whose sender and target protocol addresses are both the VIP,
// from the interface's MAC, in a broadcast frame.
func TestGratuitousARPBytes(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.50")
	p, err := gratuitousARP(hw, vip)
	if err != nil {
		t.Fatal(err)
	}
	// The frame arp.Client.WriteTo sends: to broadcast, from our MAC.
	pb, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	fb, err := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: hw, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fb[0:6], ethernet.Broadcast) || !bytes.Equal(fb[6:12], hw) || binary.BigEndian.Uint16(fb[12:14]) != 0x0806 {
		t.Errorf("ethernet header % x: want broadcast, from %s, type ARP", fb[:14], hw)
	}
	b := fb[14:]
	want := []struct {
		what string
		got  []byte
		want []byte
	}{
		{"hardware type (Ethernet)", b[0:2], []byte{0, 1}},
		{"protocol type (IPv4)", b[2:4], []byte{0x08, 0x00}},
		{"address lengths", b[4:6], []byte{6, 4}},
		{"operation (request)", b[6:8], []byte{0, 1}},
		{"sender MAC", b[8:14], hw},
		{"sender IP", b[14:18], vip.AsSlice()},
		{"target MAC", b[18:24], ethernet.Broadcast},
		{"target IP", b[24:28], vip.AsSlice()},
	}
	for _, w := range want {
		if !bytes.Equal(w.got, w.want) {
			t.Errorf("%s: % x, want % x", w.what, w.got, w.want)
		}
	}
	if p.Operation != arp.OperationRequest {
		t.Errorf("operation %v, want request", p.Operation)
	}
	if _, err := gratuitousARP(hw, netip.MustParseAddr("2001:db8::1")); err == nil {
		t.Error("an IPv6 address made a gratuitous ARP")
	}
}

// The IPv6 announcement: an unsolicited neighbour advertisement to all-nodes
// with the override flag (neighbours replace the old owner's MAC) and the
// target link-layer address option. The checksum is the kernel's (the NDP
// socket sets IPV6_CHECKSUM); here it is computed over the pseudo-header the
// kernel uses and checked independently.
func TestUnsolicitedNABytes(t *testing.T) {
	vip := netip.MustParseAddr("2001:db8::50")
	src := netip.MustParseAddr("fe80::5eff:fe10:2030")
	dst := netip.IPv6LinkLocalAllNodes()
	b, err := ndp.MarshalMessageChecksum(unsolicitedNA(hw, vip), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 32 {
		t.Fatalf("%d bytes (% x), want 32: 4 ICMPv6 + 20 NA + 8 option", len(b), b)
	}
	if b[0] != 136 || b[1] != 0 {
		t.Errorf("type %d code %d, want 136 (neighbour advertisement) 0", b[0], b[1])
	}
	if flags := b[4]; flags != 0x20 {
		t.Errorf("flags %#02x, want 0x20: override set, router and solicited clear", flags)
	}
	if !bytes.Equal(b[5:8], []byte{0, 0, 0}) {
		t.Errorf("reserved % x, want zero", b[5:8])
	}
	if !bytes.Equal(b[8:24], vip.AsSlice()) {
		t.Errorf("target % x, want %s", b[8:24], vip)
	}
	if b[24] != 2 || b[25] != 1 || !bytes.Equal(b[26:32], hw) {
		t.Errorf("option % x, want type 2 (target link-layer address), length 1 (8 bytes), %s", b[24:32], hw)
	}
	if got := icmpv6Checksum(src, dst, b); got != 0 {
		t.Errorf("checksum %#04x does not verify (sum over pseudo-header and message = %#04x, want 0)", binary.BigEndian.Uint16(b[2:4]), got)
	}
	// ndp parses it back as what was meant.
	m, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok || !na.Override || na.Solicited || na.Router || na.TargetAddress != vip {
		t.Errorf("parsed back as %+v", m)
	}
}

// icmpv6Checksum is RFC 1071's one's-complement sum over the RFC 8200
// pseudo-header and msg, complemented: 0 when msg's checksum is right.
func icmpv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var ph []byte
	ph = append(ph, src.AsSlice()...)
	ph = append(ph, dst.AsSlice()...)
	ph = binary.BigEndian.AppendUint32(ph, uint32(len(msg)))
	ph = append(ph, 0, 0, 0, 58) // next header: ICMPv6
	data := append(ph, msg...)
	if len(data)%2 == 1 {
		data = append(data, 0)
	}
	var sum uint32
	for i := 0; i < len(data); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(data[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// A closed gate (the fence's lease ran out) stops every announcement, the
// burst and the repeats alike; opened again, the repeats resume.
func TestAllowedGate(t *testing.T) {
	var open atomic.Bool
	open.Store(true)
	r := &recorder{}
	an, _ := start(t, Config{Burst: 2, BurstInterval: 20 * time.Millisecond, RepeatInterval: 30 * time.Millisecond, Allowed: open.Load}, r, nil)
	a := netip.MustParseAddr("192.0.2.1")
	an.Added(a, "t")
	waitFor(t, "the burst and a repeat", func() bool { return r.total() >= 3 })
	open.Store(false)
	n := r.total()
	b := netip.MustParseAddr("192.0.2.2")
	an.Added(b, "t") // would send at once were the gate open
	// Several repeat intervals pass; nothing may go out.
	time.Sleep(200 * time.Millisecond)
	if got := r.total(); got != n {
		t.Errorf("%d announcements with the gate closed", got-n)
	}
	open.Store(true)
	waitFor(t, "repeats once the gate opens", func() bool { return r.total() > n })
}
