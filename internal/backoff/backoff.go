// Package backoff is the one retry schedule edgelb's loops share (write
// forwarding and leader calls in lbd/server, the join loop, the CCM's lbd
// client): exponential from First, doubling per attempt, never above Max.
// No jitter: each loop retries against one cluster, whose answers (a
// leader elected, a token back) end the wait, not a spread of clients.
package backoff

import (
	"context"
	"time"
)

// Policy is an exponential backoff.
type Policy struct {
	First time.Duration // the wait after the first failure (attempt 0)
	Max   time.Duration // the longest wait
}

// Delay is the wait after attempt (0 for the first failure): First << attempt,
// at most Max.
func (p Policy) Delay(attempt int) time.Duration {
	d := p.First
	for i := 0; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// Wait sleeps for d or until ctx ends, and reports whether the full d passed.
func Wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
