package config

import (
	"strings"
	"testing"
	"time"
)

func TestLoadBGP(t *testing.T) {
	c := Default()
	p := write(t, `
apiAddr: 10.0.0.11:7700
raftAddr: 10.0.0.11:7701
insecurePlaintext: true
bgp:
  asn: 65001
  drainWait: 10s
  peers:
    - address: 10.0.0.1
      asn: 65000
      password: s3cret
    - address: 2001:db8::1
      asn: 65000
      families: [ipv6]
      multihop: true
      holdTime: 30s
      bfd: {enabled: false}
    - address: 10.0.0.2
      asn: 65001
      bfd: {minTx: 100ms, minRx: 150ms, multiplier: 5}
`)
	if err := c.Load(p); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate = %v", err)
	}
	if got := c.BGPRouterID().String(); got != "10.0.0.11" {
		t.Errorf("router ID defaults to %s, want apiAddr's 10.0.0.11", got)
	}
	if c.BGPDrainWait() != 10*time.Second {
		t.Errorf("drainWait = %s", c.BGPDrainWait())
	}
	p0 := c.BGP.Peers[0].WithDefaults()
	if !p0.BFD.On() || p0.BFD.MinTx.Duration != DefaultBFDInterval || p0.BFD.Multiplier != 3 || p0.Port != 179 ||
		p0.HoldTime.Duration != 9*time.Second || p0.Keepalive.Duration != 3*time.Second || !p0.Family(false) || p0.Family(true) || p0.TTL != 0 {
		t.Errorf("peer 0 defaults: %+v", p0)
	}
	p1 := c.BGP.Peers[1].WithDefaults()
	if p1.BFD.On() || p1.Family(false) || !p1.Family(true) || p1.TTL != 255 || p1.Keepalive.Duration != 3*time.Second {
		t.Errorf("peer 1: %+v", p1)
	}
	p2 := c.BGP.Peers[2].WithDefaults()
	if !p2.BFD.On() || p2.BFD.MinTx.Duration != 100*time.Millisecond || p2.BFD.MinRx.Duration != 150*time.Millisecond || p2.BFD.Multiplier != 5 {
		t.Errorf("peer 2 bfd: %+v", p2.BFD)
	}
	// Short hold times shorten the default keepalive with them.
	if k := (BGPPeer{HoldTime: Duration{3 * time.Second}}).WithDefaults().Keepalive.Duration; k != time.Second {
		t.Errorf("keepalive for holdTime 3s = %s, want 1s", k)
	}
	// No bgp section: nothing to check, the speaker does not run.
	d := Default()
	if err := d.Validate(); err != nil || len(d.BGP.Peers) != 0 {
		t.Errorf("default: %v", err)
	}
}

func TestValidateBGPNamesTheField(t *testing.T) {
	peer := func(mod func(*BGPPeer)) func(*Config) {
		return func(c *Config) {
			c.BGP.ASN = 65001
			p := BGPPeer{Address: "10.0.0.1", ASN: 65000}
			mod(&p)
			c.BGP.Peers = []BGPPeer{p}
		}
	}
	off := false
	for _, tc := range []struct {
		name   string
		change func(*Config)
		frags  []string
	}{
		{"asn without peers", func(c *Config) { c.BGP.ASN = 65001 }, []string{"bgp.peers", "no peers"}},
		{"peers without asn", func(c *Config) { c.BGP.Peers = []BGPPeer{{Address: "10.0.0.1", ASN: 65000}} }, []string{"bgp.asn", "65001"}},
		{"as_trans", peer(func(p *BGPPeer) { p.ASN = 23456 }), []string{"bgp.peers[0].asn", "23456"}},
		{"listen without asn", func(c *Config) { c.BGP.ListenPort = 179 }, []string{"bgp", "asn"}},
		{"router id v6", func(c *Config) { peer(func(*BGPPeer) {})(c); c.BGP.RouterID = "2001:db8::1" }, []string{"bgp.routerID", "IPv4"}},
		{"router id from v6 api", func(c *Config) {
			peer(func(*BGPPeer) {})(c)
			c.APIAddr, c.RaftAddr = "[::1]:7700", "[::1]:7701"
		}, []string{"bgp.routerID", "required"}},
		{"listen port", func(c *Config) { peer(func(*BGPPeer) {})(c); c.BGP.ListenPort = 70000 }, []string{"bgp.listenPort", "70000"}},
		{"drain wait", func(c *Config) { peer(func(*BGPPeer) {})(c); c.BGP.DrainWait.Duration = -time.Second }, []string{"bgp.drainWait", "negative"}},
		{"address", peer(func(p *BGPPeer) { p.Address = "router1" }), []string{"bgp.peers[0].address", "router1"}},
		{"duplicate", func(c *Config) {
			c.BGP.ASN = 65001
			c.BGP.Peers = []BGPPeer{{Address: "10.0.0.1", ASN: 65000}, {Address: "10.0.0.1", ASN: 65002}}
		}, []string{"bgp.peers[1].address", "bgp.peers[0]"}},
		{"local address family", peer(func(p *BGPPeer) { p.LocalAddress = "2001:db8::5" }), []string{"bgp.peers[0].localAddress", "different families"}},
		{"password", peer(func(p *BGPPeer) { p.Password = strings.Repeat("x", 81) }), []string{"bgp.peers[0].password", "80"}},
		{"hold time", peer(func(p *BGPPeer) { p.HoldTime.Duration = time.Second }), []string{"bgp.peers[0].holdTime", "3s..65535s"}},
		{"fractional", peer(func(p *BGPPeer) { p.HoldTime.Duration = 4500 * time.Millisecond }), []string{"whole seconds"}},
		{"keepalive", peer(func(p *BGPPeer) { p.HoldTime.Duration, p.Keepalive.Duration = 9*time.Second, 5*time.Second }), []string{"bgp.peers[0].keepalive", "third"}},
		{"ttl without multihop", peer(func(p *BGPPeer) { p.TTL = 2 }), []string{"bgp.peers[0].ttl", "multihop"}},
		{"family", peer(func(p *BGPPeer) { p.Families = []string{"ipv4", "l2vpn"} }), []string{"bgp.peers[0].families[1]", "l2vpn"}},
		{"bfd interval", peer(func(p *BGPPeer) { p.BFD.MinTx.Duration = time.Millisecond }), []string{"bgp.peers[0].bfd", "10ms"}},
		{"bfd multiplier", peer(func(p *BGPPeer) { p.BFD.Enabled = &off; p.BFD.Multiplier = 300 }), []string{"bgp.peers[0].bfd.multiplier"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refused(t, tc.change, tc.frags)
		})
	}
}

// configs/lbd-bgp.yaml, the BGP example, parses strictly and validates.
func TestBGPExampleConfig(t *testing.T) {
	c := Default()
	if err := c.Load("../../configs/lbd-bgp.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("configs/lbd-bgp.yaml does not validate:\n%v", err)
	}
	if c.BGP.ASN != 65001 || len(c.BGP.Peers) != 1 || !c.BGP.Peers[0].BFD.On() || c.BGPRouterID().String() != "10.0.0.11" {
		t.Errorf("loaded %+v", c.BGP)
	}
}
