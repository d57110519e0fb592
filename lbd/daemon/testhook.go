package daemon

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/edgelb/edgelb/lbd/config"
)

// testHooksEnv enables hooks that only the guest scenarios use. With
// EDGELB_TEST_HOOKS=1, every reconcile pass is held while the file
// <data dir>/test-stall exists: what a pass stuck in a slow iptables-restore
// or a netlink call that never returns does to the loop.
const testHooksEnv = "EDGELB_TEST_HOOKS"

// stallPath is the hook's file for this configuration ("" when hooks are off).
func stallPath(cfg config.Config) string {
	if os.Getenv(testHooksEnv) != "1" {
		return ""
	}
	return filepath.Join(cfg.DataDir, "test-stall")
}

// stallRequested reports whether the test hook wants the next pass held.
func (d *Daemon) stallRequested() bool {
	if d.stallFile == "" {
		return false
	}
	_, err := os.Stat(d.stallFile)
	return err == nil
}

// testStall blocks while the stall file exists (or until ctx ends).
func (d *Daemon) testStall(ctx context.Context, log *slog.Logger) {
	if !d.stallRequested() {
		return
	}
	log.Warn("TEST HOOK: reconcile pass held until the stall file goes", "file", d.stallFile)
	if testHookStalled != nil {
		testHookStalled()
	}
	for d.stallRequested() && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	log.Warn("TEST HOOK: reconcile pass released", "file", d.stallFile)
}

// testHookStalled, when set by a test, runs as a pass starts to be held.
var testHookStalled func()

// testHookProbesHeld, when set by a test, names a member whose prober is
// given no configuration, so it sends no probe and its lease gets no answer:
// a first probe round slower than the catch-up after a start.
var testHookProbesHeld atomic.Pointer[string]
