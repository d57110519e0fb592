package fsm

import (
	"bytes"
	"github.com/edgelb/edgelb/raft/rules"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// harness drives an FSM with consecutive log indexes, as raft would.
type harness struct {
	t   testing.TB
	f   *FSM
	idx uint64
}

func newHarness(t testing.TB) *harness {
	return &harness{t: t, f: New(quiet)}
}

var epoch = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// apply applies op at the next index, stamped with a time derived from it.
func (h *harness) apply(op any) *Result {
	h.t.Helper()
	h.idx++
	return h.f.ApplyCommand(h.idx, command(h.idx, op))
}

func command(idx uint64, op any) *raftv1.Command {
	cmd := &raftv1.Command{Version: CommandVersion, Rules: testRules, Time: timestamppb.New(epoch.Add(time.Duration(idx) * time.Second))}
	switch o := op.(type) {
	case *raftv1.CreateVirtualService:
		cmd.Op = &raftv1.Command_CreateVirtualService{CreateVirtualService: o}
	case *raftv1.UpdateVirtualService:
		cmd.Op = &raftv1.Command_UpdateVirtualService{UpdateVirtualService: o}
	case *raftv1.DeleteVirtualService:
		cmd.Op = &raftv1.Command_DeleteVirtualService{DeleteVirtualService: o}
	case *raftv1.SetBackends:
		cmd.Op = &raftv1.Command_SetBackends{SetBackends: o}
	case *raftv1.AddBackend:
		cmd.Op = &raftv1.Command_AddBackend{AddBackend: o}
	case *raftv1.RemoveBackend:
		cmd.Op = &raftv1.Command_RemoveBackend{RemoveBackend: o}
	case *raftv1.DrainBackend:
		cmd.Op = &raftv1.Command_DrainBackend{DrainBackend: o}
	case *raftv1.CreateAddressPool:
		cmd.Op = &raftv1.Command_CreateAddressPool{CreateAddressPool: o}
	case *raftv1.DeleteAddressPool:
		cmd.Op = &raftv1.Command_DeleteAddressPool{DeleteAddressPool: o}
	case *raftv1.UpdateAddressPool:
		cmd.Op = &raftv1.Command_UpdateAddressPool{UpdateAddressPool: o}
	case *raftv1.PutMember:
		cmd.Op = &raftv1.Command_PutMember{PutMember: o}
	case *raftv1.RemoveMember:
		cmd.Op = &raftv1.Command_RemoveMember{RemoveMember: o}
	case *raftv1.SetOwners:
		cmd.Op = &raftv1.Command_SetOwners{SetOwners: o}
	case *raftv1.SetBackendHealth:
		cmd.Op = &raftv1.Command_SetBackendHealth{SetBackendHealth: o}
	case *raftv1.SetClusterID:
		cmd.Op = &raftv1.Command_SetClusterId{SetClusterId: o}
	case *raftv1.RestoreState:
		cmd.Op = &raftv1.Command_RestoreState{RestoreState: o}
	case *raftv1.RenewTenantHeartbeat:
		cmd.Op = &raftv1.Command_RenewTenantHeartbeat{RenewTenantHeartbeat: o}
	case *raftv1.DeleteTenantServices:
		cmd.Op = &raftv1.Command_DeleteTenantServices{DeleteTenantServices: o}
	case nil:
	default:
		panic("unknown op")
	}
	return cmd
}

// ok applies op and fails the test unless it succeeds.
func (h *harness) ok(op any) *Result {
	h.t.Helper()
	r := h.apply(op)
	if r.Code != codes.OK {
		h.t.Fatalf("apply %T: %v %s", op, r.Code, r.Message)
	}
	return r
}

// refused applies op, expects code with a message holding every fragment, and
// checks that nothing changed: same revision, no event, same state.
func (h *harness) refused(op any, code codes.Code, fragments ...string) *Result {
	h.t.Helper()
	before := h.snap()
	rev := h.f.Revision()
	changed := h.f.Changed()
	r := h.apply(op)
	if r.Code != code {
		h.t.Fatalf("apply %T: got %v %q, want %v", op, r.Code, r.Message, code)
	}
	for _, s := range fragments {
		if !strings.Contains(r.Message, s) {
			h.t.Errorf("apply %T: message %q does not mention %q", op, r.Message, s)
		}
	}
	if r.Err() == nil {
		h.t.Errorf("Result.Err() is nil for code %v", code)
	}
	if got := h.f.Revision(); got != rev {
		h.t.Errorf("refused %T moved the revision from %d to %d", op, rev, got)
	}
	if evs, _, _ := h.f.EventsSince(rev); len(evs) != 0 {
		h.t.Errorf("refused %T recorded %d events", op, len(evs))
	}
	select {
	case <-changed:
		h.t.Errorf("refused %T signalled a change", op)
	default:
	}
	if after := h.snap(); !proto.Equal(before, after) {
		h.t.Errorf("refused %T changed the state:\nbefore %v\nafter  %v", op, before, after)
	}
	return r
}

// snap returns the FSM's state in its wire form.
func (h *harness) snap() *raftv1.Snapshot { return snapOf(h.t, h.f) }

func snapOf(t testing.TB, f *FSM) *raftv1.Snapshot {
	t.Helper()
	b := persist(t, f)
	var s raftv1.Snapshot
	if err := proto.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// persist takes a snapshot and writes it through a sink, as raft would.
func persist(t testing.TB, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Release()
	sink := &memSink{}
	if err := s.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist left the sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func restored(t testing.TB, b []byte) *FSM {
	t.Helper()
	f := New(quiet)
	if err := f.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	return f
}

// memSink is a raft.SnapshotSink that keeps the snapshot in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

// Builders for commands shaped as the API layer produces them (validated, defaults filled).

func pool(name string, ranges ...string) *edgelbv1.AddressPool {
	return &edgelbv1.AddressPool{Name: name, Ranges: ranges}
}

func createPool(p *edgelbv1.AddressPool) *raftv1.CreateAddressPool {
	return &raftv1.CreateAddressPool{Pool: p}
}

func tcp(port uint32) *edgelbv1.Port {
	return &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: port, BackendPort: port}
}

func udp(port uint32) *edgelbv1.Port {
	return &edgelbv1.Port{Protocol: edgelbv1.Protocol_PROTOCOL_UDP, Port: port, BackendPort: port}
}

func backend(a string, port uint32) *edgelbv1.Backend {
	return &edgelbv1.Backend{Address: a, Port: port, Weight: 1}
}

// svc is a validated service of tenant/name with the given VIP ("" to allocate).
func svc(tenant, name, vip string, ports ...*edgelbv1.Port) *edgelbv1.VirtualService {
	if len(ports) == 0 {
		ports = []*edgelbv1.Port{tcp(80)}
	}
	fam := edgelbv1.IPFamily_IP_FAMILY_IPV4
	if vip != "" && netip.MustParseAddr(vip).Is6() {
		fam = edgelbv1.IPFamily_IP_FAMILY_IPV6
	}
	return &edgelbv1.VirtualService{
		Tenant: tenant, Name: name, Vip: vip, Ports: ports, IpFamily: fam,
		Scheduler: edgelbv1.Scheduler_SCHEDULER_MH, ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_NAT,
	}
}

func v6(vs *edgelbv1.VirtualService) *edgelbv1.VirtualService {
	vs.IpFamily = edgelbv1.IPFamily_IP_FAMILY_IPV6
	return vs
}

func inPool(vs *edgelbv1.VirtualService, p string) *edgelbv1.VirtualService {
	vs.Pool = p
	return vs
}

func shared(vs *edgelbv1.VirtualService, key string) *edgelbv1.VirtualService {
	vs.SharingKey = key
	return vs
}

func withBackends(vs *edgelbv1.VirtualService, bs ...*edgelbv1.Backend) *edgelbv1.VirtualService {
	vs.Backends = bs
	return vs
}

func create(vs *edgelbv1.VirtualService) *raftv1.CreateVirtualService {
	return &raftv1.CreateVirtualService{Service: vs}
}

func createOwned(vs *edgelbv1.VirtualService, owner string) *raftv1.CreateVirtualService {
	return &raftv1.CreateVirtualService{Service: vs, Owner: owner}
}

func deleteVS(tenant, name string) *raftv1.DeleteVirtualService {
	return &raftv1.DeleteVirtualService{Tenant: tenant, Name: name}
}

func member(id string) *raftv1.PutMember {
	return &raftv1.PutMember{Member: &edgelbv1.Member{Id: id, RaftAddress: "127.0.0.1:7701", ApiAddress: "127.0.0.1:7700"}}
}

func owners(as ...*raftv1.Assignment) *raftv1.SetOwners { return &raftv1.SetOwners{Assignments: as} }

func assign(tenant, name, owner string) *raftv1.Assignment {
	return &raftv1.Assignment{Tenant: tenant, Name: name, Owner: owner, Reason: "test"}
}

// get returns the stored service or fails.
func (h *harness) get(tenant, name string) *edgelbv1.VirtualService {
	h.t.Helper()
	vs, ok := h.f.Service(Key{tenant, name})
	if !ok {
		h.t.Fatalf("service %s/%s not found", tenant, name)
	}
	return vs
}

func rlog(idx uint64, data []byte) *raft.Log {
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}
}

// quiet keeps expected refusals of malformed entries out of the test output.
var quiet = slog.New(slog.DiscardHandler)

// testRules is the rule level of the commands tests build: the current one,
// as a member of this version proposes them.
var testRules = uint32(rules.Current)
