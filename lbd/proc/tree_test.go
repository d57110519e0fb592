package proc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoUncountedExec fails if any non-test file of lbd outside this package
// builds a process with os/exec directly: such a process would not be counted
// and the "no process on the VIP path" check would not see it.
func TestNoUncountedExec(t *testing.T) {
	root := filepath.Join("..")
	fset := token.NewFileSet()
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "proc" && filepath.Dir(path) == root || d.Name() == "testdata" {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		execName := ""
		for _, im := range f.Imports {
			if p, _ := strconv.Unquote(im.Path.Value); p == "os/exec" {
				execName = "exec"
				if im.Name != nil {
					execName = im.Name.Name
				}
			}
		}
		if execName == "" {
			return nil
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == execName && (sel.Sel.Name == "Command" || sel.Sel.Name == "CommandContext") {
				t.Errorf("%s: %s.%s starts a process lbd does not count; use proc.%s", fset.Position(sel.Pos()), execName, sel.Sel.Name, sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("checked only %d files under %s: the walk is looking in the wrong place", checked, root)
	}
}

func TestCounts(t *testing.T) {
	before := Started()
	Command("true")
	CommandContext(t.Context(), "true")
	if got := Started() - before; got != 2 {
		t.Fatalf("started %d, want 2", got)
	}
}
