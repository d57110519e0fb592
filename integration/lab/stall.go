package lab

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The lab measures how late the guest wakes a sleeping thread. The guest has
// one CPU whose kernel does not preempt: a process start or a burst of
// packets in the emulated kernel can keep every process off the CPU for most
// of a second, and lbd's logs then show only what followed (a lease lapsed,
// a BFD session expired). A failure that coincides with a stall measured
// here was the guest's scheduling, seen by a thread that does nothing but
// sleep.
const (
	// stallTick is two of the guest kernel's ticks (HZ=100): the watch costs the
	// one CPU 50 wake-ups a second.
	stallTick = 20 * time.Millisecond
	// StallMin is the smallest lateness recorded as a stall: well under
	// the timers the scenarios run (probes 200 ms, BFD detection 900 ms),
	// well over Go's own scheduling noise in a busy test process.
	StallMin = 200 * time.Millisecond
)

// Stall is one late wake-up.
type Stall struct {
	At   time.Time     // when the thread woke
	Late time.Duration // how much later than it asked to
}

func (s Stall) String() string {
	return fmt.Sprintf("%s at %s", s.Late.Round(time.Millisecond), s.At.UTC().Format("15:04:05.000"))
}

type stallWatch struct {
	watcher
	mu     sync.Mutex
	stalls []Stall
}

func startStallWatch() *stallWatch {
	w := &stallWatch{watcher: newWatcher()}
	go w.run()
	return w
}

func (w *stallWatch) run() {
	defer close(w.done)
	// A thread of its own, asleep in nanosleep(2) rather than in Go's timer
	// heap: what it measures is the kernel's scheduling, plus at most the
	// wait for a P to run the few lines after the sleep. The thread ends
	// with the goroutine.
	runtime.LockOSThread()
	ts := unix.NsecToTimespec(stallTick.Nanoseconds())
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		t0 := time.Now()
		_ = unix.Nanosleep(&ts, nil) // an EINTR only shortens the sleep
		if late := time.Since(t0) - stallTick; late >= StallMin {
			w.mu.Lock()
			w.stalls = append(w.stalls, Stall{At: time.Now(), Late: late})
			w.mu.Unlock()
		}
	}
}

// since returns the stalls that ended at or after t.
func (w *stallWatch) since(t time.Time) []Stall {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	i, _ := slices.BinarySearchFunc(w.stalls, t, func(s Stall, t time.Time) int { return s.At.Compare(t) })
	return slices.Clone(w.stalls[i:])
}

func (w *stallWatch) close() {
	if w != nil {
		w.watcher.close()
	}
}

// Stalls returns the guest's stalls (wake-ups StallMin or more late) that
// ended at or after t.
func (l *Lab) Stalls(t time.Time) []Stall { return l.stalls.since(t) }

// StallNote is what a scenario appends to a failure that may be the guest's:
// the stalls since t, or "" if there were none.
func (l *Lab) StallNote(t time.Time) string {
	ss := l.Stalls(t)
	if len(ss) == 0 {
		return ""
	}
	return fmt.Sprintf(" (the guest stalled meanwhile: %s)", joinStalls(ss))
}

func joinStalls(ss []Stall) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.String()
	}
	return strings.Join(parts, ", ")
}

// stallSummary says in one line what the stall watch saw: how many stalls
// and the longest few, with their times (the guest's clock, as lbd's logs).
func stallSummary(ss []Stall, top int) string {
	if len(ss) == 0 {
		return fmt.Sprintf("guest scheduling: no thread wake-up %s or more late", StallMin)
	}
	longest := slices.Clone(ss)
	slices.SortFunc(longest, func(a, b Stall) int { return cmp.Compare(b.Late, a.Late) })
	longest = longest[:min(top, len(longest))]
	return fmt.Sprintf("guest scheduling: %d thread wake-ups %s or more late; the longest %s", len(ss), StallMin, joinStalls(longest))
}
