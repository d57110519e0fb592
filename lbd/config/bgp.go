package config

import (
	"fmt"
	"net/netip"
	"time"
)

// BGP configures this member's embedded BGP speaker (docs/BGP.md). It is
// used only for VIPs from address pools in bgp mode; with no peers the
// speaker does not run and such VIPs are served by nobody on this member.
type BGP struct {
	// ASN is this member's autonomous system number (1..4294967294).
	// Required when peers are given.
	ASN uint32 `json:"asn"`
	// RouterID is the BGP identifier, an IPv4 address unique among the
	// peers' neighbours. Default: the IPv4 address of apiAddr.
	RouterID string `json:"routerID,omitempty"`
	// ListenPort is the TCP port the speaker accepts sessions on; 0 (the
	// default) does not listen: this member only dials its peers.
	ListenPort int `json:"listenPort"`
	// DrainWait is how long a draining member keeps advertising its VIPs
	// tagged GRACEFUL_SHUTDOWN (65535:0, RFC 8326) before withdrawing them,
	// so the routers move traffic to the other paths first.
	DrainWait Duration `json:"drainWait"`
	// GracefulRestart enables BGP graceful restart (RFC 4724) towards every
	// peer. Off by default: a router that keeps a restarting speaker's
	// routes keeps sending traffic to an edge whose lbd is dead.
	GracefulRestart bool `json:"gracefulRestart"`
	// Peers are the routers this member advertises to.
	Peers []BGPPeer `json:"peers,omitempty"`
}

// BGPPeer is one BGP neighbour.
type BGPPeer struct {
	// Address of the router (IPv4 or IPv6).
	Address string `json:"address"`
	// ASN of the router; equal to bgp.asn makes an iBGP session.
	ASN uint32 `json:"asn"`
	// Port the router listens on; default 179.
	Port int `json:"port,omitempty"`
	// LocalAddress is the source address of the session; default: chosen
	// by the kernel's route to the peer.
	LocalAddress string `json:"localAddress,omitempty"`
	// Password turns on TCP MD5 signatures (RFC 2385) with this secret.
	Password string `json:"password,omitempty"`
	// HoldTime and Keepalive: defaults 9s and 3s (BFD detects a lost
	// router faster; these bound the case without BFD).
	HoldTime  Duration `json:"holdTime"`
	Keepalive Duration `json:"keepalive"`
	// Multihop allows a router that is not directly connected, up to TTL
	// hops away (default 255 with multihop; single-hop sessions send TTL 1).
	Multihop bool `json:"multihop,omitempty"`
	TTL      int  `json:"ttl,omitempty"`
	// Families is the address families advertised to this peer: ipv4,
	// ipv6 or both. Default: the family of Address (a route of the other
	// family needs a next hop of that family, set on the router).
	Families []string `json:"families,omitempty"`
	BFD      BFD      `json:"bfd"`
}

// BFD configures Bidirectional Forwarding Detection (RFC 5880/5881) for a
// peer. On by default: without it a lost edge is noticed at the hold time.
type BFD struct {
	// Enabled defaults to true; set false for a router without BFD.
	Enabled *bool `json:"enabled,omitempty"`
	// MinTx is how often this side sends, MinRx the slowest it accepts;
	// Multiplier missed packets declare the session down (detection time
	// = MinRx × Multiplier). Defaults 300ms, 300ms, 3.
	MinTx      Duration `json:"minTx"`
	MinRx      Duration `json:"minRx"`
	Multiplier int      `json:"multiplier"`
}

// On reports whether BFD runs for the peer (the default).
func (b BFD) On() bool { return b.Enabled == nil || *b.Enabled }

// BGP defaults, filled in by WithDefaults.
const (
	DefaultBGPPort       = 179
	DefaultHoldTime      = 9 * time.Second
	DefaultKeepalive     = 3 * time.Second
	DefaultBFDInterval   = 300 * time.Millisecond
	DefaultBFDMultiplier = 3
	DefaultDrainWait     = 30 * time.Second
)

// WithDefaults is the peer with every unset field at its default.
func (p BGPPeer) WithDefaults() BGPPeer {
	if p.Port == 0 {
		p.Port = DefaultBGPPort
	}
	if p.HoldTime.Duration == 0 {
		p.HoldTime.Duration = DefaultHoldTime
	}
	if p.Keepalive.Duration == 0 {
		p.Keepalive.Duration = min(DefaultKeepalive, p.HoldTime.Duration/3)
	}
	if p.Multihop && p.TTL == 0 {
		p.TTL = 255
	}
	if len(p.Families) == 0 {
		// The peer's own family: routes of the other need a next hop of
		// that family, which a session over this one does not have.
		p.Families = []string{"ipv4"}
		if a, err := netip.ParseAddr(p.Address); err == nil && a.Unmap().Is6() {
			p.Families = []string{"ipv6"}
		}
	}
	if p.BFD.MinTx.Duration == 0 {
		p.BFD.MinTx.Duration = DefaultBFDInterval
	}
	if p.BFD.MinRx.Duration == 0 {
		p.BFD.MinRx.Duration = DefaultBFDInterval
	}
	if p.BFD.Multiplier == 0 {
		p.BFD.Multiplier = DefaultBFDMultiplier
	}
	return p
}

// Family reports whether the peer gets routes of the family (v6 or v4).
func (p BGPPeer) Family(v6 bool) bool {
	want := "ipv4"
	if v6 {
		want = "ipv6"
	}
	for _, f := range p.WithDefaults().Families {
		if f == want {
			return true
		}
	}
	return false
}

// BGPRouterID is bgp.routerID, or the IPv4 address of apiAddr when unset;
// invalid when neither gives one (Validate refuses that with peers).
func (c *Config) BGPRouterID() netip.Addr {
	if c.BGP.RouterID != "" {
		a, err := netip.ParseAddr(c.BGP.RouterID)
		if err != nil {
			return netip.Addr{}
		}
		return a
	}
	ap, err := netip.ParseAddrPort(c.APIAddr)
	if err != nil || !ap.Addr().Unmap().Is4() {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// BGPDrainWait is bgp.drainWait, or its default when unset.
func (c *Config) BGPDrainWait() time.Duration {
	if c.BGP.DrainWait.Duration == 0 {
		return DefaultDrainWait
	}
	return c.BGP.DrainWait.Duration
}

// maxBGPPeers bounds bgp.peers: every peer is a session and a BFD session
// per member; an edge talks to its top-of-rack routers, not a mesh.
const maxBGPPeers = 16

func (c *Config) validateBGP(add func(string, ...any)) {
	b := c.BGP
	if b.ASN == 0 && len(b.Peers) == 0 {
		if b.ListenPort != 0 || b.RouterID != "" {
			add("bgp: routerID or listenPort set without bgp.asn and bgp.peers; set both to run BGP, or remove the bgp section")
		}
		return
	}
	if b.ASN == 0 || b.ASN == 4294967295 || b.ASN == 23456 {
		add("bgp.asn: %d is not a usable AS number; give this member's ASN (1..4294967294, not 23456), e.g. 65001", b.ASN)
	}
	if len(b.Peers) == 0 {
		add("bgp.peers: bgp.asn is set but no peers; list the routers to peer with (address and asn)")
	}
	if len(b.Peers) > maxBGPPeers {
		add("bgp.peers: %d peers; the limit is %d", len(b.Peers), maxBGPPeers)
	}
	if b.RouterID != "" {
		if a, err := netip.ParseAddr(b.RouterID); err != nil || !a.Is4() || a.IsUnspecified() {
			add("bgp.routerID: %q must be an IPv4 address (the BGP identifier), e.g. 10.0.0.11", b.RouterID)
		}
	} else if !c.BGPRouterID().IsValid() {
		add("bgp.routerID: required, because apiAddr %q is not an IPv4 address to default to; give an IPv4 address unique among the routers' neighbours", c.APIAddr)
	}
	if b.ListenPort < 0 || b.ListenPort > 65535 {
		add("bgp.listenPort: %d is not a port; use 0 to only dial out, or 179", b.ListenPort)
	}
	if b.DrainWait.Duration < 0 {
		add("bgp.drainWait: %s is negative; use 0 for the default (%s)", b.DrainWait, DefaultDrainWait)
	}
	seen := map[netip.Addr]int{}
	for i, p := range b.Peers {
		f := fmt.Sprintf("bgp.peers[%d]", i)
		a, err := netip.ParseAddr(p.Address)
		if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			add("%s.address: %q must be the router's IP address, e.g. 10.0.0.1 or 2001:db8::1", f, p.Address)
		} else {
			if j, dup := seen[a.Unmap()]; dup {
				add("%s.address: %s is also bgp.peers[%d]; one entry per router", f, a, j)
			}
			seen[a.Unmap()] = i
		}
		if p.ASN == 0 || p.ASN == 4294967295 || p.ASN == 23456 {
			add("%s.asn: %d is not a usable AS number; give the router's ASN, e.g. 65000", f, p.ASN)
		}
		if p.Port < 0 || p.Port > 65535 {
			add("%s.port: %d is not a port (default 179)", f, p.Port)
		}
		if p.LocalAddress != "" {
			if la, err := netip.ParseAddr(p.LocalAddress); err != nil || la.Zone() != "" {
				add("%s.localAddress: %q must be an IP address of this host", f, p.LocalAddress)
			} else if err == nil && a.IsValid() && la.Is4() != a.Is4() {
				add("%s.localAddress: %s and address %s are of different families", f, la, a)
			}
		}
		if len(p.Password) > 80 {
			// TCP_MD5SIG_MAXKEYLEN in the kernel.
			add("%s.password: %d bytes; TCP MD5 keys are at most 80", f, len(p.Password))
		}
		d := p.WithDefaults()
		if p.HoldTime.Duration != 0 && (p.HoldTime.Duration < 3*time.Second || p.HoldTime.Duration > 65535*time.Second) {
			add("%s.holdTime: %s must be 3s..65535s (RFC 4271; 0 means the default %s)", f, p.HoldTime, DefaultHoldTime)
		}
		if p.HoldTime.Duration%time.Second != 0 || p.Keepalive.Duration%time.Second != 0 {
			add("%s: holdTime and keepalive are whole seconds in BGP; %s/%s is not", f, p.HoldTime, p.Keepalive)
		}
		if p.Keepalive.Duration < 0 || d.Keepalive.Duration > d.HoldTime.Duration/3 {
			add("%s.keepalive: %s must be at most a third of holdTime (%s)", f, d.Keepalive, d.HoldTime)
		}
		if p.TTL < 0 || p.TTL > 255 {
			add("%s.ttl: %d must be 1..255", f, p.TTL)
		} else if p.TTL != 0 && !p.Multihop {
			add("%s.ttl: set only with multihop: true (a directly connected router is one hop)", f)
		}
		fams := map[string]bool{}
		for j, fam := range p.Families {
			switch fam {
			case "ipv4", "ipv6":
				if fams[fam] {
					add("%s.families[%d]: %s twice", f, j, fam)
				}
				fams[fam] = true
			default:
				add("%s.families[%d]: %q is not ipv4 or ipv6", f, j, fam)
			}
		}
		if d.BFD.MinTx.Duration < 10*time.Millisecond || d.BFD.MinRx.Duration < 10*time.Millisecond {
			add("%s.bfd: minTx (%s) and minRx (%s) must be at least 10ms (0 means the default %s)", f, d.BFD.MinTx, d.BFD.MinRx, DefaultBFDInterval)
		}
		if d.BFD.MinTx.Duration > time.Hour || d.BFD.MinRx.Duration > time.Hour {
			add("%s.bfd: minTx (%s) and minRx (%s) must be at most 1h", f, d.BFD.MinTx, d.BFD.MinRx)
		}
		if p.BFD.Multiplier < 0 || p.BFD.Multiplier > 255 {
			add("%s.bfd.multiplier: %d must be 1..255 (default %d)", f, p.BFD.Multiplier, DefaultBFDMultiplier)
		}
	}
}
