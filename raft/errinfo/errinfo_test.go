package errinfo

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRoundTrip(t *testing.T) {
	err := fmt.Errorf("forwarded: %w", New(codes.FailedPrecondition, PoolRangeInUse, map[string]string{"vips": "192.0.2.1"}, "in use"))
	ei, ok := Of(err)
	if !ok || ei.Domain != Domain || ei.Reason != PoolRangeInUse || ei.Metadata["vips"] != "192.0.2.1" {
		t.Fatalf("Of = %v %v", ei, ok)
	}
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("code %v", status.Code(err))
	}
	for _, e := range []error{nil, errors.New("plain"), status.Error(codes.NotFound, "x"), New(codes.NotFound, "", nil, "no reason")} {
		if r := Reason(e); r != "" {
			t.Errorf("Reason(%v) = %q", e, r)
		}
	}
}

func TestIsAndRetry(t *testing.T) {
	err := fmt.Errorf("create: %w", Retry(codes.ResourceExhausted, RateLimited, map[string]string{"identity": "x"}, 40*time.Millisecond, "slow down"))
	if !Is(err, PoolExhausted, RateLimited) || Is(err, PoolExhausted) || Is(errors.New("RATE_LIMITED"), RateLimited) {
		t.Errorf("Is on %v", err)
	}
	if d, ok := RetryDelay(err); !ok || d != 40*time.Millisecond {
		t.Errorf("RetryDelay = %v %v, want 40ms", d, ok)
	}
	if _, ok := RetryDelay(New(codes.ResourceExhausted, PoolExhausted, nil, "full")); ok {
		t.Error("RetryDelay found on an error without RetryInfo")
	}
	if ei, ok := Of(err); !ok || ei.Metadata["identity"] != "x" || status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Of = %v %v, code %v", ei, ok, status.Code(err))
	}
}
