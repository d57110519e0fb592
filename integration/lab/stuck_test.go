package lab

import (
	"strings"
	"testing"
)

// StuckIn picks, from the last goroutine dump in a log, the goroutines that
// run the named function, and nothing from an earlier dump or the log lines.
func TestStuckIn(t *testing.T) {
	log := `time=... level=INFO msg="lbd started"
SIGQUIT: quit
PC=0x1 m=0 sigcode=0

goroutine 9 [select]:
github.com/edgelb/edgelb/lbd/daemon.(*Daemon).Stop(0xc0)
	/src/lbd/daemon/daemon.go:1 +0x1

==== restarted
time=... level=INFO msg="lbd started"
SIGQUIT: quit
PC=0x1 m=0 sigcode=0

goroutine 1 [semacquire]:
sync.(*WaitGroup).Wait(0xc1)
	/go/src/sync/waitgroup.go:118 +0x1
github.com/hashicorp/raft.(*Raft).Shutdown(...)
github.com/edgelb/edgelb/lbd/daemon.(*Daemon).Stop(0xc0)
	/src/lbd/daemon/daemon.go:1050 +0x2

goroutine 7 [IO wait]:
internal/poll.runtime_pollWait(0x1)
`
	got := StuckIn(log, "(*Daemon).Stop")
	if !strings.HasPrefix(got, "goroutine 1 [semacquire]") || !strings.Contains(got, "daemon.go:1050") || strings.Contains(got, "goroutine 9") || strings.Contains(got, "goroutine 7") {
		t.Errorf("StuckIn = %q, want only goroutine 1 of the last dump", got)
	}
	if StuckIn("no dump here", "(*Daemon).Stop") != "" {
		t.Error("a log without a dump gave stacks")
	}
}
