// Package freeport picks loopback ports for servers the tests start.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// given holds every port handed out in this process: a port is only "free a
// moment ago" until its server binds it, so two picks before either binds
// could name the same port (an lbd's API and raft addresses once did, and its
// configuration was refused).
var given sync.Map

// Loopback returns a loopback TCP port that was free a moment ago and that
// no earlier call in this process returned. It is chosen below Linux's
// ephemeral range (32768-60999): a port the kernel hands out for ":0" can be
// taken by any outgoing connection (etcd, the apiserver and lbd make many)
// before the server we start binds it, which failed a run with "address
// already in use".
func Loopback(t testing.TB) int {
	t.Helper()
	return run(t, 1)
}

// LoopbackPair returns a port p such that p and p+1 were free a moment ago
// and neither was returned before, for a server that takes a port and the
// next (etcd: client and peer). A pair checked by hand and not recorded
// here was once handed out again as the apiserver's port: etcd bound it
// first, and the apiserver failed with "address already in use".
func LoopbackPair(t testing.TB) int {
	t.Helper()
	return run(t, 2)
}

// run reserves n consecutive free ports and returns the first.
func run(t testing.TB, n int) int {
	t.Helper()
next:
	for range 200 {
		p := 20000 + rand.IntN(12000-n+1)
		for i := range n {
			if _, taken := given.LoadOrStore(p+i, true); taken {
				continue next // those already stored stay reserved: never handed out
			}
		}
		for i := range n {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+i))
			if err != nil {
				continue next
			}
			l.Close()
		}
		return p
	}
	t.Fatal("no free loopback port in 20000-31999")
	return 0
}
