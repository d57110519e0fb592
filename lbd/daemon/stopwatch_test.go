package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/internal/logcapture"
)

// A stop that outlasts its bound leaves the stacks of every goroutine,
// including the one it is stuck in; one that ends in time leaves nothing.
func TestWatchStop(t *testing.T) {
	dir := t.TempDir()
	var logs logcapture.Buffer // the stop watch logs from its timer's goroutine
	log := slog.New(slog.NewTextHandler(&logs, nil))

	done := watchStop(log, dir, time.Hour)
	done()
	if _, err := os.Stat(filepath.Join(dir, StopStacksFile)); !os.IsNotExist(err) {
		t.Fatalf("a stop in time wrote the stacks: %v", err)
	}

	stuck := make(chan struct{})
	go func() { stuckInStop(stuck) }()
	defer close(stuck)
	done = watchStop(log, dir, 10*time.Millisecond)
	defer done()
	p := filepath.Join(dir, StopStacksFile)
	for t0 := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 && strings.Contains(logs.String(), StopStacksFile) {
			if !strings.Contains(string(b), "stuckInStop") {
				t.Errorf("the stacks miss the stuck goroutine:\n%s", b)
			}
			return
		}
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("no stacks written after the bound; log: %s", logs.String())
		}
	}
}

//go:noinline
func stuckInStop(c chan struct{}) { <-c }
