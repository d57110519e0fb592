package errinfo

import (
	"errors"
	"fmt"
	"testing"

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
