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

// A pair's second port is never handed out again, alone or in another pair.
func TestPairsReserveBothPorts(t *testing.T) {
	seen := map[int]bool{}
	for i := range 2000 {
		var ps []int
		if i%2 == 0 {
			p := LoopbackPair(t)
			ps = []int{p, p + 1}
		} else {
			ps = []int{Loopback(t)}
		}
		for _, p := range ps {
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
}
