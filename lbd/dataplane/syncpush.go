package dataplane

import (
	"context"
	"net/netip"
	"time"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsconn"
	"github.com/edgelb/edgelb/lbd/dataplane/syncd"
	"golang.org/x/sys/unix"
)

// pushSync sends the established TCP connections of vip, as this host's
// IPVS table holds them, to every member's backup sync daemon at once, in
// the kernel's own sync messages (package syncd). It runs when a planned
// move starts (the new owner has them before it announces the VIP), when
// the new owner asks for them before it announces (PushConnections, pull.go:
// nothing else orders this host's pass before the new owner's) and again
// when this host withdraws the address (for those opened during the hold).
//
// Why: the kernel's master sends a connection's sync message when its
// buffer is full or 2 s old. After a handover this host carries no more
// traffic for the VIP, so its last buffer waits out the 2 s, and a
// connection opened just before, whose client waits for the server to
// speak, met the new owner unknown: the node's packets were dropped by the
// takeover guard and the client, knowing nothing, could not be tickled
// (packet captures of the HA suite's vip move, 2026-12-05). Messages the
// kernel sends later for the same connections update them in place.
//
// It returns the count of connections sent; attrs are added to its log
// lines. It takes no engine lock.
func (e *Engine) pushSync(ctx context.Context, vip netip.Addr, tenant, why string, attrs ...any) (int, error) {
	if e.cfg.SyncInterface == "" {
		return 0, nil
	}
	vs, err := establishedConns(vip)
	if err != nil {
		e.log.Warn("handover sync not sent", append([]any{"vip", vip, "tenant", tenant, "when", why, "err", err}, attrs...)...)
		return 0, err
	}
	return e.sendSync(ctx, vip, tenant, why, vs, attrs...)
}

// sendSync sends vip's connections vs (read from the IPVS table) as sync
// messages; see pushSync.
func (e *Engine) sendSync(ctx context.Context, vip netip.Addr, tenant, why string, vs []ipvsconn.Conn, attrs ...any) (int, error) {
	if len(vs) == 0 {
		return 0, nil
	}
	t0 := time.Now()
	conns := make([]syncd.Conn, 0, len(vs))
	for _, c := range vs {
		conns = append(conns, syncd.Conn{Proto: unix.IPPROTO_TCP, Client: c.Client, VIP: c.VIP, Backend: c.Backend, State: syncd.TCPEstablished})
	}
	msgs, err := syncd.Encode(uint8(e.cfg.SyncID), conns, syncMessageLen)
	if err == nil {
		err = syncd.Send(ctx, e.cfg.SyncInterface, msgs)
	}
	if err != nil {
		e.log.Warn("handover sync not sent; the kernel's own sync follows within seconds", append([]any{"vip", vip, "tenant", tenant, "when", why, "err", err}, attrs...)...)
		return 0, err
	}
	e.log.Info("connections of a handed-over VIP sent to the members' sync daemons", append([]any{"vip", vip, "tenant", tenant, "when", why,
		"connections", len(conns), "messages", len(msgs), "took", time.Since(t0).Round(time.Microsecond)}, attrs...)...)
	return len(conns), nil
}

// syncMessageLen is the size of the handover's sync messages: what the
// kernel's backup reads in one datagram at the segment's usual MTU.
const syncMessageLen = 1472
