package ownership

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/internal/logcapture"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/node/nodetest"
)

// assigned returns the "VIP assigned" records.
func assigned(t *testing.T, buf *logcapture.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range buf.MustRecords(t) {
		if m["msg"] == "VIP assigned" {
			out = append(out, m)
		}
	}
	return out
}

// checkAssigned fails unless recs are exactly one line per service of want
// (tenant/name → VIP), each naming VIP, tenant and service apart.
func checkAssigned(t *testing.T, recs []map[string]any, want map[string]string, owner string) {
	t.Helper()
	got := map[string]string{}
	for _, r := range recs {
		tenant, _ := r["tenant"].(string)
		name, _ := r["service"].(string)
		vip, _ := r["vip"].(string)
		if r["owner"] != owner || r["reason"] == "" {
			t.Errorf("record %v: want owner %s and a reason", r, owner)
		}
		got[tenant+"/"+name] = vip
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || len(recs) != len(want) {
		t.Errorf("assigned (tenant/service → vip): %v in %d lines, want %v", got, len(recs), want)
	}
}

// Each assignment line names the VIP, the tenant and the service as
// separate keys, so an operator can grep by any of them.
func TestLogAssignedNamesVIPAndTenant(t *testing.T) {
	var buf logcapture.Buffer
	vss := []*edgelbv1.VirtualService{
		{Tenant: "acme", Name: "web", Vip: "192.0.2.1"},
		{Tenant: "acme", Name: "web-udp", Vip: "192.0.2.1"},
		{Tenant: "globex", Name: "web", Vip: "192.0.2.2"},
		{Tenant: "initech", Name: "api", Vip: "192.0.2.3"}, // not in this batch
	}
	batch := []*raftv1.Assignment{
		Assign(vss[0], "m2", ReasonOwnerDown),
		Assign(vss[1], "m2", ReasonOwnerDown),
		Assign(vss[2], "m2", ReasonNew),
	}
	logAssigned(slog.New(slog.NewJSONHandler(&buf, nil)), vss, batch)
	checkAssigned(t, assigned(t, &buf), map[string]string{"acme/web": "192.0.2.1", "acme/web-udp": "192.0.2.1", "globex/web": "192.0.2.2"}, "m2")
}

// The same through Run on a one-member raft cluster: the leader assigns new
// services to itself and logs each with its VIP and tenant.
func TestAssignerRunLogs(t *testing.T) {
	n, raftAddr := nodetest.Leader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	apply := func(cmd *raftv1.Command) {
		t.Helper()
		res, err := n.Apply(ctx, cmd)
		if err == nil {
			err = res.Err()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	apply(&raftv1.Command{Op: &raftv1.Command_PutMember{PutMember: &raftv1.PutMember{Member: &edgelbv1.Member{Id: "m1", RaftAddress: raftAddr, ApiAddress: "127.0.0.1:7700"}}}})
	apply(&raftv1.Command{Op: &raftv1.Command_CreateAddressPool{CreateAddressPool: &raftv1.CreateAddressPool{
		Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/28"}}}}})
	want := map[string]string{"acme/web": "192.0.2.1", "globex/shop": "192.0.2.2"}
	for k, vip := range want {
		tenant, name, _ := strings.Cut(k, "/")
		apply(&raftv1.Command{Op: &raftv1.Command_CreateVirtualService{CreateVirtualService: &raftv1.CreateVirtualService{
			Service: &edgelbv1.VirtualService{Tenant: tenant, Name: name, Vip: vip,
				IpFamily: edgelbv1.IPFamily_IP_FAMILY_IPV4, Scheduler: edgelbv1.Scheduler_SCHEDULER_MH, ForwardingMode: edgelbv1.ForwardingMode_FORWARDING_MODE_NAT,
				Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80, BackendPort: 30080}}}}}})
	}

	var buf logcapture.Buffer
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		(&Assigner{Node: n, Grace: time.Second, Log: slog.New(slog.NewJSONHandler(&buf, nil))}).Run(rctx)
		close(done)
	}()
	for len(assigned(t, &buf)) < len(want) {
		if ctx.Err() != nil {
			t.Fatalf("assignments logged: %v", assigned(t, &buf))
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	<-done
	checkAssigned(t, assigned(t, &buf), want, "m1")
}
