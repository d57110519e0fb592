package lab

import (
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/edgelb/edgelb/lbd/config"
)

// TestGuestBGPLease: the constant the BGP scenarios time against is the
// lease GuestBGPTiming gives lbd.
func TestGuestBGPLease(t *testing.T) {
	var c config.Config
	if err := yaml.UnmarshalStrict([]byte(GuestBGPTiming), &c); err != nil {
		t.Fatal(err)
	}
	if got := c.Ownership.Lease.Duration; got != GuestBGPLease {
		t.Fatalf("GuestBGPTiming's lease is %s, GuestBGPLease %s", got, GuestBGPLease)
	}
}
