package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRoundTripAndSelect(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "lbctl.yaml")
	f, err := Load(path)
	if err != nil {
		t.Fatalf("missing file: %v", err)
	}
	if c, err := f.Select(""); err != nil || len(c.Endpoints) != 0 {
		t.Fatalf("empty select = %v, %v", c, err)
	}
	f.Contexts["prod"] = &Context{Endpoints: []string{"a:7700", "b:7700"}, Tenant: "team", CAFile: "ca.pem"}
	f.CurrentContext = "prod"
	if err := Save(path, f); err != nil {
		t.Fatal(err)
	}
	g, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.Select("")
	if err != nil || c.Tenant != "team" || len(c.Endpoints) != 2 {
		t.Fatalf("select current = %+v, %v", c, err)
	}
	if c.CAFile != filepath.Join(dir, "sub", "ca.pem") {
		t.Errorf("relative CA path not resolved against the config file: %q", c.CAFile)
	}
	if _, err := g.Select("nope"); err == nil {
		t.Error("selecting a missing context should fail")
	}
}

func TestLoadRejectsUnknownFields(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("contexts:\n  x:\n    endpoint: a:1\n"), 0o600)
	if _, err := Load(path); err == nil {
		t.Error("a misspelt key should be reported, not ignored")
	}
}
