package dataplane

import (
	"os"
	"testing"
)

// The engine starts its fence as a child of "this binary"; in tests that is
// the test binary, which must then act as the fence.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == FenceCommand {
		os.Exit(RunFence(os.Args[2:], os.Stdin))
	}
	os.Exit(m.Run())
}
