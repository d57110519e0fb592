// Package scripts holds the tests of the shell scripts CI runs. They need the
// pinned buf (scripts/tools.sh builds it once into ~/.cache/edgelb), so they run
// with EDGELB_PROTO=1 (scripts/test.sh's proto stage sets it).
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The enum value the breaking change deletes and the line a compatible change
// adds after it (both in proto/edgelb/v1/types.proto).
const (
	sctpLine  = "  PROTOCOL_SCTP = 3;\n"
	addedLine = "  PROTOCOL_TESTONLY = 9;\n"
)

// TestBreakingChangeFollowedByAnotherCommit is the hole scripts/proto.sh used to
// have: with buf breaking against HEAD~1 only, a breaking commit followed by any
// other commit passed. Each case builds a fresh repository from this one's proto
// files, commits a change to the API and then an unrelated commit, and runs
// `proto.sh check` as CI would.
func TestBreakingChangeFollowedByAnotherCommit(t *testing.T) {
	if os.Getenv("EDGELB_PROTO") != "1" {
		t.Skip("needs the pinned buf; run with EDGELB_PROTO=1")
	}
	cases := []struct {
		name     string
		branch   bool   // the change is made on a branch off main, not on main
		tag      string // a release tag on the first commit
		change   func(string) string
		wantFail bool
		baseline string // what proto.sh must say it compared with
	}{
		{"main without release: deleted enum value", false, "", deleteSCTP, true, "every commit that changed proto/"},
		{"branch: deleted enum value", true, "", deleteSCTP, true, "merge base with main"},
		{"main after release v0.1.0: deleted enum value", false, "v0.1.0", deleteSCTP, true, "release tag v0.1.0"},
		{"branch: added enum value", true, "", addValue, false, "merge base with main"},
		{"main without release: added enum value", false, "", addValue, false, "every commit that changed proto/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := newRepo(t)
			if tc.tag != "" {
				git(t, dir, "tag", tc.tag)
			}
			if tc.branch {
				git(t, dir, "checkout", "-q", "-b", "feature")
			}
			types := filepath.Join(dir, "proto/edgelb/v1/types.proto")
			b, err := os.ReadFile(types)
			if err != nil {
				t.Fatal(err)
			}
			changed := tc.change(string(b))
			if changed == string(b) {
				t.Fatalf("the change did not apply to %s", types)
			}
			if err := os.WriteFile(types, []byte(changed), 0o644); err != nil {
				t.Fatal(err)
			}
			// Regenerate so the check's stale-code step passes and only buf
			// breaking can fail it.
			run(t, dir, "bash", "scripts/proto.sh", "generate")
			git(t, dir, "add", "-A")
			git(t, dir, "commit", "-q", "-m", "change the API")
			if err := os.WriteFile(filepath.Join(dir, "NOTES"), []byte("another commit\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			git(t, dir, "add", "-A")
			git(t, dir, "commit", "-q", "-m", "an unrelated commit")

			out, err := exec.Command("bash", filepath.Join(dir, "scripts/proto.sh"), "check").CombinedOutput()
			t.Logf("proto.sh check:\n%s", out)
			if !strings.Contains(string(out), "buf generate: no diff") {
				t.Fatal("the check stopped before buf breaking")
			}
			if !strings.Contains(string(out), tc.baseline) {
				t.Errorf("baseline: want %q in the output", tc.baseline)
			}
			switch {
			case tc.wantFail && err == nil:
				t.Fatal("proto.sh check passed a breaking change followed by another commit")
			case tc.wantFail && !strings.Contains(string(out), `enum value "3" on enum "Protocol" was deleted`):
				t.Fatalf("proto.sh check failed (%v), but not naming the deleted enum value", err)
			case !tc.wantFail && err != nil:
				t.Fatalf("proto.sh check failed on a compatible change: %v", err)
			}
		})
	}
}

func deleteSCTP(s string) string { return strings.Replace(s, sctpLine, "", 1) }
func addValue(s string) string   { return strings.Replace(s, sctpLine, sctpLine+addedLine, 1) }

// newRepo makes a git repository on branch main holding this repository's
// buf configuration, proto/ and the two scripts proto.sh uses, in one commit.
func newRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"buf.yaml", "buf.gen.yaml", "scripts/proto.sh", "scripts/tools.sh"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.CopyFS(filepath.Join(dir, "proto"), os.DirFS(filepath.Join(root, "proto"))); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "init", "-q", "-b", "main")
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "the API as it is")
	return dir
}

func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	run(t, dir, "git", append([]string{"-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"}, args...)...)
}

func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
