// Package gotree parses the module's own Go source for tests that check the
// whole tree (internal/seam, internal/errtext), so each check holds only its
// rule and the walk is written once.
package gotree

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// File is one parsed Go file with its path relative to the module root,
// slash-separated.
type File struct {
	Rel string
	AST *ast.File
}

// Options choose which files Parse returns.
type Options struct {
	// Tests includes _test.go files.
	Tests bool
	// SkipDirs are module-relative, slash-separated directories not walked.
	SkipDirs []string
}

// Root is the module root: the nearest directory holding go.mod above the
// test's working directory.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test")
		}
		dir = parent
	}
}

// Parse parses every Go file of the module (hidden directories, testdata
// and vendor left out). It fails the test if it finds fewer than 50 files:
// a broken walk would otherwise make every check pass.
func Parse(t testing.TB, fset *token.FileSet, o Options) []File {
	t.Helper()
	root := Root(t)
	skip := map[string]bool{}
	for _, d := range o.SkipDirs {
		skip[filepath.Join(root, filepath.FromSlash(d))] = true
	}
	var out []File
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); skip[path] || (path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || (!o.Tests && strings.HasSuffix(path, "_test.go")) {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		out = append(out, File{Rel: filepath.ToSlash(rel), AST: file})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 50 {
		t.Fatalf("walked only %d Go files from %s: the walk is broken", len(out), root)
	}
	return out
}
