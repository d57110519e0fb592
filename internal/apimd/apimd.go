// Package apimd names what lbd and its clients exchange beside the protobuf
// messages: gRPC metadata keys and the methods that read a member's replica.
// It is not generated code, so it lives outside proto/. The reasons and
// metadata of google.rpc.ErrorInfo details are raft/errinfo's.
package apimd

import (
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// ReplicaReads are the methods that answer from a member's replica of the
// replicated state: lbd refuses them on a member that cannot vouch for its
// replica (errinfo.NoLeader, NotCaughtUp, RemovedMember), and a client may send them to another
// member instead, since a read changes nothing.
var ReplicaReads = map[string]bool{
	edgelbv1.VirtualServiceService_GetVirtualService_FullMethodName:   true,
	edgelbv1.VirtualServiceService_ListVirtualServices_FullMethodName: true,
	edgelbv1.AddressPoolService_GetAddressPool_FullMethodName:         true,
	edgelbv1.AddressPoolService_ListAddressPools_FullMethodName:       true,
	edgelbv1.WatchService_Watch_FullMethodName:                        true,
	edgelbv1.ClusterService_SaveSnapshot_FullMethodName:               true,
	// Heartbeats read from an old replica would call a live tenant silent.
	edgelbv1.TenantService_ListTenants_FullMethodName: true,
}

const (
	// Stale, sent by a client with the value "1", asks a member to answer a
	// read from its local replica even when it cannot vouch for it (no
	// leader, removed, not caught up). Metadata rather than a request field:
	// it applies alike to every read (List, Get, Watch, SaveSnapshot), and
	// an old server ignores it, which answers as old servers always did.
	Stale = "edgelb-stale"

	// Response headers of a read that asked for Stale: the answering member,
	// its replica's revision, and, when the member could not vouch for its
	// replica, why (empty otherwise; query-escaped, since metadata values
	// must be printable ASCII).
	Member      = "edgelb-member"
	Revision    = "edgelb-revision"
	StaleReason = "edgelb-stale-reason"
)
