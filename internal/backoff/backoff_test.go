package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{First: 20 * time.Millisecond, Max: 300 * time.Millisecond}
	want := []time.Duration{20, 40, 80, 160, 300, 300}
	for i, w := range want {
		if got := p.Delay(i); got != w*time.Millisecond {
			t.Errorf("Delay(%d) = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	if got := p.Delay(1 << 20); got != p.Max {
		t.Errorf("Delay of a huge attempt = %v, want Max", got)
	}
}

func TestWait(t *testing.T) {
	if !Wait(context.Background(), time.Millisecond) {
		t.Error("Wait with a live context reported it ended")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if Wait(ctx, time.Hour) || time.Since(start) > time.Second {
		t.Error("Wait did not return when its context ended")
	}
}
