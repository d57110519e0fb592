package fsm

import (
	"net/netip"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/rules"
)

// wellFormed refuses a command whose shape the apply functions rely on
// (required messages present, addresses parseable). The API validates
// requests long before, but a log entry is read back from disk and from peers:
// a malformed one must be refused on every member alike, never crash them all
// and again on every replay.
//
// Beyond the shape, objects a command carries whole (a service on create and
// update, a pool, a member) must pass the API's own rules (raft/rules) at the
// level the proposer checked them with, in the form the API stores: so a
// command that skipped the API — a raw PeerService call — stores nothing the
// API would refuse. Checks that need the stored service (backend lists) run
// where it is at hand, in the apply functions.
func wellFormed(cmd *raftv1.Command, lvl rules.Level) *Result {
	bad := func(what string) *Result {
		return failR(codes.InvalidArgument, errinfo.MalformedCommand, nil, "malformed command: %s", what)
	}
	addrOK := func(s string) bool { _, err := netip.ParseAddr(s); return err == nil }
	service := func(vs *edgelbv1.VirtualService) *Result {
		if vs == nil {
			return bad("no virtual service")
		}
		if vs.Vip != "" && !addrOK(vs.Vip) {
			return bad("vip " + vs.Vip + " is not an IP address")
		}
		for _, p := range vs.Ports {
			if p == nil {
				return bad("empty port")
			}
		}
		for _, b := range vs.Backends {
			if b == nil || !addrOK(b.Address) {
				return bad("backend without an IP address")
			}
		}
		return nil
	}
	checked := func(vs *edgelbv1.VirtualService) *Result {
		if r := service(vs); r != nil {
			return r
		}
		if err := rules.Stored(vs, lvl); err != nil {
			return refused("virtual service "+KeyOf(vs).String(), err)
		}
		return nil
	}
	switch op := cmd.Op.(type) {
	case *raftv1.Command_CreateVirtualService:
		return checked(op.CreateVirtualService.Service)
	case *raftv1.Command_UpdateVirtualService:
		return checked(op.UpdateVirtualService.Service)
	case *raftv1.Command_SetBackends:
		for _, b := range op.SetBackends.Backends {
			if b == nil || !addrOK(b.Address) {
				return bad("backend without an IP address")
			}
		}
	case *raftv1.Command_AddBackend:
		if b := op.AddBackend.Backend; b == nil || !addrOK(b.Address) {
			return bad("backend without an IP address")
		}
	case *raftv1.Command_RemoveBackend:
		if !addrOK(op.RemoveBackend.Address) {
			return bad("backend address " + op.RemoveBackend.Address + " is not an IP address")
		}
	case *raftv1.Command_DrainBackend:
		if !addrOK(op.DrainBackend.Address) {
			return bad("backend address " + op.DrainBackend.Address + " is not an IP address")
		}
	case *raftv1.Command_RenewTenantHeartbeat:
		if op.RenewTenantHeartbeat.Tenant == "" {
			return bad("heartbeat without a tenant")
		}
		if cmd.Time == nil {
			return bad("heartbeat without a time")
		}
		if err := rules.OrphanedServices("orphaned_services", op.RenewTenantHeartbeat.OrphanedServices); err != nil {
			return refused("heartbeat of tenant "+op.RenewTenantHeartbeat.Tenant, err)
		}
	case *raftv1.Command_DeleteTenantServices:
		if op.DeleteTenantServices.Tenant == "" {
			return bad("tenant gc without a tenant")
		}
		if cmd.Time == nil {
			return bad("tenant gc without a time")
		}
		if d := op.DeleteTenantServices.SilentFor; d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
			return bad("tenant gc with an invalid silent_for")
		}
	case *raftv1.Command_CreateAddressPool:
		if op.CreateAddressPool.Pool == nil {
			return bad("no address pool")
		}
		if err := rules.StoredPool(op.CreateAddressPool.Pool, lvl); err != nil {
			return refused("address pool "+op.CreateAddressPool.Pool.Name, err)
		}
	case *raftv1.Command_UpdateAddressPool:
		// No release before this command's own wrote it unchecked, so the
		// API's rules hold at every level: a raw update may not add a
		// loopback, multicast or malformed range the API would refuse.
		u := op.UpdateAddressPool
		req := &edgelbv1.UpdateAddressPoolRequest{Name: u.Name, AddRanges: slices.Clone(u.AddRanges), RemoveRanges: slices.Clone(u.RemoveRanges),
			Tenants: slices.Clone(u.Tenants), SetTenants: u.SetTenants, Manual: u.Manual, AllowHostAddresses: u.AllowHostAddresses}
		if err := rules.UpdateAddressPool(req, rules.CeilingLimits); err != nil {
			return refused("address pool update "+u.Name, err)
		}
		if !slices.Equal(req.AddRanges, u.AddRanges) || !slices.Equal(req.RemoveRanges, u.RemoveRanges) {
			return bad("ranges of an address pool update are not trimmed as the API sends them")
		}
	case *raftv1.Command_PutMember:
		if m := op.PutMember.Member; m == nil || m.Id == "" {
			return bad("no member")
		}
		if lvl >= rules.Strict {
			// Members register themselves from a validated configuration;
			// older ones were not held to the API's member rules here.
			if err := rules.Member(proto.Clone(op.PutMember.Member).(*edgelbv1.Member)); err != nil {
				return refused("member "+op.PutMember.Member.Id, err)
			}
		}
	case *raftv1.Command_SetClusterId:
		if op.SetClusterId.ClusterId == "" {
			return bad("empty cluster id")
		}
	case *raftv1.Command_SetOwners:
		for _, a := range op.SetOwners.Assignments {
			if a == nil {
				return bad("empty assignment")
			}
		}
	case *raftv1.Command_SetBackendHealth:
		for _, u := range op.SetBackendHealth.Updates {
			if u == nil || !addrOK(u.Address) {
				return bad("health update without a backend address")
			}
		}
	}
	return nil
}
