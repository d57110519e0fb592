package auth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// Every RPC the API defines must have an access rule; a missing one is
// refused at run time, and this test says so before it ships.
func TestEveryMethodHasARule(t *testing.T) {
	for _, fd := range []protoreflect.FileDescriptor{edgelbv1.File_edgelb_v1_api_proto, raftv1.File_edgelb_raft_v1_peer_proto} {
		svcs := fd.Services()
		for i := 0; i < svcs.Len(); i++ {
			s := svcs.Get(i)
			for j := 0; j < s.Methods().Len(); j++ {
				name := fmt.Sprintf("/%s/%s", s.FullName(), s.Methods().Get(j).Name())
				if _, ok := methods[name]; !ok {
					t.Errorf("%s has no access rule in methods", name)
				}
			}
		}
	}
}

func TestRoleMatrix(t *testing.T) {
	a := &Authorizer{}
	cases := []struct {
		role, method string
		want         codes.Code
	}{
		{RoleViewer, "/edgelb.v1.VirtualServiceService/ListVirtualServices", codes.OK},
		{RoleViewer, "/edgelb.v1.VirtualServiceService/CreateVirtualService", codes.PermissionDenied},
		{RoleOperator, "/edgelb.v1.VirtualServiceService/DrainBackend", codes.OK},
		{RoleOperator, "/edgelb.v1.AddressPoolService/CreateAddressPool", codes.PermissionDenied},
		{RoleOperator, "/edgelb.v1.AddressPoolService/UpdateAddressPool", codes.PermissionDenied},
		{RoleCloudProvider, "/edgelb.v1.AddressPoolService/UpdateAddressPool", codes.PermissionDenied},
		{RoleAdmin, "/edgelb.v1.AddressPoolService/UpdateAddressPool", codes.OK},
		{RoleCloudProvider, "/edgelb.v1.VirtualServiceService/CreateVirtualService", codes.OK},
		{RoleCloudProvider, "/edgelb.v1.ClusterService/RemoveMember", codes.PermissionDenied},
		{RoleAdmin, "/edgelb.v1.ClusterService/RemoveMember", codes.OK},
		{RoleAdmin, "/edgelb.raft.v1.PeerService/Apply", codes.PermissionDenied},
		{RoleMember, "/edgelb.raft.v1.PeerService/Apply", codes.OK},
		{RoleAdmin, "/edgelb.v1.Unknown/Method", codes.PermissionDenied},
	}
	for _, tc := range cases {
		_, err := a.check(Identity{Role: tc.role, Name: "x"}, tc.method)
		if got := status.Code(err); got != tc.want {
			t.Errorf("%s calling %s: %v, want %v", tc.role, tc.method, got, tc.want)
		}
	}
}

func TestTenantScope(t *testing.T) {
	bound := WithIdentity(context.Background(), Identity{Role: RoleCloudProvider, Name: "a", Tenant: "a"})
	for req, want := range map[string]string{"": "a", "default": "a", "a": "a"} {
		if got, err := TenantScope(bound, req); err != nil || got != want {
			t.Errorf("TenantScope(%q) = %q, %v; want %q", req, got, err, want)
		}
	}
	if _, err := TenantScope(bound, "b"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("bound to a, asking for b: %v", err)
	}
	free := WithIdentity(context.Background(), Identity{Role: RoleAdmin, Name: "root"})
	if got, _ := TenantScope(free, "b"); got != "b" {
		t.Errorf("admin asking for b got %q", got)
	}
}

func TestWriteRateLimit(t *testing.T) {
	a := &Authorizer{WriteRate: 1, WriteBurst: 2}
	id := Identity{Role: RoleOperator, Name: "op"}
	var codesSeen []codes.Code
	var last error
	for i := 0; i < 3; i++ {
		_, err := a.check(id, "/edgelb.v1.VirtualServiceService/CreateVirtualService")
		codesSeen = append(codesSeen, status.Code(err))
		last = err
	}
	if codesSeen[0] != codes.OK || codesSeen[1] != codes.OK || codesSeen[2] != codes.ResourceExhausted {
		t.Errorf("burst of 2 then refusal expected, got %v", codesSeen)
	}
	// Clients tell the limit from a full pool by its reason, and learn when
	// to try again from RetryInfo (a token per second: at most a second).
	if errinfo.Reason(last) != errinfo.RateLimited {
		t.Errorf("refusal %v has reason %q, want %s", last, errinfo.Reason(last), errinfo.RateLimited)
	}
	if d, ok := errinfo.RetryDelay(last); !ok || d <= 0 || d > time.Second {
		t.Errorf("RetryInfo delay %v (present %v), want within (0, 1s]", d, ok)
	}
	// Reads are never limited.
	if _, err := a.check(id, "/edgelb.v1.VirtualServiceService/ListVirtualServices"); err != nil {
		t.Errorf("read refused: %v", err)
	}
}
