package uml

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	MaybeGuestInit() // this test binary is the guest's init in TestRunInGuest
	os.Exit(m.Run())
}

func TestLoadOrderDependenciesFirst(t *testing.T) {
	dir := t.TempDir()
	dep := `kernel/net/netfilter/ipvs/ip_vs_mh.ko: kernel/net/netfilter/ipvs/ip_vs.ko kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/net/ipv6/ipv6.ko kernel/lib/crc-ccitt.ko
kernel/net/netfilter/ipvs/ip_vs.ko: kernel/net/netfilter/nf_conntrack.ko kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko kernel/net/ipv6/ipv6.ko kernel/lib/crc-ccitt.ko
kernel/net/netfilter/nf_conntrack.ko: kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko
kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko:
kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko:
kernel/net/ipv6/ipv6.ko: kernel/lib/crc-ccitt.ko
kernel/lib/crc-ccitt.ko:
kernel/drivers/net/veth.ko:
`
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/net/packet/af_packet.ko\n"), 0o644)
	idx, err := LoadModuleIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	order, missing := idx.LoadOrder([]string{"ip_vs_mh", "veth", "af_packet", "nosuch", "crc_ccitt"})
	if !slices.Equal(missing, []string{"nosuch"}) {
		t.Errorf("missing = %v", missing)
	}
	pos := map[string]int{}
	for i, p := range order {
		n := ModName(p)
		if _, dup := pos[n]; dup {
			t.Errorf("%s twice in %v", n, order)
		}
		pos[n] = i
	}
	for mod, deps := range idx.Deps {
		if _, ok := pos[mod]; !ok {
			continue
		}
		for _, d := range deps {
			if pos[d] > pos[mod] {
				t.Errorf("%s loaded before its dependency %s: %v", mod, d, order)
			}
		}
	}
	if len(order) != 8 {
		t.Errorf("order has %d modules, want 8: %v", len(order), order)
	}
}

// The real kernel's index resolves every default module (when user-mode-linux is installed).
func TestDefaultModulesResolve(t *testing.T) {
	kver, err := KernelVersion()
	if err != nil {
		t.Skip(err)
	}
	idx, err := LoadModuleIndex(filepath.Join(ModuleDir, kver))
	if err != nil {
		t.Fatal(err)
	}
	order, missing := idx.LoadOrder(DefaultModules)
	if len(missing) > 0 {
		t.Errorf("not shipped: %v", missing)
	}
	t.Logf("%d modules to load", len(order))
}

func TestRunInGuest(t *testing.T) {
	if os.Getenv("EDGELB_UML") != "1" {
		t.Skip("boots a User-Mode Linux guest; run with EDGELB_UML=1 (needs scripts/uml-deps.sh)")
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{
		Argv:   []string{"sh", "-c", `echo "in=$EDGELB_TEST_VALUE"; echo oops >&2; ipvsadm -A -t 10.9.9.9:80 -s mh && ipvsadm -Ln | grep -c 10.9.9.9; exit 7`},
		Env:    append(os.Environ(), "EDGELB_TEST_VALUE=passed"),
		Stdout: &out, Stderr: &errb,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 7 {
		t.Errorf("exit code %d, want 7", res.ExitCode)
	}
	if got := out.String(); got != "in=passed\n1\n" {
		t.Errorf("stdout %q", got)
	}
	if !strings.Contains(errb.String(), "oops") {
		t.Errorf("stderr %q", errb.String())
	}
	t.Logf("boot %s, total %s", res.BootTime, res.Duration)
}
