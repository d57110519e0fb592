package liveness

// PushConnections: the new owner of a VIP in a planned move asks its old
// owner to send the VIP's connections to the members' kernel sync daemons
// before it announces the VIP (docs/DATAPLANE.md, "Handover sync"). It rides
// the liveness connection: a member's own, on the raft port, already open.

import (
	"context"
	"fmt"
	"net/netip"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/auth"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// maxPushVIPs bounds one request: a member owns at most this many VIPs that
// move to one other member in a pass (the FSM's own limits are far below).
const maxPushVIPs = 4096

// PushConnections answers a new owner's request: it pushes the VIPs'
// established connections now (Config.Push) and answers once they are sent.
func (p *Prober) PushConnections(ctx context.Context, req *raftv1.PushConnectionsRequest) (*raftv1.PushConnectionsResponse, error) {
	if req.From == "" {
		return nil, errinfo.New(codes.InvalidArgument, errinfo.InvalidField, map[string]string{"field": "from"},
			"push connections: from (the asking member's id) is required")
	}
	// As for Ping: with TLS only a member asks, and as itself (the
	// authorizer admits members only; a plaintext caller is Anonymous).
	if id, ok := auth.FromContext(ctx); ok && id != auth.Anonymous && (id.Role != auth.RoleMember || id.Name != req.From) {
		return nil, status.Errorf(codes.PermissionDenied, "push connections asked by %q on the certificate of %s %q", req.From, id.Role, id.Name)
	}
	if len(req.Vips) > maxPushVIPs {
		return nil, errinfo.New(codes.InvalidArgument, errinfo.InvalidField, map[string]string{"field": "vips"},
			fmt.Sprintf("push connections: %d VIPs asked at once, at most %d", len(req.Vips), maxPushVIPs))
	}
	vips := make([]netip.Addr, 0, len(req.Vips))
	for _, s := range req.Vips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, errinfo.New(codes.InvalidArgument, errinfo.InvalidField, map[string]string{"field": "vips"},
				fmt.Sprintf("push connections: vip %q is not an IP address: %v", s, err))
		}
		vips = append(vips, a.Unmap())
	}
	resp := &raftv1.PushConnectionsResponse{From: p.cfg.Self, Sent: make(map[string]int64, len(vips))}
	for _, a := range vips {
		resp.Sent[a.String()] = 0
	}
	if p.cfg.Push != nil && len(vips) > 0 {
		sent, err := p.cfg.Push(ctx, req.From, vips)
		if err != nil {
			// The new owner warns and goes on; the kernel's own sync follows.
			return nil, status.Errorf(codes.Unavailable, "push connections on %s: %v", p.cfg.Self, err)
		}
		for a, n := range sent {
			resp.Sent[a.String()] = int64(n)
		}
	}
	return resp, nil
}

// PullConnections asks peer, the old owner of vips, to push their
// connections now (its PushConnections), over this member's liveness
// connection to it, and returns what it sent per VIP. ctx bounds it.
func (p *Prober) PullConnections(ctx context.Context, peer string, vips []netip.Addr) (map[netip.Addr]int, error) {
	p.mu.Lock()
	c := p.conns[peer]
	p.mu.Unlock()
	if c == nil {
		return nil, fmt.Errorf("no liveness connection to member %s", peer)
	}
	req := &raftv1.PushConnectionsRequest{From: p.cfg.Self, Vips: make([]string, len(vips))}
	for i, a := range vips {
		req.Vips[i] = a.String()
	}
	resp, err := raftv1.NewLivenessServiceClient(c.cc).PushConnections(ctx, req)
	if err != nil {
		return nil, err
	}
	if resp.From != peer {
		return nil, fmt.Errorf("member %s's address answered as %q", peer, resp.From)
	}
	out := make(map[netip.Addr]int, len(resp.Sent))
	for s, n := range resp.Sent {
		if a, err := netip.ParseAddr(s); err == nil {
			out[a] = int(n)
		}
	}
	return out, nil
}

// InContact reports whether this member has heard from x recently, within a
// lease: x answers pings now. A member not heard for that long is not asked
// for anything on a takeover's path (a crashed old owner costs nothing).
func (p *Prober) InContact(x string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if x == p.cfg.Self || p.conns[x] == nil {
		return false
	}
	now := p.clock.Now()
	h, ok := p.heard[x]
	return ok && now-h < p.cfg.Lease.Length()
}
