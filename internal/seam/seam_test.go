package seam

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"

	"github.com/edgelb/edgelb/internal/gotree"
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

// TestDataPlaneOnlyThroughItsInterface walks every Go file of the module
// (tests too) outside lbd/dataplane.
func TestDataPlaneOnlyThroughItsInterface(t *testing.T) {
	fset := token.NewFileSet()
	for _, f := range gotree.Parse(t, fset, gotree.Options{Tests: true, SkipDirs: []string{"lbd/dataplane"}}) {
		for _, finding := range findings(fset, f.AST) {
			t.Error(finding)
		}
	}
}
