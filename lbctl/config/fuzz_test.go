package config

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzLoad feeds arbitrary files to lbctl's config loader: it never panics,
// and what it accepts has resolved TLS paths, selects without panicking, and
// survives Save and Load unchanged (set-context rewrites the file that way).
func FuzzLoad(f *testing.F) {
	f.Add([]byte("current-context: prod\ncontexts:\n  prod:\n    endpoints: [10.0.0.11:7700, 10.0.0.12:7700]\n    tenant: team-a\n    ca-file: ca.crt\n    cert-file: /etc/edgelb/alice.crt\n    key-file: ../alice.key\n    server-name: edge\n"))
	f.Add([]byte("contexts:\n  lab: {endpoints: ['127.0.0.1:7700']}\n  empty: null\ncurrent-context: empty\n"))
	f.Add([]byte("current-context: missing\n"))
	f.Add([]byte("contexts:\n  x:\n    endpoint: a:1\n")) // misspelt key
	f.Add([]byte("contexts: [a, b]\n"))
	f.Add([]byte("contexts:\n  x:\n    endpoints: []\n    ca-file: ''\n"))
	f.Add([]byte("\xef\xbb\xbf{\"contexts\": {\"j\": {\"tenant\": \"t\"}}}"))
	f.Add([]byte(""))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body []byte) {
		p := filepath.Join(dir, "lbctl.yaml")
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Skip()
		}
		cfg, err := Load(p)
		if err != nil {
			return
		}
		if cfg.Contexts == nil {
			t.Fatal("accepted config has a nil context map")
		}
		for name, c := range cfg.Contexts {
			if c == nil {
				continue
			}
			for _, path := range []string{c.CAFile, c.CertFile, c.KeyFile} {
				if path != "" && !filepath.IsAbs(path) {
					t.Fatalf("context %q keeps the relative path %q", name, path)
				}
			}
		}
		if names := cfg.Names(); len(names) != len(cfg.Contexts) || !sort.StringsAreSorted(names) {
			t.Fatalf("Names() = %q for %d contexts", names, len(cfg.Contexts))
		}
		if c, err := cfg.Select(""); err == nil && c == nil {
			t.Fatal("Select of the current context returned neither a context nor an error")
		}

		out := filepath.Join(dir, "saved", "lbctl.yaml")
		if err := Save(out, cfg); err != nil {
			t.Fatalf("save an accepted config: %v", err)
		}
		again, err := Load(out)
		if err != nil {
			saved, _ := os.ReadFile(out)
			t.Fatalf("a saved config does not load: %v\n%s", err, saved)
		}
		a, _ := yaml.Marshal(cfg)
		b, _ := yaml.Marshal(again)
		if string(a) != string(b) {
			t.Fatalf("save and load changed the config:\n%s\n---\n%s", a, b)
		}
	})
}
