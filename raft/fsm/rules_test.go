package fsm

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/rules"
)

// applyAt applies op as a command stamped with rule level lvl.
func (h *harness) applyAt(lvl rules.Level, op any) *Result {
	h.t.Helper()
	h.idx++
	cmd := command(h.idx, op)
	cmd.Rules = uint32(lvl)
	return h.f.ApplyCommand(h.idx, cmd)
}

// The command from issue 18, sent raw to PeerService.Apply: nothing of it
// passed a validator. Whatever rule level it claims, the FSM refuses it.
func TestFSMRefusesRawCommandOfIssue18(t *testing.T) {
	raw := &edgelbv1.VirtualService{
		Tenant: "", Name: "raw plain!\n", Vip: "10.0.0.5",
		Ports:     []*edgelbv1.Port{{Protocol: 99, Port: 0}},
		Backends:  []*edgelbv1.Backend{{Address: "255.255.255.255", Weight: 999999}},
		Scheduler: 42,
	}
	for _, lvl := range []rules.Level{rules.Legacy, rules.Strict} {
		h := newHarness(t)
		h.ok(createPool(pool("p", "10.0.0.0/24")))
		before := h.snap()
		r := h.applyAt(lvl, create(proto.Clone(raw).(*edgelbv1.VirtualService)))
		if r.Code != codes.InvalidArgument {
			t.Fatalf("level %d: got %v %q, want InvalidArgument", lvl, r.Code, r.Message)
		}
		if !proto.Equal(before, h.snap()) {
			t.Fatalf("level %d: refused but the state changed", lvl)
		}
		if errinfo.Reason(r.Err()) == "" {
			t.Errorf("level %d: refusal %q carries no ErrorInfo", lvl, r.Message)
		}
		// One rule at a time, each refused on its own.
		for name, mut := range map[string]func(*edgelbv1.VirtualService){
			"empty tenant":      func(vs *edgelbv1.VirtualService) { vs.Tenant = "" },
			"name":              func(vs *edgelbv1.VirtualService) { vs.Name = "raw plain!\n" },
			"protocol":          func(vs *edgelbv1.VirtualService) { vs.Ports[0].Protocol = 99 },
			"port 0":            func(vs *edgelbv1.VirtualService) { vs.Ports[0].Port = 0 },
			"broadcast backend": func(vs *edgelbv1.VirtualService) { vs.Backends[0].Address = "255.255.255.255" },
			"weight":            func(vs *edgelbv1.VirtualService) { vs.Backends[0].Weight = 999999 },
			"scheduler":         func(vs *edgelbv1.VirtualService) { vs.Scheduler = 42 },
			"missing default":   func(vs *edgelbv1.VirtualService) { vs.ForwardingMode = 0 },
		} {
			vs := withBackends(svc("t1", "ok", ""), backend("192.0.2.1", 0))
			mut(vs)
			if r := h.applyAt(lvl, create(vs)); r.Code != codes.InvalidArgument {
				t.Errorf("level %d, %s: got %v %q, want InvalidArgument", lvl, name, r.Code, r.Message)
			}
		}
		if l, _ := h.f.List(Filter{}); len(l) != 0 {
			got := len(l)
			t.Errorf("level %d: %d services stored", lvl, got)
		}
	}
}

// Entries written by older binaries carry no rule level and apply exactly as
// they did: what the old validators let through (a "a..b" name, a backend
// listed under two spellings) still applies at Legacy, so replaying an old
// log reaches the same state. Commands of this version are held to Strict.
func TestLegacyEntriesKeepTheirMeaning(t *testing.T) {
	old := func() *edgelbv1.VirtualService {
		return withBackends(svc("t1", "a..b", "10.0.0.5", &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080, Name: "we\x1bb"}),
			backend("192.0.2.1", 0), backend("192.0.2.1", 30080), backend("10.0.0.5", 0))
	}
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/24")))
	if r := h.applyAt(rules.Legacy, create(old())); r.Code != codes.OK {
		t.Fatalf("a legacy entry the old API accepted is refused: %v %q", r.Code, r.Message)
	}
	if r := h.applyAt(rules.Legacy, &raftv1.DrainBackend{Tenant: "t1", Name: "a..b", Address: "192.0.2.1", Port: 30080, Drained: true}); r.Code != codes.OK {
		t.Fatalf("legacy drain: %v %q", r.Code, r.Message)
	}
	if vs := h.get("t1", "a..b"); vs.Backends[0].Drained || !vs.Backends[1].Drained {
		t.Errorf("legacy drain of 192.0.2.1:30080 hit %v; it names the second entry exactly", vs.Backends)
	}

	h2 := newHarness(t)
	h2.ok(createPool(pool("p", "10.0.0.0/24")))
	for name, c := range map[string]struct {
		vs     *edgelbv1.VirtualService
		reason string
		frag   string
	}{
		"double dot":     {withBackends(svc("t1", "a..b", "10.0.0.5"), backend("192.0.2.1", 0)), errinfo.InvalidField, "a.b"},
		"port name ESC":  {withBackends(svc("t1", "s", "10.0.0.5", &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 80, Name: "we\x1bb"}), backend("192.0.2.1", 0)), errinfo.ControlCharacter, "control character"},
		"port name NUL":  {withBackends(svc("t1", "s", "10.0.0.5", &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 80, Name: "a\x00"}), backend("192.0.2.1", 0)), errinfo.ControlCharacter, "control character"},
		"two spellings":  {withBackends(svc("t1", "s", "10.0.0.5", &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}), backend("192.0.2.1", 0), backend("192.0.2.1", 30080)), errinfo.DuplicateBackend, "list it once"},
		"backend is VIP": {withBackends(svc("t1", "s", "10.0.0.5"), backend("10.0.0.5", 0)), errinfo.BackendIsVIP, "own VIP"},
		"allocated VIP":  {withBackends(svc("t1", "s", ""), backend("10.0.0.1", 0)), errinfo.BackendIsVIP, "own VIP"},
	} {
		r := h2.applyAt(rules.Strict, create(c.vs))
		if r.Code != codes.InvalidArgument || errinfo.Reason(r.Err()) != c.reason || !strings.Contains(r.Message, c.frag) {
			t.Errorf("%s: got %v %q reason %q; want InvalidArgument %s mentioning %q", name, r.Code, r.Message, errinfo.Reason(r.Err()), c.reason, c.frag)
		}
	}
}

// One backend has one identity: address and the port traffic reaches.
func TestBackendIdentity(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/24")))
	port := &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}
	h.ok(create(withBackends(svc("t1", "web", "10.0.0.5", port), backend("10.0.0.11", 0))))

	r := h.refused(&raftv1.AddBackend{Tenant: "t1", Name: "web", Backend: backend("10.0.0.11", 30080)}, codes.AlreadyExists, "already in t1/web as 10.0.0.11", "backend set or drain")
	if errinfo.Reason(r.Err()) != errinfo.DuplicateBackend {
		t.Errorf("reason %q, want %s", errinfo.Reason(r.Err()), errinfo.DuplicateBackend)
	}
	h.refused(&raftv1.SetBackends{Tenant: "t1", Name: "web", Backends: []*edgelbv1.Backend{backend("10.0.0.11", 0), backend("10.0.0.11", 30080)}}, codes.InvalidArgument, "same backend", "list it once")
	h.refused(&raftv1.AddBackend{Tenant: "t1", Name: "web", Backend: backend("10.0.0.5", 0)}, codes.InvalidArgument, "own VIP")

	// Either spelling names the stored backend.
	h.ok(&raftv1.DrainBackend{Tenant: "t1", Name: "web", Address: "10.0.0.11", Port: 30080, Drained: true})
	if vs := h.get("t1", "web"); len(vs.Backends) != 1 || !vs.Backends[0].Drained {
		t.Fatalf("drain by 10.0.0.11:30080: %v", vs.Backends)
	}
	// A different port is a different backend; the explicit equivalent is stored as port 0.
	h.ok(&raftv1.AddBackend{Tenant: "t1", Name: "web", Backend: backend("10.0.0.11", 8080)})
	h.ok(&raftv1.SetBackends{Tenant: "t1", Name: "web", Backends: []*edgelbv1.Backend{backend("10.0.0.12", 30080)}})
	if vs := h.get("t1", "web"); len(vs.Backends) != 1 || vs.Backends[0].Port != 0 {
		t.Errorf("set 10.0.0.12:30080 stored %v; want one spelling, port 0", vs.Backends)
	}
	h.ok(&raftv1.RemoveBackend{Tenant: "t1", Name: "web", Address: "10.0.0.12", Port: 30080})
}

func TestPinToUnknownMemberRefused(t *testing.T) {
	h := newHarness(t)
	h.ok(member("m1"))
	h.ok(createPool(pool("p", "10.0.0.0/24")))
	vs := svc("t1", "s", "")
	vs.PinnedMember = "nosuch"
	r := h.refused(create(vs), codes.FailedPrecondition, "nosuch is not a member", "m1")
	if errinfo.Reason(r.Err()) != errinfo.UnknownMember {
		t.Errorf("reason %q", errinfo.Reason(r.Err()))
	}
	vs.PinnedMember = "m1"
	h.ok(create(vs))
}

// The network and broadcast addresses of a pool's CIDR are left out of it;
// asking for one is answered as such, not as "not in any address pool".
func TestNetworkAddressVIPExplained(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("public", "192.0.2.0/24")))
	for vip, what := range map[string]string{"192.0.2.0": "network", "192.0.2.255": "broadcast"} {
		r := h.refused(create(svc("t1", "s", vip)), codes.FailedPrecondition, "the "+what+" address of 192.0.2.0/24 in address pool public")
		if strings.Contains(r.Message, "not in any address pool") || errinfo.Reason(r.Err()) != errinfo.ReservedAddress {
			t.Errorf("%s: %q reason %q", vip, r.Message, errinfo.Reason(r.Err()))
		}
	}
	h.refused(create(svc("t1", "s", "198.51.100.7")), codes.FailedPrecondition, "not in any address pool")
}

// A service an older release stored under rules since tightened still takes
// backend changes; the new backends are held to today's rules.
func TestLegacyServiceTakesBackendChanges(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/24")))
	if r := h.applyAt(rules.Legacy, create(withBackends(svc("t1", "a..b", "10.0.0.5"), backend("192.0.2.1", 0)))); r.Code != codes.OK {
		t.Fatal(r.Message)
	}
	h.ok(&raftv1.AddBackend{Tenant: "t1", Name: "a..b", Backend: backend("192.0.2.2", 0)})
	h.refused(&raftv1.AddBackend{Tenant: "t1", Name: "a..b", Backend: backend("10.0.0.5", 0)}, codes.InvalidArgument, "own VIP")
}

// A pool update sent raw (not through the API) is held to the API's rules:
// a loopback or malformed range, or a bad tenant name, is refused and
// changes nothing; a well-formed one applies.
func TestFSMRefusesRawPoolUpdate(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("p", "10.0.0.0/24")))
	before := h.snap()
	for name, u := range map[string]*raftv1.UpdateAddressPool{
		"loopback range":  {Name: "p", AddRanges: []string{"127.0.0.0/28"}},
		"malformed range": {Name: "p", AddRanges: []string{"10.1.0.0/33"}},
		"untrimmed range": {Name: "p", AddRanges: []string{" 10.1.0.0/28"}},
		"tenant name":     {Name: "p", SetTenants: true, Tenants: []string{"Bad Tenant!"}},
		"changes nothing": {Name: "p"},
	} {
		r := h.applyAt(rules.Strict, u)
		if r.Code != codes.InvalidArgument {
			t.Errorf("%s: got %v %q, want InvalidArgument", name, r.Code, r.Message)
		}
		if !proto.Equal(before, h.snap()) {
			t.Fatalf("%s: refused but the state changed", name)
		}
	}
	if r := h.applyAt(rules.Strict, &raftv1.UpdateAddressPool{Name: "p", AddRanges: []string{"10.1.0.0/28"}}); r.Code != codes.OK {
		t.Fatalf("a well-formed update: %v %q", r.Code, r.Message)
	}
}
