package snat

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests never run iptables: PATH holds only the fakes a test writes,
// which record their arguments and input in a log.

// fakePath points PATH at an empty directory and returns it with the log the
// fakes write to.
func fakePath(t *testing.T) (dir, log string) {
	t.Helper()
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat for the fakes to copy their input with")
	}
	catPath = cat
	dir = t.TempDir()
	log = filepath.Join(dir, "calls.log")
	t.Setenv("PATH", dir)
	t.Setenv("FAKE_LOG", log)
	return dir, log
}

// catPath is cat's full path: PATH holds only the fakes.
var catPath string

// fake installs a command that logs "name args" (and its input, for the
// -restore commands) and exits with code.
func fake(t *testing.T, dir, name string, code int) {
	t.Helper()
	script := fmt.Sprintf(`#!/bin/sh
echo "%s $*" >> "$FAKE_LOG"
case "%s" in *-restore) %s >> "$FAKE_LOG" ;; esac
[ %d = 0 ] || echo "can't initialize iptables table 'nat'" >&2
exit %d
`, name, name, catPath, code, code)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// legacyTools are the commands Open, Set and Guard run.
var legacyTools = []string{"iptables-legacy", "iptables-legacy-restore", "iptables-legacy-save", "ip6tables-legacy", "ip6tables-legacy-restore", "ip6tables-legacy-save"}

// fakeAllBut installs every legacy tool as a fake that succeeds, except the
// ones named, which the test writes itself.
func fakeAllBut(t *testing.T, dir string, own ...string) {
	t.Helper()
	for _, n := range legacyTools {
		if !slices.Contains(own, n) {
			fake(t, dir, n, 0)
		}
	}
}

// fakeListing installs name as a command that prints out, as a listing or
// iptables-save would.
func fakeListing(t *testing.T, dir, name, out string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+catPath+" <<'X'\n"+out+"X\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func calls(t *testing.T, log string) string {
	t.Helper()
	b, err := os.ReadFile(log)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOpenRefusals(t *testing.T) {
	_, log := fakePath(t) // nothing installed: any attempt to run iptables fails
	ctx := context.Background()
	for _, c := range []struct {
		mode string
		want []string
	}{
		{"pf", []string{`unknown snat mode "pf"`, "auto", "iptables-legacy", "iptables-nft", "none"}},
		{"IPTABLES-NFT", []string{`unknown snat mode "IPTABLES-NFT"`}},
		{"nft", []string{"mode nftables", "iptables-nft", "iptables-legacy"}},
		{"iptables-legacy", []string{"snat mode iptables-legacy", "iptables-legacy -t nat -S"}},
		{"iptables-nft", []string{"snat mode iptables-nft", "iptables-nft -t nat -S"}},
		{"auto", []string{"no usable iptables", "install iptables", "--snat=none", "legacy:", "nft:"}},
		{"", []string{"no usable iptables"}}, // empty is auto
	} {
		r, err := Open(ctx, c.mode, 0)
		if err == nil {
			t.Errorf("mode %q: opened %v, want a refusal", c.mode, r)
			continue
		}
		if r != nil {
			t.Errorf("mode %q: rules %v along with the error", c.mode, r)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("mode %q: error %q does not mention %q", c.mode, err, w)
			}
		}
	}
	if got := calls(t, log); got != "" {
		t.Errorf("refusals ran commands:\n%s", got)
	}
}

// none is SNAT off: no rules object, so the engine skips SNAT, and nothing run.
func TestOpenNone(t *testing.T) {
	dir, log := fakePath(t)
	fake(t, dir, "iptables-legacy", 0)
	r, err := Open(context.Background(), "none", 0)
	if err != nil || r != nil {
		t.Fatalf("none: %v, %v; want nil rules and no error", r, err)
	}
	if got := calls(t, log); got != "" {
		t.Errorf("none ran commands:\n%s", got)
	}
}

// auto prefers iptables-legacy when it can list the nat table (the rules
// are then where xt_ipvs is) and falls back to iptables-nft.
func TestOpenAutoPicks(t *testing.T) {
	ctx := context.Background()
	dir, _ := fakePath(t)
	fake(t, dir, "iptables-legacy", 0)
	fake(t, dir, "iptables-nft", 0)
	if r, err := Open(ctx, "auto", 0); err != nil || r.Backend() != "iptables-legacy" {
		t.Fatalf("both usable: %v, %v; want iptables-legacy", r, err)
	}
	fake(t, dir, "iptables-legacy", 3)
	if r, err := Open(ctx, "auto", 0); err != nil || r.Backend() != "iptables-nft" {
		t.Fatalf("legacy unusable: %v, %v; want iptables-nft", r, err)
	}
	if r, err := Open(ctx, "iptables-nft", 0); err != nil || r.Backend() != "iptables-nft" {
		t.Fatalf("iptables-nft asked for: %v, %v", r, err)
	}
	// Asked for by name, legacy is not swapped for nft behind the operator's back.
	if _, err := Open(ctx, "iptables-legacy", 0); err == nil || !strings.Contains(err.Error(), "can't initialize") {
		t.Fatalf("iptables-legacy asked for but unusable: %v; want its error", err)
	}
}

// Set writes one SNAT rule per VIP into our chain and the takeover guard's
// rules (a RETURN for the TCP ports VIPs serve, then the DROP of what goes to a
// VIP in its window) in one restore per family; makes sure POSTROUTING and
// PREROUTING jump to them the first time; afterwards rewrites only the tables
// that changed.
func TestSetRules(t *testing.T) {
	ctx := context.Background()
	dir, log := fakePath(t)
	fakeAllBut(t, dir)
	r, err := Open(ctx, "iptables-legacy", 9500*time.Millisecond) // whole seconds, rounded up
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(log)
	v4a, v4b, v6 := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	many := make([]uint16, 17)
	for i := range many {
		many[i] = uint16(1000 + i)
	}
	a := VIP{Addr: v4a, TCPPorts: []uint16{443, 80, 80}}
	b := VIP{Addr: v4b} // UDP only: nothing to let through
	c := VIP{Addr: v6, TCPPorts: many}
	if err := r.Set(ctx, []VIP{a, c, b}); err != nil {
		t.Fatal(err)
	}
	want := `iptables-legacy-save 
iptables-legacy-restore --noflush
*nat
:EDGELB-POSTROUTING - [0:0]
-A EDGELB-POSTROUTING -m ipvs --vaddr 192.0.2.1/32 -j SNAT --to-source 192.0.2.1
-A EDGELB-POSTROUTING -m ipvs --vaddr 192.0.2.2/32 -j SNAT --to-source 192.0.2.2
-A POSTROUTING -j EDGELB-POSTROUTING
COMMIT
*mangle
:EDGELB-PREROUTING - [0:0]
-A EDGELB-PREROUTING -p tcp -m multiport --dports 80,443 -j RETURN
-A EDGELB-PREROUTING -m recent --name edgelb-takeover --rdest --rcheck --seconds 10 -j DROP
-A PREROUTING -p tcp ! --syn -m conntrack --ctstate NEW -j EDGELB-PREROUTING
COMMIT
ip6tables-legacy-save 
ip6tables-legacy-restore --noflush
*nat
:EDGELB-POSTROUTING - [0:0]
-A EDGELB-POSTROUTING -m ipvs --vaddr 2001:db8::1/128 -j SNAT --to-source 2001:db8::1
-A POSTROUTING -j EDGELB-POSTROUTING
COMMIT
*mangle
:EDGELB-PREROUTING - [0:0]
-A EDGELB-PREROUTING -p tcp -m multiport --dports 1000,1001,1002,1003,1004,1005,1006,1007,1008,1009,1010,1011,1012,1013,1014 -j RETURN
-A EDGELB-PREROUTING -p tcp -m multiport --dports 1015,1016 -j RETURN
-A EDGELB-PREROUTING -m recent --name edgelb-takeover --rdest --rcheck --seconds 10 -j DROP
-A PREROUTING -p tcp ! --syn -m conntrack --ctstate NEW -j EDGELB-PREROUTING
COMMIT
`
	if got := calls(t, log); got != want {
		t.Fatalf("first Set ran:\n%s\nwant:\n%s", got, want)
	}

	os.Remove(log)
	if err := r.Set(ctx, []VIP{b, a, c}); err != nil {
		t.Fatal(err)
	}
	if got := calls(t, log); got != "" {
		t.Fatalf("unchanged VIPs ran:\n%s", got)
	}

	// A VIP withdrawn whose ports others still serve: the nat table only.
	set := func(what, want string, vips ...VIP) {
		t.Helper()
		os.Remove(log)
		if err := r.Set(ctx, vips); err != nil {
			t.Fatal(err)
		}
		if got := calls(t, log); got != want {
			t.Fatalf("%s ran:\n%s\nwant:\n%s", what, got, want)
		}
	}
	set("one IPv4 VIP withdrawn", `iptables-legacy-restore --noflush
*nat
:EDGELB-POSTROUTING - [0:0]
-A EDGELB-POSTROUTING -m ipvs --vaddr 192.0.2.2/32 -j SNAT --to-source 192.0.2.2
COMMIT
`, a, c)

	// A new VIP on a port no VIP served: both tables.
	b.TCPPorts = []uint16{8443}
	set("a VIP with a new port", `iptables-legacy-restore --noflush
*nat
:EDGELB-POSTROUTING - [0:0]
-A EDGELB-POSTROUTING -m ipvs --vaddr 192.0.2.1/32 -j SNAT --to-source 192.0.2.1
-A EDGELB-POSTROUTING -m ipvs --vaddr 192.0.2.2/32 -j SNAT --to-source 192.0.2.2
COMMIT
*mangle
:EDGELB-PREROUTING - [0:0]
-A EDGELB-PREROUTING -p tcp -m multiport --dports 80,443,8443 -j RETURN
-A EDGELB-PREROUTING -m recent --name edgelb-takeover --rdest --rcheck --seconds 10 -j DROP
COMMIT
`, a, b, c)

	// The last VIP on ports 80 and 443 goes: the nat table only. The guard
	// keeps letting those ports through rather than rewrite mangle at each
	// delete and again at the next create on the same port.
	set("the VIP on 80 and 443 deleted", `iptables-legacy-restore --noflush
*nat
:EDGELB-POSTROUTING - [0:0]
-A EDGELB-POSTROUTING -m ipvs --vaddr 192.0.2.1/32 -j SNAT --to-source 192.0.2.1
COMMIT
`, b, c)

	// A takeover runs no iptables: it adds the VIP to the xt_recent list.
	os.Remove(log)
	list := filepath.Join(t.TempDir(), "edgelb-takeover")
	if err := os.WriteFile(list, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r.(*Tables).recent = list
	if err := r.Guard(v6); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(list); string(got) != "+2001:db8::1" {
		t.Errorf("the list got %q, want +2001:db8::1", got)
	}
	if got := calls(t, log); got != "" {
		t.Errorf("a guard ran:\n%s", got)
	}
	r.(*Tables).recent = filepath.Join(t.TempDir(), "missing")
	if err := r.Guard(v4a); err == nil || !strings.Contains(err.Error(), "takeover guard for 192.0.2.2") {
		t.Errorf("guard without the list (no rule loaded): %v", err)
	}
}

// With the guard off, the mangle chain is kept empty and not jumped to; jumps
// that iptables-save shows already (a restart) are not added again.
func TestSetRulesWithoutGuard(t *testing.T) {
	ctx := context.Background()
	dir, log := fakePath(t)
	fakeAllBut(t, dir, "iptables-legacy-save")
	// This host's IPv4 tables jump to our chains already.
	save := "#!/bin/sh\necho \"iptables-legacy-save $*\" >> \"$FAKE_LOG\"\n" +
		"echo '*nat'; echo '-A POSTROUTING -j EDGELB-POSTROUTING'; echo COMMIT\n"
	if err := os.WriteFile(filepath.Join(dir, "iptables-legacy-save"), []byte(save), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, "iptables-legacy", 0)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(log)
	if err := r.Set(ctx, []VIP{{Addr: netip.MustParseAddr("192.0.2.2"), TCPPorts: []uint16{80}}}); err != nil {
		t.Fatal(err)
	}
	want := `iptables-legacy-save 
iptables-legacy-restore --noflush
*nat
:EDGELB-POSTROUTING - [0:0]
-A EDGELB-POSTROUTING -m ipvs --vaddr 192.0.2.2/32 -j SNAT --to-source 192.0.2.2
COMMIT
*mangle
:EDGELB-PREROUTING - [0:0]
COMMIT
ip6tables-legacy-save 
ip6tables-legacy-restore --noflush
*nat
:EDGELB-POSTROUTING - [0:0]
-A POSTROUTING -j EDGELB-POSTROUTING
COMMIT
*mangle
:EDGELB-PREROUTING - [0:0]
COMMIT
`
	if got := calls(t, log); got != want {
		t.Fatalf("Set ran:\n%s\nwant:\n%s", got, want)
	}
	if err := r.Guard(netip.MustParseAddr("192.0.2.2")); err != nil {
		t.Errorf("guard while off: %v, want a no-op", err)
	}
}

// Present knows the rules a previous run left (read by Open's probe, the
// IPv6 ones only when IPv4 shows our chain: a restart), then what Set applied.
func TestPresent(t *testing.T) {
	ctx := context.Background()
	dir, _ := fakePath(t)
	fakeAllBut(t, dir, "iptables-legacy", "ip6tables-legacy")
	listing := map[string]string{
		"iptables-legacy": "-P POSTROUTING ACCEPT\n-N " + Chain + "\n-A POSTROUTING -j " + Chain + "\n" +
			"-A " + Chain + " -m ipvs --vaddr 192.0.2.7/32 -j SNAT --to-source 192.0.2.7\n" +
			"-A POSTROUTING -s 10.9.0.0/16 -j SNAT --to-source 192.0.2.99\n", // someone else's
		"ip6tables-legacy": "-N " + Chain + "\n-A " + Chain + " -m ipvs --vaddr 2001:db8::7/128 -j SNAT --to-source 2001:db8::7\n",
	}
	for n, out := range listing {
		fakeListing(t, dir, n, out)
	}
	r, err := Open(ctx, "iptables-legacy", 0)
	if err != nil {
		t.Fatal(err)
	}
	left, left6, other, fresh := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("192.0.2.99"), netip.MustParseAddr("192.0.2.8")
	if !r.Present(left) || !r.Present(left6) || r.Present(other) || r.Present(fresh) {
		t.Fatalf("after Open: present %v %v %v %v, want true true false false", r.Present(left), r.Present(left6), r.Present(other), r.Present(fresh))
	}
	if err := r.Set(ctx, []VIP{{Addr: fresh}}); err != nil {
		t.Fatal(err)
	}
	if r.Present(left) || r.Present(left6) || !r.Present(fresh) {
		t.Fatalf("after Set(%s): present %v %v %v, want false false true", fresh, r.Present(left), r.Present(left6), r.Present(fresh))
	}

	// After a boot there is no chain of ours: nothing is present, and the
	// IPv6 listing is not run.
	listing["iptables-legacy"] = "-P POSTROUTING ACCEPT\n"
	fakeListing(t, dir, "iptables-legacy", listing["iptables-legacy"])
	os.WriteFile(filepath.Join(dir, "ip6tables-legacy"), []byte("#!/bin/sh\nexit 9\n"), 0o755)
	if r, err = Open(ctx, "iptables-legacy", 0); err != nil {
		t.Fatal(err)
	}
	if r.Present(left) || r.Present(left6) {
		t.Fatal("after a boot: rules reported present")
	}
}

// A restart whose kernel still holds the rules the last run applied runs no
// iptables for them; one whose kernel lost them (a boot, a flush) rewrites.
func TestRememberSkipsRulesTheKernelHolds(t *testing.T) {
	ctx := context.Background()
	dir, log := fakePath(t)
	fakeAllBut(t, dir)
	record := filepath.Join(t.TempDir(), "snat.json")
	vips := []VIP{{Addr: netip.MustParseAddr("192.0.2.7"), TCPPorts: []uint16{80}}}
	r, err := Open(ctx, "iptables-legacy", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r.(*Tables).Remember(record)
	if err := r.Set(ctx, vips); err != nil {
		t.Fatal(err)
	}
	// The kernel now lists what that Set wrote.
	listings := func(v4, v6 string) {
		for n, out := range map[string]string{"iptables-legacy": v4, "ip6tables-legacy": v6} {
			fakeListing(t, dir, n, out)
		}
	}
	held := "-P POSTROUTING ACCEPT\n-N " + Chain + "\n-A POSTROUTING -j " + Chain + "\n" +
		"-A " + Chain + " -m ipvs --vaddr 192.0.2.7/32 -j SNAT --to-source 192.0.2.7\n"
	listings(held, "-N "+Chain+"\n")
	restart := func() string {
		t.Helper()
		r, err := Open(ctx, "iptables-legacy", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		r.(*Tables).Remember(record)
		os.Remove(log)
		if err := r.Set(ctx, vips); err != nil {
			t.Fatal(err)
		}
		return calls(t, log)
	}
	if got := restart(); got != "" {
		t.Fatalf("restart with the rules in the kernel ran:\n%s", got)
	}
	// Another VIP's rule in the chain: not what was recorded.
	listings(held+"-A "+Chain+" -m ipvs --vaddr 192.0.2.8/32 -j SNAT --to-source 192.0.2.8\n", "-N "+Chain+"\n")
	if got := restart(); !strings.Contains(got, "iptables-legacy-restore") {
		t.Fatalf("restart with other rules in the kernel ran no restore:\n%s", got)
	}
	// After a boot: no chain, no jump.
	listings("-P POSTROUTING ACCEPT\n", "")
	if got := restart(); !strings.Contains(got, "iptables-legacy-save") || !strings.Contains(got, "-A POSTROUTING -j "+Chain) {
		t.Fatalf("restart after a boot did not rewrite the rules and the jump:\n%s", got)
	}
}

// The periodic repair rewrites only rules the kernel lost or someone changed.
func TestIntact(t *testing.T) {
	ctx := context.Background()
	dir, _ := fakePath(t)
	fakeAllBut(t, dir, "iptables-legacy-save")
	save := func(out string) {
		t.Helper()
		fakeListing(t, dir, "iptables-legacy-save", out)
	}
	save("")
	r, err := Open(ctx, "iptables-legacy", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tb := r.(*Tables)
	if tb.Intact(ctx) {
		t.Fatal("intact before any Set: nothing is known to be there")
	}
	if err := r.Set(ctx, []VIP{{Addr: netip.MustParseAddr("192.0.2.7"), TCPPorts: []uint16{80}}}); err != nil {
		t.Fatal(err)
	}
	nat := "*nat\n:" + Chain + " - [0:0]\n-A POSTROUTING -j " + Chain + "\n" +
		"-A " + Chain + " -m ipvs --vaddr 192.0.2.7/32 -j SNAT --to-source 192.0.2.7\nCOMMIT\n"
	mangle := "*mangle\n:" + GuardChain + " - [0:0]\n-A PREROUTING -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j " + GuardChain + "\n" +
		"-A " + GuardChain + " -p tcp -m multiport --dports 80 -j RETURN\n" +
		"-A " + GuardChain + " -m recent --rcheck --seconds 10 --name " + RecentList + " --mask 255.255.255.255 --rdest -j DROP\nCOMMIT\n"
	for _, c := range []struct {
		name, save string
		want       bool
	}{
		{"as applied", nat + mangle, true},
		{"chain flushed", "*nat\n:" + Chain + " - [0:0]\n-A POSTROUTING -j " + Chain + "\nCOMMIT\n" + mangle, false},
		{"a rule added by hand", nat + "-A " + Chain + " -m ipvs --vaddr 192.0.2.9/32 -j SNAT --to-source 192.0.2.9\n" + mangle, false},
		{"jump removed", strings.Replace(nat, "-A POSTROUTING -j "+Chain+"\n", "", 1) + mangle, false},
		{"guard jump removed", nat + strings.Replace(mangle, "-A PREROUTING", "-A OTHER", 1), false},
	} {
		save(c.save)
		if got := tb.Intact(ctx); got != c.want {
			t.Errorf("%s: intact %v, want %v", c.name, got, c.want)
		}
	}
}
