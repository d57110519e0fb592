package node

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Replication is never pipelined: the transport refuses a pipeline, so raft
// sends every AppendEntries and waits for its answer (newTransport says
// which deadlock pipelining brought).
func TestTransportDoesNotPipeline(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mx := newMux(l)
	defer mx.close()
	trans := newTransport(&plainStream{Listener: mx.raft, adv: l.Addr()}, time.Second, hclog.NewNullLogger())
	defer trans.Close()
	if _, err := trans.AppendEntriesPipeline("peer", raft.ServerAddress(l.Addr().String())); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v, want ErrPipelineReplicationNotSupported", err)
	}
}
