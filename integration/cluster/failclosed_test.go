package cluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// Issue 18 on a plaintext cluster of real lbd processes: no path around
// validation, one identity per backend, and bad input refused with messages
// (and exit codes, and ErrorInfo reasons) that say what to fix — through
// lbctl and raw gRPC, sent to a follower so forwarding is on the path too.
func TestFailClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three lbd processes; skipped with -short")
	}
	c, all := startedCluster(t, 3)
	mustLbctl(t, all, "pool", "create", "public", "--range", "192.0.2.0/24")
	leader := c.leader(t, all)
	follower := c.follower(leader)
	eps := []string{follower.api}

	t.Run("PeerService is not on the API port", func(t *testing.T) {
		for _, m := range c.members {
			_, err := rawApply(t, m.api, insecure.NewCredentials())
			if code := status.Code(err); code != codes.Unimplemented && code != codes.PermissionDenied {
				t.Errorf("%s: PeerService.Apply on the API port: %v; want it refused", m.id, err)
			}
			if names := reflected(t, m.api); strings.Contains(names, "PeerService") || !strings.Contains(names, "edgelb.v1.VirtualServiceService") {
				t.Errorf("%s: reflection on the API port lists %s", m.id, names)
			}
		}
		if out := mustLbctl(t, all, "vip", "list", "-A", "-o", "json"); strings.Contains(out, "raw plain") {
			t.Fatalf("the raw service was stored: %s", out)
		}
	})

	expect := func(t *testing.T, exit int, frags []string, args ...string) {
		t.Helper()
		_, errs, code := lbctl(t, eps, args...)
		if code != exit {
			t.Errorf("lbctl %s: exit %d (%s); want %d", strings.Join(args, " "), code, strings.TrimSpace(errs), exit)
			return
		}
		for _, f := range frags {
			if !strings.Contains(errs, f) {
				t.Errorf("lbctl %s: %q does not say %q", strings.Join(args, " "), strings.TrimSpace(errs), f)
			}
		}
	}

	t.Run("one identity per backend", func(t *testing.T) {
		expect(t, 3, []string{"10.0.0.11:30080 is the same backend as service.backends[0] (10.0.0.11)", "list it once"},
			"vip", "create", "dup", "--port", "tcp/80:30080", "--backend", "10.0.0.11", "--backend", "10.0.0.11:30080")
		mustLbctl(t, eps, "vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11:30080", "--backend", "10.0.0.12")
		bs, _ := vipOf(t, eps, "web")["backends"].([]any)
		if len(bs) != 2 || fmt.Sprint(bs[0].(map[string]any)["port"]) != "<nil>" && fmt.Sprint(bs[0].(map[string]any)["port"]) != "0" {
			t.Errorf("10.0.0.11:30080 was not stored as 10.0.0.11: %v", bs)
		}
		expect(t, 5, []string{"backend 10.0.0.11 is already in default/web", "backend set or drain"}, "backend", "add", "web", "10.0.0.11:30080")
		expect(t, 5, []string{"already in default/web"}, "backend", "add", "web", "10.0.0.11")
		expect(t, 3, []string{"same backend", "list it once"}, "backend", "set", "web", "--backend", "10.0.0.13", "--backend", "10.0.0.13:30080")
		// The README's backends answer to either spelling.
		mustLbctl(t, eps, "backend", "drain", "web", "10.0.0.11:30080")
		mustLbctl(t, eps, "backend", "drain", "web", "10.0.0.11", "--undo")
	})

	t.Run("bad input names the fix", func(t *testing.T) {
		expect(t, 3, []string{"192.0.2.20 is the service's own VIP"}, "vip", "create", "loop", "--vip", "192.0.2.20", "--port", "tcp/80", "--backend", "192.0.2.20")
		expect(t, 3, []string{`"a..b" has an empty part between two dots`, "a.b"}, "vip", "create", "a..b", "--port", "tcp/80")
		expect(t, 6, []string{"nosuch is not a member of this cluster", "edge1"}, "vip", "create", "pinned", "--port", "tcp/80", "--pin", "nosuch")
		expect(t, 6, []string{"the network address of 192.0.2.0/24 in address pool public"}, "vip", "create", "net", "--vip", "192.0.2.0", "--port", "tcp/80")
		expect(t, 6, []string{"the broadcast address"}, "vip", "create", "bcast", "--vip", "192.0.2.255", "--port", "tcp/80")
		// lbctl checks ranges itself; the server's answer, raw.
		cc, err := grpc.NewClient(follower.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err = edgelbv1.NewAddressPoolServiceClient(cc).CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "bad", Ranges: []string{"10.0.0.300/24"}}})
		if msg := status.Convert(err).Message(); status.Code(err) != codes.InvalidArgument || strings.Contains(msg, "netip.") || strings.Contains(msg, "ParsePrefix") || !strings.Contains(msg, `"10.0.0.300" is not an IP address`) {
			t.Errorf("pool with 10.0.0.300/24: %v; want InvalidArgument naming the address, no Go internals", err)
		}
		for _, name := range []string{"a..b", "pinned", "net", "bcast", "loop", "dup"} {
			if _, _, code := lbctl(t, all, "vip", "get", name); code != 4 {
				t.Errorf("refused service %s exists (vip get exit %d)", name, code)
			}
		}
	})

	t.Run("raw gRPC: refusals carry ErrorInfo", func(t *testing.T) {
		cc, err := grpc.NewClient(follower.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		vsc := edgelbv1.NewVirtualServiceServiceClient(cc)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		create := func(mut func(*edgelbv1.VirtualService)) error {
			vs := &edgelbv1.VirtualService{Name: "raw", Ports: []*edgelbv1.Port{{Port: 80, BackendPort: 30080}}, Backends: []*edgelbv1.Backend{{Address: "10.0.0.21"}}}
			mut(vs)
			_, err := vsc.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: vs})
			return err
		}
		for name, c := range map[string]struct {
			mut    func(*edgelbv1.VirtualService)
			code   codes.Code
			reason string
		}{
			"NUL in port name": {func(v *edgelbv1.VirtualService) { v.Ports[0].Name = "we\x00b" }, codes.InvalidArgument, errinfo.ControlCharacter},
			"ESC in port name": {func(v *edgelbv1.VirtualService) { v.Ports[0].Name = "\x1b[2J" }, codes.InvalidArgument, errinfo.ControlCharacter},
			"backend is VIP": {func(v *edgelbv1.VirtualService) {
				v.Vip = "192.0.2.30"
				v.Backends[0].Address = "192.0.2.30"
			}, codes.InvalidArgument, errinfo.BackendIsVIP},
			"two spellings": {func(v *edgelbv1.VirtualService) {
				v.Backends = append(v.Backends, &edgelbv1.Backend{Address: "10.0.0.21", Port: 30080})
			}, codes.InvalidArgument, errinfo.DuplicateBackend},
			"name a..b":    {func(v *edgelbv1.VirtualService) { v.Name = "a..b" }, codes.InvalidArgument, errinfo.InvalidField},
			"pin nosuch":   {func(v *edgelbv1.VirtualService) { v.PinnedMember = "nosuch" }, codes.FailedPrecondition, errinfo.UnknownMember},
			"network addr": {func(v *edgelbv1.VirtualService) { v.Vip = "192.0.2.0" }, codes.FailedPrecondition, errinfo.ReservedAddress},
		} {
			err := create(c.mut)
			if status.Code(err) != c.code || errinfo.Reason(err) != c.reason {
				t.Errorf("%s: %v (reason %q); want %v %s", name, err, errinfo.Reason(err), c.code, c.reason)
			}
		}
		if _, err := vsc.GetVirtualService(ctx, &edgelbv1.GetVirtualServiceRequest{Name: "raw"}); status.Code(err) != codes.NotFound {
			t.Errorf("a refused create was stored: %v", err)
		}
	})
}

// reflected lists the services reflection names on addr.
func reflected(t *testing.T, addr string) string {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
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
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	return strings.Join(names, ",")
}
