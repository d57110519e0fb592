package server

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/validate"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// maxBatch bounds one WatchResponse so a large snapshot does not exceed the
// client's message size limit; further batches follow at once.
const maxBatch = 1000

// Watch streams the state: a full snapshot (or, when resume_revision is still in
// this member's history, only what changed since), then every change as it is applied.
func (s *Server) Watch(req *edgelbv1.WatchRequest, stream edgelbv1.WatchService_WatchServer) error {
	ctx := stream.Context()
	tenant, err := auth.TenantScope(ctx, req.Tenant)
	if err != nil {
		return err
	}
	if tenant != "" {
		if err := validate.RefName("tenant", tenant, 63); err != nil {
			return err
		}
	}
	bound := callerTenant(ctx)
	rev := req.ResumeRevision
	sendSnapshot := rev == 0
	for {
		changed := s.fsm.Changed()
		var evs []*edgelbv1.Event
		snapshot := false
		if !sendSnapshot {
			var ok bool
			var cur uint64
			evs, cur, ok = s.fsm.EventsSince(rev)
			if !ok {
				sendSnapshot = true
			} else if rev > cur && cur > 0 {
				// The client saw a revision this member has not reached (it was
				// talking to a member further ahead): resend everything.
				sendSnapshot = true
			} else {
				rev = max(rev, cur)
			}
		}
		if sendSnapshot {
			evs, rev = s.fsm.SnapshotEvents()
			snapshot, sendSnapshot = true, false
		}
		evs = filterTenant(evs, tenant, bound)
		if snapshot || len(evs) > 0 {
			if err := sendBatches(stream, snapshot, evs, rev); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-changed:
		}
	}
}

// filterTenant keeps the services of tenant ("" for all) and, for a caller
// bound to a tenant (bound), only the pools open to it, as ListAddressPools
// does. A pool's tenants never change, so its create and delete events are
// kept or dropped alike.
func filterTenant(evs []*edgelbv1.Event, tenant, bound string) []*edgelbv1.Event {
	if tenant == "" && bound == "" {
		return evs
	}
	out := evs[:0:0]
	for _, e := range evs {
		if vs := e.GetVirtualService(); vs != nil && tenant != "" && vs.Tenant != tenant {
			continue
		}
		if p := e.GetAddressPool(); p != nil && !openTo(p, bound) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// sendBatches sends evs in chunks; only the first chunk of a snapshot carries
// snapshot=true, and only the last carries the final revision, so a client that
// resumes after a cut mid-snapshot starts over.
func sendBatches(stream edgelbv1.WatchService_WatchServer, snapshot bool, evs []*edgelbv1.Event, rev uint64) error {
	for first := true; first || len(evs) > 0; first = false {
		n := min(len(evs), maxBatch)
		r := &edgelbv1.WatchResponse{Snapshot: snapshot && first, Events: evs[:n], Revision: rev}
		evs = evs[n:]
		if len(evs) > 0 && n > 0 {
			r.Revision = evs[0].Revision - 1
			if snapshot {
				r.Revision = 0
			}
		}
		if err := stream.Send(r); err != nil {
			return status.Errorf(codes.Unavailable, "send watch response: %v", err)
		}
	}
	return nil
}
