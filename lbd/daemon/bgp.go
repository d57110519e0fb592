package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgelb/edgelb/lbd/bgp"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
)

// bgpSide is this member's BGP speaker for bgp-mode pools (docs/BGP.md);
// nil without bgp peers in the configuration.
type bgpSide struct {
	sp  *bgp.Speaker
	ann *bgp.Announcer
	// drainStart is when this member was first seen draining (zero: not
	// draining); read and written by the announcer's goroutine only.
	drainStart time.Time
	// sessions is signalled on every session change, for reportPeersDown.
	sessions chan struct{}
}

// startBGP starts the speaker and its announcer when BGP is configured.
// The announcer holds the VIPs it advertises on the bgp dummy interface
// with the ipvs data plane; with data plane none it only advertises.
func (d *Daemon) startBGP(ctx context.Context) error {
	c := d.cfg.BGP
	if len(c.Peers) == 0 {
		return nil
	}
	b := &bgpSide{sessions: make(chan struct{}, 1)}
	sp, err := bgp.Start(ctx, bgp.Options{
		ASN: c.ASN, RouterID: d.cfg.BGPRouterID(), ListenPort: c.ListenPort, GracefulRestart: c.GracefulRestart,
		Peers: c.Peers, Logger: d.log,
		OnSession: func(e bgp.SessionEvent) {
			if d.ops != nil {
				d.ops.m.BGPSession(e.Peer.String(), e.To == "established")
			}
			select {
			case b.sessions <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		return err
	}
	b.sp = sp
	b.ann = bgp.NewAnnouncer(sp, func() (bgp.Member, []bgp.VIP, time.Duration) { return d.bgpInputs(b) }, d.log.With("component", "bgp"))
	if d.kernel != nil {
		local, err := bgp.OpenLocal()
		if err != nil {
			sp.Stop()
			return fmt.Errorf("bgp: %w", err)
		}
		b.ann.SetLocal(local)
	}
	d.bgp = b
	if d.ops != nil {
		if err := d.ops.m.RegisterBGP(d.bgpStatus); err != nil {
			sp.Stop()
			return fmt.Errorf("register BGP metrics: %w", err)
		}
	}
	d.log.Info("bgp speaker started", "asn", c.ASN, "router_id", d.cfg.BGPRouterID(), "peers", len(c.Peers))
	return nil
}

// runBGP kicks the announcer (whose Run is its own loop): a new decision on every change of the
// replicated state and at the probe interval (lease renewals, the data
// plane's serving deadline); the announcer itself wakes when the lease
// would run out.
func (d *Daemon) runBGP(ctx context.Context) {
	b := d.bgp
	t := time.NewTicker(max(d.cfg.Ownership.ProbeInterval.Duration, 10*time.Millisecond))
	defer t.Stop()
	for {
		changed := d.node.FSM.Changed()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
		b.ann.Kick()
	}
}

// bgpInputs reads Decide's inputs (the announcer's goroutine only).
func (d *Daemon) bgpInputs(b *bgpSide) (bgp.Member, []bgp.VIP, time.Duration) {
	left := d.lease.Remaining()
	m := bgp.Member{LeaseValid: left > 0, DrainWait: d.cfg.BGPDrainWait()}
	// The reconcile loop's own verdict: it stops extending servingUntil when
	// the fence withdrew or the replicated state cannot be trusted yet.
	m.DataPlaneHealthy = d.caughtUp.Load() && d.serving()
	if self, ok := d.node.FSM.Member(d.cfg.ID); ok && self.State == edgelbv1.MemberState_MEMBER_STATE_DRAINING {
		if b.drainStart.IsZero() {
			b.drainStart = time.Now()
		}
		m.Draining, m.DrainElapsed = true, time.Since(b.drainStart)
	} else {
		b.drainStart = time.Time{}
	}
	vss, _ := d.node.FSM.Shared(fsm.Filter{})
	return m, bgp.VIPsOf(vss, bgp.Pools(d.node.FSM.Pools())), left
}

// stopBGP withdraws this member's routes and closes its sessions.
func (d *Daemon) stopBGP() {
	if d.bgp != nil {
		d.bgp.sp.Stop()
	}
}

// bgpStatus is this member's speaker for GetBgpStatus and metrics.
func (d *Daemon) bgpStatus(ctx context.Context) (*edgelbv1.BgpStatus, error) {
	st := &edgelbv1.BgpStatus{MemberId: d.cfg.ID}
	b := d.bgp
	if b == nil {
		return st, nil
	}
	st.Enabled, st.LocalAsn, st.RouterId = true, d.cfg.BGP.ASN, d.cfg.BGPRouterID().String()
	peers, err := b.sp.Status(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range peers {
		ps := &edgelbv1.BgpPeerStatus{Address: p.Address.String(), Asn: p.ASN, SessionState: p.State, BfdState: p.BFD,
			PrefixesAdvertised: p.Advertised, PrefixesReceived: p.Received}
		if !p.Since.IsZero() {
			ps.EstablishedTime = timestamppb.New(p.Since)
		}
		st.Peers = append(st.Peers, ps)
	}
	adv := b.sp.Advertised()
	prefixes := make([]netip.Prefix, 0, len(adv))
	for p, r := range adv {
		prefixes = append(prefixes, p)
		st.GracefulShutdown = st.GracefulShutdown || r.GracefulShutdown()
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, p := range prefixes {
		st.AdvertisedPrefixes = append(st.AdvertisedPrefixes, p.String())
	}
	return st, nil
}

// reportPeersDown keeps this member's record's bgp_peers_down equal to the
// peers whose session is not established, so session changes reach every
// member and Watch as member events. It reports after a session change
// (settled for a moment: a flapping session is one event, not dozens) and
// retries every few seconds until the record matches.
func (d *Daemon) reportPeersDown(ctx context.Context) {
	b := d.bgp
	var reported []string
	known := false
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.sessions:
			time.Sleep(200 * time.Millisecond)
		case <-t.C:
		}
		if !d.caughtUp.Load() {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		peers, err := b.sp.Status(cctx)
		if err == nil {
			down := []string{}
			for _, p := range peers {
				if !p.Established() {
					down = append(down, p.Address.String())
				}
			}
			slices.Sort(down)
			if !known || !slices.Equal(down, reported) {
				if err = d.srv.SetBGPPeersDown(cctx, down); err == nil {
					reported, known = down, true
				}
			}
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			d.log.Warn("bgp: record the peers down in this member's record", "err", err)
		}
	}
}
