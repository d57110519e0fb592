package daemon

import (
	"context"
	"log/slog"
	"os"
	"time"
)

// stallFile, when set (EDGELB_TEST_STALL_FILE, for guest tests only), holds
// every reconcile pass while the named file exists: what a pass stuck in a
// slow iptables-restore or a netlink call does to the loop.
var stallFile = os.Getenv("EDGELB_TEST_STALL_FILE")

// stallRequested reports whether the test hook wants the next pass held.
func stallRequested() bool {
	if stallFile == "" {
		return false
	}
	_, err := os.Stat(stallFile)
	return err == nil
}

// testStall blocks while the stall file exists (or until ctx ends).
func testStall(ctx context.Context, log *slog.Logger) {
	if !stallRequested() {
		return
	}
	log.Warn("TEST HOOK: reconcile pass held until the stall file goes", "file", stallFile)
	if testHookStalled != nil {
		testHookStalled()
	}
	for stallRequested() && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	log.Warn("TEST HOOK: reconcile pass released", "file", stallFile)
}

// testHookStalled, when set by a test, runs as a pass starts to be held.
var testHookStalled func()
