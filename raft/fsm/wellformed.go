package fsm

import (
	"net/netip"

	"google.golang.org/grpc/codes"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// wellFormed refuses a command whose shape the apply functions rely on
// (required messages present, addresses parseable). The API validates
// requests long before, but a log entry is read back from disk and from peers:
// a malformed one must be refused on every member alike, never crash them all
// and again on every replay.
func wellFormed(cmd *raftv1.Command) *Result {
	bad := func(what string) *Result { return fail(codes.InvalidArgument, "malformed command: %s", what) }
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
	switch op := cmd.Op.(type) {
	case *raftv1.Command_CreateVirtualService:
		return service(op.CreateVirtualService.Service)
	case *raftv1.Command_UpdateVirtualService:
		return service(op.UpdateVirtualService.Service)
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
	case *raftv1.Command_CreateAddressPool:
		if op.CreateAddressPool.Pool == nil {
			return bad("no address pool")
		}
	case *raftv1.Command_PutMember:
		if m := op.PutMember.Member; m == nil || m.Id == "" {
			return bad("no member")
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
