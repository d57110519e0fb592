package srcrange

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeKernel stands in for iptables: -save prints listing[cmd], -restore
// records its input (and fails while fail is set).
type fakeKernel struct {
	listing  map[string]string // by save command
	restores []string          // "cmd\ninput"
	saves    int
	fail     error
}

func (k *fakeKernel) run(_ context.Context, name string, args []string, stdin string) ([]byte, error) {
	switch {
	case strings.HasSuffix(name, "-save"):
		k.saves++
		return []byte(k.listing[name]), nil
	case strings.HasSuffix(name, "-restore"):
		if strings.Join(args, " ") != "--noflush" {
			return nil, errors.New("restore without --noflush would flush the host's rules")
		}
		if k.fail != nil {
			return nil, k.fail
		}
		k.restores = append(k.restores, name+"\n"+stdin)
		return nil, nil
	}
	return nil, errors.New("unexpected command " + name)
}

func (k *fakeKernel) take() []string {
	r := k.restores
	k.restores = nil
	return r
}

func vip(addr string, ranges ...string) VIP {
	v := VIP{Addr: netip.MustParseAddr(addr)}
	s := Service{Name: "t/web", Ports: []Port{{"tcp", 80}, {"tcp", 443}, {"udp", 53}}}
	for _, r := range ranges {
		s.Ranges = append(s.Ranges, netip.MustParsePrefix(r))
	}
	v.Services = []*Service{&s}
	return v
}

func open(t *testing.T, k *fakeKernel) *Filter {
	t.Helper()
	f, err := Open(context.Background(), "iptables-legacy", "ip6tables-legacy", k.run)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRules(t *testing.T) {
	v := vip("192.0.2.1", "10.0.0.0/8", "203.0.113.0/24")
	chain, rules := Rules(v)
	if !strings.HasPrefix(chain, ChainPrefix) || len(chain) > 28 {
		t.Fatalf("chain %q: want %s… within iptables' 28 characters", chain, ChainPrefix)
	}
	want := strings.ReplaceAll(`-A C -s 10.0.0.0/8 -p tcp -m multiport --dports 80,443 -j RETURN
-A C -s 203.0.113.0/24 -p tcp -m multiport --dports 80,443 -j RETURN
-A C -p tcp -m multiport --dports 80,443 -m comment --comment "edgelb:t/web" -j DROP
-A C -s 10.0.0.0/8 -p udp -m multiport --dports 53 -j RETURN
-A C -s 203.0.113.0/24 -p udp -m multiport --dports 53 -j RETURN
-A C -p udp -m multiport --dports 53 -m comment --comment "edgelb:t/web" -j DROP
`, "-A C ", "-A "+chain+" ")
	if rules != want {
		t.Errorf("rules:\n%s\nwant:\n%s", rules, want)
	}
	// The same ranges in another order are the same chain; other ranges,
	// or the same on another VIP, another chain.
	if c, _ := Rules(vip("192.0.2.1", "203.0.113.0/24", "10.0.0.0/8")); c != chain {
		t.Errorf("reordered ranges give chain %s, want %s", c, chain)
	}
	if c, _ := Rules(vip("192.0.2.1", "10.0.0.0/8")); c == chain {
		t.Error("other ranges, same chain name: a change would not be seen")
	}
	if c, _ := Rules(vip("192.0.2.2", "10.0.0.0/8", "203.0.113.0/24")); c == chain {
		t.Error("another VIP, same chain name")
	}
	// multiport takes 15 ports a rule; a hostile name cannot break out of
	// the comment.
	many := VIP{Addr: netip.MustParseAddr("2001:db8::1"), Services: []*Service{{Name: "t/x\" -j ACCEPT\n-A INPUT", Ranges: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/48")}}}}
	for p := range uint16(20) {
		many.Services[0].Ports = append(many.Services[0].Ports, Port{"tcp", 1000 + p})
	}
	_, rules = Rules(many)
	if n := strings.Count(rules, "-j DROP"); n != 2 {
		t.Errorf("20 ports: %d DROP rules, want 2 (15 + 5):\n%s", n, rules)
	}
	if strings.Contains(rules, "ACCEPT\n") || strings.Count(rules, "\n") != 4 {
		t.Errorf("the name escaped its comment:\n%s", rules)
	}
}

// Two services sharing a VIP keep their own ranges on their own ports.
func TestRulesSharedVIP(t *testing.T) {
	v := VIP{Addr: netip.MustParseAddr("192.0.2.1"), Services: []*Service{
		{Name: "t/b", Ports: []Port{{"tcp", 8080}}, Ranges: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/16")}},
		{Name: "t/a", Ports: []Port{{"tcp", 80}}, Ranges: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}},
	}}
	chain, rules := Rules(v)
	want := strings.ReplaceAll(`-A C -s 10.1.0.0/16 -p tcp -m multiport --dports 80 -j RETURN
-A C -p tcp -m multiport --dports 80 -m comment --comment "edgelb:t/a" -j DROP
-A C -s 10.2.0.0/16 -p tcp -m multiport --dports 8080 -j RETURN
-A C -p tcp -m multiport --dports 8080 -m comment --comment "edgelb:t/b" -j DROP
`, "-A C ", "-A "+chain+" ")
	if rules != want {
		t.Errorf("rules:\n%s\nwant:\n%s", rules, want)
	}
}

func TestSetFromEmpty(t *testing.T) {
	k := &fakeKernel{listing: map[string]string{"iptables-legacy-save": "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"}}
	f := open(t, k)
	a, b := vip("192.0.2.1", "10.0.0.0/8"), vip("192.0.2.2", "10.1.0.0/16")
	if f.Holds(a) {
		t.Fatal("Holds before anything was programmed")
	}
	// Nothing to filter: no process, and no jump planted on a host that
	// needs none.
	if err := f.Set(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if r := k.take(); len(r) != 0 {
		t.Fatalf("restores with nothing to filter: %q", r)
	}
	if err := f.Set(context.Background(), []VIP{a, b}); err != nil {
		t.Fatal(err)
	}
	r := k.take()
	if len(r) != 1 || !strings.HasPrefix(r[0], "iptables-legacy-restore\n") {
		t.Fatalf("restores %q, want one, IPv4 only", r)
	}
	ca, ra := Rules(a)
	cb, _ := Rules(b)
	in := r[0]
	for _, want := range []string{
		"*filter\n:" + Chain + " - [0:0]\n",
		":" + ca + " - [0:0]\n" + ra,
		":" + cb + " - [0:0]\n",
		"-A " + Chain + " -d 192.0.2.1/32 -j " + ca + "\n",
		"-A " + Chain + " -d 192.0.2.2/32 -j " + cb + "\n",
		"-I INPUT 1 -j " + Chain + "\n",
		"COMMIT\n",
	} {
		if !strings.Contains(in, want) {
			t.Errorf("restore input lacks %q:\n%s", want, in)
		}
	}
	if !f.Holds(a) || !f.Holds(b) {
		t.Error("Holds false after Set")
	}
	if f.Holds(vip("192.0.2.1", "10.9.0.0/16")) {
		t.Error("Holds true for other ranges than programmed")
	}
	// The same again: no process.
	if err := f.Set(context.Background(), []VIP{b, a}); err != nil {
		t.Fatal(err)
	}
	if r := k.take(); len(r) != 0 {
		t.Errorf("an unchanged Set ran %d restores", len(r))
	}
}

// A change of one VIP's ranges creates its new chain and deletes the old one;
// the other VIP's chain is not in the input (its rules and counters stay).
func TestSetChangesOnlyWhatChanged(t *testing.T) {
	k := &fakeKernel{listing: map[string]string{}}
	f := open(t, k)
	a, b, c6 := vip("192.0.2.1", "10.0.0.0/8"), vip("192.0.2.2", "10.1.0.0/16"), vip("2001:db8::1", "2001:db8:1::/48")
	if err := f.Set(context.Background(), []VIP{a, b, c6}); err != nil {
		t.Fatal(err)
	}
	if r := k.take(); len(r) != 2 {
		t.Fatalf("%d restores, want one per family", len(r))
	}
	a2 := vip("192.0.2.1", "10.0.0.0/8", "172.16.0.0/12")
	if err := f.Set(context.Background(), []VIP{a2, b, c6}); err != nil {
		t.Fatal(err)
	}
	r := k.take()
	if len(r) != 1 || !strings.HasPrefix(r[0], "iptables-legacy-restore\n") {
		t.Fatalf("restores %q, want one for IPv4 only", r)
	}
	ca, _ := Rules(a)
	ca2, _ := Rules(a2)
	cb, _ := Rules(b)
	in := r[0]
	if !strings.Contains(in, ":"+ca2+" - [0:0]\n") || !strings.Contains(in, "-F "+ca+"\n-X "+ca+"\n") {
		t.Errorf("want the new chain created and the old deleted:\n%s", in)
	}
	if strings.Contains(in, ":"+cb) || strings.Contains(in, "-A "+cb) || strings.Contains(in, "-X "+cb) {
		t.Errorf("the unchanged VIP's chain was rewritten:\n%s", in)
	}
	if !strings.Contains(in, "-A "+Chain+" -d 192.0.2.2/32 -j "+cb+"\n") {
		t.Errorf("the unchanged VIP lost its jump:\n%s", in)
	}
	if strings.Contains(in, "-I INPUT") {
		t.Errorf("the jump from INPUT planted twice:\n%s", in)
	}
	// Ranges removed: the VIP is open again, its chain gone.
	if err := f.Set(context.Background(), []VIP{b, c6}); err != nil {
		t.Fatal(err)
	}
	r = k.take()
	if len(r) != 1 || !strings.Contains(r[0], "-X "+ca2+"\n") || strings.Contains(r[0], "192.0.2.1") {
		t.Errorf("removing a VIP's ranges: %q", r)
	}
}

// A restarted lbd reads what the kernel holds: a VIP filtered as wanted is
// held (its address may go up before any iptables run) and costs no restore.
func TestOpenAdopts(t *testing.T) {
	a := vip("192.0.2.1", "10.0.0.0/8")
	ca, ra := Rules(a)
	stale := vip("192.0.2.2", "10.1.0.0/16")
	cs, rs := Rules(stale)
	listing := "*filter\n:INPUT ACCEPT [0:0]\n:" + Chain + " - [0:0]\n:" + ca + " - [0:0]\n:" + cs + " - [0:0]\n" +
		"-A INPUT -j " + Chain + "\n-A INPUT -p tcp --dport 22 -j ACCEPT\n" +
		"-A " + Chain + " -d 192.0.2.1/32 -j " + ca + "\n-A " + Chain + " -d 192.0.2.2/32 -j " + cs + "\n" + ra + rs + "COMMIT\n"
	k := &fakeKernel{listing: map[string]string{"iptables-legacy-save": listing}}
	f := open(t, k)
	if !f.Holds(a) || !f.Holds(stale) {
		t.Fatal("the kernel's filters not adopted")
	}
	if f.Holds(vip("192.0.2.2", "10.9.0.0/16")) {
		t.Fatal("a VIP whose ranges changed while lbd was down is held")
	}
	if err := f.Set(context.Background(), []VIP{a, stale}); err != nil {
		t.Fatal(err)
	}
	if r := k.take(); len(r) != 0 {
		t.Errorf("adopted state rewritten: %q", r)
	}
}

// A failed restore is an error, the VIP is not held, and the next Set reads
// the kernel again before it writes.
func TestSetFailure(t *testing.T) {
	k := &fakeKernel{listing: map[string]string{}, fail: errors.New("iptables-restore: line 3 failed")}
	f := open(t, k)
	a := vip("192.0.2.1", "10.0.0.0/8")
	err := f.Set(context.Background(), []VIP{a})
	if err == nil || !errors.Is(err, k.fail) {
		t.Fatalf("Set = %v, want the restore's error wrapped", err)
	}
	if f.Holds(a) {
		t.Fatal("held after a failed restore")
	}
	k.fail = nil
	saves := k.saves
	if err := f.Set(context.Background(), []VIP{a}); err != nil {
		t.Fatal(err)
	}
	if k.saves != saves+1 {
		t.Errorf("%d reads of the kernel after the failure, want 1", k.saves-saves)
	}
	if !f.Holds(a) {
		t.Error("not held after the retry")
	}
}

func TestDropped(t *testing.T) {
	k := &fakeKernel{listing: map[string]string{}}
	f := open(t, k)
	ctx := context.Background()
	if d, err := f.Dropped(ctx); err != nil || len(d) != 0 || k.saves != 1 {
		t.Fatalf("Dropped with nothing filtered = %v, %v after %d reads; want none and no process", d, err, k.saves-1)
	}
	a := vip("192.0.2.1", "10.0.0.0/8")
	if err := f.Set(ctx, []VIP{a}); err != nil {
		t.Fatal(err)
	}
	ca, _ := Rules(a)
	counted := func(chain string, tcp, udp int) string {
		return "*filter\n:" + Chain + " - [0:0]\n:" + chain + " - [0:0]\n[9:900] -A INPUT -j " + Chain + "\n" +
			"[9:900] -A " + Chain + " -d 192.0.2.1/32 -j " + chain + "\n" +
			"[4:240] -A " + chain + " -s 10.0.0.0/8 -p tcp -m multiport --dports 80,443 -j RETURN\n" +
			"[" + strconv.Itoa(tcp) + ":0] -A " + chain + " -p tcp -m multiport --dports 80,443 -m comment --comment \"edgelb:t/web\" -j DROP\n" +
			"[" + strconv.Itoa(udp) + ":0] -A " + chain + " -p udp -m multiport --dports 53 -m comment --comment \"edgelb:t/web\" -j DROP\nCOMMIT\n"
	}
	k.listing["iptables-legacy-save"] = counted(ca, 3, 2)
	d, err := f.Dropped(ctx)
	if err != nil || d[a.Addr] != 5 {
		t.Fatalf("Dropped = %v, %v; want 5 for %s (the RETURN's 4 are allowed packets)", d, err, a.Addr)
	}
	// The ranges change: the new chain starts from zero, the total goes on.
	a2 := vip("192.0.2.1", "10.0.0.0/8", "172.16.0.0/12")
	if err := f.Set(ctx, []VIP{a2}); err != nil {
		t.Fatal(err)
	}
	ca2, _ := Rules(a2)
	k.listing["iptables-legacy-save"] = counted(ca2, 1, 0)
	if d, _ := f.Dropped(ctx); d[a.Addr] != 6 {
		t.Errorf("after a change of ranges Dropped = %d, want 5 carried over + 1", d[a.Addr])
	}
}

// The periodic repair (Forget) reads the kernel again only for a family
// that has something to filter: a host without ranges starts no process.
func TestForgetReadsOnlyWhatIsFiltered(t *testing.T) {
	k := &fakeKernel{listing: map[string]string{}}
	f := open(t, k)
	ctx := context.Background()
	a := vip("192.0.2.1", "10.0.0.0/8")
	if err := f.Set(ctx, []VIP{a}); err != nil {
		t.Fatal(err)
	}
	f.Forget()
	saves := k.saves
	if err := f.Set(ctx, []VIP{a}); err != nil {
		t.Fatal(err)
	}
	if k.saves != saves+2 {
		t.Errorf("first repair: %d reads, want 2 (IPv4, and IPv6 read for the first time)", k.saves-saves)
	}
	// The kernel was flushed behind lbd's back: the repair puts it back.
	if r := k.take(); len(r) != 2 || !strings.Contains(r[1], "-I INPUT 1 -j "+Chain) {
		t.Errorf("after a flush the repair restored %q; want the chain and the jump again", r)
	}
	if err := f.Set(ctx, nil); err != nil {
		t.Fatal(err)
	}
	f.Forget()
	saves = k.saves
	if err := f.Set(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if k.saves != saves {
		t.Errorf("repair with nothing filtered ran %d reads", k.saves-saves)
	}
}

// A scrape does not wait for a Set stuck in iptables-restore (seconds on an
// emulated host).
func TestDroppedDoesNotWaitForSet(t *testing.T) {
	k := &fakeKernel{listing: map[string]string{}}
	f := open(t, k)
	ctx := context.Background()
	if err := f.Set(ctx, []VIP{vip("192.0.2.1", "10.0.0.0/8")}); err != nil {
		t.Fatal(err)
	}
	inRestore, release := make(chan struct{}), make(chan struct{})
	f.run = func(ctx context.Context, name string, args []string, stdin string) ([]byte, error) {
		if strings.HasSuffix(name, "-restore") {
			close(inRestore)
			<-release
		}
		return k.run(ctx, name, args, stdin)
	}
	setDone := make(chan error)
	go func() { setDone <- f.Set(ctx, []VIP{vip("192.0.2.1", "10.9.0.0/16")}) }()
	<-inRestore
	dropped := make(chan error, 1)
	go func() { _, err := f.Dropped(ctx); dropped <- err }()
	select {
	case err := <-dropped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(release)
		t.Fatal("Dropped waited for a Set in iptables-restore")
	}
	close(release)
	if err := <-setDone; err != nil {
		t.Fatal(err)
	}
}

// A host without IPv6 tables filters IPv4 VIPs; the repair's first look at
// the IPv6 table fails without failing the pass, and is not retried. An
// IPv6 VIP with ranges there is an error (its address stays down).
func TestNoIPv6Tables(t *testing.T) {
	k := &fakeKernel{listing: map[string]string{}}
	run := func(ctx context.Context, name string, args []string, stdin string) ([]byte, error) {
		if strings.HasPrefix(name, "ip6tables") {
			return nil, errors.New(name + ": can't initialize ip6tables table `filter'")
		}
		return k.run(ctx, name, args, stdin)
	}
	f, err := Open(context.Background(), "iptables-legacy", "ip6tables-legacy", run)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := vip("192.0.2.1", "10.0.0.0/8")
	if err := f.Set(ctx, []VIP{a}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		f.Forget()
		if err := f.Set(ctx, []VIP{a}); err != nil {
			t.Fatalf("repair on a host without IPv6 tables: %v", err)
		}
	}
	six := vip("2001:db8::1", "2001:db8:1::/48")
	if err := f.Set(ctx, []VIP{a, six}); err == nil {
		t.Error("an IPv6 VIP with ranges on a host without IPv6 tables: no error")
	}
	if f.Holds(six) || !f.Holds(a) {
		t.Errorf("Holds: IPv6 %v (want false), IPv4 %v (want true)", f.Holds(six), f.Holds(a))
	}
}
