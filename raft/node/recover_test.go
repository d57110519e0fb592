package node_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/edgelb/edgelb/internal/freeport"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/node"
)

var quiet = slog.New(slog.DiscardHandler)

func openLeader(t *testing.T, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.Open(cfg, fsm.New(quiet))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !n.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			n.Shutdown()
			t.Fatal("no leader")
		}
	}
	return n
}

func apply(t *testing.T, n *node.Node, cmd *raftv1.Command) {
	t.Helper()
	cmd.Version, cmd.Time = fsm.CommandVersion, timestamppb.Now()
	res, err := n.Apply(context.Background(), cmd)
	if err != nil || res.Err() != nil {
		t.Fatalf("apply: %v %v", err, res.Err())
	}
}

func createService(name string) *raftv1.Command {
	return &raftv1.Command{Op: &raftv1.Command_CreateVirtualService{CreateVirtualService: &raftv1.CreateVirtualService{Service: &edgelbv1.VirtualService{
		Tenant: "default", Name: name, IpFamily: edgelbv1.IPFamily_IP_FAMILY_IPV4,
		Ports:     []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 80}},
		Scheduler: edgelbv1.Scheduler_SCHEDULER_MH, ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_NAT,
	}}}}
}

// TestRecoverKeepsSnapshotAndLogTail: Recover rebuilds the state from the
// newest snapshot and every log entry after it (not the snapshot alone), and
// refuses while the data dir is in use.
func TestRecoverKeepsSnapshotAndLogTail(t *testing.T) {
	cfg := node.Config{
		ID: "m1", RaftAddr: fmt.Sprintf("127.0.0.1:%d", freeport.Loopback(t)), DataDir: t.TempDir(), Bootstrap: true, Logger: quiet,
		Timing: node.Timing{HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond,
			LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond},
		SnapshotThreshold: 1 << 20, SnapshotInterval: time.Hour, // snapshots only when the test says
	}
	n := openLeader(t, cfg)
	// The bootstrap configuration is the log's first entry: ServersAt
	// finds its index (raft itself reports 0; configindex.go).
	if _, index, err := n.ServersAt(); err != nil || index != 1 {
		t.Errorf("ServersAt index %d, %v; want 1, the bootstrap entry", index, err)
	}
	apply(t, n, &raftv1.Command{Op: &raftv1.Command_CreateAddressPool{CreateAddressPool: &raftv1.CreateAddressPool{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/24"}}}}})
	for i := range 5 {
		apply(t, n, createService(fmt.Sprintf("snap%d", i)))
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		apply(t, n, createService(fmt.Sprintf("tail%d", i)))
	}
	// While the member runs, its store is locked.
	if _, err := node.Recover(cfg, fsm.New(quiet)); !errors.Is(err, node.ErrDataDirInUse) {
		t.Fatalf("Recover on a data dir in use: %v; want ErrDataDirInUse", err)
	}
	n.Shutdown()

	rec, err := node.Recover(cfg, fsm.New(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if rec.VirtualServices != 9 || rec.AddressPools != 1 || rec.SnapshotIndex == 0 || rec.LastIndex <= rec.SnapshotIndex {
		t.Fatalf("recovered %+v; want 9 services and 1 pool from a snapshot and the log after it", rec)
	}
	// Started again it is a one-member cluster holding all of it.
	cfg.Bootstrap = false
	n = openLeader(t, cfg)
	defer n.Shutdown()
	vss, _ := n.FSM.Shared(fsm.Filter{})
	servers, _ := n.Servers()
	if len(vss) != 9 || len(servers) != 1 || servers[0].ID != "m1" {
		t.Fatalf("after recovery: %d services, configuration %+v", len(vss), servers)
	}
	if _, err := node.Recover(node.Config{ID: "m1", RaftAddr: cfg.RaftAddr, DataDir: t.TempDir()}, fsm.New(quiet)); err == nil {
		t.Fatal("Recover of an empty data dir succeeded")
	}
}
