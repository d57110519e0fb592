// Package config reads and writes lbctl's config file: named contexts
// (where the cluster is, which tenant, which TLS files) and the current one.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"sigs.k8s.io/yaml"
)

// Context is one named cluster connection.
type Context struct {
	Endpoints  []string `json:"endpoints,omitempty"`
	Tenant     string   `json:"tenant,omitempty"`
	CAFile     string   `json:"ca-file,omitempty"`
	CertFile   string   `json:"cert-file,omitempty"`
	KeyFile    string   `json:"key-file,omitempty"`
	ServerName string   `json:"server-name,omitempty"`
}

// File is the whole config file.
type File struct {
	CurrentContext string              `json:"current-context,omitempty"`
	Contexts       map[string]*Context `json:"contexts,omitempty"`
}

// DefaultPath is $XDG_CONFIG_HOME/edgelb/lbctl.yaml, else ~/.config/edgelb/lbctl.yaml.
func DefaultPath() string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return filepath.Join(".config", "edgelb", "lbctl.yaml")
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "edgelb", "lbctl.yaml")
}

// Load reads path. A missing file is an empty config, so lbctl works
// without one.
func Load(path string) (*File, error) {
	f := &File{Contexts: map[string]*Context{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if err := yaml.UnmarshalStrict(data, f); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	if f.Contexts == nil {
		f.Contexts = map[string]*Context{}
	}
	// Relative TLS paths are relative to the config file, not to wherever
	// lbctl happens to run.
	base := filepath.Dir(path)
	for _, c := range f.Contexts {
		if c == nil {
			continue
		}
		for _, p := range []*string{&c.CAFile, &c.CertFile, &c.KeyFile} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(base, *p)
			}
		}
	}
	return f, nil
}

// Save writes f to path atomically (write a temporary file, then rename),
// readable only by its owner since it names key files.
func Save(path string, f *File) error {
	data, err := yaml.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".lbctl-*.yaml")
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// Names lists the contexts in sorted order.
func (f *File) Names() []string {
	names := make([]string, 0, len(f.Contexts))
	for n := range f.Contexts {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Select returns the context called name, or the current context when name
// is empty. With neither, it returns an empty context (flags and defaults
// apply). Naming a context that does not exist is an error.
func (f *File) Select(name string) (*Context, error) {
	if name == "" {
		name = f.CurrentContext
		if name == "" {
			return &Context{}, nil
		}
	}
	c, ok := f.Contexts[name]
	if !ok || c == nil {
		return nil, fmt.Errorf("context %q not found in the config file; see `lbctl config get-contexts`", name)
	}
	return c, nil
}
