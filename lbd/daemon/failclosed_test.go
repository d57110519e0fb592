package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/fsm"
	"github.com/edgelb/edgelb/raft/rules"
)

// rawIssue18 is the command of issue 18, as sent raw to PeerService.Apply.
func rawIssue18() *raftv1.ApplyRequest {
	return &raftv1.ApplyRequest{Command: &raftv1.Command{Version: fsm.CommandVersion, Op: &raftv1.Command_CreateVirtualService{CreateVirtualService: &raftv1.CreateVirtualService{
		Service: &edgelbv1.VirtualService{
			Tenant: "", Name: "raw plain!\n", Vip: "10.128.0.9",
			Ports:     []*edgelbv1.Port{{Protocol: 99, Port: 0}},
			Backends:  []*edgelbv1.Backend{{Address: "255.255.255.255", Weight: 999999}},
			Scheduler: 42,
		},
	}}}}
}

// In plaintext every API caller is admin, so PeerService — raw raft commands —
// is not on the API port at all (nor listed by reflection); members reach it on
// the raft port, and writes through a follower still arrive. Even there, the
// FSM refuses what the API would.
func TestPeerServiceNotOnAPIPortInPlaintext(t *testing.T) {
	ds := startCluster(t, 3)
	leader, follower := leaderAndFollower(t, ds)
	setupPool(t, leader.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, d := range ds {
		_, err := raftv1.NewPeerServiceClient(dial(t, d.Addr())).Apply(ctx, rawIssue18())
		if c := status.Code(err); c != codes.Unimplemented && c != codes.PermissionDenied {
			t.Errorf("%s: PeerService.Apply on the API port: %v; want it refused", d.cfg.ID, err)
		}
		stream, err := reflectpb.NewServerReflectionClient(dial(t, d.Addr())).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range resp.GetListServicesResponse().GetService() {
			if strings.Contains(s.Name, "PeerService") {
				t.Errorf("%s: reflection on the API port lists %s", d.cfg.ID, s.Name)
			}
		}
	}

	// The raft port serves it; the FSM refuses the malformed command.
	resp, err := raftv1.NewPeerServiceClient(dial(t, leader.Node().RaftAddr())).Apply(ctx, rawIssue18())
	if err != nil {
		t.Fatalf("PeerService.Apply on the leader's raft port: %v", err)
	}
	if codes.Code(resp.Code) != codes.InvalidArgument || resp.Reason == "" {
		t.Errorf("raw command of issue 18 on the raft port: %v %q reason %q; want InvalidArgument with a reason", codes.Code(resp.Code), resp.Message, resp.Reason)
	}
	if vss, _ := leader.Node().FSM.List(fsm.Filter{}); len(vss) != 0 {
		t.Errorf("the FSM stored %v", vss)
	}

	// A write through a follower is forwarded over the raft port.
	c := client(t, follower.Addr())
	if _, err := c.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
		Name: "web", Ports: []*edgelbv1.Port{{Port: 80, BackendPort: 30080}}, Backends: []*edgelbv1.Backend{{Address: "10.0.0.11"}},
	}}); err != nil {
		t.Fatalf("create through follower %s: %v", follower.cfg.ID, err)
	}
	// A refusal forwarded from the leader keeps its ErrorInfo.
	_, err = c.AddBackend(ctx, &edgelbv1.AddBackendRequest{Name: "web", Backend: &edgelbv1.Backend{Address: "10.0.0.11", Port: 30080}})
	if status.Code(err) != codes.AlreadyExists || errinfo.Reason(err) != errinfo.DuplicateBackend {
		t.Errorf("add of 10.0.0.11:30080 beside 10.0.0.11 through a follower: %v (reason %q); want AlreadyExists %s", err, errinfo.Reason(err), errinfo.DuplicateBackend)
	}
}

// A service an older release stored under a name today's rules refuse
// ("a..b") stays reachable through the API: it can be read, take backend
// changes, and be deleted.
func TestLegacyNamedServiceStaysReachable(t *testing.T) {
	ds := startCluster(t, 1)
	setupPool(t, ds[0].Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := ds[0].Node().Apply(ctx, &raftv1.Command{Version: fsm.CommandVersion, Rules: uint32(rules.Legacy),
		Op: &raftv1.Command_CreateVirtualService{CreateVirtualService: &raftv1.CreateVirtualService{Service: &edgelbv1.VirtualService{
			Tenant: "default", Name: "a..b", Vip: "10.128.0.7", IpFamily: edgelbv1.IPFamily_IP_FAMILY_IPV4,
			Scheduler: edgelbv1.Scheduler_SCHEDULER_MH, ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_NAT,
			Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 80}},
		}}}})
	if err == nil {
		err = res.Err()
	}
	if err != nil {
		t.Fatalf("a legacy entry: %v", err)
	}
	c := client(t, ds[0].Addr())
	if _, err := c.GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Name: "a..b"}); err != nil {
		t.Errorf("get a..b: %v", err)
	}
	if _, err := c.AddBackend(ctx, &edgelbv1.AddBackendRequest{Name: "a..b", Backend: &edgelbv1.Backend{Address: "10.0.0.31"}}); err != nil {
		t.Errorf("add a backend to a..b: %v", err)
	}
	if _, err := c.DeleteVirtualService(ctx, &edgelbv1.DeleteVirtualServiceRequest{Name: "a..b"}); err != nil {
		t.Errorf("delete a..b: %v", err)
	}
	// A new one is refused.
	_, err = c.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{Name: "c..d", Ports: []*edgelbv1.Port{{Port: 80}}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("create c..d: %v; want InvalidArgument", err)
	}
}
