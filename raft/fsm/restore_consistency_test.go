package fsm

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// A backup file may be old, hand-edited or from another cluster. A RestoreState
// that breaks the rules every other command enforces (VIPs come from pools open
// to their tenant, pools do not overlap, only same-tenant services with one
// sharing key and distinct ports share a VIP) would leave a state that no
// sequence of commands could reach: pool deletion and allocation would then
// reason from false premises. Such a snapshot must be refused, changing nothing.
func TestRestoreStateRefusesInconsistentSnapshots(t *testing.T) {
	good := func() *raftv1.Snapshot {
		src := newHarness(t)
		closed := pool("a", "192.0.2.0/24")
		closed.Tenants = []string{"t"}
		src.ok(createPool(closed))
		src.ok(createPool(pool("b", "198.51.100.0/24")))
		src.ok(create(shared(svc("t", "web", "192.0.2.1", tcp(80)), "k")))
		src.ok(create(shared(svc("t", "tls", "192.0.2.1", tcp(443)), "k")))
		return src.snap()
	}
	for name, spoil := range map[string]func(s *raftv1.Snapshot){
		"vip outside every pool": func(s *raftv1.Snapshot) { s.VirtualServices[0].Vip = "203.0.113.9" },
		"pool that does not exist": func(s *raftv1.Snapshot) {
			for _, vs := range s.VirtualServices {
				vs.Pool = "nope"
			}
		},
		"overlapping pools":     func(s *raftv1.Snapshot) { s.AddressPools[1].Ranges = []string{"192.0.2.128/25"} },
		"pool closed to tenant": func(s *raftv1.Snapshot) { s.AddressPools[0].Tenants = []string{"other"} },
		"vip shared across tenants": func(s *raftv1.Snapshot) {
			vs := proto.Clone(s.VirtualServices[0]).(*edgelbv1.VirtualService)
			vs.Tenant, vs.Ports = "u", []*edgelbv1.Port{tcp(8080)}
			s.AddressPools[0].Tenants = nil
			s.VirtualServices = append(s.VirtualServices, vs)
		},
		// Snapshots list services sorted by key: [0] is t/tls (443), [1] t/web (80).
		"shared port clash": func(s *raftv1.Snapshot) { s.VirtualServices[0].Ports = []*edgelbv1.Port{tcp(80)} },
	} {
		t.Run(name, func(t *testing.T) {
			s := good()
			h := newHarness(t)
			if r := h.restore(proto.Clone(s).(*raftv1.Snapshot)); r.Code != codes.OK {
				t.Fatalf("the unspoiled snapshot is refused: %v %s", r.Code, r.Message)
			}
			spoil(s)
			before, rev := h.snap(), h.f.Revision()
			r := h.restore(s)
			if r.Code == codes.OK {
				t.Fatalf("restore accepted a snapshot with %s", name)
			}
			if h.f.Revision() != rev || !proto.Equal(before, h.snap()) {
				t.Errorf("refused restore (%v %s) changed the state", r.Code, r.Message)
			}
		})
	}
}
