package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// stopStacksAfter is how long a clean stop may take before lbd writes every
// goroutine's stack to its data directory: under systemd's TimeoutStopSec
// (15 s), after which the SIGKILL leaves nothing to say what held the stop.
const stopStacksAfter = 10 * time.Second

// StopStacksFile is the file in the data directory that a slow stop writes.
const StopStacksFile = "stop-goroutines.txt"

// watchStop writes the stacks to dir/StopStacksFile and logs where, if the
// returned func is not called within after.
func watchStop(log *slog.Logger, dir string, after time.Duration) (done func()) {
	t := time.AfterFunc(after, func() {
		buf := make([]byte, 1<<20)
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) || len(buf) >= 64<<20 {
				buf = buf[:n]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		p := filepath.Join(dir, StopStacksFile)
		if err := os.WriteFile(p, buf, 0o600); err != nil {
			log.Warn("stop still running; its goroutines could not be written", "after", after, "err", err)
			return
		}
		log.Warn("stop still running; every goroutine's stack written, for a bug report", "after", after, "file", p)
	})
	return func() { t.Stop() }
}
