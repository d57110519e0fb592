package daemon

import (
	"context"
	"net/netip"

	"github.com/edgelb/edgelb/lbd/dataplane"
)

// handoverPusher is a data plane that can send a VIP's connections to every
// member's kernel sync daemon when the VIP's new owner asks (the IPVS
// engine); liveness answers the request with it.
type handoverPusher interface {
	PushConnections(ctx context.Context, from string, vips []netip.Addr) (map[netip.Addr]int, error)
}

// handoverPuller is a data plane that asks a moved VIP's previous owner for
// that push before it announces the VIP (the IPVS engine).
type handoverPuller interface {
	SetPullHandover(dataplane.PullHandover)
}

// pullHandover asks member from, a moved VIP's previous owner, to push the
// VIPs' connections now, over the liveness connection to it (lbd/liveness
// PullConnections). A member this one does not hear from is not asked: a
// takeover after a crash must not wait for a dead owner, not even the pass's
// bound.
func (d *Daemon) pullHandover(ctx context.Context, from string, vips []netip.Addr) (map[netip.Addr]int, error) {
	if !d.live.InContact(from) {
		return nil, dataplane.ErrNotInContact
	}
	return d.live.PullConnections(ctx, from, vips)
}
