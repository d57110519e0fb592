// Package errinfo is the one place that names the machine-readable reasons
// edgelb attaches to its gRPC errors as google.rpc.ErrorInfo (domain
// edgelb.io), their metadata keys, and the helpers that attach and read
// them. Clients decide by the code and the reason, never by the message,
// which is for people and may be reworded.
//
// It lives under raft/ because the FSM produces most of these errors and
// must not import lbd; lbd, lbctl and the cloud provider use it too.
package errinfo

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is ErrorInfo.domain of every edgelb error.
const Domain = "edgelb.io"

// Reasons (ErrorInfo.reason). Constants, never reworded: clients match them.

// Pools and allocation (the FSM).
const (
	// A pool change would leave allocated VIPs outside the pool (metadata: pool, vips).
	PoolRangeInUse = "POOL_RANGE_IN_USE"
	// A pool change would close the pool to tenants whose VIPs it holds
	// (metadata: pool, vips).
	PoolTenantInUse = "POOL_TENANT_IN_USE"
	// A range to remove is not one of the pool's (metadata: pool, range).
	PoolRangeNotFound = "POOL_RANGE_NOT_FOUND"
	// An update would remove every range of a pool (metadata: pool).
	PoolWouldBeEmpty = "POOL_WOULD_BE_EMPTY"
	// The pool changed since the caller read it (metadata: pool, generation).
	PoolGenerationMismatch = "POOL_GENERATION_MISMATCH"
	// No pool open to the tenant holds addresses of the family asked for
	// (metadata: tenant, family).
	NoPoolForFamily = "NO_POOL_FOR_FAMILY"
	// The pools open to the tenant are full (metadata: tenant, family, pools).
	PoolExhausted = "POOL_EXHAUSTED"
	// A requested VIP is an address of a pool's CIDR that is never handed
	// out: IPv4 network or broadcast, IPv6 subnet-router anycast (metadata:
	// vip, pool, range, kind).
	ReservedAddress = "RESERVED_ADDRESS"
	// A pool range holds an address of a member's data interface or a
	// default gateway (metadata: pool, address, member, kind).
	HostAddressInPool = "HOST_ADDRESS_IN_POOL"
	// A bgp pool's attributes are malformed: a community, large community
	// or aggregation length (metadata: field).
	BgpAttributesInvalid = "BGP_ATTRIBUTES_INVALID"
	// BGP attributes were given for a pool that is not in bgp mode
	// (metadata: field).
	BgpAttributesWithoutBgpMode = "BGP_ATTRIBUTES_WITHOUT_BGP_MODE"
	// A VIP of a bgp pool was asked to move: it has no owner, every
	// eligible member serves it (metadata: vip, pool).
	BgpVIPNotMovable = "BGP_VIP_NOT_MOVABLE"
	// A service in a bgp pool asks for a scheduler other than mh or for
	// nat forwarding: every member serves a bgp VIP at once (ECMP), which
	// only mh (each member picks the same backend for a flow) with dr
	// (replies bypass the edge) can do, so the data plane would never
	// program it. Code FailedPrecondition (metadata: field, pool,
	// scheduler, forwarding_mode).
	BgpPoolNeedsMhDr = "BGP_POOL_NEEDS_MH_DR"
)

// The rules every stored object obeys (raft/rules, the API's validators and
// the FSM). Metadata "field" names the request field.
const (
	// A field breaks a rule; the message says which and how to fix it.
	InvalidField = "INVALID_FIELD"
	// The backend (address + effective port) is already listed.
	DuplicateBackend = "DUPLICATE_BACKEND"
	// A backend address equals the service's own VIP.
	BackendIsVIP = "BACKEND_IS_VIP"
	// A text field holds a control character.
	ControlCharacter = "CONTROL_CHARACTER"
	// A raft command the API would never have proposed.
	MalformedCommand = "MALFORMED_COMMAND"
	// A pin names a member that is not in the cluster.
	UnknownMember = "UNKNOWN_MEMBER"
)

// Limits lbd enforces per caller (lbd/auth, lbd/server). Code ResourceExhausted.
const (
	// The caller's identity writes faster than auth.writeRate allows on
	// this member. The request was refused before it was looked at, so a
	// retry is safe; a google.rpc.RetryInfo says when (metadata: identity,
	// rate).
	RateLimited = "RATE_LIMITED"
	// The tenant already has auth.maxServicesPerTenant virtual services
	// (metadata: tenant, limit).
	TenantServiceLimit = "TENANT_SERVICE_LIMIT"
	// TenantNotSilent: a tenant's services are deleted only when its cloud
	// provider has been silent long enough (or never spoke and force is given).
	TenantNotSilent = "TENANT_NOT_SILENT"
	// TenantNotFound: no tenant of that name has services or a heartbeat.
	TenantNotFound = "TENANT_NOT_FOUND"
)

// Raft leadership and the state of a member's replica.
const (
	// PeerService.Apply on a member that does not lead: nothing was
	// applied, the forwarder tries the new leader. Code Unavailable.
	NotLeader = "NOT_LEADER"
	// The member knows no leader (no quorum). Code Unavailable.
	NoLeader = "NO_LEADER"
	// The member has a leader but its replica has not yet reached the
	// leader's revision. Code Unavailable: it passes by itself.
	NotCaughtUp = "NOT_CAUGHT_UP"
	// The member is not in the cluster's configuration. Code
	// FailedPrecondition: it stays so until an operator acts.
	RemovedMember = "REMOVED_MEMBER"
	// Leadership changed while a write was being committed: it may or may
	// not have been applied. Code Unavailable; read the state back before
	// retrying a write that is not idempotent.
	OutcomeUnknown = "OUTCOME_UNKNOWN"
)

// Membership changes (lbd/server/membership.go).
const (
	MemberAddressWildcard     = "MEMBER_ADDRESS_WILDCARD"
	MemberAddressUnresolvable = "MEMBER_ADDRESS_UNRESOLVABLE"
	MemberAddressInUse        = "MEMBER_ADDRESS_IN_USE"
	MemberIDInUse             = "MEMBER_ID_IN_USE"
	MemberUnreachable         = "MEMBER_UNREACHABLE"
	MemberIdentityMismatch    = "MEMBER_IDENTITY_MISMATCH"
	MemberOfOtherCluster      = "MEMBER_OF_OTHER_CLUSTER"
	MemberCatchUpTimeout      = "MEMBER_CATCH_UP_TIMEOUT"
	QuorumAtRisk              = "QUORUM_AT_RISK"
	ClusterIDUnknown          = "CLUSTER_ID_UNKNOWN"
	LastVoter                 = "LAST_VOTER"
	LeadershipTransferFailed  = "LEADERSHIP_TRANSFER_FAILED"
	// LeaseClaimed: a liveness ping is not answered because a successor has
	// claimed the pinging member's VIPs (provisional takeover): the answer
	// would renew its lease.
	LeaseClaimed = "LEASE_CLAIMED"
)

// Metadata keys of a refused read (NO_LEADER, NOT_CAUGHT_UP, REMOVED_MEMBER).
const (
	MetaRevision    = "revision"     // the replica's revision
	MetaLastContact = "last_contact" // RFC 3339 time of the last leader contact, empty if never
	MetaReachable   = "reachable"    // "k/n": members answering, of the configuration
	MetaLeader      = "leader"       // the leader's id, when one is known
	MetaMember      = "member"       // the answering member's id
	MetaClaimant    = "claimant"     // the member that claimed another's VIPs (LeaseClaimed)
)

// New returns a status error with an ErrorInfo of reason and metadata.
func New(c codes.Code, reason string, meta map[string]string, msg string) error {
	return Status(c, reason, meta, msg).Err()
}

// Errorf is New with a formatted message.
func Errorf(c codes.Code, reason string, meta map[string]string, format string, args ...any) error {
	return New(c, reason, meta, fmt.Sprintf(format, args...))
}

// Status is New as a *status.Status.
func Status(c codes.Code, reason string, meta map[string]string, msg string) *status.Status {
	st := status.New(c, msg)
	if reason == "" {
		return st
	}
	withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Domain: Domain, Reason: reason, Metadata: meta})
	if err != nil {
		// Only a detail that cannot be marshalled fails; the code and
		// message still say what happened.
		return st
	}
	return withInfo
}

// Retry is New with a google.rpc.RetryInfo saying the caller may try again
// after delay: for refusals where nothing was done and a later attempt can
// succeed unchanged.
func Retry(c codes.Code, reason string, meta map[string]string, delay time.Duration, msg string) error {
	st := Status(c, reason, meta, msg)
	if withRetry, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)}); err == nil {
		st = withRetry
	}
	return st.Err()
}

// grpcStatus is what status errors (and errors wrapping them) implement.
type grpcStatus interface{ GRPCStatus() *status.Status }

func details(err error) []any {
	var se grpcStatus
	if err == nil || !errors.As(err, &se) || se.GRPCStatus() == nil {
		return nil
	}
	return se.GRPCStatus().Details()
}

// Of returns the ErrorInfo edgelb attached to err (or to an error it
// wraps), if any.
func Of(err error) (*errdetails.ErrorInfo, bool) {
	for _, d := range details(err) {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Domain == Domain {
			return ei, true
		}
	}
	return nil, false
}

// Reason is the reason of err's ErrorInfo, "" when it has none.
func Reason(err error) string {
	if ei, ok := Of(err); ok {
		return ei.Reason
	}
	return ""
}

// Is reports whether err carries an edgelb ErrorInfo with one of reasons.
func Is(err error, reasons ...string) bool {
	r := Reason(err)
	if r == "" {
		return false
	}
	for _, want := range reasons {
		if r == want {
			return true
		}
	}
	return false
}

// RetryDelay is the delay of err's google.rpc.RetryInfo; ok is false when
// err carries none.
func RetryDelay(err error) (delay time.Duration, ok bool) {
	for _, d := range details(err) {
		if ri, isRetry := d.(*errdetails.RetryInfo); isRetry && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}
