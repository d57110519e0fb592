package cli

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/spf13/cobra"
)

// A typo must never look like success: before, a command group without a Run
// of its own printed its help and exited 0 for "vip delet web".
func TestTyposAreUsageErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "lbctl.yaml")
	for _, tc := range []struct {
		args    []string
		suggest string
	}{
		{[]string{"vip", "delet", "x"}, "delete"},
		{[]string{"pool", "remove", "x"}, "delete"},
		{[]string{"member", "rm", "x"}, "remove"},
		{[]string{"snapshot", "restor", "x"}, "restore"},
		{[]string{"leader", "trnsfer"}, "transfer"},
		{[]string{"backend", "lst", "web"}, "list"},
		{[]string{"config", "use-contxt", "x"}, "use-context"},
		{[]string{"vpi", "list"}, "vip"},
	} {
		// 127.0.0.1:1 refuses at once, should anything dial by mistake
		r := lbctl(t, cfg, append([]string{"--endpoints", "127.0.0.1:1"}, tc.args...)...)
		if r.code != exitcode.Usage {
			t.Errorf("lbctl %s: exit %d, want %d (usage)\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), r.code, exitcode.Usage, r.out, r.err)
			continue
		}
		if !strings.Contains(r.err, "unknown command") || !strings.Contains(r.err, "Did you mean this?\n\t"+tc.suggest) {
			t.Errorf("lbctl %s: stderr should name the unknown command and suggest %q:\n%s", strings.Join(tc.args, " "), tc.suggest, r.err)
		}
		if r.out != "" {
			t.Errorf("lbctl %s: printed on stdout (help?):\n%s", strings.Join(tc.args, " "), r.out)
		}
	}
}

// Every command group, whoever adds it later, refuses an unknown word, and a
// bare group still prints its help with exit 0.
func TestEveryGroupRefusesUnknownSubcommand(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "lbctl.yaml")
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if !c.HasSubCommands() || !c.HasParent() {
			return
		}
		path := strings.Fields(c.CommandPath())[1:]
		r := lbctl(t, cfg, append(path, "no-such-thing")...)
		if r.code != exitcode.Usage || !strings.Contains(r.err, `unknown command "no-such-thing"`) {
			t.Errorf("lbctl %s no-such-thing: exit %d, stderr:\n%s", strings.Join(path, " "), r.code, r.err)
		}
		if c.Runnable() && c.Args != nil {
			return // a group that does something itself (leader) is not only help
		}
		r = lbctl(t, cfg, append([]string{"--endpoints", "not a host"}, path...)...) // help needs no settings
		if r.code != exitcode.OK || !strings.Contains(r.out, "Available Commands") {
			t.Errorf("lbctl %s: exit %d, want its help with exit 0; stdout:\n%s", strings.Join(path, " "), r.code, r.out)
		}
	}
	walk((&app{stdout: io.Discard, stderr: io.Discard}).rootCmd())
}

// A stray argument to a command that takes none, or one too many, is a usage
// error before anything is dialled or changed.
func TestStrayArgumentsAreUsageErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "lbctl.yaml")
	for _, args := range [][]string{
		{"vip", "list", "web"},
		{"vip", "delete", "web", "extra"},
		{"member", "list", "x"},
		{"status", "x"},
		{"version", "x"},
		{"watch", "x"},
		{"config", "get-contexts", "x"},
		{"backend", "add", "web", "10.0.0.1", "x"},
	} {
		r := lbctl(t, cfg, append([]string{"--endpoints", "127.0.0.1:1"}, args...)...)
		if r.code != exitcode.Usage || !strings.Contains(r.err, "usage: lbctl "+args[0]) {
			t.Errorf("lbctl %s: exit %d, want %d and the usage line; stderr:\n%s", strings.Join(args, " "), r.code, exitcode.Usage, r.err)
		}
	}
}
