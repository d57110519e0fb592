package uml

import (
	"bytes"
	"context"
	"os"
	"os/exec"
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

func TestMissingModulesFromBuiltinList(t *testing.T) {
	kernel := filepath.Join(t.TempDir(), "linux")
	os.WriteFile(filepath.Join(filepath.Dir(kernel), "modules.builtin"), []byte("kernel/net/netfilter/ipvs/ip_vs.ko\nkernel/net/netfilter/nf_tables.ko\nkernel/net/ipv4/netfilter/ipt_REJECT.ko\nkernel/drivers/net/veth.ko\n"), 0o644)
	builtin, err := LoadBuiltin(kernel)
	if err != nil {
		t.Fatal(err)
	}
	missing := MissingModules(builtin, []string{"ip_vs", "nf-tables", "ipt_REJECT", "ip_vs_mh", "veth", "nft_nat"})
	if !slices.Equal(missing, []string{"ip_vs_mh", "nft_nat"}) {
		t.Errorf("missing = %v, want [ip_vs_mh nft_nat]", missing)
	}
	if _, err := LoadBuiltin(filepath.Join(t.TempDir(), "linux")); err == nil || !strings.Contains(err.Error(), "scripts/uml-kernel.sh") {
		t.Errorf("no modules.builtin: err = %v, want one naming scripts/uml-kernel.sh", err)
	}
}

func TestModuleParamsOnTheCommandLine(t *testing.T) {
	got := paramArgs(map[string]string{"xt_recent": "ip_list_tot=16384 ip_pkt_list_tot=20", "ip_vs": "conn_tab_bits=12"})
	want := []string{"ip_vs.conn_tab_bits=12", "xt_recent.ip_list_tot=16384", "xt_recent.ip_pkt_list_tot=20"}
	if !slices.Equal(got, want) {
		t.Errorf("paramArgs = %v, want %v", got, want)
	}
}

func TestKernelPathFromCacheAndEnv(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("EDGELB_CACHE", cache)
	t.Setenv(KernelEnv, "")
	if _, err := KernelPath(); err == nil || !strings.Contains(err.Error(), KernelConfigHash()) {
		t.Errorf("empty cache: err = %v, want one naming the hash %s", err, KernelConfigHash())
	}
	old := filepath.Join(cache, "uml-kernel", "6.1.1-1-"+KernelConfigHash(), "linux")
	cur := filepath.Join(cache, "uml-kernel", "6.1.2-1-"+KernelConfigHash(), "linux")
	other := filepath.Join(cache, "uml-kernel", "6.1.3-1-000000000000", "linux")
	for i, p := range []string{old, cur, other} {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, nil, 0o755)
		ts := time.Now().Add(time.Duration(i-3) * time.Hour)
		os.Chtimes(p, ts, ts)
	}
	if got, err := KernelPath(); err != nil || got != cur {
		t.Errorf("KernelPath() = %q, %v; want the newest build for this fragment, %q", got, err, cur)
	}
	t.Setenv(KernelEnv, other)
	if got, err := KernelPath(); err != nil || got != other {
		t.Errorf("with %s: KernelPath() = %q, %v; want %q", KernelEnv, got, err, other)
	}
	t.Setenv(KernelEnv, filepath.Join(cache, "nosuch"))
	if _, err := KernelPath(); err == nil {
		t.Errorf("with %s naming no file: no error", KernelEnv)
	}
}

// The built guest kernel has every default feature built in (when it is built).
func TestDefaultModulesBuiltIn(t *testing.T) {
	kernel, err := KernelPath()
	if err != nil {
		t.Skip(err)
	}
	builtin, err := LoadBuiltin(kernel)
	if err != nil {
		t.Fatal(err)
	}
	if missing := MissingModules(builtin, DefaultModules); len(missing) > 0 {
		t.Errorf("%s lacks %v", kernel, missing)
	}
}

func TestRunInGuest(t *testing.T) {
	if os.Getenv("EDGELB_UML") != "1" {
		t.Skip("boots a User-Mode Linux guest; run with EDGELB_UML=1 (needs scripts/uml-deps.sh, which builds the kernel)")
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

// TestScriptAndGoAgreeOnTheKernelKey: scripts/uml-kernel.sh files the kernel under
// the hash of kernel.config and the patches, and KernelPath looks for it under
// KernelConfigHash; they must compute the same key, or every run looks for a
// kernel that was never built.
func TestScriptAndGoAgreeOnTheKernelKey(t *testing.T) {
	t.Setenv("EDGELB_CACHE", t.TempDir())
	out, err := exec.Command("bash", "../../scripts/uml-kernel.sh", "--path").CombinedOutput()
	if err != nil {
		t.Skipf("scripts/uml-kernel.sh --path: %v: %s (linux-source is installed by scripts/uml-deps.sh)", err, out)
	}
	if got := filepath.Base(filepath.Dir(strings.TrimSpace(string(out)))); !strings.HasSuffix(got, "-"+KernelConfigHash()) {
		t.Errorf("the script files the kernel under %s, KernelPath looks for *-%s", got, KernelConfigHash())
	}
}
