// Package proc is the one place lbd starts processes from, so it can count
// them: the path from a commit to a VIP answering, and a takeover, must start
// none (issue 21), and edgelb_dataplane_processes_started_total proves it.
// A tree test keeps every other package of lbd from calling os/exec's
// constructors directly.
package proc

import (
	"context"
	"os/exec"
	"sync/atomic"
)

var started atomic.Uint64

// Command is exec.Command, counted. Every caller runs the command it builds,
// so counting at construction counts the processes lbd starts (or tries to).
func Command(name string, args ...string) *exec.Cmd {
	started.Add(1)
	return exec.Command(name, args...)
}

// CommandContext is exec.CommandContext, counted like Command.
func CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	started.Add(1)
	return exec.CommandContext(ctx, name, args...)
}

// Started is how many processes this lbd has started so far.
func Started() uint64 { return started.Load() }
