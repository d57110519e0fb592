package cli

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// goStrings returns every string literal of the non-test Go files under
// dirs, with the file it came from.
func goStrings(t *testing.T, root string, dirs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, ".pb.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil {
						out[s] = path
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// lbdFlags are the flag names lbd defines (lbd is package main, so they are
// read from its source: every pflag definition with a literal name).
func lbdFlags(t *testing.T, root string) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`\.(?:String|Bool|Duration|StringSlice|Int|Uint64|Uint32)(?:Var)?P?\((?:&[^,]+, )?"([a-z0-9-]+)"`)
	flags := map[string]bool{"help": true}
	for _, f := range []string{"lbd/main.go", "lbd/certs_cmd.go"} {
		src, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			flags[m[1]] = true
		}
	}
	if !flags["data-plane"] || !flags["validity"] {
		t.Fatalf("lbd's flags not found in its source: %v", flags)
	}
	return flags
}

var (
	// an lbctl invocation inside a text, up to where the command ends
	lbctlCmdRE = regexp.MustCompile("(?:^|[\\s`'\"(])lbctl((?: [^\\s;|&)`'\"]+)*)")
	flagRE     = regexp.MustCompile(`(?:^|[\s(\x60\[/])--([a-z][a-z0-9-]*)`)
)

func hasFlag(c *cobra.Command, name string) bool {
	return c.Flags().Lookup(name) != nil || c.InheritedFlags().Lookup(name) != nil || name == "help"
}

// checkInvocations checks every "lbctl ..." in text: the words name a real
// command, and each --flag after them is one of that command's flags.
func checkInvocations(t *testing.T, root *cobra.Command, where, text string) {
	t.Helper()
	for _, m := range lbctlCmdRE.FindAllStringSubmatch(text, -1) {
		words := strings.Fields(m[1])
		for i, w := range words {
			if w == "..." || w == "…" {
				words = words[:i] // "lbctl --context prod ...": the rest is elided
				break
			}
		}
		if len(words) == 0 {
			continue
		}
		// Prose ("lbctl talks gRPC ...") is not an invocation: one starts
		// with a command or a global flag.
		if sub, _, err := root.Find(words[:1]); !strings.HasPrefix(words[0], "-") && (err != nil || sub == root) {
			continue
		}
		cmd, rest, err := root.Find(words)
		if err != nil {
			t.Errorf("%s: %q names no lbctl command: %v", where, "lbctl"+m[1], err)
			continue
		}
		// Find stops at the first word that is no subcommand; for a group,
		// that word is a typo unless it is a placeholder.
		if cmd.HasSubCommands() && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") && !placeholder(rest[0]) {
			t.Errorf("%s: %q: %q is not a command of %q", where, "lbctl"+m[1], rest[0], cmd.CommandPath())
		}
		for _, w := range words {
			if !strings.HasPrefix(w, "--") {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimPrefix(w, "--"), "=")
			name = strings.TrimRight(name, ".,:")
			if name != "" && !hasFlag(cmd, name) {
				t.Errorf("%s: %q: %q has no flag --%s", where, "lbctl"+m[1], cmd.CommandPath(), name)
			}
		}
	}
}

func placeholder(w string) bool {
	return strings.ContainsAny(w, "%<[.") || strings.ToUpper(w) == w
}

// Every hint, help text and doc names only commands and flags that exist:
// `lbctl status` suggested "lbctl member drain X --undrain", and lbd
// "lbctl member undrain X"; neither exists.
func TestHintsNameRealCommandsAndFlags(t *testing.T) {
	root := (&app{stdout: io.Discard, stderr: io.Discard}).rootCmd()
	repo := repoRoot(t)
	lbd := lbdFlags(t, repo)

	// Every flag of lbctl, for --flags that texts mention without a command.
	all := map[string]bool{}
	var walk func(c *cobra.Command, f func(*cobra.Command))
	walk = func(c *cobra.Command, f func(*cobra.Command)) {
		f(c)
		for _, s := range c.Commands() {
			walk(s, f)
		}
	}
	walk(root, func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) { all[f.Name] = true })
		c.PersistentFlags().VisitAll(func(f *pflag.Flag) { all[f.Name] = true })
	})
	known := func(name string) bool { return all[name] || lbd[name] }

	// Help texts: invocations are checked exactly, other --flags must exist
	// somewhere in lbctl or lbd.
	walk(root, func(c *cobra.Command) {
		texts := []string{c.Short, c.Long, c.Example}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) { texts = append(texts, f.Usage) })
		for _, text := range texts {
			checkInvocations(t, root, c.CommandPath()+" help", text)
			for _, m := range flagRE.FindAllStringSubmatch(text, -1) {
				if !known(m[1]) {
					t.Errorf("%s help mentions --%s, which neither lbctl nor lbd has", c.CommandPath(), m[1])
				}
			}
		}
	})

	// Messages and hints in the code of lbctl and lbd (a server's hint
	// names lbctl commands too).
	for s, file := range goStrings(t, repo, "lbctl", "lbd") {
		rel, _ := filepath.Rel(repo, file)
		checkInvocations(t, root, rel, s)
	}

	// The docs.
	for _, doc := range []string{"README.md", "lbctl/README.md", "docs/OPERATIONS.md", "docs/HEALTH.md", "docs/ARCHITECTURE.md", "docs/DATAPLANE.md", "docs/SANDBOX.md", "cloudprovider/README.md"} {
		data, err := os.ReadFile(filepath.Join(repo, doc))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			checkInvocations(t, root, doc+":"+strconv.Itoa(i+1), line)
		}
	}
}
