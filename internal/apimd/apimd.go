// Package apimd names what lbd and its clients exchange beside the protobuf
// messages: gRPC metadata keys and the reasons of google.rpc.ErrorInfo details.
// It is not generated code, so it lives outside proto/.
package apimd

import (
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// ReplicaReads are the methods that answer from a member's replica of the
// replicated state: lbd refuses them on a member that cannot vouch for its
// replica (ErrorInfo reasons below), and a client may send them to another
// member instead, since a read changes nothing.
var ReplicaReads = map[string]bool{
	edgelbv1.VirtualServiceService_GetVirtualService_FullMethodName:   true,
	edgelbv1.VirtualServiceService_ListVirtualServices_FullMethodName: true,
	edgelbv1.AddressPoolService_GetAddressPool_FullMethodName:         true,
	edgelbv1.AddressPoolService_ListAddressPools_FullMethodName:       true,
	edgelbv1.WatchService_Watch_FullMethodName:                        true,
	edgelbv1.ClusterService_SaveSnapshot_FullMethodName:               true,
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

// ErrorDomain is the google.rpc.ErrorInfo domain of lbd's errors.
const ErrorDomain = errinfo.Domain

// ErrorInfo reasons of a refused read or write.
const (
	// ReasonNoLeader: the member knows no leader (no quorum). Code Unavailable.
	ReasonNoLeader = "NO_LEADER"
	// ReasonNotCaughtUp: the member has a leader but its replica has not yet
	// reached the leader's revision. Code Unavailable: it passes by itself.
	ReasonNotCaughtUp = "NOT_CAUGHT_UP"
	// ReasonRemovedMember: the member is not in the cluster's configuration.
	// Code FailedPrecondition: it stays so until an operator acts.
	ReasonRemovedMember = "REMOVED_MEMBER"
)

// ErrorInfo metadata keys.
const (
	MetaRevision    = "revision"     // the replica's revision
	MetaLastContact = "last_contact" // RFC 3339 time of the last leader contact, empty if never
	MetaReachable   = "reachable"    // "k/n": members answering, of the configuration
	MetaLeader      = "leader"       // the leader's id, when one is known
	MetaMember      = "member"       // the answering member's id
)
