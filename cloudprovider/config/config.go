// Package config parses the CCM's --cloud-config file: where lbd is, how to
// authenticate, and the defaults applied to every Service.
package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"

	"sigs.k8s.io/yaml"
)

// Config is the --cloud-config file. Durations are Go duration strings ("5s").
type Config struct {
	// Endpoints are lbd API addresses (host:port); any member works, writes are forwarded to the leader.
	Endpoints []string `json:"endpoints"`
	// TLS enables mutual TLS when all of its files are set; plaintext otherwise.
	TLS TLS `json:"tls,omitempty"`
	// Tenant under which VirtualServices are created; empty means the cluster name (--cluster-name).
	Tenant string `json:"tenant,omitempty"`
	// DefaultPool is the address pool used when a Service names none (edgelb.io/address-pool).
	DefaultPool string `json:"defaultPool,omitempty"`
	// RequestTimeout bounds one RPC attempt. Default 5s.
	RequestTimeout string `json:"requestTimeout,omitempty"`
	// HealthCheck holds the probe timings applied to every VirtualService.
	HealthCheck HealthCheck `json:"healthCheck,omitempty"`
	// LoadBalancerClasses are the spec.loadBalancerClass values served, by a
	// controller of edgelb's own (the upstream service controller skips classed
	// Services); needs Tenant. Empty: only Services without a class.
	LoadBalancerClasses []string `json:"loadBalancerClasses,omitempty"`
	// OrphanSweepInterval is how often the CCM deletes its tenant's
	// VirtualServices whose Service no longer exists (also once at start).
	// Default 5m.
	OrphanSweepInterval string `json:"orphanSweepInterval,omitempty"`
	// HeartbeatInterval is how often the CCM renews its tenant's heartbeat
	// in lbd while it reaches its API server. Default 30s.
	HeartbeatInterval string `json:"heartbeatInterval,omitempty"`
	// DirectRouting says the edges and the nodes share an L2 segment and the
	// nodes accept packets addressed to a VIP (kube-proxy in iptables or
	// nftables mode does; in ipvs mode it needs strictARP): then
	// externalTrafficPolicy: Local Services are programmed in dr mode, which
	// keeps the client's address. Off (the default), every Service is nat,
	// which works across routers but shows the pods the VIP as the source.
	// The edgelb.io/forwarding annotation overrides it per Service.
	DirectRouting bool `json:"directRouting,omitempty"`
}

// TLS names PEM files for mutual TLS to lbd.
type TLS struct {
	CAFile     string `json:"caFile,omitempty"`
	CertFile   string `json:"certFile,omitempty"`
	KeyFile    string `json:"keyFile,omitempty"`
	ServerName string `json:"serverName,omitempty"`
}

// Enabled reports whether TLS is configured.
func (t TLS) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// HealthCheck holds health check defaults.
type HealthCheck struct {
	Interval string `json:"interval,omitempty"`
	Timeout  string `json:"timeout,omitempty"`
	Rise     uint32 `json:"rise,omitempty"`
	Fall     uint32 `json:"fall,omitempty"`
	// ProxyHealthPort is kube-proxy's own /healthz port, probed for
	// externalTrafficPolicy: Cluster Services that have no TCP port to connect to. Default 10256.
	ProxyHealthPort uint32 `json:"proxyHealthPort,omitempty"`
}

// Defaults.
const (
	DefaultRequestTimeout  = 5 * time.Second
	DefaultInterval        = 5 * time.Second
	DefaultTimeout         = 2 * time.Second
	DefaultRise            = 2
	DefaultFall            = 3
	DefaultProxyHealthPort = 10256
	// DefaultOrphanSweepInterval: a Service deleted while the CCM was down
	// is swept at its start; the period catches the rarer misses in between.
	DefaultOrphanSweepInterval = 5 * time.Minute
	// DefaultHeartbeatInterval: 20 heartbeats fit in lbctl's default 10m
	// silence threshold, one raft entry per tenant per interval.
	DefaultHeartbeatInterval = 30 * time.Second
)

// Resolved is a checked Config with defaults applied and durations parsed.
type Resolved struct {
	Config
	RequestTimeoutD time.Duration
	IntervalD       time.Duration
	TimeoutD        time.Duration
	OrphanSweepD    time.Duration
	HeartbeatD      time.Duration
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// ValidName reports whether s is a valid lbd tenant or pool name.
func ValidName(s string) bool { return len(s) <= 63 && nameRE.MatchString(s) }

// Parse reads YAML (or JSON), rejects unknown fields so typos do not pass
// silently, checks values and fills defaults.
func Parse(data []byte) (*Resolved, error) {
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("parsing cloud config: %w", err)
	}
	r := &Resolved{Config: c}
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("cloud config: %w", err)
	}
	return r, nil
}

func (r *Resolved) check() error {
	if len(r.Endpoints) == 0 {
		return errors.New("endpoints: at least one lbd API address is required (e.g. 10.0.0.1:7700)")
	}
	for i, e := range r.Endpoints {
		h, p, err := net.SplitHostPort(e)
		if err != nil || h == "" {
			return fmt.Errorf("endpoints[%d]: %q is not host:port", i, e)
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("endpoints[%d]: %q has no valid port", i, e)
		}
	}
	t := r.TLS
	if t.Enabled() && (t.CAFile == "" || t.CertFile == "" || t.KeyFile == "") {
		return errors.New("tls: set caFile, certFile and keyFile together (mutual TLS), or none for plaintext")
	}
	if r.Tenant != "" && !ValidName(r.Tenant) {
		return fmt.Errorf("tenant: %q is not a valid name (lowercase letters, digits, '-', '.', at most 63)", r.Tenant)
	}
	if r.DefaultPool != "" && !ValidName(r.DefaultPool) {
		return fmt.Errorf("defaultPool: %q is not a valid pool name", r.DefaultPool)
	}
	var err error
	if r.RequestTimeoutD, err = dur("requestTimeout", r.RequestTimeout, DefaultRequestTimeout, 100*time.Millisecond, 5*time.Minute); err != nil {
		return err
	}
	if r.OrphanSweepD, err = dur("orphanSweepInterval", r.OrphanSweepInterval, DefaultOrphanSweepInterval, time.Second, 24*time.Hour); err != nil {
		return err
	}
	if r.HeartbeatD, err = dur("heartbeatInterval", r.HeartbeatInterval, DefaultHeartbeatInterval, time.Second, 10*time.Minute); err != nil {
		return err
	}
	hc := &r.HealthCheck
	if r.IntervalD, err = dur("healthCheck.interval", hc.Interval, DefaultInterval, 100*time.Millisecond, time.Hour); err != nil {
		return err
	}
	if r.TimeoutD, err = dur("healthCheck.timeout", hc.Timeout, DefaultTimeout, 10*time.Millisecond, time.Minute); err != nil {
		return err
	}
	if r.TimeoutD > r.IntervalD {
		return fmt.Errorf("healthCheck.timeout %s is longer than the interval %s", r.TimeoutD, r.IntervalD)
	}
	if hc.Rise == 0 {
		hc.Rise = DefaultRise
	}
	if hc.Fall == 0 {
		hc.Fall = DefaultFall
	}
	if hc.Rise > 100 || hc.Fall > 100 {
		return fmt.Errorf("healthCheck: rise and fall must be at most 100 (got %d/%d)", hc.Rise, hc.Fall)
	}
	if hc.ProxyHealthPort == 0 {
		hc.ProxyHealthPort = DefaultProxyHealthPort
	}
	if hc.ProxyHealthPort > 65535 {
		return fmt.Errorf("healthCheck.proxyHealthPort: %d is out of range", hc.ProxyHealthPort)
	}
	if len(r.LoadBalancerClasses) > 0 && r.Tenant == "" {
		return errors.New("loadBalancerClasses: set tenant as well (the class controller is not told --cluster-name)")
	}
	for i, c := range r.LoadBalancerClasses {
		if c == "" || len(c) > 253 {
			return fmt.Errorf("loadBalancerClasses[%d]: %q is not a valid class name", i, c)
		}
	}
	return nil
}

func dur(field, s string, def, min, max time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a duration (e.g. 5s)", field, s)
	}
	if d < min || d > max {
		return 0, fmt.Errorf("%s: %s is out of range %s-%s", field, d, min, max)
	}
	return d, nil
}

// ServesClass reports whether a Service with this spec.loadBalancerClass (nil: none) is ours.
func (r *Resolved) ServesClass(class *string) bool {
	if class == nil {
		return true
	}
	for _, c := range r.LoadBalancerClasses {
		if c == *class {
			return true
		}
	}
	return false
}
