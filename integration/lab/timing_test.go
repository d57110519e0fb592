package lab

import (
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/edgelb/edgelb/lbd/config"
)

// TestGuestLease: the constant the BGP scenarios time against is the lease
// GuestTiming gives lbd.
func TestGuestLease(t *testing.T) {
	var c config.Config
	if err := yaml.UnmarshalStrict([]byte(GuestTiming), &c); err != nil {
		t.Fatal(err)
	}
	if got := c.Ownership.Lease.Duration; got != GuestLease {
		t.Fatalf("GuestTiming's lease is %s, GuestLease %s", got, GuestLease)
	}
}
