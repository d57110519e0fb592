package server

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// fakeCandidate is what a new member looks like from the leader: an API that
// answers GetMemberStatus as told, and a raft port that accepts connections
// but never speaks raft (so it never catches up).
type fakeCandidate struct {
	edgelbv1.UnimplementedClusterServiceServer
	api, raft string

	mu     sync.Mutex
	answer *edgelbv1.MemberStatus
}

func (f *fakeCandidate) GetMemberStatus(context.Context, *edgelbv1.GetMemberStatusRequest) (*edgelbv1.GetMemberStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &edgelbv1.GetMemberStatusResponse{Status: f.answer}, nil
}

func (f *fakeCandidate) set(st *edgelbv1.MemberStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answer = st
}

func newFakeCandidate(t *testing.T, id string) *fakeCandidate {
	t.Helper()
	apiLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raftLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := raftLis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	f := &fakeCandidate{api: apiLis.Addr().String(), raft: raftLis.Addr().String()}
	f.answer = &edgelbv1.MemberStatus{Member: &edgelbv1.Member{Id: id, RaftAddress: f.raft, ApiAddress: f.api}, RaftState: "Follower"}
	g := grpc.NewServer()
	edgelbv1.RegisterClusterServiceServer(g, f)
	go g.Serve(apiLis)
	t.Cleanup(func() { g.Stop(); raftLis.Close() })
	return f
}

func leaderWithClusterID(t *testing.T, opts Options) *Server {
	t.Helper()
	s := newServer(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.RegisterSelf(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureClusterID(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func wantReason(t *testing.T, what string, err error, code codes.Code, reason string) {
	t.Helper()
	if status.Code(err) != code || errinfo.Reason(err) != reason {
		t.Errorf("%s: %v (reason %q); want %v with reason %s", what, err, errinfo.Reason(err), code, reason)
	}
}

// onlySelf fails unless the raft configuration and member table hold only m1.
func onlySelf(t *testing.T, s *Server) {
	t.Helper()
	servers, err := s.node.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 || servers[0].ID != "m1" {
		t.Errorf("raft configuration %+v; want m1 alone", servers)
	}
	if ms := s.fsm.Members(); len(ms) != 1 || ms[0].Id != "m1" {
		t.Errorf("member table %v; want m1 alone", ms)
	}
}

// A candidate that answers as someone else, or belongs to another cluster,
// is refused before anything is committed.
func TestAddMemberChecksIdentity(t *testing.T) {
	s := leaderWithClusterID(t, Options{})
	f := newFakeCandidate(t, "m2")
	add := func() error {
		_, err := s.AddMember(admin, &edgelbv1.AddMemberRequest{Member: &edgelbv1.Member{Id: "m2", RaftAddress: f.raft, ApiAddress: f.api}})
		return err
	}
	f.set(&edgelbv1.MemberStatus{Member: &edgelbv1.Member{Id: "m3", RaftAddress: f.raft}})
	wantReason(t, "answers as m3", add(), codes.FailedPrecondition, errinfo.MemberIdentityMismatch)

	f.set(&edgelbv1.MemberStatus{Member: &edgelbv1.Member{Id: "m2", RaftAddress: "127.0.0.1:1"}})
	wantReason(t, "raft elsewhere", add(), codes.FailedPrecondition, errinfo.MemberIdentityMismatch)

	f.set(&edgelbv1.MemberStatus{Member: &edgelbv1.Member{Id: "m2", RaftAddress: f.raft}, ClusterId: "another", LastLogIndex: 7, LeaderId: "m2"})
	wantReason(t, "another cluster", add(), codes.FailedPrecondition, errinfo.MemberOfOtherCluster)

	// Bootstrapped by an lbd from before cluster ids: state, but no id.
	f.set(&edgelbv1.MemberStatus{Member: &edgelbv1.Member{Id: "m2", RaftAddress: f.raft}, LastLogIndex: 7, LeaderId: "m2"})
	wantReason(t, "raft state of unknown origin", add(), codes.FailedPrecondition, errinfo.MemberOfOtherCluster)
	onlySelf(t, s)
}

// A candidate that passes the checks but never catches up is added as a
// non-voter only (the one-member quorum is untouched) and removed again
// after the catch-up timeout, with that reason.
func TestAddMemberThatNeverCatchesUpIsRemovedAgain(t *testing.T) {
	s := leaderWithClusterID(t, Options{CatchUpTimeout: time.Second})
	f := newFakeCandidate(t, "m2")
	var sawNonvoter bool
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			servers, _ := s.node.Servers()
			for _, sv := range servers {
				if sv.ID == "m2" {
					if sv.Voter {
						t.Errorf("m2 became a voter without catching up")
					}
					sawNonvoter = true
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	_, err := s.AddMember(admin, &edgelbv1.AddMemberRequest{Member: &edgelbv1.Member{Id: "m2", RaftAddress: f.raft, ApiAddress: f.api}})
	close(stop)
	<-done
	wantReason(t, "never catches up", err, codes.FailedPrecondition, errinfo.MemberCatchUpTimeout)
	if !sawNonvoter {
		t.Errorf("m2 was never in the configuration as a non-voter")
	}
	if !s.node.IsLeader() {
		t.Errorf("m1 lost its leadership over the add")
	}
	onlySelf(t, s)
}

// Without a cluster id the leader cannot tell a member of another cluster:
// it refuses rather than guess.
func TestAddMemberWithoutClusterIDIsRefused(t *testing.T) {
	s := newServer(t, Options{})
	f := newFakeCandidate(t, "m2")
	_, err := s.AddMember(admin, &edgelbv1.AddMemberRequest{Member: &edgelbv1.Member{Id: "m2", RaftAddress: f.raft, ApiAddress: f.api}})
	wantReason(t, "no cluster id", err, codes.Unavailable, errinfo.ClusterIDUnknown)
}

func TestRemoveLastVoterIsRefused(t *testing.T) {
	s := leaderWithClusterID(t, Options{})
	_, err := s.RemoveMember(admin, &edgelbv1.RemoveMemberRequest{Id: "m1"})
	wantReason(t, "last voter", err, codes.FailedPrecondition, errinfo.LastVoter)
	onlySelf(t, s)
}

// A leader without a cluster id (its state came from a snapshot written
// before ids existed) adopts the id its peers report instead of inventing
// another one.
func TestEnsureClusterIDAdoptsThePeersID(t *testing.T) {
	s := newServer(t, Options{})
	f := newFakeCandidate(t, "m2")
	f.set(&edgelbv1.MemberStatus{Member: &edgelbv1.Member{Id: "m2"}, ClusterId: "the-peers-id"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_PutMember{PutMember: &raftv1.PutMember{
		Member: &edgelbv1.Member{Id: "m2", RaftAddress: f.raft, ApiAddress: f.api}}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureClusterID(ctx); err != nil {
		t.Fatal(err)
	}
	if id := s.fsm.ClusterID(); id != "the-peers-id" {
		t.Errorf("cluster id %q; want the peers' the-peers-id", id)
	}
}
