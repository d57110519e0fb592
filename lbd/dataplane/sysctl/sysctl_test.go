package sysctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRoot makes a sysctl tree under a temp directory holding keys, each set
// to "0", as /proc/sys would show them before lbd starts.
func fakeRoot(t *testing.T, keys ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, k := range keys {
		p := path(root, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func keysOf(ss []Setting) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Key)
	}
	return out
}

func read(t *testing.T, root, key string) string {
	t.Helper()
	b, err := os.ReadFile(path(root, key))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// wantMention fails unless err's text holds every fragment.
func wantMention(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one mentioning %q", fragments)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %q", err, f)
		}
	}
}

func TestApplyWritesEverySetting(t *testing.T) {
	root := fakeRoot(t, append(keysOf(Required), keysOf(Optional)...)...)
	if err := Apply(root, Required, Optional); err != nil {
		t.Fatal(err)
	}
	for _, s := range append(append([]Setting(nil), Required...), Optional...) {
		if got := read(t, root, s.Key); got != s.Value+"\n" {
			t.Errorf("%s holds %q, want %q", s.Key, got, s.Value+"\n")
		}
	}
	// Applying again (a restart) changes nothing and is no error.
	if err := Apply(root, Required, Optional); err != nil {
		t.Fatalf("second Apply: %v", err)
	}
}

// A host without the ip_vs module has no net/ipv4/vs directory: the error
// names each missing setting and how to get it, and the settings that exist
// are still set.
func TestApplyMissingRequiredKey(t *testing.T) {
	root := fakeRoot(t, "net.ipv4.ip_forward")
	err := Apply(root, Required, nil)
	wantMention(t, err, "net.ipv4.vs.conntrack=1", "net.ipv4.vs.expire_nodest_conn=1", "net.ipv4.vs.expire_quiescent_template=1",
		"no such setting", "modprobe ip_vs", "conntrack entries for IPVS") // the why, too
	if got := read(t, root, "net.ipv4.ip_forward"); got != "1\n" {
		t.Errorf("ip_forward holds %q after the others failed, want it set", got)
	}
	// A missing sysctl is a missing kernel feature: Apply must not create it.
	if _, err := os.Stat(path(root, "net.ipv4.vs.conntrack")); err == nil {
		t.Error("Apply created net/ipv4/vs/conntrack")
	}
	// Outside IPVS there is no module to name.
	err = Apply(t.TempDir(), []Setting{{"net.ipv4.ip_forward", "1", "forwarding"}}, nil)
	wantMention(t, err, "net.ipv4.ip_forward=1", "no such setting", "this kernel lacks it")
}

// A setting that cannot be written names the key and the fix. As root the
// permission bits do not stop a write, so the failure there is a directory
// where the file should be; a non-root run also checks a read-only file.
func TestApplyUnwritableKey(t *testing.T) {
	root := fakeRoot(t)
	if err := os.MkdirAll(path(root, "net.ipv4.ip_forward"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := Apply(root, []Setting{{"net.ipv4.ip_forward", "1", "IPVS NAT forwards packets"}}, nil)
	wantMention(t, err, "net.ipv4.ip_forward=1", "IPVS NAT forwards packets", "CAP_NET_ADMIN", "/etc/sysctl.d")

	if os.Geteuid() == 0 {
		t.Log("running as root: a read-only file would be written anyway; not checked")
		return
	}
	root = fakeRoot(t, "net.ipv4.ip_forward")
	if err := os.Chmod(path(root, "net.ipv4.ip_forward"), 0o444); err != nil {
		t.Fatal(err)
	}
	err = Apply(root, []Setting{{"net.ipv4.ip_forward", "1", "IPVS NAT forwards packets"}}, nil)
	wantMention(t, err, "net.ipv4.ip_forward=1", "permission denied", "CAP_NET_ADMIN", "/etc/sysctl.d")
}

// The kernel may accept a write and keep another value (a setting pinned
// in a network namespace, one that clamps its range). A key that is a link to
// /dev/null behaves so: the write succeeds, reading back gives nothing.
func TestApplyValueThatDoesNotStick(t *testing.T) {
	root := fakeRoot(t, "net.ipv4.ip_forward")
	p := path(root, "net.ipv4.vs.conntrack")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(os.DevNull, p); err != nil {
		t.Fatal(err)
	}
	err := Apply(root, []Setting{{"net.ipv4.ip_forward", "1", "forwarding"}, {"net.ipv4.vs.conntrack", "1", "SNAT needs conntrack"}}, nil)
	wantMention(t, err, "net.ipv4.vs.conntrack did not keep 1", `reads ""`, "SNAT needs conntrack")
	if strings.Contains(err.Error(), "ip_forward") {
		t.Errorf("error %q blames ip_forward, which took", err)
	}
}

// Optional settings the kernel lacks (no IPv6, an older IPVS without sloppy
// TCP) are skipped without error and without being created; an optional
// setting the kernel has must take like a required one.
func TestApplyOptional(t *testing.T) {
	root := fakeRoot(t, keysOf(Required)...)
	if err := Apply(root, Required, Optional); err != nil {
		t.Fatalf("optional settings absent: %v", err)
	}
	for _, s := range Optional {
		if _, err := os.Stat(path(root, s.Key)); err == nil {
			t.Errorf("Apply created the optional %s", s.Key)
		}
	}

	p := path(root, "net.ipv4.vs.sloppy_tcp")
	if err := os.Symlink(os.DevNull, p); err != nil {
		t.Fatal(err)
	}
	err := Apply(root, Required, Optional)
	wantMention(t, err, "net.ipv4.vs.sloppy_tcp did not keep 1")
}

// The kernel prints a pair of numbers (sync_threshold) with a tab between
// them: read back, it is the value written; other numbers are not.
func TestSameValue(t *testing.T) {
	for _, c := range []struct {
		got, want string
		same      bool
	}{
		{"2\t50", "2 50", true},
		{"1", "1", true},
		{"3\t50", "2 50", false},
		{"2", "2 50", false},
		{"0", "1", false},
	} {
		if sameValue(c.got, c.want) != c.same {
			t.Errorf("sameValue(%q, %q) = %v", c.got, c.want, !c.same)
		}
	}
}
