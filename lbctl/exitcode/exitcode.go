// Package exitcode maps errors to the process exit codes scripts rely on.
package exitcode

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes. They are part of lbctl's interface: change them never.
const (
	OK              = 0
	Other           = 1
	Usage           = 2
	InvalidArgument = 3
	NotFound        = 4
	AlreadyExists   = 5
	Conflict        = 6 // FailedPrecondition or Aborted
	Denied          = 7 // PermissionDenied or Unauthenticated
	Unavailable     = 8 // Unavailable or DeadlineExceeded: the cluster could not be reached
)

// Help is the table printed in `lbctl --help`.
const Help = `Exit codes:
  0  success
  1  other error (including --wait running out of time)
  2  usage error: unknown command, bad flag or argument syntax
  3  InvalidArgument: the server refused the request's content
  4  NotFound
  5  AlreadyExists
  6  FailedPrecondition or Aborted: a conflict, e.g. the object changed
     since it was read (--if-generation, vip update) or a pool is in use;
     or the member was removed from the cluster
  7  PermissionDenied or Unauthenticated, or TLS failed (the message names
     the certificate and why: CA, server name, TLS against plaintext)
  8  Unavailable or DeadlineExceeded: no endpoint answered in time, or the
     member has no leader or has not caught up (--stale reads it anyway)`

// UsageError marks an error the operator made in typing the command.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// NewUsage wraps err so that it exits with Usage.
func NewUsage(err error) error {
	if err == nil {
		return nil
	}
	return UsageError{err}
}

type grpcStatus interface{ GRPCStatus() *status.Status }

// Code returns the exit code for err.
func Code(err error) int {
	if err == nil {
		return OK
	}
	var ue UsageError
	if errors.As(err, &ue) {
		return Usage
	}
	var gs grpcStatus
	if errors.As(err, &gs) && gs.GRPCStatus() != nil {
		return fromGRPC(gs.GRPCStatus().Code())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Unavailable
	}
	return Other
}

func fromGRPC(c codes.Code) int {
	switch c {
	case codes.OK:
		return OK
	case codes.InvalidArgument, codes.OutOfRange:
		return InvalidArgument
	case codes.NotFound:
		return NotFound
	case codes.AlreadyExists:
		return AlreadyExists
	case codes.FailedPrecondition, codes.Aborted:
		return Conflict
	case codes.PermissionDenied, codes.Unauthenticated:
		return Denied
	case codes.Unavailable, codes.DeadlineExceeded:
		return Unavailable
	default:
		return Other
	}
}

// Message is the text printed after "Error: ". A gRPC status inside err is
// shown as its bare message, without grpc-go's "rpc error: code = ..." prefix,
// keeping whatever context was wrapped around it.
func Message(err error) string {
	msg := err.Error()
	var gs grpcStatus
	if errors.As(err, &gs) && gs.GRPCStatus() != nil {
		if e, ok := gs.(error); ok {
			msg = strings.Replace(msg, e.Error(), gs.GRPCStatus().Message(), 1)
		}
	}
	return msg
}
