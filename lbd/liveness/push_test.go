package liveness

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/lease"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// The new owner's pull reaches the old owner's push function with the VIPs,
// over the liveness connection between two real probers on loopback, and
// the counts come back; a member not heard from is not in contact.
func TestPullConnectionsOnLoopback(t *testing.T) {
	ids := []string{"a", "b"}
	lis, peers := loopbackPeers(t, ids)
	var mu sync.Mutex
	var asked []netip.Addr
	var askedBy string
	push := func(_ context.Context, from string, vips []netip.Addr) (map[netip.Addr]int, error) {
		mu.Lock()
		defer mu.Unlock()
		asked, askedBy = append(asked, vips...), from
		return map[netip.Addr]int{vips[0]: 7}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	probers := map[string]*Prober{}
	for _, id := range ids {
		cfg := Config{Self: id, Interval: 20 * ms, Grace: 300 * ms, Lease: lease.New(id, 200*ms, nil),
			Peers: func() ([]Peer, uint64) { return peers, 1 }, Creds: insecure.NewCredentials(), Serving: func() bool { return true },
			Log: slog.Default()}
		if id == "b" {
			cfg.Push = push
		}
		p := New(cfg)
		probers[id] = p
		g := grpc.NewServer()
		p.Register(g)
		go g.Serve(lis[id])
		defer g.Stop()
		go p.Run(ctx)
	}
	a := probers["a"]
	if a.InContact("a") {
		t.Error("a member is not in contact with itself")
	}
	waitFor(t, "a in contact with b", func() bool { return a.InContact("b") })
	v1, v2 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
	defer ccancel()
	sent, err := a.PullConnections(cctx, "b", []netip.Addr{v1, v2})
	if err != nil {
		t.Fatal(err)
	}
	if sent[v1] != 7 || sent[v2] != 0 || len(sent) != 2 {
		t.Errorf("sent %v, want %s: 7 and %s: 0", sent, v1, v2)
	}
	mu.Lock()
	if !slices.Equal(asked, []netip.Addr{v1, v2}) || askedBy != "a" {
		t.Errorf("b's push asked by %q for %v, want a for [%s %s]", askedBy, asked, v1, v2)
	}
	mu.Unlock()
	if _, err := a.PullConnections(cctx, "c", []netip.Addr{v1}); err == nil {
		t.Error("pull from a member a has no connection to: no error")
	}
	if a.InContact("c") {
		t.Error("a member never heard from is in contact")
	}
}

// With TLS only a member asks for a push, and only as itself.
func TestPushConnectionsRefused(t *testing.T) {
	pushed := false
	p := pushProber(func(context.Context, string, []netip.Addr) (map[netip.Addr]int, error) {
		pushed = true
		return nil, nil
	})
	req := &raftv1.PushConnectionsRequest{From: "c", Vips: []string{"192.0.2.10"}}
	for _, id := range []auth.Identity{{Role: auth.RoleMember, Name: "b"}, {Role: auth.RoleAdmin, Name: "c"}} {
		ctx := auth.WithIdentity(context.Background(), id)
		if _, err := p.PushConnections(ctx, req); status.Code(err) != codes.PermissionDenied {
			t.Errorf("push asked by c on %s %s's certificate: %v, want PermissionDenied", id.Role, id.Name, err)
		}
	}
	if pushed {
		t.Error("a refused request pushed")
	}
	ctx := auth.WithIdentity(context.Background(), auth.Identity{Role: auth.RoleMember, Name: "c"})
	if _, err := p.PushConnections(ctx, &raftv1.PushConnectionsRequest{From: "c", Vips: []string{"nope"}}); !errinfo.Is(err, errinfo.InvalidField) || status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad vip: %v, want InvalidArgument INVALID_FIELD", err)
	}
	resp, err := p.PushConnections(ctx, req)
	if err != nil || !pushed || resp.From != "a" {
		t.Errorf("push asked by c as c: %v, %v, pushed=%v", resp, err, pushed)
	}
	pushed = false
	if _, err := p.PushConnections(auth.WithIdentity(context.Background(), auth.Anonymous), req); err != nil || !pushed {
		t.Errorf("push asked on a plaintext listener: %v, pushed=%v", err, pushed)
	}
}

// A push that fails on the old owner is an error for the new owner (which
// warns), not an answer of 0 connections; a request naming too many VIPs is
// refused.
func TestPushConnectionsErrors(t *testing.T) {
	p := pushProber(func(context.Context, string, []netip.Addr) (map[netip.Addr]int, error) {
		return nil, errors.New("no connection sync interface configured on this member")
	})
	ctx := auth.WithIdentity(context.Background(), auth.Identity{Role: auth.RoleMember, Name: "c"})
	if _, err := p.PushConnections(ctx, &raftv1.PushConnectionsRequest{From: "c", Vips: []string{"192.0.2.10"}}); status.Code(err) != codes.Unavailable {
		t.Errorf("failed push: %v, want Unavailable", err)
	}
	many := make([]string, maxPushVIPs+1)
	for i := range many {
		many[i] = "192.0.2.10"
	}
	if _, err := p.PushConnections(ctx, &raftv1.PushConnectionsRequest{From: "c", Vips: many}); !errinfo.Is(err, errinfo.InvalidField) {
		t.Errorf("%d VIPs: %v, want INVALID_FIELD", len(many), err)
	}
}

// pushProber is member a's prober, unstarted, answering pushes with push.
func pushProber(push func(context.Context, string, []netip.Addr) (map[netip.Addr]int, error)) *Prober {
	return New(Config{Self: "a", Interval: 50 * ms, Grace: 350 * ms, Lease: lease.New("a", 250*ms, &fakeClock{t: time.Second}),
		Peers: func() ([]Peer, uint64) { return nil, 0 }, Log: slog.Default(), Push: push})
}
