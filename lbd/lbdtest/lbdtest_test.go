package lbdtest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// A one-member cluster serves a write over mutual TLS; a tenant's identity is
// held to its tenant by lbd's own authorisation.
func TestClusterServesOverTLS(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, 1)
	t.Logf("one member ready in %s", time.Since(start))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pools := edgelbv1.NewAddressPoolServiceClient(c.Admin(t))
	if _, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.250.0.0/29"}}}); err != nil {
		t.Fatalf("create pool as admin: %v", err)
	}
	vs := edgelbv1.NewVirtualServiceServiceClient(c.Tenant(t, "cluster-a"))
	created, err := vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
		Name:  "web",
		Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}},
	}})
	if err != nil {
		t.Fatalf("create as tenant: %v", err)
	}
	if created.Service.Tenant != "cluster-a" || created.Service.Vip == "" {
		t.Fatalf("created %v: want tenant cluster-a and an allocated VIP", created.Service)
	}
	_, err = vs.GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Tenant: "cluster-b", Name: "web"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("tenant cluster-a reading cluster-b: %v, want PermissionDenied", err)
	}
}

// Injected faults reach clients, in order, and end with the test that set them.
func TestInjectFailsMatchingCalls(t *testing.T) {
	c := StartCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vs := edgelbv1.NewVirtualServiceServiceClient(c.Admin(t))
	list := func() error {
		_, err := vs.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{})
		return err
	}
	t.Run("inner", func(t *testing.T) {
		c.Inject(t, FailNext(2, "ListVirtualServices", status.Error(codes.Unavailable, "injected")))
		c.Inject(t, FailNext(5, "", status.Error(codes.Internal, "second")))
		for i := range 2 {
			if err := list(); status.Code(err) != codes.Unavailable {
				t.Fatalf("call %d: %v, want the injected Unavailable", i, err)
			}
		}
		if err := list(); status.Code(err) != codes.Internal {
			t.Fatalf("third call: %v, want the second fault", err)
		}
	})
	if err := list(); err != nil {
		t.Fatalf("after the subtest ended, its faults are gone: %v", err)
	}
}

// Three members form a cluster; every one answers.
func TestThreeMembers(t *testing.T) {
	start := time.Now()
	c := StartCluster(t, 3)
	t.Logf("three members ready in %s", time.Since(start))
	if len(c.Endpoints()) != 3 || c.Leader(t) == nil {
		t.Fatalf("endpoints %v", c.Endpoints())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := edgelbv1.NewClusterServiceClient(c.Admin(t)).ListMembers(ctx, &edgelbv1.ListMembersRequest{})
	if err != nil || len(resp.Members) != 3 {
		t.Fatalf("ListMembers: %v %v", resp, err)
	}
}

// A rewrite changes the answer the client gets, not lbd's state.
func TestRewriteEditsAnswersOnly(t *testing.T) {
	c := StartCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := edgelbv1.NewClusterServiceClient(c.Admin(t))
	c.Rewrite(t, "/GetMemberStatus", func(resp any) {
		resp.(*edgelbv1.GetMemberStatusResponse).Status.IsolatedServices = []string{"t/s: injected"}
	})
	st, err := cl.GetMemberStatus(ctx, &edgelbv1.GetMemberStatusRequest{})
	if err != nil || len(st.Status.IsolatedServices) != 1 || st.Status.Member.GetId() != "lb1" {
		t.Fatalf("rewritten status %v, %v", st, err)
	}
	if m, err := cl.ListMembers(ctx, &edgelbv1.ListMembersRequest{}); err != nil || len(m.Members) != 1 {
		t.Fatalf("other methods unchanged: %v %v", m, err)
	}
}

// A stopped member leaves the endpoints; an added one joins as a voter (the
// stopped one stays in raft's configuration: two of three keep the quorum).
func TestStopAndAdd(t *testing.T) {
	c := StartCluster(t, 3)
	c.Members[1].Stop()
	if eps := c.Endpoints(); len(eps) != 2 || eps[0] != c.Members[0].Addr || eps[1] != c.Members[2].Addr {
		t.Fatalf("endpoints after a stop: %v", eps)
	}
	c.Members[1].Stop() // twice is fine
	m := c.Add(t, "lb-new")
	if len(c.Endpoints()) != 3 || m.ID != "lb-new" {
		t.Fatalf("endpoints %v", c.Endpoints())
	}
}

// A delayed call outlasts a caller's deadline: the caller sees
// DeadlineExceeded, and lbd did not handle it.
func TestDelayHoldsCalls(t *testing.T) {
	c := StartCluster(t, 1)
	c.Inject(t, Delay(time.Minute, "/CreateAddressPool"))
	pools := edgelbv1.NewAddressPoolServiceClient(c.Admin(t))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.250.0.0/29"}}})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("delayed create: %v, want DeadlineExceeded", err)
	}
	list, err := pools.ListAddressPools(context.Background(), &edgelbv1.ListAddressPoolsRequest{})
	if err != nil || len(list.Pools) != 0 {
		t.Fatalf("pools after a create that never reached lbd: %v %v", list, err)
	}
}
