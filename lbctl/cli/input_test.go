package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgelb/edgelb/lbctl/exitcode"
)

// Bad input is refused before anything is sent or saved, with what to fix.
func TestBadInputRefusedBeforeAnyWrite(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"vip", "create", "web", "--port", "tcp/80", "--wait", "--wait-timeout", "-1s"}, "--wait-timeout -1s: must be positive"},
		{[]string{"vip", "create", "web", "--port", "tcp/80", "--wait-timeout", "0s"}, "--wait-timeout 0s: must be positive"},
		{[]string{"member", "drain", "lb2", "--wait", "--wait-timeout", "-1s"}, "--wait-timeout -1s: must be positive"},
		{[]string{"--timeout", "-1s", "vip", "list"}, "--timeout -1s: must be positive"},
	} {
		msg := e.fails(exitcode.Usage, tc.args...)
		if !strings.Contains(msg, tc.want) {
			t.Errorf("lbctl %s: want %q in:\n%s", strings.Join(tc.args, " "), tc.want, msg)
		}
	}
	if out := e.ok("vip", "list", "--all-tenants", "-o", "json"); strings.Contains(out, `"web"`) {
		t.Errorf("a refused create reached the server:\n%s", out)
	}
}

func TestConfigRefusesBadContext(t *testing.T) {
	t.Setenv("LBCTL_ENDPOINTS", "")
	cfg := filepath.Join(t.TempDir(), "lbctl.yaml")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"config", "set-context", "", "--endpoints", "127.0.0.1:7700"}, `context name ""`},
		{[]string{"config", "set-context", "a b"}, `context name "a b"`},
		{[]string{"config", "set-context", "lab", "--endpoints", "not a host"}, `endpoint "not a host"`},
		{[]string{"config", "set-context", "lab", "--endpoints", "127.0.0.1"}, `endpoint "127.0.0.1": no port`},
		{[]string{"config", "set-context", "lab", "--endpoints", "lb1:http"}, `port "http" is not a number`},
		{[]string{"config", "set-context", "lab", "--endpoints", "lb1:7700,lb_2:7700"}, `endpoint "lb_2:7700"`},
	} {
		r := lbctl(t, cfg, tc.args...)
		if r.code != exitcode.Usage || !strings.Contains(r.err, tc.want) {
			t.Errorf("lbctl %q: exit %d, want %d and %q in:\n%s", tc.args, r.code, exitcode.Usage, tc.want, r.err)
		}
	}
	if _, err := os.Stat(cfg); err == nil {
		data, _ := os.ReadFile(cfg)
		t.Errorf("a refused set-context wrote the config file:\n%s", data)
	}
	// The same check applies to endpoints from the command line and from a
	// context written by hand.
	if r := lbctl(t, cfg, "--endpoints", "not a host", "vip", "list"); r.code != exitcode.Usage || !strings.Contains(r.err, `endpoint "not a host"`) {
		t.Errorf("--endpoints 'not a host' vip list: exit %d\n%s", r.code, r.err)
	}
	if err := os.WriteFile(cfg, []byte("current-context: x\ncontexts:\n  x:\n    endpoints: ['not a host']\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := lbctl(t, cfg, "vip", "list"); r.code != exitcode.Usage || !strings.Contains(r.err, `endpoint "not a host"`) {
		t.Errorf("context with 'not a host': exit %d\n%s", r.code, r.err)
	}
	// config itself still works on such a file, so the context can be repaired.
	if r := lbctl(t, cfg, "config", "set-context", "x", "--endpoints", "127.0.0.1:7700"); r.code != 0 {
		t.Errorf("repairing the context: exit %d\n%s", r.code, r.err)
	}
	if r := lbctl(t, cfg, "--endpoints", "127.0.0.1:1", "vip", "list"); r.code != exitcode.Unavailable {
		t.Errorf("after the repair: exit %d, want %d (nothing listens)\n%s", r.code, exitcode.Unavailable, r.err)
	}
	// Good names and endpoints still save.
	if r := lbctl(t, cfg, "config", "set-context", "prod", "--endpoints", "lb1:7700,10.0.0.12:7700,[2001:db8::13]:7700"); r.code != 0 {
		t.Errorf("good set-context: exit %d\n%s", r.code, r.err)
	}
}
