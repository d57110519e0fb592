// Package errinfo names the machine-readable reasons edgelb attaches to its
// gRPC errors as google.rpc.ErrorInfo (domain edgelb.io). Clients decide by
// the code and the reason, never by the message, which is for people and may
// be reworded.
package errinfo

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Domain is ErrorInfo.domain of every edgelb error.
const Domain = "edgelb.io"

// Reasons (ErrorInfo.reason). Constants, never reworded: clients match them.
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
)

// New returns a status error with an ErrorInfo of reason and metadata.
func New(c codes.Code, reason string, meta map[string]string, msg string) error {
	return Status(c, reason, meta, msg).Err()
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

// Of returns the ErrorInfo edgelb attached to err, if any.
func Of(err error) (*errdetails.ErrorInfo, bool) {
	var se interface{ GRPCStatus() *status.Status }
	if err == nil || !errors.As(err, &se) {
		return nil, false
	}
	for _, d := range se.GRPCStatus().Details() {
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
