package exitcode

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, OK},
		{errors.New("x"), Other},
		{NewUsage(errors.New("bad flag")), Usage},
		{fmt.Errorf("wrapped: %w", NewUsage(errors.New("bad"))), Usage},
		{status.Error(codes.InvalidArgument, "x"), InvalidArgument},
		{status.Error(codes.NotFound, "x"), NotFound},
		{fmt.Errorf("get: %w", status.Error(codes.NotFound, "x")), NotFound},
		{status.Error(codes.AlreadyExists, "x"), AlreadyExists},
		{status.Error(codes.Aborted, "x"), Conflict},
		{status.Error(codes.FailedPrecondition, "x"), Conflict},
		{status.Error(codes.PermissionDenied, "x"), Denied},
		{status.Error(codes.Unauthenticated, "x"), Denied},
		{status.Error(codes.Unavailable, "x"), Unavailable},
		{status.Error(codes.DeadlineExceeded, "x"), Unavailable},
		{context.DeadlineExceeded, Unavailable},
		{status.Error(codes.Internal, "x"), Other},
	}
	for _, tt := range tests {
		if got := Code(tt.err); got != tt.want {
			t.Errorf("Code(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestMessage(t *testing.T) {
	err := fmt.Errorf("vip web: %w", status.Error(codes.NotFound, `virtual service "web" not found`))
	if got, want := Message(err), `vip web: virtual service "web" not found`; got != want {
		t.Errorf("Message = %q, want %q", got, want)
	}
	if got := Message(status.Error(codes.NotFound, "gone")); got != "gone" {
		t.Errorf("Message = %q, want gone", got)
	}
}
