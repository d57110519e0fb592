// Package nftrules is the rule engine over nftables (netlink, through
// github.com/google/nftables): the SNAT of nat-mode VIPs, the takeover guard
// and the source-range filter, in one table of edgelb's own (inet edgelb).
// Every rule is fixed when the table is made; what changes with the VIPs is
// the elements of sets keyed by VIP (and protocol and port), so adding,
// removing or moving a VIP is one netlink batch of element changes, with no
// process started and no rule rewritten.
//
// SNAT. nftables has no IPVS match (xt_ipvs). IPVS in nat mode with
// net.ipv4.vs.conntrack=1 keeps the connection's conntrack entry: its
// original tuple is client → VIP:port, and IPVS rewrites the reply tuple to
// name the backend. The forwarded packet then passes POSTROUTING with that
// entry still unconfirmed, so the nat chain sees it, and "ct original daddr"
// is the VIP. The postrouting rule looks that address up in the set
// snat4/snat6 and SNATs to it (the address is already in the register: no
// map needed). This is option (b) of issue 21; marking in prerouting (a)
// would need a second hook and a mark bit shared with the host's own rules
// for what conntrack already records. Only the first packet of a connection
// walks a nat chain, so the rule costs nothing per packet after that.
//
// Guard. In prerouting at mangle priority, TCP packets without SYN that open
// a conntrack entry go to the chain guard: one that names a VIP:port the VIP
// serves (set served4/6) returns; one to a VIP in its takeover window (set
// takeover4/6, whose elements expire on their own: the kernel keeps the
// window) is dropped. Package snat says why.
//
// Source ranges. In input at filter priority (IPVS takes a VIP's packets
// after filter INPUT; package srcrange says why that hook), a packet whose
// VIP . protocol . port . source is in sr_allow4/6 (interval ranges) returns,
// and one whose VIP . protocol . port is in sr_ports4/6 is dropped; that set
// counts its drops per element. deny_all_sources is a port with no range.
// The chains only return or drop, never accept.
package nftrules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TableName is the table of ours, in the inet family.
const TableName = "edgelb"

// The sets, per family (index 0: IPv4, 1: IPv6).
var (
	setSNAT     = [2]string{"snat4", "snat6"}
	setServed   = [2]string{"served4", "served6"}
	setTakeover = [2]string{"takeover4", "takeover6"}
	setSRPorts  = [2]string{"sr_ports4", "sr_ports6"}
	setSRAllow  = [2]string{"sr_allow4", "sr_allow6"}
)

// Table is the rule engine: one nftables table, its sets and what this
// process last applied to them.
type Table struct {
	log   *slog.Logger
	guard time.Duration
	conn  *nftables.Conn
	nl    *netlink.Conn // conn's socket, for deadlines (call)
	table *nftables.Table
	sets  map[string]*nftables.Set

	mu sync.Mutex
	// applied is, per set, the elements the kernel holds as far as this
	// process knows (by key); known says whether that is read or applied
	// since the last Forget.
	applied map[string]map[string]nftables.SetElement
	known   map[string]bool
	// rebuild makes the next sync rewrite the rules first (after Forget):
	// one batch, sets kept, so it costs a packet nothing.
	rebuild bool
	// held is each filtered VIP's source-range elements as applied (its
	// fingerprint), for Holds.
	held map[netip.Addr]string
	// memo is each filtered VIP's elements as last built (views.go).
	memo map[netip.Addr]filterMemo

	// Drop counts carried over elements that went (source-range changes).
	dropsMu sync.Mutex
	drops   map[netip.Addr]*dropCount

	// afterFirst runs once, after the first SNAT and filter sync both
	// succeeded: the removal of an older version's iptables chains.
	afterFirst       func()
	snatOK, filterOK bool
	firstDone        bool
}

type dropCount struct {
	last map[string]uint64 // per element key, as last read
	base uint64            // counts of elements gone
}

// ErrUnsupported marks an Open that failed because the kernel does not take
// edgelb's table at all (no nf_tables netlink, or no inet family): nothing
// was created, so another rule engine may be used instead. Any other error
// (a timeout, a rule the kernel refused after the table was made) leaves
// the host in a state that only nftables should go on from.
var ErrUnsupported = errors.New("the kernel does not take an nftables inet table")

// Open makes (or takes over) the table, its sets and its rules. The table
// comes first, alone; then the rules are rewritten (atomically, with the
// chains flushed in the same batch) and the sets keep their elements, so a
// restart changes nothing a packet sees. An error wrapping ErrUnsupported
// means the kernel refused the table itself and nothing changed.
func Open(ctx context.Context, guard time.Duration, log *slog.Logger) (*Table, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t := &Table{log: log, guard: guard, sets: map[string]*nftables.Set{},
		applied: map[string]map[string]nftables.SetElement{}, known: map[string]bool{},
		held: map[netip.Addr]string{}, drops: map[netip.Addr]*dropCount{}}
	if err := t.dial(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	// A kernel without the inet family refuses the table alone at once; a
	// whole batch that fails early can leave google/nftables waiting for
	// acknowledgements that never come (seen with Debian's UML kernel).
	t.conn.AddTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet})
	if err := t.flush(); err != nil {
		t.conn.CloseLasting()
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			// Refused at once: the kernel lacks the family or nf_tables.
			err = fmt.Errorf("%w: %w", ErrUnsupported, err)
		}
		return nil, fmt.Errorf("create nftables table inet %s: %w", TableName, err)
	}
	if err := t.build(); err != nil {
		t.conn.CloseLasting()
		return nil, err
	}
	return t, nil
}

// callTimeout bounds one netlink exchange with the kernel: the library
// takes no context, and a pass must not hang on it.
const callTimeout = 10 * time.Second

// dial opens the lasting netlink connection, keeping the socket so that
// each exchange can be given a deadline.
func (t *Table) dial() error {
	c, err := nftables.New(nftables.AsLasting(), nftables.WithSockOptions(func(nl *netlink.Conn) error {
		t.nl = nl
		return nil
	}))
	if err != nil {
		return fmt.Errorf("open nftables netlink socket: %w", err)
	}
	t.conn = c
	return nil
}

// call runs one exchange with the kernel under callTimeout. After a
// timeout the connection is replaced: replies still due on it would be
// taken for the next exchange's.
func (t *Table) call(f func() error) error {
	t.nl.SetDeadline(time.Now().Add(callTimeout))
	err := f()
	t.nl.SetDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.conn.CloseLasting()
		if derr := t.dial(); derr != nil {
			return errors.Join(err, derr)
		}
	}
	return err
}

// flush sends the batch queued on the connection.
func (t *Table) flush() error { return t.call(t.conn.Flush) }

// Close releases the netlink socket; the table stays (a restarted lbd takes
// it over).
func (t *Table) Close() error { return t.conn.CloseLasting() }

// OnFirstSync sets what runs once, in its own goroutine, after the first
// SNAT and filter syncs both succeeded.
func (t *Table) OnFirstSync(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.afterFirst = f
}

func fams(fm int) (nftables.SetDatatype, uint32, byte) {
	if fm == 1 {
		return nftables.TypeIP6Addr, 16, unix.NFPROTO_IPV6
	}
	return nftables.TypeIPAddr, 4, unix.NFPROTO_IPV4
}

// build adds the table, sets, chains and rules in one batch.
func (t *Table) build() error {
	c := t.conn
	tab := c.AddTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet})
	t.table = tab
	for fm := range 2 {
		addrT, _, _ := fams(fm)
		sets := []*nftables.Set{
			{Name: setSNAT[fm], KeyType: addrT, Comment: "nat-mode VIPs: IPVS connections to them leave with the VIP as source"},
			{Name: setServed[fm], KeyType: nftables.MustConcatSetType(addrT, nftables.TypeInetService), Concatenation: true,
				Comment: "VIP . TCP port a nat-mode VIP serves: the takeover guard lets these through"},
			{Name: setTakeover[fm], KeyType: addrT, HasTimeout: true, Comment: "VIPs in their takeover window"},
			{Name: setSRPorts[fm], KeyType: nftables.MustConcatSetType(addrT, nftables.TypeInetProto, nftables.TypeInetService), Concatenation: true, Counter: true,
				Comment: "VIP . protocol . port with source ranges: what is not allowed is dropped"},
			{Name: setSRAllow[fm], KeyType: nftables.MustConcatSetType(addrT, nftables.TypeInetProto, nftables.TypeInetService, addrT), Concatenation: true, Interval: true,
				Comment: "VIP . protocol . port . source range allowed"},
		}
		for _, s := range sets {
			s.Table = tab
			if err := c.AddSet(s, nil); err != nil {
				return fmt.Errorf("nftables set %s: %w", s.Name, err)
			}
			t.sets[s.Name] = s
		}
	}
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: tab, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle})
	guard := c.AddChain(&nftables.Chain{Name: "guard", Table: tab})
	input := c.AddChain(&nftables.Chain{Name: "input", Table: tab, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	for _, ch := range []*nftables.Chain{post, pre, guard, input} {
		c.FlushChain(ch)
	}
	for _, r := range t.rules(post, pre, guard, input) {
		c.AddRule(r)
	}
	if err := t.flush(); err != nil {
		return fmt.Errorf("create nftables table inet %s: %w", TableName, err)
	}
	return nil
}

// Registers: reg 1 is the 16-byte NFT_REG_1, which 32-bit registers 8..11
// overlap; a concatenation's fields go into consecutive 32-bit registers.
const reg1 = 1

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

func (t *Table) lookup(name string, reg uint32) *expr.Lookup {
	s := t.sets[name]
	return &expr.Lookup{SourceRegister: reg, SetName: s.Name, SetID: s.ID}
}

// daddr loads the destination address into reg 1, saddr the source into
// register reg.
func daddr(fm int) *expr.Payload {
	if fm == 1 {
		return &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16}
	}
	return &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
}

func saddr(fm int, reg uint32) *expr.Payload {
	if fm == 1 {
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16}
	}
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
}

func dport(reg uint32) *expr.Payload {
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

func (t *Table) rules(post, pre, guard, input *nftables.Chain) []*nftables.Rule {
	var rs []*nftables.Rule
	add := func(ch *nftables.Chain, e ...expr.Any) {
		rs = append(rs, &nftables.Rule{Table: t.table, Chain: ch, Exprs: e})
	}
	for fm := range 2 {
		_, alen, p := fams(fm)
		// The next 32-bit register after the address.
		next := uint32(8 + alen/4)

		// A packet still addressed to a VIP was not forwarded by IPVS
		// (which rewrites the destination to a node): say a client's
		// packet a host forwards just after the VIP moved away from it.
		// It keeps its source; SNAT to the VIP would make it come back
		// to the new owner from its own address, a martian.
		add(post, append(nfproto(p), daddr(fm), t.lookup(setSNAT[fm], reg1),
			&expr.Verdict{Kind: expr.VerdictReturn})...)
		// ct original daddr is 16 bytes in the inet family; the lookup
		// and the NAT read as much of it as the family's address is.
		add(post, append(nfproto(p),
			&expr.Ct{Register: reg1, Key: expr.CtKeyDST, Direction: 0},
			t.lookup(setSNAT[fm], reg1),
			&expr.NAT{Type: expr.NATTypeSourceNAT, Family: uint32(p), RegAddrMin: reg1},
		)...)

		add(guard, append(nfproto(p), daddr(fm), dport(next), t.lookup(setServed[fm], reg1),
			&expr.Verdict{Kind: expr.VerdictReturn})...)
		add(guard, append(nfproto(p), daddr(fm), t.lookup(setTakeover[fm], reg1),
			&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})...)

		l4 := &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next}
		add(input, append(nfproto(p), daddr(fm), l4, dport(next+1), saddr(fm, next+2), t.lookup(setSRAllow[fm], reg1),
			&expr.Verdict{Kind: expr.VerdictReturn})...)
		add(input, append(nfproto(p), daddr(fm), l4, dport(next+1), t.lookup(setSRPorts[fm], reg1),
			&expr.Verdict{Kind: expr.VerdictDrop})...)
	}
	// TCP without SYN (of SYN, ACK, RST, FIN only SYN set: iptables'
	// --syn) that opens a conntrack entry: rare, and the only packets the
	// guard looks at.
	add(pre,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{0x17}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0x02}},
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0, 0, 0, 0}},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: guard.Name},
	)
	return rs
}

// Keys. A concatenation pads each field to 4 bytes.

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func addrKey(a netip.Addr) []byte { return a.AsSlice() }

func portKey(p uint16) []byte { return pad4([]byte{byte(p >> 8), byte(p)}) }

func protoNum(proto string) (byte, bool) {
	switch strings.ToLower(proto) {
	case "tcp":
		return unix.IPPROTO_TCP, true
	case "udp":
		return unix.IPPROTO_UDP, true
	case "sctp":
		return unix.IPPROTO_SCTP, true
	}
	return 0, false
}

func fam(a netip.Addr) int {
	if a.Is6() {
		return 1
	}
	return 0
}

func elemID(e nftables.SetElement) string { return string(e.Key) + "|" + string(e.KeyEnd) }

// keyAddr is the VIP an element's key starts with.
func keyAddr(fm int, key []byte) netip.Addr {
	if fm == 1 && len(key) >= 16 {
		return netip.AddrFrom16([16]byte(key[:16]))
	}
	if len(key) >= 4 {
		return netip.AddrFrom4([4]byte(key[:4]))
	}
	return netip.Addr{}
}

// readSet reads a set's elements from the kernel; the caller holds mu.
func (t *Table) readSet(name string) error {
	var els []nftables.SetElement
	err := t.call(func() (err error) { els, err = t.conn.GetSetElements(t.sets[name]); return err })
	if err != nil {
		return fmt.Errorf("read nftables set %s: %w", name, err)
	}
	m := make(map[string]nftables.SetElement, len(els))
	for _, e := range els {
		if e.IntervalEnd {
			continue
		}
		m[elemID(e)] = e
	}
	t.applied[name], t.known[name] = m, true
	return nil
}

// sync makes the named sets hold exactly want (by element key) with one
// batch for all of them. A set not known is read first. changed reports
// whether anything was read or written. The caller holds mu.
func (t *Table) sync(want map[string]map[string]nftables.SetElement) (changed bool, err error) {
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	if t.rebuild {
		if err := t.build(); err != nil {
			return false, err
		}
		t.rebuild = false
	}
	for _, n := range names {
		if !t.known[n] {
			changed = true
			if err := t.readSet(n); err != nil {
				// The table may be gone (flushed by hand): make it again,
				// with empty sets, and fill them below.
				if berr := t.build(); berr != nil {
					return true, errors.Join(err, berr)
				}
				if err := t.readSet(n); err != nil {
					return true, err
				}
			}
		}
	}
	write := false
	for _, n := range names {
		s, have, w := t.sets[n], t.applied[n], want[n]
		var del, add []nftables.SetElement
		for id, e := range have {
			if _, ok := w[id]; !ok {
				del = append(del, nftables.SetElement{Key: e.Key, KeyEnd: e.KeyEnd})
			}
		}
		for id, e := range w {
			if _, ok := have[id]; !ok {
				add = append(add, e)
			}
		}
		if len(del) > 0 {
			if err := t.conn.SetDeleteElements(s, del); err != nil {
				return true, fmt.Errorf("nftables set %s: delete %d elements: %w", n, len(del), err)
			}
			write = true
		}
		if len(add) > 0 {
			if err := t.conn.SetAddElements(s, add); err != nil {
				return true, fmt.Errorf("nftables set %s: add %d elements: %w", n, len(add), err)
			}
			write = true
		}
	}
	if !write {
		return changed, nil
	}
	if err := t.flush(); err != nil {
		// The batch is all or nothing, but what the kernel holds is read
		// again next time rather than assumed.
		for _, n := range names {
			t.known[n] = false
		}
		return true, fmt.Errorf("apply nftables set changes (%s): %w", strings.Join(names, ", "), err)
	}
	for _, n := range names {
		t.applied[n] = want[n]
	}
	return true, nil
}

// WithoutSNAT tells the table that no SNAT sync will come (snat: none):
// the first filter sync alone completes the first sync.
func (t *Table) WithoutSNAT() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.snatOK = true
}

// synced notes a successful sync of one half and runs afterFirst once both
// have succeeded; the caller holds mu.
func (t *Table) synced(snat bool) {
	if snat {
		t.snatOK = true
	} else {
		t.filterOK = true
	}
	if t.snatOK && t.filterOK && !t.firstDone {
		t.firstDone = true
		if f := t.afterFirst; f != nil {
			go f()
		}
	}
}

// Forget makes the next syncs rewrite the rules (in one batch, the sets
// kept) and read every set from the kernel before they compare (the
// periodic repair).
func (t *Table) Forget() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.known = map[string]bool{}
	t.rebuild = true
}

// Intact reports whether the kernel holds the table with its chains, each
// with its rules, and every set with exactly the elements last applied.
// It reads them through netlink (no process). The postrouting chain's rule
// is not counted: google/nftables v0.3.0 cannot decode the ct expression it
// wrote (it reads the one-byte direction as four); the chain must exist,
// and every repair (Forget) rewrites all rules anyway.
func (t *Table) Intact(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	// Under mu: one exchange at a time on the connection (a few dumps,
	// milliseconds; a pass waits for them).
	t.mu.Lock()
	defer t.mu.Unlock()
	applied := make(map[string]map[string]nftables.SetElement, len(t.applied))
	for n, m := range t.applied {
		if t.known[n] {
			applied[n] = m
		}
	}
	if err := t.call(func() error { _, err := t.conn.ListChain(t.table, "postrouting"); return err }); err != nil {
		return false
	}
	want := map[string]int{"prerouting": 1, "guard": 4, "input": 4}
	for ch, n := range want {
		var rs []*nftables.Rule
		err := t.call(func() (err error) {
			rs, err = t.conn.GetRules(t.table, &nftables.Chain{Name: ch, Table: t.table})
			return err
		})
		if err != nil || len(rs) != n {
			return false
		}
	}
	for n, m := range applied {
		var els []nftables.SetElement
		err := t.call(func() (err error) { els, err = t.conn.GetSetElements(t.sets[n]); return err })
		if err != nil {
			return false
		}
		got := 0
		for _, e := range els {
			if e.IntervalEnd {
				continue
			}
			if _, ok := m[elemID(e)]; !ok {
				return false
			}
			got++
		}
		if got != len(m) {
			return false
		}
	}
	return true
}
