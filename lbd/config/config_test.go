package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsValidate(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if !c.Loopback() {
		t.Error("defaults are not loopback-only; plaintext would be exposed")
	}
	if c.ID == "" || c.DataDir == "" || c.APIAddr == c.RaftAddr {
		t.Errorf("defaults: %+v", c)
	}
}

func TestSanitizeID(t *testing.T) {
	for in, want := range map[string]string{
		"Edge-1.Example.COM": "edge-1.example.com",
		"host_name":          "hostname",
		"--x--":              "x",
		"":                   "lbd",
		"___":                "lbd",
	} {
		if got := sanitizeID(in); got != want {
			t.Errorf("sanitizeID(%q) = %q, want %q", in, got, want)
		}
	}
}

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "lbd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadOverDefaults(t *testing.T) {
	c := Default()
	p := write(t, `
id: edge-2
apiAddr: 10.0.0.12:7700
raftAddr: 10.0.0.12:7701
join: [10.0.0.11:7700, edge-1:7700]
insecurePlaintext: true
dataPlane:
  interface: ens3
  garpBurstInterval: 50ms
ownership:
  lease: 3s
  grace: 4s
log: {format: json}
`)
	if err := c.Load(p); err != nil {
		t.Fatal(err)
	}
	if c.ID != "edge-2" || c.APIAddr != "10.0.0.12:7700" || len(c.Join) != 2 || c.DataPlane.Interface != "ens3" || c.Log.Format != "json" {
		t.Errorf("loaded: %+v", c)
	}
	if c.DataPlane.GARPBurstInterval.Duration != 50*time.Millisecond || c.Ownership.Lease.Duration != 3*time.Second {
		t.Errorf("durations: %v %v", c.DataPlane.GARPBurstInterval, c.Ownership.Lease)
	}
	// Fields the file does not name keep their defaults.
	d := Default()
	if c.DataPlane.Mode != d.DataPlane.Mode || c.DataPlane.GARPBurst != d.DataPlane.GARPBurst || c.Raft != d.Raft || c.Log.Level != d.Log.Level || c.DataDir != d.DataDir {
		t.Errorf("defaults lost by Load: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("loaded config does not validate: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		frags      []string
	}{
		{"unknown field", "apiAdr: 10.0.0.1:7700\n", []string{"apiAdr"}},
		{"unknown nested field", "dataPlane:\n  iface: eth1\n", []string{"iface"}},
		{"not yaml", "id: [unclosed\n", nil},
		{"wrong type", "dataPlane:\n  garpBurst: many\n", []string{"garpBurst"}},
		{"bad duration", "ownership:\n  lease: 5 parsecs\n", []string{"5 parsecs", "lease"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			p := write(t, tc.body)
			err := c.Load(p)
			if err == nil {
				t.Fatal("Load accepted it")
			}
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not name the file", err)
			}
			for _, f := range tc.frags {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not mention %q", err, f)
				}
			}
		})
	}
	c := Default()
	if err := c.Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	if err := d.UnmarshalJSON([]byte(`"1m30s"`)); err != nil || d.Duration != 90*time.Second {
		t.Errorf("UnmarshalJSON = %v, %v", d, err)
	}
	b, err := d.MarshalJSON()
	if err != nil || string(b) != `"1m30s"` {
		t.Errorf("MarshalJSON = %s, %v", b, err)
	}
	if err := d.UnmarshalJSON([]byte(`"soon"`)); err == nil || !strings.Contains(err.Error(), "soon") {
		t.Errorf("UnmarshalJSON(soon) = %v", err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Config)
		frags  []string
	}{
		{"id", func(c *Config) { c.ID = "Edge_1" }, []string{"id:", "Edge_1"}},
		{"data dir", func(c *Config) { c.DataDir = "" }, []string{"dataDir"}},
		{"api addr", func(c *Config) { c.APIAddr = "localhost" }, []string{"apiAddr", "localhost"}},
		{"raft addr wildcard", func(c *Config) { c.RaftAddr = "0.0.0.0:7701"; c.InsecurePlaintext = true }, []string{"raftAddr", "wildcard"}},
		{"same addr", func(c *Config) { c.RaftAddr = c.APIAddr }, []string{"apiAddr and raftAddr"}},
		{"join", func(c *Config) { c.Join = []string{"10.0.0.1:7700", "nope"} }, []string{"join[1]", "nope"}},
		{"mode", func(c *Config) { c.DataPlane.Mode = "xdp" }, []string{"dataPlane.mode", "xdp"}},
		{"snat", func(c *Config) { c.DataPlane.SNAT = "pf" }, []string{"dataPlane.snat", "pf"}},
		{"takeover guard", func(c *Config) { c.DataPlane.TakeoverGuard.Duration = -time.Second }, []string{"dataPlane.takeoverGuard", "-1s", "0 to turn"}},
		{"interface", func(c *Config) { c.DataPlane.Interface = "" }, []string{"dataPlane.interface"}},
		{"heartbeat", func(c *Config) { c.Raft.HeartbeatTimeout.Duration = time.Millisecond }, []string{"heartbeatTimeout"}},
		{"election", func(c *Config) { c.Raft.ElectionTimeout.Duration = 100 * time.Millisecond }, []string{"electionTimeout"}},
		{"lease timeout", func(c *Config) { c.Raft.LeaderLeaseTimeout.Duration = 0 }, []string{"raft.leaderLeaseTimeout"}},
		{"probe interval", func(c *Config) { c.Ownership.ProbeInterval.Duration = time.Millisecond }, []string{"ownership.probeInterval", "1ms", "10ms"}},
		{"ownership lease", func(c *Config) { c.Ownership.Lease.Duration = 100 * time.Millisecond }, []string{"ownership.lease", "100ms", "3 × ownership.probeInterval"}},
		{"ownership grace", func(c *Config) { c.Ownership.Grace.Duration = c.Ownership.Lease.Duration }, []string{"ownership.grace"}},
		// A slower probe needs a wider margin.
		{"ownership grace margin with slow probes", func(c *Config) {
			c.Ownership.ProbeInterval.Duration = 250 * time.Millisecond
			c.Ownership.Lease.Duration, c.Ownership.Grace.Duration = time.Second, 1300*time.Millisecond
		}, []string{"ownership.grace", "at least 500ms"}},
		{"partial tls", func(c *Config) { c.TLS.CAFile = "ca.pem" }, []string{"tls", "certFile"}},
		{"plaintext off loopback", func(c *Config) { c.APIAddr, c.RaftAddr = "10.0.0.1:7700", "10.0.0.1:7701" }, []string{"tls", "--insecure-plaintext"}},
		{"role", func(c *Config) { c.Auth.Identities = map[string]Identity{"spiffe://x": {Role: "root"}} }, []string{"auth.identities", "spiffe://x", "root"}},
		{"cloud-provider tenant", func(c *Config) {
			c.Auth.Identities = map[string]Identity{"spiffe://ccm": {Role: "cloud-provider", Name: "ccm"}}
		}, []string{"auth.identities", "tenant"}},
		{"negative rate", func(c *Config) { c.Auth.WriteRate = -1 }, []string{"writeRate"}},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, []string{"log.format", "xml"}},
		{"log level", func(c *Config) { c.Log.Level = "trace" }, []string{"log.level", "trace"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused(t, tc.change, tc.frags)
		})
	}
	// Every problem is reported at once.
	c := Default()
	c.Log.Format, c.Log.Level, c.DataDir = "xml", "trace", ""
	if err := c.Validate(); err == nil || strings.Count(err.Error(), "\n") < 2 {
		t.Errorf("Validate with three problems = %v, want all three", err)
	}
}

func TestValidateAccepts(t *testing.T) {
	c := Default()
	c.APIAddr, c.RaftAddr = "[::1]:7700", "[::1]:7701"
	c.Join = []string{"edge-1:7700", "[2001:db8::1]:7700"}
	c.DataPlane.Mode, c.DataPlane.Interface = "none", ""
	c.Auth.Identities = map[string]Identity{"spiffe://ccm": {Role: "cloud-provider", Name: "ccm", Tenant: "cluster-a"}}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate = %v", err)
	}
	c = Default()
	c.APIAddr, c.RaftAddr = "10.0.0.1:7700", "10.0.0.1:7701"
	c.TLS = TLS{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate with TLS off loopback = %v", err)
	}
	if c.Loopback() {
		t.Error("10.0.0.1 counted as loopback")
	}
}

// refused: the defaults with change applied fail Validate, and the error
// names every fragment in frags (the field and the value to fix).
func refused(t *testing.T, change func(*Config), frags []string) {
	t.Helper()
	c := Default()
	change(&c)
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted it")
	}
	for _, f := range frags {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %q", err, f)
		}
	}
}
