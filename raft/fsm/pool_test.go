package fsm

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// applyV applies op as an entry of command version v (logs written by older binaries).
func (h *harness) applyV(v uint32, op any) *Result {
	h.t.Helper()
	h.idx++
	cmd := command(h.idx, op)
	cmd.Version = v
	return h.f.ApplyCommand(h.idx, cmd)
}

func wantReason(t *testing.T, r *Result, reason string) {
	t.Helper()
	if r.Reason != reason {
		t.Errorf("reason = %q, want %q (%s)", r.Reason, reason, r.Message)
	}
	if got := errinfo.Reason(r.Err()); got != reason {
		t.Errorf("ErrorInfo reason on the error = %q, want %q", got, reason)
	}
}

func TestIPv6SkipsSubnetRouterAnycast(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("v6", "2001:db8:1::/112")))
	if got := h.ok(create(v6(svc("t", "a", "")))).Service.Vip; got != "2001:db8:1::1" {
		t.Fatalf("first IPv6 VIP = %s, want 2001:db8:1::1 (not the subnet-router anycast address)", got)
	}
	// Asking for it is refused, with the reason.
	r := h.refused(create(svc("t", "b", "2001:db8:1::")), codes.FailedPrecondition, "subnet-router anycast address", "2001:db8:1::/112", "pool v6")
	wantReason(t, r, errinfo.ReservedAddress)
	// An entry written by an older binary (version 1) keeps its meaning: it
	// allocated the anycast address then, and does again on replay.
	if got := h.applyV(1, create(v6(svc("t", "old", "")))).Service.Vip; got != "2001:db8:1::" {
		t.Fatalf("version-1 allocation = %s, want 2001:db8:1:: as it was", got)
	}
	// A service that holds it since then may still be updated.
	old := h.get("t", "old")
	old.Labels = map[string]string{"k": "v"}
	h.ok(&raftv1.UpdateVirtualService{Service: old})
	if got := h.ok(create(v6(svc("t", "c", "")))).Service.Vip; got != "2001:db8:1::2" {
		t.Fatalf("next VIP = %s", got)
	}
	// The size counts what can be handed out: the anycast address only
	// while an older VIP holds it.
	h.ok(createPool(pool("small", "2001:db8:2::/126")))
	if _, used, size, _ := h.f.Pool("small"); used != 0 || size != 3 {
		t.Errorf("a /126: used %d size %d, want 0 of 3", used, size)
	}
	if _, used, size, _ := h.f.Pool("v6"); used != 3 || size != 1<<16 {
		t.Errorf("v6 with the anycast address in use: used %d size %d, want 3 of 65536", used, size)
	}
}

func TestAnycastReplayMatchesSnapshot(t *testing.T) {
	// A member that replays a mixed log and one restored from a snapshot in
	// the middle of it end in the same state.
	ops := []struct {
		v  uint32
		op any
	}{
		{2, createPool(pool("v6", "2001:db8:1::/120", "2001:db8:2::/120"))},
		{2, create(v6(svc("t", "a", "")))},
		{1, create(v6(svc("t", "b", "")))},
		{2, create(v6(svc("t", "c", "")))},
		{1, create(v6(svc("t", "d", "")))},
		{2, deleteVS("t", "b")},
		{1, create(v6(svc("t", "e", "")))},
		{2, create(v6(svc("t", "f", "")))},
	}
	full := newHarness(t)
	var mid []byte
	for i, o := range ops {
		if r := full.applyV(o.v, o.op); r.Code != codes.OK {
			t.Fatalf("op %d: %v", i, r.Message)
		}
		if i == 3 {
			mid = persist(t, full.f)
		}
	}
	resumed := &harness{t: t, f: restored(t, mid), idx: 4}
	for _, o := range ops[4:] {
		resumed.applyV(o.v, o.op)
	}
	if a, b := full.snap(), resumed.snap(); !proto.Equal(a, b) {
		t.Fatalf("replay and snapshot+replay differ:\n%v\n%v", a, b)
	}
	want := map[string]string{"a": "2001:db8:1::1", "c": "2001:db8:1::2", "d": "2001:db8:1::3", "e": "2001:db8:1::", "f": "2001:db8:1::4"}
	for n, vip := range want {
		if got := full.get("t", n).Vip; got != vip {
			t.Errorf("%s: vip %s, want %s", n, got, vip)
		}
	}
}

func TestNetworkAndBroadcastNamed(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("public", "192.0.2.0/24")))
	r := h.refused(create(svc("t", "n", "192.0.2.0")), codes.FailedPrecondition, "network address", "192.0.2.0/24", "pool public")
	wantReason(t, r, errinfo.ReservedAddress)
	if r.Meta["pool"] != "public" || r.Meta["kind"] != "network address" {
		t.Errorf("metadata %v", r.Meta)
	}
	h.refused(create(svc("t", "b", "192.0.2.255")), codes.FailedPrecondition, "broadcast address", "pool public")
	// Outside every pool stays the old answer.
	h.refused(create(svc("t", "x", "198.51.100.1")), codes.FailedPrecondition, "not in any address pool")
}

func TestNoPoolForFamily(t *testing.T) {
	h := newHarness(t)
	h.ok(createPool(pool("v4", "192.0.2.0/30")))
	r := h.refused(create(v6(svc("t", "six", ""))), codes.FailedPrecondition, "no address pool for IPv6 open to tenant t", "lbctl pool create")
	wantReason(t, r, errinfo.NoPoolForFamily)
	h.ok(create(svc("t", "a", "")))
	h.ok(create(svc("t", "b", "")))
	r = h.refused(create(svc("t", "c", "")), codes.ResourceExhausted, "no free IPv4 address", "lbctl pool update v4 --add-range")
	wantReason(t, r, errinfo.PoolExhausted)
	if strings.Contains(r.Message, "add a range to a pool") {
		t.Errorf("old wording: %s", r.Message)
	}
}

func TestUpdatePool(t *testing.T) {
	h := newHarness(t)
	p := h.ok(createPool(pool("p", "192.0.2.0/30"))).Pool
	if p.Generation != 1 {
		t.Fatalf("new pool generation %d", p.Generation)
	}
	other := pool("other", "198.51.100.0/24")
	other.Manual = true
	h.ok(createPool(other))
	h.ok(create(svc("t", "a", "")))
	h.ok(create(svc("t", "b", "")))
	h.refused(create(svc("t", "c", "")), codes.ResourceExhausted)

	// Grow: the next create succeeds from the new range.
	up := h.ok(&raftv1.UpdateAddressPool{Name: "p", AddRanges: []string{"192.0.2.8/29"}, ExpectedGeneration: 1}).Pool
	if up.Generation != 2 || len(up.Ranges) != 2 || up.UpdateTime == nil || up.CreateTime == nil {
		t.Fatalf("updated pool %v", up)
	}
	if got := h.ok(create(svc("t", "c", ""))).Service.Vip; got != "192.0.2.9" {
		t.Fatalf("vip from the added range = %s", got)
	}

	// Stale generation.
	r := h.refused(&raftv1.UpdateAddressPool{Name: "p", AddRanges: []string{"192.0.2.32/29"}, ExpectedGeneration: 1}, codes.Aborted, "generation 2")
	wantReason(t, r, errinfo.PoolGenerationMismatch)

	// Removing a range that holds VIPs names them; nothing changes.
	r = h.refused(&raftv1.UpdateAddressPool{Name: "p", RemoveRanges: []string{"192.0.2.0/30"}}, codes.FailedPrecondition, "192.0.2.1 (t/a)", "192.0.2.2 (t/b)", "outside")
	wantReason(t, r, errinfo.PoolRangeInUse)
	if r.Meta["vips"] != "192.0.2.1,192.0.2.2" {
		t.Errorf("metadata vips = %q", r.Meta["vips"])
	}
	r = h.refused(&raftv1.UpdateAddressPool{Name: "p", RemoveRanges: []string{"192.0.2.64/30"}}, codes.NotFound, "no range 192.0.2.64/30")
	wantReason(t, r, errinfo.PoolRangeNotFound)
	h.refused(&raftv1.UpdateAddressPool{Name: "p", RemoveRanges: []string{"bogus"}}, codes.InvalidArgument)
	h.refused(&raftv1.UpdateAddressPool{Name: "nope", AddRanges: []string{"203.0.113.0/28"}}, codes.NotFound)
	h.refused(&raftv1.UpdateAddressPool{Name: "p", AddRanges: []string{"198.51.100.0/28"}}, codes.FailedPrecondition, "overlaps pool other")
	h.refused(&raftv1.UpdateAddressPool{Name: "p", AddRanges: []string{"192.0.2.12-192.0.2.13"}}, codes.InvalidArgument, "overlaps")
	r = h.refused(&raftv1.UpdateAddressPool{Name: "other", RemoveRanges: []string{"198.51.100.0/24"}}, codes.FailedPrecondition, "no range left")
	wantReason(t, r, errinfo.PoolWouldBeEmpty)
	// Closing the pool to the tenant of its VIPs.
	r = h.refused(&raftv1.UpdateAddressPool{Name: "p", SetTenants: true, Tenants: []string{"u"}}, codes.FailedPrecondition, "no longer admit", "t/a")
	wantReason(t, r, errinfo.PoolTenantInUse)

	// Free the range, then remove it (written another way: first-last).
	h.ok(deleteVS("t", "a"))
	h.ok(deleteVS("t", "b"))
	manual := true
	up = h.ok(&raftv1.UpdateAddressPool{Name: "p", RemoveRanges: []string{"192.0.2.1-192.0.2.2"}, SetTenants: true, Tenants: []string{"t"}, Manual: &manual}).Pool
	if len(up.Ranges) != 1 || up.Ranges[0] != "192.0.2.8/29" || !up.Manual || len(up.Tenants) != 1 || up.Generation != 3 {
		t.Fatalf("updated pool %v", up)
	}
	h.refused(create(svc("u", "x", "192.0.2.10")), codes.FailedPrecondition)

	// A pool from a version-1 entry has generation 0; an update counts from there.
	h.applyV(1, createPool(pool("legacy", "203.0.113.0/24")))
	if got := h.ok(&raftv1.UpdateAddressPool{Name: "legacy", AddRanges: []string{"2001:db8::/64"}}).Pool.Generation; got != 1 {
		t.Errorf("legacy pool generation after update = %d", got)
	}
}

func hostMember(id string, addrs, gws []string) *raftv1.PutMember {
	m := member(id)
	m.Member.DataInterface = "eth1"
	m.Member.InterfaceAddresses = addrs
	m.Member.Gateways = gws
	return m
}

func TestPoolRefusesHostAddresses(t *testing.T) {
	h := newHarness(t)
	h.ok(hostMember("edge1", []string{"192.0.2.5", "2001:db8::5"}, []string{"192.0.2.1"}))
	r := h.refused(createPool(pool("p", "192.0.2.0/24")), codes.FailedPrecondition, "192.0.2.5", "member edge1", "data interface eth1", "--allow-host-addresses")
	wantReason(t, r, errinfo.HostAddressInPool)
	h.refused(createPool(pool("p", "192.0.2.1-192.0.2.3")), codes.FailedPrecondition, "192.0.2.1", "default gateway")
	h.refused(createPool(pool("p6", "2001:db8::/120")), codes.FailedPrecondition, "2001:db8::5")
	h.ok(createPool(pool("p", "192.0.2.16/28")))
	h.refused(&raftv1.UpdateAddressPool{Name: "p", AddRanges: []string{"192.0.2.4/30"}}, codes.FailedPrecondition, "192.0.2.5")
	allow := true
	h.ok(&raftv1.UpdateAddressPool{Name: "p", AddRanges: []string{"192.0.2.4/30"}, AllowHostAddresses: &allow})
	ap := pool("q", "192.0.2.32/28", "192.0.2.0/30")
	ap.AllowHostAddresses = true
	h.ok(createPool(ap))
	if got := h.f.HostConflicts("edge1"); len(got) != 0 {
		t.Errorf("conflicts with pools that allow them: %v", got)
	}

	// A member that registers later with an address in a pool: the pool
	// stays (refusing the member would not undo it), the conflict is reported.
	h.ok(createPool(pool("r", "198.51.100.0/24")))
	h.ok(hostMember("edge2", []string{"198.51.100.7"}, nil))
	got := h.f.HostConflicts("edge2")
	if len(got) != 1 || !strings.Contains(got[0], "address pool r") || !strings.Contains(got[0], "198.51.100.7") {
		t.Errorf("HostConflicts(edge2) = %v", got)
	}
}

// TestAnycastMixedVersionsRandom: random creates (of both versions) and
// deletes; a member restored from a snapshot at any point and replaying the
// rest agrees with one that applied everything (the allocation shortcut is
// not snapshotted, so it must never change an answer).
func TestAnycastMixedVersionsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	type step struct {
		v  uint32
		op any
	}
	var steps []step
	steps = append(steps, step{2, createPool(pool("v6", "2001:db8:1::/124", "2001:db8:2::/124", "2001:db8:3::5-2001:db8:3::9"))})
	var live []string
	for i := 0; i < 300; i++ {
		if len(live) > 0 && rng.IntN(3) == 0 {
			j := rng.IntN(len(live))
			steps = append(steps, step{uint32(1 + rng.IntN(2)), deleteVS("t", live[j])})
			live = append(live[:j], live[j+1:]...)
			continue
		}
		name := fmt.Sprintf("s%d", i)
		steps = append(steps, step{uint32(1 + rng.IntN(2)), create(v6(svc("t", name, "")))})
		live = append(live, name)
	}
	full := newHarness(t)
	snaps := map[int][]byte{}
	for i, s := range steps {
		full.applyV(s.v, s.op) // refusals (a full pool) are part of the history too
		if i%37 == 0 {
			snaps[i] = persist(t, full.f)
		}
	}
	want := full.snap()
	for at, b := range snaps {
		h := &harness{t: t, f: restored(t, b), idx: uint64(at + 1)}
		for _, s := range steps[at+1:] {
			h.applyV(s.v, s.op)
		}
		if !proto.Equal(want, h.snap()) {
			t.Fatalf("restored at step %d and replayed: a different state", at)
		}
	}
}

func TestVersionFor(t *testing.T) {
	for op, want := range map[any]uint32{
		create(svc("t", "a", "")):            2,
		&raftv1.UpdateAddressPool{}:          2,
		createPool(pool("p", "10.0.0.0/24")): 2,
		owners():                             1,
		member("m1"):                         1,
		deleteVS("t", "a"):                   1,
	} {
		if got := VersionFor(command(1, op)); got != want {
			t.Errorf("VersionFor(%T) = %d, want %d", op, got, want)
		}
	}
	cmd := command(1, owners())
	cmd.Version = 0
	if _, err := Encode(cmd); err != nil || cmd.Version != 1 {
		t.Errorf("Encode stamped version %d", cmd.Version)
	}
}
