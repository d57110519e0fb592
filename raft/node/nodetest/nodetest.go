// Package nodetest starts real raft nodes for tests of the packages above
// raft: a one-member cluster on loopback, with fast timings, that has
// elected itself.
package nodetest

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/edgelb/edgelb/internal/freeport"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node"
)

// Leader opens a one-member cluster (member ID "m1") on a free loopback port
// with its data in a test directory, waits until it leads, and shuts it down
// when the test ends. It returns the node and its raft address.
func Leader(t testing.TB) (*node.Node, string) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	raftAddr := fmt.Sprintf("127.0.0.1:%d", freeport.Loopback(t))
	n, err := node.Open(node.Config{
		ID: "m1", RaftAddr: raftAddr, DataDir: t.TempDir(), Bootstrap: true, Logger: quiet,
		Timing: node.Timing{HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond,
			LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond},
	}, fsm.New(quiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Shutdown() })
	for deadline := time.Now().Add(10 * time.Second); !n.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the one-member cluster elected no leader")
		}
	}
	return n, raftAddr
}
