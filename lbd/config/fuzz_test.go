package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary files to the config loader: it must never panic,
// and whatever it accepts must validate without panicking.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("id: edge1\napiAddr: 10.0.0.11:7700\nraftAddr: 10.0.0.11:7701\ntls:\n  caFile: ca.crt\n"))
	f.Add([]byte("ownership:\n  lease: 2s\n  grace: 2500ms\nraft:\n  heartbeatTimeout: 200ms\n"))
	f.Add([]byte("auth:\n  identities:\n    \"spiffe://x\": {role: cloud-provider, name: a, tenant: a}\n"))
	f.Add([]byte("dataPlane: {mode: none, snat: nft}\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, body []byte) {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, body, 0o600); err != nil {
			t.Skip()
		}
		c := Default()
		if err := c.Load(p); err != nil {
			return
		}
		_ = c.Validate()
		_ = c.Loopback()
	})
}
