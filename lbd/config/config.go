// Package config is lbd's configuration: a YAML file and flags over built-in
// defaults. With nothing given, lbd runs a single-member cluster on loopback
// with its data under ./lbd-data.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/edgelb/edgelb/lbd/validate"
)

// Duration is a time.Duration written as "500ms" in YAML.
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := time.ParseDuration(s)
	if err != nil {
		// A type error lets encoding/json name the field (ownership.lease).
		return &json.UnmarshalTypeError{Value: "string " + strconv.Quote(s) + " (want a duration, e.g. 500ms, 2s)", Type: reflect.TypeOf(time.Duration(0))}
	}
	d.Duration = v
	return nil
}

// Config is lbd's whole configuration.
type Config struct {
	// ID names this member in the cluster; default: the host name.
	ID string `json:"id"`
	// DataDir holds the raft log, snapshots and the data plane's record of what it programmed.
	DataDir string `json:"dataDir"`
	// APIAddr is where the gRPC API listens; peers and lbctl dial it.
	APIAddr string `json:"apiAddr"`
	// RaftAddr is where raft listens; peers dial it.
	RaftAddr string `json:"raftAddr"`
	// MetricsAddr is where the HTTP listener for /metrics, /healthz and
	// /readyz listens (host:port); empty disables it. See lbd/daemon/metrics.go.
	MetricsAddr string `json:"metricsAddr"`
	// Join lists API addresses of existing members; empty bootstraps a new cluster
	// (only when DataDir holds no state: a restarted member rejoins by itself).
	Join []string `json:"join,omitempty"`

	// TLS secures the API and raft with mutual TLS. Without it lbd runs
	// plaintext only on loopback addresses or with InsecurePlaintext.
	TLS TLS `json:"tls"`
	// InsecurePlaintext allows plaintext on non-loopback addresses (development only).
	InsecurePlaintext bool `json:"insecurePlaintext"`
	Auth              Auth `json:"auth"`

	DataPlane DataPlane `json:"dataPlane"`
	Raft      Raft      `json:"raft"`
	Ownership Ownership `json:"ownership"`
	// Membership configures how the leader adds members.
	Membership Membership `json:"membership"`
	Health     Health     `json:"health"`
	Log        Log        `json:"log"`
	// BGP is the embedded BGP speaker for bgp-mode address pools (bgp.go).
	BGP BGP `json:"bgp"`
}

// TLS names this member's certificate, key and the cluster CA (PEM files,
// reloaded when they change). The certificate must carry edgelb://member/<id>.
type TLS struct {
	CAFile   string `json:"caFile"`
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
}

// Enabled reports whether any TLS file is set.
func (t TLS) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// Identity maps a certificate URI to a role (for certificates from another PKI).
type Identity struct {
	Role   string `json:"role"`
	Name   string `json:"name"`
	Tenant string `json:"tenant,omitempty"`
}

// Auth configures authorisation and per-identity limits.
type Auth struct {
	// Identities maps certificate URI SANs to identities, overriding edgelb://<role>/<name>.
	Identities map[string]Identity `json:"identities,omitempty"`
	// WriteRate is the sustained writes per second one identity may make; WriteBurst its burst.
	WriteRate  float64 `json:"writeRate"`
	WriteBurst int     `json:"writeBurst"`
	// MaxServicesPerTenant bounds one tenant's virtual services.
	MaxServicesPerTenant int `json:"maxServicesPerTenant"`
}

// Loopback reports whether both listening addresses are loopback, where
// plaintext reaches no one but this host.
func (c *Config) Loopback() bool {
	for _, a := range []string{c.APIAddr, c.RaftAddr} {
		ap, err := netip.ParseAddrPort(a)
		if err != nil || !ap.Addr().IsLoopback() {
			return false
		}
	}
	return true
}

// DataPlane configures what lbd does to the kernel.
type DataPlane struct {
	// Mode is "ipvs" (default) or "none" (control plane only: no kernel changes).
	Mode string `json:"mode"`
	// Interface is the data interface VIPs are added to.
	Interface string `json:"interface"`
	// SNAT is the rule engine for SNAT, the takeover guard and source
	// ranges: auto (nftables where the kernel has it, else iptables-legacy,
	// else iptables-nft), nftables, iptables-legacy, iptables-nft or none
	// (no SNAT).
	SNAT string `json:"snat"`
	// GARPBurst gratuitous ARPs / unsolicited NAs are sent on takeover, GARPBurstInterval apart,
	// then one every GARPRepeatInterval.
	GARPBurst          int      `json:"garpBurst"`
	GARPBurstInterval  Duration `json:"garpBurstInterval"`
	GARPRepeatInterval Duration `json:"garpRepeatInterval"`
	// ConnSync runs the kernel's IPVS connection sync (master and backup) on the
	// data interface, so a takeover keeps established connections. SyncID must
	// be the same on every member and unique per segment.
	ConnSync bool   `json:"connSync"`
	SyncID   uint32 `json:"syncID"`
	// TakeoverGuard: for this long after a nat-mode VIP comes from another
	// member, mid-stream TCP packets to its unserved ports (a node's reply
	// arriving before the client's next packet) are dropped rather than
	// answered with a RST; 0 turns it off.
	TakeoverGuard Duration `json:"takeoverGuard"`
	// TickleACKs: after taking a VIP over from another member, send the
	// client of each connection the sync daemon brought here a bare ACK
	// (sequence 0) from the VIP, so its stack answers at once and the
	// connection resumes without waiting for a retransmission timer
	// (lbd/dataplane/tickle.go). On by default; sent on a packet socket,
	// below netfilter (docs/DATAPLANE.md says why that matters).
	TickleACKs bool `json:"tickleACKs"`
	// InterfaceAddresses and Gateways are addresses this member reports as
	// its own (the data interface's) and as its default gateways, in addition
	// to those read from the kernel with the ipvs data plane. No address pool
	// may hold them unless it allows host addresses: a VIP there would be
	// announced over the host or its router. With mode none nothing is read
	// from the kernel, so these are all the member reports.
	InterfaceAddresses []string `json:"interfaceAddresses,omitempty"`
	Gateways           []string `json:"gateways,omitempty"`
}

// Raft holds raft's timers (see raft/node.DefaultTiming for why these values).
type Raft struct {
	HeartbeatTimeout   Duration `json:"heartbeatTimeout"`
	ElectionTimeout    Duration `json:"electionTimeout"`
	LeaderLeaseTimeout Duration `json:"leaderLeaseTimeout"`
	// SnapshotThreshold log entries between snapshots, checked every SnapshotInterval.
	SnapshotThreshold uint64   `json:"snapshotThreshold"`
	SnapshotInterval  Duration `json:"snapshotInterval"`
}

// Ownership configures VIP assignment and fencing (docs/ARCHITECTURE.md,
// "Liveness and the quorum lease", argues the rules Validate enforces).
type Ownership struct {
	// ProbeInterval is how often every member pings every other member over
	// the raft port (lbd/liveness), apart from raft's heartbeats.
	ProbeInterval Duration `json:"probeInterval"`
	// Lease is how long a member keeps answering for its VIPs after the last
	// moment a majority of the voters (itself included) answered its probes,
	// counted from the probes' send time. The raft leader plays no part, so
	// the lease need not outlast a leader election.
	Lease Duration `json:"lease"`
	// Grace is how long no majority may have heard from a member before its
	// VIPs move. It must exceed Lease by a margin (the old owner's time to
	// withdraw, clock-rate drift), so the old owner has surely withdrawn
	// before the new one announces.
	Grace Duration `json:"grace"`
	// ProvisionalTakeover lets the successor of an owner lost together with
	// the raft leader serve its VIPs before the next leader commits the move
	// (docs/ARCHITECTURE.md, "Leader and owner lost together"). On by
	// default: the successor's claim, repeated by a majority, keeps an old
	// owner that resumes from renewing its lease.
	ProvisionalTakeover bool `json:"provisionalTakeover"`
}

// GraceMargin is the least ownership.grace must exceed ownership.lease by:
// two probe intervals, at least 50ms.
func GraceMargin(probe time.Duration) time.Duration { return max(2*probe, 50*time.Millisecond) }

// Membership configures adding members (on the leader).
type Membership struct {
	// CatchUpTimeout bounds how long a new member, added as a non-voter, may
	// take to catch up with the leader; past it, it is removed again and the
	// add fails with the reason. Only a caught-up member becomes a voter.
	CatchUpTimeout Duration `json:"catchUpTimeout"`
}

// Health configures backend health checking (the checks themselves are per
// virtual service; see docs/HEALTH.md).
type Health struct {
	// Enabled runs checks for the VIPs this member owns. Off, every backend
	// counts as up.
	Enabled bool `json:"enabled"`
	// WithoutDataPlane runs the checks on a --data-plane=none member too.
	// Off by default: such a member forwards nothing, it is typically a
	// developer's machine, and the README's first look would otherwise send
	// TCP probes to made-up backends (10.0.0.11:30080) from it.
	WithoutDataPlane bool `json:"withoutDataPlane"`
}

// HealthProbes reports whether this member sends health checks to backends:
// with the ipvs data plane when health.enabled, with data plane none only
// when health.withoutDataPlane asks for it as well.
func (c Config) HealthProbes() bool {
	if !c.Health.Enabled {
		return false
	}
	return c.DataPlane.Mode != "none" || c.Health.WithoutDataPlane
}

// Log configures lbd's logs.
type Log struct {
	Format string `json:"format"` // text or json
	Level  string `json:"level"`  // debug, info, warn, error
}

// maxHostAddresses bounds dataPlane.interfaceAddresses and gateways (the
// API's limit on what a member reports, validate.MaxMemberAddresses).
const maxHostAddresses = validate.MaxMemberAddresses

// DefaultMetricsAddr is the default metrics listener: loopback, so that
// exposing metrics to the network is a decision (metrics name VIPs and backends).
const DefaultMetricsAddr = "127.0.0.1:7702"

// Default returns the embedded defaults.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		ID:          sanitizeID(host),
		DataDir:     "lbd-data",
		APIAddr:     "127.0.0.1:7700",
		RaftAddr:    "127.0.0.1:7701",
		MetricsAddr: DefaultMetricsAddr,
		DataPlane: DataPlane{
			Mode: "ipvs", Interface: "eth0", SNAT: "auto",
			GARPBurst: 3, GARPBurstInterval: Duration{100 * time.Millisecond}, GARPRepeatInterval: Duration{10 * time.Second},
			ConnSync: true, SyncID: 1, TakeoverGuard: Duration{10 * time.Second}, TickleACKs: true,
		},
		Raft: Raft{
			HeartbeatTimeout: Duration{500 * time.Millisecond}, ElectionTimeout: Duration{500 * time.Millisecond},
			LeaderLeaseTimeout: Duration{250 * time.Millisecond},
		},
		// Probes every 50ms; a lease of 5 probe intervals rides out a few
		// lost probes; the grace adds the margin Validate asks for.
		Ownership: Ownership{ProbeInterval: Duration{50 * time.Millisecond}, Lease: Duration{250 * time.Millisecond},
			Grace: Duration{350 * time.Millisecond}, ProvisionalTakeover: true},
		Membership: Membership{CatchUpTimeout: Duration{30 * time.Second}},
		Health:     Health{Enabled: true},
		Auth:       Auth{WriteRate: 500, WriteBurst: 1000, MaxServicesPerTenant: 20000},
		Log:        Log{Format: "text", Level: "info"},
		BGP:        BGP{DrainWait: Duration{DefaultDrainWait}},
	}
}

func sanitizeID(s string) string {
	s = strings.ToLower(s)
	var b strings.Builder
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			b.WriteRune(r)
		}
	}
	out := strings.Trim(b.String(), "-.")
	if out == "" {
		return "lbd"
	}
	return out
}

// Load reads a YAML file over c. Unknown fields are errors, so a typo does not
// silently leave a default in place.
func (c *Config) Load(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config %s: %w", path, err)
	}
	if err := yaml.UnmarshalStrict(b, c); err != nil {
		return fmt.Errorf("parse config %s: %w", path, err)
	}
	return nil
}

// Validate checks the whole configuration and says what to fix.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := validate.Name("id", c.ID, 63); err != nil {
		add("id: %q must be a DNS label (lowercase letters, digits, '-', '.'); set --id", c.ID)
	}
	if c.DataDir == "" {
		add("dataDir: must not be empty")
	}
	for _, a := range []struct{ name, v string }{{"apiAddr", c.APIAddr}, {"raftAddr", c.RaftAddr}} {
		ap, err := netip.ParseAddrPort(a.v)
		if err != nil {
			add("%s: %q must be IP:port of this host (peers dial it), e.g. 10.0.0.11:7700", a.name, a.v)
			continue
		}
		if ap.Addr().IsUnspecified() {
			add("%s: %q is a wildcard; give the address peers reach this host at", a.name, a.v)
		}
	}
	if c.MetricsAddr != "" {
		if err := validate.HostPort("metricsAddr", c.MetricsAddr); err != nil {
			add("metricsAddr: %q must be host:port (e.g. 127.0.0.1:7702, or 0.0.0.0:7702 for every address), or empty to disable", c.MetricsAddr)
		}
	}
	if c.APIAddr == c.RaftAddr {
		add("apiAddr and raftAddr are both %s; they need different ports", c.APIAddr)
	}
	for i, j := range c.Join {
		if _, err := netip.ParseAddrPort(j); err != nil {
			if err := validate.HostPort("join", j); err != nil {
				add("join[%d]: %q must be host:port of a member's API", i, j)
			}
		}
	}
	switch c.DataPlane.Mode {
	case "ipvs", "none":
	default:
		add("dataPlane.mode: %q is not ipvs or none", c.DataPlane.Mode)
	}
	switch c.DataPlane.SNAT {
	case "auto", "nftables", "iptables-legacy", "iptables-nft", "none":
	case "nft":
		add("dataPlane.snat: %q: the nftables rule engine is spelled nftables", c.DataPlane.SNAT)
	default:
		add("dataPlane.snat: %q is not auto, nftables, iptables-legacy, iptables-nft or none", c.DataPlane.SNAT)
	}
	if c.DataPlane.TakeoverGuard.Duration < 0 {
		add("dataPlane.takeoverGuard: %s is negative; use 0 to turn the guard off", c.DataPlane.TakeoverGuard)
	}
	for _, l := range []struct {
		name string
		list []string
	}{{"dataPlane.interfaceAddresses", c.DataPlane.InterfaceAddresses}, {"dataPlane.gateways", c.DataPlane.Gateways}} {
		if len(l.list) > maxHostAddresses {
			add("%s: %d addresses; the limit is %d", l.name, len(l.list), maxHostAddresses)
		}
		for i, a := range l.list {
			if ad, err := netip.ParseAddr(a); err != nil || ad.Zone() != "" {
				add("%s[%d]: %q is not an IP address (e.g. 192.0.2.5 or 2001:db8::5)", l.name, i, a)
			}
		}
	}
	if c.DataPlane.Mode == "ipvs" && c.DataPlane.Interface == "" {
		add("dataPlane.interface: required with the ipvs data plane (the interface VIPs are added to)")
	}
	if c.Raft.HeartbeatTimeout.Duration < 5*time.Millisecond || c.Raft.ElectionTimeout.Duration < c.Raft.HeartbeatTimeout.Duration {
		add("raft: heartbeatTimeout must be ≥5ms and electionTimeout ≥ heartbeatTimeout")
	}
	if c.Raft.LeaderLeaseTimeout.Duration <= 0 || c.Raft.LeaderLeaseTimeout.Duration > c.Raft.HeartbeatTimeout.Duration {
		add("raft.leaderLeaseTimeout must be >0 and ≤ heartbeatTimeout")
	}
	probe, lease, grace := c.Ownership.ProbeInterval.Duration, c.Ownership.Lease.Duration, c.Ownership.Grace.Duration
	if probe < 10*time.Millisecond {
		add("ownership.probeInterval (%s) must be at least 10ms: every member pings every other this often", c.Ownership.ProbeInterval)
	} else if lease < 3*probe {
		// A lease of fewer probes would lapse on a lost packet or two.
		add("ownership.lease (%s) must be at least 3 × ownership.probeInterval (%s), so a lost probe or two does not fence an owner", c.Ownership.Lease, c.Ownership.ProbeInterval)
	}
	// The margin covers the old owner's time to withdraw once its lease runs
	// out (timer, scheduling, a netlink call) and clock-rate drift between
	// members (ppm: negligible beside it).
	if margin := GraceMargin(probe); grace < lease+margin {
		add("ownership.grace (%s) must exceed ownership.lease (%s) by at least %s (2 × ownership.probeInterval, at least 50ms), so an old owner has withdrawn before a new one announces", c.Ownership.Grace, c.Ownership.Lease, margin)
	}
	if c.Membership.CatchUpTimeout.Duration < time.Second {
		add("membership.catchUpTimeout (%s) must be at least 1s: a new member needs time to receive the state before it may vote", c.Membership.CatchUpTimeout)
	}
	if c.TLS.Enabled() && (c.TLS.CAFile == "" || c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		add("tls: caFile, certFile and keyFile must be set together (lbd certs issue --role member makes them)")
	}
	if !c.TLS.Enabled() && !c.InsecurePlaintext && !c.Loopback() {
		add("tls: no certificates, and apiAddr/raftAddr are not loopback: set tls.caFile/certFile/keyFile (see lbd certs --help), or --insecure-plaintext for a lab")
	}
	for uri, id := range c.Auth.Identities {
		switch id.Role {
		case "admin", "member", "operator", "viewer", "cloud-provider":
		default:
			add("auth.identities[%q].role: %q is not admin, member, operator, viewer or cloud-provider", uri, id.Role)
		}
		if id.Role == "cloud-provider" && id.Tenant == "" {
			add("auth.identities[%q]: a cloud-provider needs its tenant", uri)
		}
	}
	if c.Auth.WriteRate < 0 || c.Auth.MaxServicesPerTenant < 0 {
		add("auth: writeRate and maxServicesPerTenant must not be negative (0 means unlimited)")
	}
	c.validateBGP(add)
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format: %q is not text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	return errors.Join(errs...)
}
