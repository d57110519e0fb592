// Package packaging holds the tests of the .deb (packaging/nfpm.yaml,
// scripts/deb.sh), the systemd unit and the example configuration: the files
// must land where the unit expects them, and the example must stay a valid,
// complete configuration.
package packaging

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/lab"
	"github.com/edgelb/edgelb/integration/uml"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/dataplane/snat"
)

const (
	exampleConfig = "../configs/lbd.yaml"
	unitFile      = "../configs/systemd/lbd.service"
)

// unitDirectives returns the unit file's Key=Value lines (last wins).
func unitDirectives(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not Key=Value: %q", unitFile, line)
		}
		out[k] = v
	}
	return out
}

// TestExampleConfigIsValidAndComplete: configs/lbd.yaml parses strictly,
// validates, names every field of config.Config, and agrees with the unit.
func TestExampleConfigIsValidAndComplete(t *testing.T) {
	cfg := config.Default()
	if err := cfg.Load(exampleConfig); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s does not validate:\n%v", exampleConfig, err)
	}
	b, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	var walk func(typ reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if !regexp.MustCompile(`(?m)^\s*#?\s*` + regexp.QuoteMeta(name) + `:`).MatchString(text) {
				t.Errorf("%s does not document %s%s", exampleConfig, path, name)
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(config.Duration{}) {
				walk(f.Type, path+name+".")
			}
		}
	}
	walk(reflect.TypeOf(config.Config{}), "")

	u := unitDirectives(t)
	if want := "/var/lib/" + u["StateDirectory"]; cfg.DataDir != want {
		t.Errorf("example dataDir %s, but the unit's StateDirectory is %s", cfg.DataDir, want)
	}
	if !strings.Contains(u["ExecStart"], "--config /etc/edgelb/lbd.yaml") {
		t.Errorf("ExecStart %q does not read /etc/edgelb/lbd.yaml", u["ExecStart"])
	}
	for _, c := range []string{"CAP_NET_ADMIN", "CAP_NET_RAW"} {
		if !strings.Contains(u["CapabilityBoundingSet"], c) || !strings.Contains(u["AmbientCapabilities"], c) {
			t.Errorf("the unit does not grant %s", c)
		}
	}
	// The guest scenarios run lbd with exactly these (integration/lab).
	if got := strings.Fields(u["CapabilityBoundingSet"]); !slices.Equal(got, lab.UnitCapabilities) {
		t.Errorf("the unit's bounding set %v differs from lab.UnitCapabilities %v, which the guest scenarios run lbd with", got, lab.UnitCapabilities)
	}
	if strings.Contains(u["CapabilityBoundingSet"], "CAP_SYS_ADMIN") || u["CapabilityBoundingSet"] == "" {
		t.Errorf("the unit's bounding set %q should be minimal", u["CapabilityBoundingSet"])
	}
	if u["KillMode"] != "process" {
		// mixed SIGKILLs what remains once lbd exits, control-group kills it with lbd.
		t.Errorf("KillMode %q: the fence child must outlive a stopped or crashed lbd for up to the lease to withdraw its VIPs", u["KillMode"])
	}
	// lbd speaks sd_notify (lbd/daemon/watchdog.go): without Type=notify
	// systemd ignores READY=1, and without WatchdogSec nothing restarts an
	// lbd whose reconcile loop hangs.
	if u["Type"] != "notify" || u["NotifyAccess"] != "main" {
		t.Errorf("Type=%q NotifyAccess=%q: want notify and main (lbd sends READY=1 and WATCHDOG=1 itself; the fence child must not count)", u["Type"], u["NotifyAccess"])
	}
	if d, err := time.ParseDuration(u["WatchdogSec"]); err != nil || d < 10*time.Second {
		t.Errorf("WatchdogSec=%q: want a duration of at least 10s (longer than a slow healthy pass)", u["WatchdogSec"])
	}
	if u["ProtectKernelTunables"] != "no" {
		t.Error("lbd writes net.ipv4.vs.* sysctls: /proc/sys must stay writable")
	}
}

// TestDeb builds the .deb with scripts/deb.sh (nfpm at its pinned version)
// and checks with dpkg-deb that every file is where the unit and the docs
// expect it. Slow (builds three binaries and nfpm); run with EDGELB_DEB=1.
func TestDeb(t *testing.T) {
	if os.Getenv("EDGELB_DEB") != "1" {
		t.Skip("set EDGELB_DEB=1 to build and check the .deb")
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Fatal("dpkg-deb is required (apt-get install dpkg)")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "scripts/deb.sh", out)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "VERSION=1.2.3~test")
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/deb.sh: %v", err)
	}
	deb := strings.TrimSpace(string(b))
	if filepath.Dir(deb) != out || !strings.HasPrefix(filepath.Base(deb), "edgelb_1.2.3~test_") {
		t.Fatalf("deb.sh printed %q", deb)
	}

	list, err := exec.Command("dpkg-deb", "-c", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{} // path → mode string
	for _, line := range strings.Split(string(list), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		files[strings.TrimPrefix(strings.TrimSuffix(f[5], "/"), ".")] = f[0]
	}
	u := unitDirectives(t)
	exec0 := strings.Fields(u["ExecStart"])[0]
	want := map[string]string{
		exec0:            "-rwxr-xr-x",
		"/usr/bin/lbctl": "-rwxr-xr-x",
		"/usr/bin/edgelb-cloud-controller-manager":  "-rwxr-xr-x",
		"/usr/lib/systemd/system/lbd.service":       "-rw-r--r--",
		"/usr/lib/modules-load.d/edgelb.conf":       "-rw-r--r--",
		"/usr/lib/modprobe.d/edgelb.conf":           "-rw-r--r--",
		"/etc/edgelb/lbd.yaml":                      "-rw-------",
		"/etc/edgelb/tls":                           "drwx------",
		"/usr/share/doc/edgelb/OPERATIONS.md":       "-rw-r--r--",
		"/usr/share/doc/edgelb/grafana/edgelb.json": "-rw-r--r--",
		"/usr/share/doc/edgelb/ccm/rbac.yaml":       "-rw-r--r--",
	}
	for path, mode := range want {
		got, ok := files[path]
		if !ok {
			t.Errorf("%s is not in the package", path)
		} else if got != mode {
			t.Errorf("%s has mode %s, want %s", path, got, mode)
		}
	}
	if t.Failed() {
		t.Logf("dpkg-deb -c:\n%s", list)
	}

	info, err := exec.Command("dpkg-deb", "-f", deb, "Package", "Version", "Depends", "Suggests").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Package: edgelb", "Version: 1.2.3~test", "Suggests: iptables"} {
		if !strings.Contains(string(info), s) {
			t.Errorf("control lacks %q:\n%s", s, info)
		}
	}
	// The rules are nftables over netlink: an edge host needs no iptables.
	for l := range strings.Lines(string(info)) {
		if strings.HasPrefix(l, "Depends:") && strings.Contains(l, "iptables") {
			t.Errorf("the package still depends on iptables: %s", l)
		}
	}
	conffiles, err := exec.Command("sh", "-c", "dpkg-deb --ctrl-tarfile "+deb+" | tar -xO ./conffiles").Output()
	if err != nil || !strings.Contains(string(conffiles), "/etc/edgelb/lbd.yaml") {
		t.Errorf("/etc/edgelb/lbd.yaml is not a conffile (an upgrade would overwrite the operator's config): %v %q", err, conffiles)
	}

	// The packaged binaries run and carry the version.
	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	v, err := exec.Command(filepath.Join(dir, "usr/bin/lbctl"), "version", "--client").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "1.2.3~test") {
		t.Errorf("packaged lbctl version: %v %s", err, v)
	}
	h, err := exec.Command(filepath.Join(dir, "usr/bin/lbd"), "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(h), "--metrics-addr") {
		t.Errorf("packaged lbd --help: %v %s", err, h)
	}
}

// The xt_recent list is sized alike wherever it is loaded: by the package's
// modprobe.d file on a host, by the UML guest at boot, and by lbd itself
// (snat.RecentCapacity, which lbd warns about when the loaded size is smaller).
// modules-load.d loads it at boot, since lbd's unit may not load modules.
func TestRecentListSize(t *testing.T) {
	want := "ip_list_tot=" + strconv.Itoa(snat.RecentCapacity)
	b, err := os.ReadFile("../configs/systemd/edgelb-modprobe.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "options xt_recent "+want+"\n") {
		t.Errorf("edgelb-modprobe.conf does not set %s:\n%s", want, b)
	}
	if got := uml.ModuleParams["xt_recent"]; got != want {
		t.Errorf("the UML guest loads xt_recent with %q, want %q", got, want)
	}
	if !slices.Contains(uml.DefaultModules, "xt_recent") {
		t.Error("the UML guest does not load xt_recent")
	}
	b, err = os.ReadFile("../configs/systemd/edgelb-modules.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^xt_recent$`).Match(b) {
		t.Errorf("edgelb-modules.conf does not load xt_recent at boot:\n%s", b)
	}
}
