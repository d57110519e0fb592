package seam

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const dataplanePath = "github.com/edgelb/edgelb/lbd/dataplane"

// findings returns where file names dataplane.Engine (in a type, a
// conversion or a type assertion) or calls x.IPVS() with no arguments.
func findings(fset *token.FileSet, file *ast.File) []string {
	local := "" // the name the file imports lbd/dataplane under
	for _, im := range file.Imports {
		if p, _ := strconv.Unquote(im.Path.Value); p == dataplanePath {
			local = "dataplane"
			if im.Name != nil {
				local = im.Name.Name
			}
		}
	}
	var out []string
	ast.Inspect(file, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.SelectorExpr:
			if id, ok := n.X.(*ast.Ident); ok && local != "" && id.Name == local && n.Sel.Name == "Engine" {
				out = append(out, fset.Position(n.Pos()).String()+": names dataplane.Engine")
			}
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "IPVS" && len(n.Args) == 0 {
				out = append(out, fset.Position(n.Pos()).String()+": calls IPVS()")
			}
		}
		return true
	})
	return out
}

// TestFindingsCanFail: the check sees each form it is meant to forbid, so a
// clean tree below means something.
func TestFindingsCanFail(t *testing.T) {
	src := `package x
import dp "github.com/edgelb/edgelb/lbd/dataplane"
func f(d any) {
	var e *dp.Engine
	_ = d.(*dp.Engine)
	_ = e.IPVS()
}`
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "x.go", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	if got := findings(fset, file); len(got) != 3 {
		t.Fatalf("findings = %q, want the type, the assertion and the IPVS() call", got)
	}
}

func moduleRoot(t *testing.T) string {
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

// TestDataPlaneOnlyThroughItsInterface walks every Go file of the module
// (tests too) outside lbd/dataplane.
func TestDataPlaneOnlyThroughItsInterface(t *testing.T) {
	root := moduleRoot(t)
	inside := filepath.Join(root, "lbd", "dataplane")
	fset := token.NewFileSet()
	var all []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path == inside || (path != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		all = append(all, findings(fset, file)...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range all {
		t.Error(f)
	}
}
