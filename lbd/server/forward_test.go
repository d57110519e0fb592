package server

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// peerStub answers PeerService.Apply with a fixed error.
type peerStub struct {
	raftv1.UnimplementedPeerServiceServer
	err   error
	calls int
	// entered, when set, is closed on the call and the call then waits
	// for its connection to go.
	entered chan struct{}
}

func (p *peerStub) Apply(ctx context.Context, _ *raftv1.ApplyRequest) (*raftv1.ApplyResponse, error) {
	p.calls++
	if p.entered != nil {
		close(p.entered)
		<-ctx.Done()
	}
	return nil, p.err
}

func servePeer(t *testing.T, p *peerStub) string {
	addr, _ := servePeerOn(t, p)
	return addr
}

func servePeerOn(t *testing.T, p *peerStub) (string, *grpc.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	raftv1.RegisterPeerServiceServer(s, p)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String(), s
}

// forwardOnce makes the call proposeOnce makes and returns what it decides on.
func forwardOnce(t *testing.T, addr string) (error, bool) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sent peer.Peer
	_, err = raftv1.NewPeerServiceClient(cc).Apply(ctx, &raftv1.ApplyRequest{Command: &raftv1.Command{}}, grpc.Peer(&sent))
	if err == nil {
		t.Fatal("Apply succeeded")
	}
	return err, forwardRetryable(err, &sent)
}

// TestForwardRetryable: a forwarded write is retried only when the leader
// certainly applied nothing, decided by the ErrorInfo reason, the code and
// whether the call reached a server at all, never by the message.
func TestForwardRetryable(t *testing.T) {
	// Nothing listens: the connection is refused before a byte is sent.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	if err, retry := forwardOnce(t, dead); !retry || status.Code(err) != codes.Unavailable {
		t.Errorf("refused connection: %v, retry %v; want Unavailable, retried", err, retry)
	}
	// A name that does not resolve: nothing sent either.
	if err, retry := forwardOnce(t, "nosuchhost.invalid:7701"); !retry {
		t.Errorf("unresolvable leader address: %v, not retried", err)
	}

	for _, c := range []struct {
		name  string
		err   error
		retry bool
	}{
		{"NOT_LEADER", errinfo.New(codes.Unavailable, errinfo.NotLeader, nil, notLeaderMsg), true},
		// The words alone decide nothing: this may have been applied.
		{"not-leader text without reason", status.Error(codes.Unavailable, notLeaderMsg), false},
		{"connection refused text from the server", status.Error(codes.Unavailable, "dial tcp: connect: connection refused"), false},
		{"commit through raft failed", status.Error(codes.Unavailable, "commit through raft: leadership lost"), false},
		{"no PeerService on that port", status.Error(codes.Unimplemented, "unknown service"), true},
		{"refused by the FSM", errinfo.New(codes.FailedPrecondition, errinfo.PoolRangeInUse, nil, "in use"), false},
	} {
		stub := &peerStub{err: c.err}
		err, retry := forwardOnce(t, servePeer(t, stub))
		if retry != c.retry || stub.calls != 1 {
			t.Errorf("%s: %v, retry %v after %d calls; want retry %v after 1", c.name, err, retry, stub.calls, c.retry)
		}
	}

	// The leader got the request and its connection broke before it
	// answered: it may have applied it, so it is not retried.
	stub := &peerStub{entered: make(chan struct{})}
	addr, srv := servePeerOn(t, stub)
	go func() {
		<-stub.entered
		srv.Stop()
	}()
	if err, retry := forwardOnce(t, addr); retry || status.Code(err) != codes.Unavailable {
		t.Errorf("connection lost after the request arrived: %v, retry %v; want Unavailable, not retried", err, retry)
	}
}

// TestCommitError: a failed commit means the same to the leader's own caller
// and to a follower that forwarded the write, and the follower passes the
// leader's typed detail on.
func TestCommitError(t *testing.T) {
	for _, c := range []struct {
		err    error
		reason string
	}{
		{raft.ErrNotLeader, errinfo.NotLeader},
		{raft.ErrLeadershipLost, errinfo.OutcomeUnknown},
		{raft.ErrEnqueueTimeout, errinfo.OutcomeUnknown},
		{raft.ErrRaftShutdown, ""},
	} {
		err := commitError(c.err)
		if status.Code(err) != codes.Unavailable || errinfo.Reason(err) != c.reason {
			t.Errorf("commitError(%v) = %v (reason %q), want Unavailable with reason %q", c.err, err, errinfo.Reason(err), c.reason)
		}
		fw := forwarded(err, "edge3", "10.0.0.13:7701")
		if status.Code(fw) != codes.Unavailable || errinfo.Reason(fw) != c.reason {
			t.Errorf("forwarded(%v) = %v (reason %q), want the leader's code and reason %q", err, fw, errinfo.Reason(fw), c.reason)
		}
		if want := "forward to leader edge3 at 10.0.0.13:7701: " + status.Convert(err).Message(); status.Convert(fw).Message() != want {
			t.Errorf("forwarded message %q, want %q", status.Convert(fw).Message(), want)
		}
	}
}
