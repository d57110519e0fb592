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
	for range 200 {
		p := 20000 + rand.IntN(12000)
		if _, taken := given.LoadOrStore(p, true); taken {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return p
	}
	t.Fatal("no free loopback port in 20000-31999")
	return 0
}
