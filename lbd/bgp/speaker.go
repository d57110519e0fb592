package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gbgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/edgelb/edgelb/lbd/config"
)

// Options configure a Speaker.
type Options struct {
	ASN      uint32
	RouterID netip.Addr
	// ListenPort 0 does not listen (the speaker only dials its peers).
	ListenPort int
	// ListenAddresses restricts the listener (default: every address).
	ListenAddresses []string
	GracefulRestart bool
	Peers           []config.BGPPeer
	Logger          *slog.Logger
	// OnSession is called (from GoBGP's event goroutine) when a peer's
	// session changes state.
	OnSession func(SessionEvent)
}

// SessionEvent is a change of a peer's BGP session state.
type SessionEvent struct {
	Peer     netip.Addr
	From, To string
	// Reason is GoBGP's disconnect message when the session went down.
	Reason string
	Time   time.Time
}

// PeerStatus is one peer as the speaker sees it.
type PeerStatus struct {
	Address netip.Addr
	ASN     uint32
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm, established.
	State string
	// BFD is the BFD session state: up, down, init, admin-down, or off.
	BFD string
	// Since is when the session was established (zero unless established).
	Since      time.Time
	Advertised uint64
	Received   uint64
}

// Established reports whether the session is up.
func (p PeerStatus) Established() bool { return p.State == "established" }

// Speaker is an embedded GoBGP server that advertises Routes.
type Speaker struct {
	srv  *server.BgpServer
	log  *slog.Logger
	opts Options

	mu      sync.Mutex
	current map[netip.Prefix]advertised
	stopped bool
}

type advertised struct {
	route Route
	id    uuid.UUID
}

// Start starts the speaker and adds its peers; it advertises nothing until
// Apply. The caller must Stop it.
func Start(ctx context.Context, o Options) (*Speaker, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	log := o.Logger.With("component", "bgp")
	lvl := &slog.LevelVar{}
	// GoBGP logs every FSM step at info; lbd logs the transitions itself.
	lvl.Set(slog.LevelWarn)
	srv := server.NewBgpServer(server.LoggerOption(slog.New(minLevel{log.Handler(), lvl}), lvl))
	go srv.Serve()
	s := &Speaker{srv: srv, log: log, opts: o, current: map[netip.Prefix]advertised{}}
	listen := int32(o.ListenPort)
	if listen == 0 {
		listen = -1 // GoBGP: do not listen
	}
	global := &api.Global{Asn: o.ASN, RouterId: o.RouterID.String(), ListenPort: listen, ListenAddresses: o.ListenAddresses}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("start BGP (asn %d, router ID %s): %w", o.ASN, o.RouterID, err)
	}
	// Routes the routers send are kept in GoBGP's table and never used; a
	// global import policy would also drop this member's own paths, so the
	// routers are asked to send nothing (docs/BGP.md).
	// The watch lives as long as the server (Stop ends it), not ctx.
	if err := srv.WatchEvent(context.Background(), server.WatchEventMessageCallbacks{OnPeerUpdate: s.peerEvent}, server.WatchPeer()); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("watch BGP peers: %w", err)
	}
	for _, p := range o.Peers {
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p.WithDefaults(), o.GracefulRestart)}); err != nil {
			srv.Stop()
			return nil, fmt.Errorf("add BGP peer %s: %w", p.Address, err)
		}
	}
	return s, nil
}

func apiPeer(p config.BGPPeer, gr bool) *api.Peer {
	ap := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address, PeerAsn: p.ASN, AuthPassword: p.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: uint64(p.HoldTime.Seconds()), KeepaliveInterval: uint64(p.Keepalive.Seconds()),
			// Retry soon after a lost session: the router may be back in a second.
			ConnectRetry: 1,
		}},
		Transport: &api.Transport{LocalAddress: p.LocalAddress, RemotePort: uint32(p.Port)},
	}
	if p.Multihop {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.TTL)}
	}
	for _, f := range p.Families {
		fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
		if f == "ipv6" {
			fam.Afi = api.Family_AFI_IP6
		}
		ap.AfiSafis = append(ap.AfiSafis, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}})
	}
	if p.BFD.On() {
		ap.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: uint32(p.BFD.MinTx.Microseconds()),
			RequiredMinimumReceive:   uint32(p.BFD.MinRx.Microseconds()),
			DetectionMultiplier:      uint32(p.BFD.Multiplier),
		}
	}
	if gr {
		ap.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: 120}
	}
	return ap
}

func (s *Speaker) peerEvent(ev *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	e := SessionEvent{Peer: ev.Peer.State.NeighborAddress, To: fsmState(ev.Peer.State.SessionState), Time: at}
	if !e.Peer.IsValid() {
		e.Peer = ev.Peer.Conf.NeighborAddress
	}
	if e.To == "idle" {
		e.Reason = ev.Peer.State.DisconnectMessage
	}
	s.log.Info("bgp session", "peer", e.Peer, "state", e.To, "reason", e.Reason)
	if s.opts.OnSession != nil {
		s.opts.OnSession(e)
	}
}

// The names lbd reports for GoBGP's session states (the same words for the
// FSM and API enums, so operators see one vocabulary).
var (
	fsmNames = map[gbgp.FSMState]string{
		gbgp.BGP_FSM_IDLE:        "idle",
		gbgp.BGP_FSM_CONNECT:     "connect",
		gbgp.BGP_FSM_ACTIVE:      "active",
		gbgp.BGP_FSM_OPENSENT:    "opensent",
		gbgp.BGP_FSM_OPENCONFIRM: "openconfirm",
		gbgp.BGP_FSM_ESTABLISHED: "established",
	}
	apiNames = map[api.PeerState_SessionState]string{
		api.PeerState_SESSION_STATE_IDLE:        "idle",
		api.PeerState_SESSION_STATE_CONNECT:     "connect",
		api.PeerState_SESSION_STATE_ACTIVE:      "active",
		api.PeerState_SESSION_STATE_OPENSENT:    "opensent",
		api.PeerState_SESSION_STATE_OPENCONFIRM: "openconfirm",
		api.PeerState_SESSION_STATE_ESTABLISHED: "established",
	}
	bfdNames = map[api.BfdSessionState]string{
		api.BfdSessionState_BFD_SESSION_STATE_UP:         "up",
		api.BfdSessionState_BFD_SESSION_STATE_DOWN:       "down",
		api.BfdSessionState_BFD_SESSION_STATE_INIT:       "init",
		api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN: "admin-down",
	}
)

// stateName is names[st], or otherwise when the enum grows a value lbd does
// not know.
func stateName[K comparable](names map[K]string, st K, otherwise string) string {
	if n, ok := names[st]; ok {
		return n
	}
	return otherwise
}

func fsmState(st gbgp.FSMState) string { return stateName(fsmNames, st, "unknown") }

func apiState(st api.PeerState_SessionState) string { return stateName(apiNames, st, "unknown") }

// bfdState reads a BFD state lbd does not know as down, never as up.
func bfdState(st api.BfdSessionState) string { return stateName(bfdNames, st, "down") }

// Apply makes the advertised routes exactly routes: new or changed routes
// are (re)advertised, routes not in the list withdrawn.
func (s *Speaker) Apply(routes []Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("bgp speaker stopped")
	}
	want := make(map[netip.Prefix]Route, len(routes))
	for _, r := range routes {
		want[r.Prefix] = r
	}
	var errs []error
	for p, a := range s.current {
		if _, ok := want[p]; ok {
			continue
		}
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{UUIDs: []uuid.UUID{a.id}}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %s: %w", p, err))
			continue
		}
		delete(s.current, p)
	}
	for p, r := range want {
		if a, ok := s.current[p]; ok && a.route.Equal(r) {
			continue
		}
		// Advertising a prefix again replaces its path (an implicit
		// withdraw of the old attributes).
		path, err := gobgpPath(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("advertise %s: %w", p, err))
			continue
		}
		res, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
		if err != nil {
			errs = append(errs, fmt.Errorf("advertise %s: %w", p, err))
			continue
		}
		s.current[p] = advertised{route: r, id: res[0].UUID}
	}
	return errors.Join(errs...)
}

// Advertised is what the speaker advertises now, by prefix.
func (s *Speaker) Advertised() map[netip.Prefix]Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[netip.Prefix]Route, len(s.current))
	for p, a := range s.current {
		out[p] = a.route
	}
	return out
}

// gobgpPath is a locally originated path for r; its unspecified next hop
// becomes the session's local address when GoBGP sends it.
func gobgpPath(r Route) (*apiutil.Path, error) {
	nlri, err := gbgp.NewIPAddrPrefix(r.Prefix)
	if err != nil {
		return nil, err
	}
	attrs := []gbgp.PathAttributeInterface{gbgp.NewPathAttributeOrigin(gbgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	fam := gbgp.RF_IPv4_UC
	if r.Prefix.Addr().Is4() {
		nh, err := gbgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, nh)
	} else {
		fam = gbgp.RF_IPv6_UC
		mp, err := gbgp.NewPathAttributeMpReachNLRI(fam, []gbgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, mp)
	}
	if len(r.Communities) > 0 {
		attrs = append(attrs, gbgp.NewPathAttributeCommunities(r.Communities))
	}
	if len(r.LargeCommunities) > 0 {
		ls := make([]*gbgp.LargeCommunity, len(r.LargeCommunities))
		for i, l := range r.LargeCommunities {
			ls[i] = gbgp.NewLargeCommunity(l.Global, l.Local1, l.Local2)
		}
		attrs = append(attrs, gbgp.NewPathAttributeLargeCommunities(ls))
	}
	if r.HasLocalPref {
		attrs = append(attrs, gbgp.NewPathAttributeLocalPref(r.LocalPref))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs}, nil
}

// Status lists the peers in configuration order.
func (s *Speaker) Status(ctx context.Context) ([]PeerStatus, error) {
	byAddr := map[netip.Addr]PeerStatus{}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		st := PeerStatus{Address: a.Unmap(), ASN: p.GetConf().GetPeerAsn(), State: apiState(p.GetState().GetSessionState()), BFD: "off"}
		if p.GetBfd().GetEnabled() {
			st.BFD = bfdState(p.GetState().GetBfdState().GetSessionState())
		}
		if st.Established() {
			if up := p.GetTimers().GetState().GetUptime(); up != nil {
				st.Since = up.AsTime()
			}
		}
		for _, af := range p.GetAfiSafis() {
			st.Advertised += af.GetState().GetAdvertised()
			st.Received += af.GetState().GetReceived()
		}
		byAddr[st.Address] = st
	})
	if err != nil {
		return nil, fmt.Errorf("list BGP peers: %w", err)
	}
	out := make([]PeerStatus, 0, len(s.opts.Peers))
	for _, p := range s.opts.Peers {
		a, err := netip.ParseAddr(p.Address)
		if err != nil {
			continue
		}
		st, ok := byAddr[a.Unmap()]
		if !ok {
			st = PeerStatus{Address: a.Unmap(), ASN: p.ASN, State: "unknown", BFD: "off"}
		}
		out = append(out, st)
	}
	return out, nil
}

// Stop withdraws every route (the routers drop this member's paths at once,
// rather than at BFD or hold-time expiry) and stops the speaker.
func (s *Speaker) Stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	if len(s.current) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true}); err != nil {
			s.log.Warn("bgp: withdraw on stop", "err", err)
		}
		s.current = map[netip.Prefix]advertised{}
	}
	s.mu.Unlock()
	// Stop sends NOTIFICATION (cease) to every peer after the withdraws
	// above, and stops BFD.
	s.srv.Stop()
}

// String names the speaker in logs.
func (s *Speaker) String() string {
	return "bgp AS" + strconv.FormatUint(uint64(s.opts.ASN), 10) + " " + s.opts.RouterID.String()
}

// minLevel drops records below a level: GoBGP logs through the logger it is
// given whatever that logger's own level.
type minLevel struct {
	slog.Handler
	min slog.Leveler
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min.Level() && h.Handler.Enabled(ctx, l)
}
func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
