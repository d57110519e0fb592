package errtext

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"

	"github.com/edgelb/edgelb/internal/gotree"
)

// allowed lists non-test files that may look at an error's text, each with
// why. Keep it empty if you can; a line here needs a reason a reviewer
// accepts.
var allowed = map[string]string{}

// textFuncs are the strings functions that turn a message into a decision.
var textFuncs = map[string]bool{
	"Contains": true, "ContainsAny": true, "HasPrefix": true, "HasSuffix": true,
	"Index": true, "EqualFold": true, "Count": true, "LastIndex": true,
}

// isText reports whether e is x.Error() or x.Message() (no arguments): the
// text of an error or of a gRPC status.
func isText(e ast.Expr) bool {
	c, ok := ast.Unparen(e).(*ast.CallExpr)
	if !ok || len(c.Args) != 0 {
		return false
	}
	sel, ok := c.Fun.(*ast.SelectorExpr)
	return ok && (sel.Sel.Name == "Error" || sel.Sel.Name == "Message")
}

// calledName is the name a call's function goes by: f for f(...) and
// pkg.f(...) or x.f(...) alike.
func calledName(c *ast.CallExpr) string {
	switch f := c.Fun.(type) {
	case *ast.Ident:
		return f.Name
	case *ast.SelectorExpr:
		return f.Sel.Name
	}
	return ""
}

// textArgs records, by function name, the parameters some call passes an
// error's text to (f(st.Message()) marks f's parameter 0), so that the
// function's own matching of that parameter is found too. Functions are
// known by name only: a same-named function elsewhere is looked at as well,
// which can only add findings.
func textArgs(files []*ast.File) map[string]map[int]bool {
	out := map[string]map[int]bool{}
	for _, file := range files {
		ast.Inspect(file, func(n ast.Node) bool {
			c, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			for i, a := range c.Args {
				if isText(a) {
					name := calledName(c)
					if out[name] == nil {
						out[name] = map[int]bool{}
					}
					out[name][i] = true
				}
			}
			return true
		})
	}
	return out
}

// findings returns what in file decides by an error's text: a strings
// function or regexp match over x.Error()/x.Message(), over a variable
// assigned from one in the same function, or over a parameter some caller
// passes such text to (params, from textArgs); a comparison of such text
// with anything but nil; and a switch on it.
func findings(fset *token.FileSet, file *ast.File, params map[string]map[int]bool) []string {
	var out []string
	report := func(n ast.Node, what string) {
		out = append(out, fset.Position(n.Pos()).String()+": "+what)
	}
	for _, decl := range file.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Body == nil {
			continue
		}
		tainted := map[string]bool{}
		if idx := params[fn.Name.Name]; idx != nil && fn.Type.Params != nil {
			i := 0
			for _, field := range fn.Type.Params.List {
				for _, name := range field.Names {
					if idx[i] {
						tainted[name.Name] = true
					}
					i++
				}
				if len(field.Names) == 0 {
					i++
				}
			}
		}
		text := func(e ast.Expr) bool {
			if isText(e) {
				return true
			}
			id, ok := ast.Unparen(e).(*ast.Ident)
			return ok && tainted[id.Name]
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				if len(n.Lhs) == len(n.Rhs) {
					for i, r := range n.Rhs {
						if id, ok := n.Lhs[i].(*ast.Ident); ok && isText(r) {
							tainted[id.Name] = true
						}
					}
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				pkg, _ := sel.X.(*ast.Ident)
				isStrings := pkg != nil && (pkg.Name == "strings" || pkg.Name == "bytes") && textFuncs[sel.Sel.Name]
				isRegexp := strings.HasPrefix(sel.Sel.Name, "Match") || sel.Sel.Name == "FindString"
				if isStrings || isRegexp {
					for _, a := range n.Args {
						if text(a) {
							report(n, "matches an error's text with "+sel.Sel.Name)
							break
						}
					}
				}
			case *ast.BinaryExpr:
				if n.Op != token.EQL && n.Op != token.NEQ {
					return true
				}
				isNil := func(e ast.Expr) bool { id, ok := e.(*ast.Ident); return ok && id.Name == "nil" }
				if (text(n.X) && !isNil(n.Y)) || (text(n.Y) && !isNil(n.X)) {
					report(n, "compares an error's text")
				}
			case *ast.SwitchStmt:
				if n.Tag != nil && text(n.Tag) {
					report(n, "switches on an error's text")
				}
			}
			return true
		})
	}
	return out
}

// TestNoErrorMatchedByText walks every non-test Go file of the module.
// Tests may check messages (that is what a test of a message does); code
// must not decide by them.
func TestNoErrorMatchedByText(t *testing.T) {
	fset := token.NewFileSet()
	tree := gotree.Parse(t, fset, gotree.Options{})
	files := make([]*ast.File, len(tree))
	for i, f := range tree {
		files[i] = f.AST
	}
	params := textArgs(files)
	for i, file := range files {
		if _, ok := allowed[tree[i].Rel]; ok {
			continue
		}
		for _, f := range findings(fset, file, params) {
			t.Errorf("%s (decide by gRPC code, errors.Is/As or errinfo.Reason; see raft/errinfo)", f)
		}
	}
}

// TestFindings: the checker catches the forms it claims to, and leaves
// alone what is not a decision by text.
func TestFindings(t *testing.T) {
	const src = `package p
func f(err error, st interface{ Message() string }, fut interface{ Error() error }) {
	_ = strings.Contains(err.Error(), "connection refused")         // 1
	msg := st.Message()
	_ = strings.HasPrefix(msg, "not the")                            // 2
	_ = err.Error() == "EOF"                                         // 3
	_ = st.Message() != "x"                                          // 4
	switch err.Error() {                                             // 5
	}
	_ = re.MatchString(err.Error())                                  // 6
	_ = fut.Error() == nil
	_ = strings.Contains(name, ":")
	_ = fmt.Sprintf("%s", err.Error())
	_ = kind("x", st.Message())
}
func kind(a, msg string) bool { return strings.Contains(msg, "writes/s") } // 7 (msg is text at index 1)
func other(msg string) bool { return strings.Contains(msg, "x") }
`
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := findings(fset, file, textArgs([]*ast.File{file})); len(got) != 7 {
		t.Errorf("%d findings, want 7:\n%s", len(got), strings.Join(got, "\n"))
	}
}
