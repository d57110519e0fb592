package lab

import (
	"strings"
	"testing"
	"time"
)

func TestStallsSinceAndSummary(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 13, 10, 0, time.UTC)
	w := &stallWatch{stalls: []Stall{
		{At: t0, Late: 250 * time.Millisecond},
		{At: t0.Add(time.Second), Late: 789 * time.Millisecond},
		{At: t0.Add(2 * time.Second), Late: 300 * time.Millisecond},
	}}
	if got := w.since(t0.Add(time.Second)); len(got) != 2 || got[0].Late != 789*time.Millisecond {
		t.Errorf("since the second stall: %v, want the last two", got)
	}
	if got := w.since(t0.Add(3 * time.Second)); len(got) != 0 {
		t.Errorf("since after the last stall: %v, want none", got)
	}
	if got := w.since(time.Time{}); len(got) != 3 {
		t.Errorf("since the zero time: %v, want all three", got)
	}
	if got := (*stallWatch)(nil).since(t0); got != nil {
		t.Errorf("a lab without a watch: %v, want none", got)
	}

	got := stallSummary(w.since(time.Time{}), 2)
	want := "guest scheduling: 3 thread wake-ups 200ms or more late; the longest 789ms at 12:13:11.000, 300ms at 12:13:12.000"
	if got != want {
		t.Errorf("summary:\n got %q\nwant %q", got, want)
	}
	if got := stallSummary(nil, 5); !strings.Contains(got, "no thread wake-up") {
		t.Errorf("summary of no stalls: %q", got)
	}

	l := &Lab{stalls: w}
	if got := l.StallNote(t0.Add(1500 * time.Millisecond)); got != " (the guest stalled meanwhile: 300ms at 12:13:12.000)" {
		t.Errorf("note: %q", got)
	}
	if got := l.StallNote(t0.Add(time.Hour)); got != "" {
		t.Errorf("note with no stall since: %q, want none", got)
	}
}

// The watch runs and stops: a real thread asleep in nanosleep(2), closed
// twice (a lab closed after a failed start) without a panic.
func TestStallWatchStops(t *testing.T) {
	w := startStallWatch()
	time.Sleep(5 * stallTick)
	w.close()
	w.close()
	select {
	case <-w.done:
	default:
		t.Fatal("the watch's thread did not end")
	}
}
