package config

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseDefaults(t *testing.T) {
	r, err := Parse([]byte("endpoints: [\"127.0.0.1:7700\", \"lb2:7700\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.RequestTimeoutD != DefaultRequestTimeout || r.IntervalD != DefaultInterval || r.TimeoutD != DefaultTimeout ||
		r.HealthCheck.Rise != DefaultRise || r.HealthCheck.Fall != DefaultFall || r.HealthCheck.ProxyHealthPort != DefaultProxyHealthPort ||
		r.OrphanSweepD != DefaultOrphanSweepInterval || r.HeartbeatD != DefaultHeartbeatInterval {
		t.Fatalf("defaults not applied: %+v", r)
	}
	if r.TLS.Enabled() || !r.ServesClass(nil) {
		t.Fatal("want plaintext and the default class")
	}
	c := "edgelb.io/lb"
	if r.ServesClass(&c) {
		t.Fatal("named class served without being configured")
	}
}

func TestParseFull(t *testing.T) {
	r, err := Parse([]byte(`
endpoints: [10.0.0.1:7700]
tls: {caFile: /ca.pem, certFile: /c.pem, keyFile: /k.pem}
tenant: prod-eu
defaultPool: public
requestTimeout: 2s
healthCheck: {interval: 1s, timeout: 500ms, rise: 1, fall: 2}
loadBalancerClasses: [edgelb.io/lb]
`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Tenant != "prod-eu" || r.DefaultPool != "public" || r.RequestTimeoutD != 2*time.Second || r.TimeoutD != 500*time.Millisecond || !r.TLS.Enabled() {
		t.Fatalf("got %+v", r)
	}
}

func TestParseErrors(t *testing.T) {
	for in, want := range map[string]string{
		"":                                              "endpoints",
		"endpoints: [nohost]":                           "host:port",
		"endpoints: [a:1]\nendpiont: x":                 "unknown field",
		"endpoints: [a:1]\ntls: {caFile: x}":            "together",
		"endpoints: [a:1]\ntenant: Bad_Name":            "tenant",
		"endpoints: [a:1]\nrequestTimeout: soon":        "duration",
		"endpoints: [a:1]\nhealthCheck: {timeout: 10s}": "longer than",
		"endpoints: [a:99999]":                          "port",
		"endpoints: [a:1]\norphanSweepInterval: 0s":     "orphanSweepInterval",
		"endpoints: [a:1]\nheartbeatInterval: 1h":       "heartbeatInterval",
	} {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", in, err, want)
		}
	}
}

// FuzzParseConfig runs its seeds as a normal test; `go test -fuzz` explores further.
// Parse must never panic, and what it accepts must be usable.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"endpoints: [127.0.0.1:7700]",
		"endpoints: [a:1]\nhealthCheck: {interval: 1s, timeout: 2s}",
		"{\"endpoints\":[\"[::1]:7700\"],\"tenant\":\"x\"}",
		"endpoints: [a:1]\ntenant: t\nloadBalancerClasses: ['']",
		"- 1\n- 2",
		"endpoints: [a:1]\nrequestTimeout: -1s",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(data)
		if err != nil {
			return
		}
		if len(r.Endpoints) == 0 || r.RequestTimeoutD <= 0 || r.IntervalD <= 0 || r.TimeoutD > r.IntervalD ||
			r.HealthCheck.Rise == 0 || r.HealthCheck.Fall == 0 || r.OrphanSweepD <= 0 || r.HeartbeatD <= 0 {
			t.Fatalf("accepted an unusable config: %+v", r)
		}
	})
}

func TestExampleCloudConfigParses(t *testing.T) {
	data, err := os.ReadFile("../../configs/ccm/cloud-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Parse(data)
	if err != nil {
		t.Fatalf("configs/ccm/cloud-config.yaml: %v", err)
	}
	if len(r.Endpoints) != 3 || !r.TLS.Enabled() {
		t.Fatalf("example parsed as %+v", r)
	}
}
