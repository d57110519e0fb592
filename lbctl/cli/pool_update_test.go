package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/lbdtest"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

func (e *realEnv) fails(code int, args ...string) string {
	e.t.Helper()
	r := e.run(args...)
	if r.code != code {
		e.t.Fatalf("lbctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, code, r.out, r.err)
	}
	return r.err
}

// TestPoolUpdateReal grows and shrinks a pool through lbctl against a real
// lbd, including the refusals, and raw gRPC for the error details.
func TestPoolUpdateReal(t *testing.T) {
	ms := startLBD(t, 1)
	e := newRealEnv(t, ms...)
	e.ok("pool", "create", "public", "--range", "192.0.2.0/30")
	e.ok("vip", "create", "a", "--port", "tcp/80")
	e.ok("vip", "create", "b", "--port", "tcp/80")
	msg := e.fails(exitcode.Other, "vip", "create", "c", "--port", "tcp/80")
	if !strings.Contains(msg, "lbctl pool update public --add-range") || strings.Contains(msg, "add a range to a pool") {
		t.Errorf("full pool message: %s", msg)
	}

	out := e.ok("pool", "update", "public", "--add-range", "192.0.2.8/29")
	if !strings.Contains(out, "pool public updated, generation 2") || !strings.Contains(out, "RANGES") || !strings.Contains(out, "192.0.2.0/30,192.0.2.8/29") {
		t.Errorf("pool update table:\n%s", out)
	}
	if vs := decodeJSON(t, e.ok("vip", "create", "c", "--port", "tcp/80", "-o", "json")); vs["vip"] != "192.0.2.9" {
		t.Errorf("vip from the added range: %v", vs["vip"])
	}

	// A range with VIPs in it stays; the message names them; nothing changes.
	msg = e.fails(exitcode.Conflict, "pool", "update", "public", "--remove-range", "192.0.2.0/30")
	for _, want := range []string{"192.0.2.1 (default/a)", "192.0.2.2 (default/b)", "fall outside"} {
		if !strings.Contains(msg, want) {
			t.Errorf("remove-range refusal lacks %q: %s", want, msg)
		}
	}
	got := decodeJSON(t, e.ok("pool", "get", "public", "-o", "json"))
	if p := got["pool"].(map[string]any); p["generation"] != "2" || len(p["ranges"].([]any)) != 2 {
		t.Errorf("a refused update changed the pool: %v", p)
	}
	e.fails(exitcode.Conflict, "pool", "update", "public", "--add-range", "192.0.2.64/29", "--if-generation", "1")
	e.fails(exitcode.NotFound, "pool", "update", "public", "--remove-range", "192.0.2.128/29")
	e.fails(exitcode.NotFound, "pool", "update", "nope", "--add-range", "192.0.2.128/29")
	e.fails(exitcode.Usage, "pool", "update", "public")
	e.fails(exitcode.Usage, "pool", "update", "public", "--add-range", "not-a-range")
	e.fails(exitcode.InvalidArgument, "pool", "update", "public", "--add-range", "224.0.0.0/24")

	// -o json prints the pool.
	e.ok("vip", "delete", "a")
	e.ok("vip", "delete", "b")
	var p map[string]any
	if err := json.Unmarshal([]byte(e.ok("pool", "update", "public", "--remove-range", "192.0.2.1-192.0.2.2", "--tenant-allowed", "default", "-o", "json")), &p); err != nil {
		t.Fatal(err)
	}
	if p["name"] != "public" || p["generation"] != "3" || len(p["ranges"].([]any)) != 1 || p["tenants"].([]any)[0] != "default" {
		t.Errorf("pool update -o json: %v", p)
	}

	// Raw gRPC: the code and the ErrorInfo a client decides by.
	cc, err := grpc.NewClient(ms[0].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = edgelbv1.NewAddressPoolServiceClient(cc).UpdateAddressPool(context.Background(),
		&edgelbv1.UpdateAddressPoolRequest{Name: "public", RemoveRanges: []string{"192.0.2.8/29"}})
	if status.Code(err) != codes.FailedPrecondition || errinfo.Reason(err) != errinfo.PoolRangeInUse {
		t.Fatalf("remove a range in use: %v (reason %q)", err, errinfo.Reason(err))
	}
	if ei, _ := errinfo.Of(err); ei.Metadata["vips"] != "192.0.2.9" || ei.Domain != "edgelb.io" {
		t.Errorf("ErrorInfo %v", ei)
	}
	_, err = edgelbv1.NewAddressPoolServiceClient(cc).UpdateAddressPool(context.Background(),
		&edgelbv1.UpdateAddressPoolRequest{Name: "public", AddRanges: []string{"192.0.2.64/29"}, ExpectedGeneration: 1})
	if status.Code(err) != codes.Aborted || errinfo.Reason(err) != errinfo.PoolGenerationMismatch {
		t.Fatalf("stale generation: %v", err)
	}
}

// TestPoolUpdateHelpExamples runs every example of 'pool update --help', in
// order, against a real lbd.
func TestPoolUpdateHelpExamples(t *testing.T) {
	ms := startLBD(t, 1)
	e := newRealEnv(t, ms...)
	e.ok("pool", "create", "public", "--range", "192.0.2.0/24", "--range", "203.0.113.0/28")
	e.ok("pool", "create", "team-a", "--range", "198.51.100.10-198.51.100.20", "--tenant-allowed", "cluster-a")
	a := &app{}
	for _, line := range strings.Split(a.poolUpdateCmd().Example, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		args := strings.Fields(strings.TrimPrefix(line, "lbctl "))
		e.ok(args...)
	}
}

// TestFamilyAndReservedMessages: the clear answers for --family ipv6 with only
// IPv4 pools, and for a network address requested as a VIP.
func TestFamilyAndReservedMessages(t *testing.T) {
	ms := startLBD(t, 1)
	e := newRealEnv(t, ms...)
	e.ok("pool", "create", "public", "--range", "192.0.2.0/24")
	msg := e.fails(exitcode.Conflict, "vip", "create", "six", "--port", "tcp/80", "--family", "ipv6")
	if !strings.Contains(msg, "no address pool for IPv6 open to tenant default") || !strings.Contains(msg, "lbctl pool create") {
		t.Errorf("ipv6 without an IPv6 pool: %s", msg)
	}
	msg = e.fails(exitcode.Conflict, "vip", "create", "net", "--port", "tcp/80", "--vip", "192.0.2.0")
	if !strings.Contains(msg, "network address of 192.0.2.0/24 in address pool public") {
		t.Errorf("network address: %s", msg)
	}
	e.ok("pool", "create", "v6", "--range", "2001:db8:1::/112")
	if vs := decodeJSON(t, e.ok("vip", "create", "six", "--port", "tcp/80", "--family", "ipv6", "-o", "json")); vs["vip"] != "2001:db8:1::1" {
		t.Errorf("first IPv6 VIP %v, want 2001:db8:1::1", vs["vip"])
	}
	// IPv6 backends without --family: an IPv6 VIP, not a refusal of them
	// as "not IPv4 like the VIP"; an explicit --family still wins.
	if vs := decodeJSON(t, e.ok("vip", "create", "six-b", "--port", "tcp/80", "--backend", "2001:db8:2::7", "-o", "json")); vs["vip"] != "2001:db8:1::2" {
		t.Errorf("VIP of IPv6 backends %v, want 2001:db8:1::2", vs["vip"])
	}
	msg = e.fails(exitcode.InvalidArgument, "vip", "create", "six-c", "--port", "tcp/80", "--backend", "2001:db8:2::7", "--family", "ipv4")
	if !strings.Contains(msg, "not IPv4 like the VIP") {
		t.Errorf("IPv6 backends with --family ipv4: %s", msg)
	}
	msg = e.fails(exitcode.Conflict, "vip", "create", "any", "--port", "tcp/80", "--vip", "2001:db8:1::")
	if !strings.Contains(msg, "subnet-router anycast address") {
		t.Errorf("anycast: %s", msg)
	}
}

// TestPoolHostAddressesReal: a member that reports (from its configuration,
// control-plane-only) an interface address and a gateway; pools over them
// are refused unless --allow-host-addresses, and a pool that came first shows
// as a warning in member status.
func TestPoolHostAddressesReal(t *testing.T) {
	c := lbdtest.StartCluster(t, 1, lbdtest.Plaintext(), lbdtest.WithConfig(func(cfg *config.Config) {
		cfg.DataPlane.InterfaceAddresses = []string{"192.0.2.5"}
		cfg.DataPlane.Gateways = []string{"192.0.2.1"}
	}))
	e := newRealEnv(t, c.Members...)

	msg := e.fails(exitcode.Conflict, "pool", "create", "public", "--range", "192.0.2.0/24")
	for _, want := range []string{"192.0.2.5", "member lb1", "--allow-host-addresses"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal lacks %q: %s", want, msg)
		}
	}
	e.ok("pool", "create", "public", "--range", "192.0.2.16/28")
	e.fails(exitcode.Conflict, "pool", "update", "public", "--add-range", "192.0.2.0/30")
	if out := e.ok("pool", "update", "public", "--add-range", "192.0.2.0/30", "--allow-host-addresses"); !strings.Contains(out, "generation 2") {
		t.Errorf("update with --allow-host-addresses:\n%s", out)
	}
	if got := decodeJSON(t, e.ok("member", "list", "-o", "json")); !strings.Contains(fmt.Sprint(got), "192.0.2.5") {
		t.Errorf("member list does not show the reported address: %v", got)
	}
	// Taking the permission back is checked like any change.
	e.fails(exitcode.Conflict, "pool", "update", "public", "--allow-host-addresses=false")
	e.ok("pool", "update", "public", "--remove-range", "192.0.2.0/30", "--allow-host-addresses=false")
	if out := e.ok("member", "status"); strings.Contains(out, "WARNING") {
		t.Errorf("warning without a conflict:\n%s", out)
	}
}

// TestHostConflictInStatus: a member that joins with an address inside an
// existing pool is admitted, and lbctl member status and lbctl status say so.
func TestHostConflictInStatus(t *testing.T) {
	c := lbdtest.StartCluster(t, 1, lbdtest.Plaintext())
	e := newRealEnv(t, c.Members...)
	e.ok("pool", "create", "q", "--range", "198.51.100.0/24")
	c.Add(t, "lb2", lbdtest.WithConfig(func(cfg *config.Config) { cfg.DataPlane.InterfaceAddresses = []string{"198.51.100.7"} }))
	eventually(t, "member status warns", func() bool {
		return strings.Contains(e.run("member", "status", "lb2").out, "WARNING lb2: address pool q (range 198.51.100.0/24) holds 198.51.100.7")
	})
	st := e.status()
	found := false
	for _, p := range st.Problems {
		found = found || strings.Contains(p, "member lb2: address pool q")
	}
	if !found || st.Health == "healthy" {
		t.Errorf("lbctl status: health %s, problems %v", st.Health, st.Problems)
	}
}
