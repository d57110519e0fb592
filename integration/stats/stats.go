// Package stats summarises the durations the guest scenarios measure, for
// the BENCH-JSON lines make bench reads.
package stats

import (
	"slices"
	"time"
)

// Percentiles returns the nearest-rank p50 and p99 of ds (0, 0 for none).
func Percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return rank(0.50), rank(0.99)
}
