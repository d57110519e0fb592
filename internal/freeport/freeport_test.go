package freeport

import "testing"

// Ports handed out in one process are all different, even before any of them
// is bound (as an lbd's API and raft ports are, picked one after the other).
func TestNeverTheSamePortTwice(t *testing.T) {
	seen := map[int]bool{}
	for range 2000 {
		p := Loopback(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
