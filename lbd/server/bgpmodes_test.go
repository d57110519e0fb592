package server

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"github.com/edgelb/edgelb/raft/fsm"
)

// A service in a bgp pool is served by every member at once: the API takes
// only mh and dr there, defaults an unspecified scheduler and mode to them,
// and refuses (FailedPrecondition, BGP_POOL_NEEDS_MH_DR) rr or nat however
// the service gets there: a named pool, a VIP of the pool, an allocation
// that lands in it, an update. An l2 pool is as before.
func TestBGPPoolModes(t *testing.T) {
	s := newServer(t, Options{Limits: limits(100)})
	if _, err := s.CreateAddressPool(admin, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{
		Name: "rack", Ranges: []string{"198.51.100.0/28"}, AnnounceMode: edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP,
	}}); err != nil {
		t.Fatal(err)
	}
	create := func(vs *edgelbv1.VirtualService) (*edgelbv1.VirtualService, error) {
		res, err := s.CreateVirtualService(admin, &edgelbv1.CreateVirtualServiceRequest{Service: vs})
		return res.GetService(), err
	}
	svc := func(name, pool, vip string, sched edgelbv1.Scheduler, mode edgelbv1.ForwardingMode) *edgelbv1.VirtualService {
		return &edgelbv1.VirtualService{Name: name, Pool: pool, Vip: vip, Scheduler: sched, ForwardingMode: mode,
			Ports: []*edgelbv1.Port{{Port: 80}}, Backends: []*edgelbv1.Backend{{Address: "10.0.0.11"}}}
	}
	const (
		unset = edgelbv1.Scheduler_SCHEDULER_UNSPECIFIED
		rr    = edgelbv1.Scheduler_SCHEDULER_RR
		fwd0  = edgelbv1.ForwardingMode_FORWARDING_MODE_UNSPECIFIED
		nat   = edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
		dr    = edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	)
	refused := func(what string, err error, field string) {
		t.Helper()
		wantCode(t, what, err, codes.FailedPrecondition, "rack", "--scheduler mh --mode dr", "a pool in l2 mode")
		ei, ok := errinfo.Of(err)
		if !ok || ei.Reason != errinfo.BgpPoolNeedsMhDr || ei.Metadata["field"] != field || ei.Metadata["pool"] != "rack" {
			t.Errorf("%s: ErrorInfo %v, want %s on %s in pool rack", what, ei, errinfo.BgpPoolNeedsMhDr, field)
		}
	}
	for _, c := range []struct {
		what  string
		vs    *edgelbv1.VirtualService
		field string
	}{
		{"rr in the pool", svc("a", "rack", "", rr, dr), "service.scheduler"},
		{"nat in the pool", svc("a", "rack", "", unset, nat), "service.forwarding_mode"},
		{"rr at a VIP of the pool", svc("a", "", "198.51.100.5", rr, fwd0), "service.scheduler"},
		{"nat allocated from the only pool", svc("a", "", "", unset, nat), "service.forwarding_mode"},
	} {
		_, err := create(c.vs)
		refused(c.what, err, c.field)
	}
	if all, _ := s.fsm.All(); len(all) != 0 {
		t.Fatalf("refused creates stored %d services", len(all))
	}

	got, err := create(svc("a", "rack", "", unset, fwd0))
	if err != nil {
		t.Fatalf("unspecified modes in a bgp pool: %v", err)
	}
	if got.Scheduler != edgelbv1.Scheduler_SCHEDULER_MH || got.ForwardingMode != dr {
		t.Errorf("unspecified modes in a bgp pool stored as %v/%v, want mh/dr", got.Scheduler, got.ForwardingMode)
	}
	// Allocated from the bgp pool without naming it: the same defaults.
	if got, err := create(svc("b", "", "", unset, fwd0)); err != nil || got.Pool != "rack" || got.ForwardingMode != dr {
		t.Errorf("allocated in the bgp pool: %v %v", got, err)
	}

	// An update to nat is refused and leaves the service as it was; one
	// that leaves the mode out keeps dr.
	stored, _ := s.fsm.Service(fsm.Key{Tenant: "default", Name: "a"})
	upd := proto.Clone(stored).(*edgelbv1.VirtualService)
	upd.ForwardingMode = nat
	_, err = s.UpdateVirtualService(admin, &edgelbv1.UpdateVirtualServiceRequest{Service: upd})
	refused("update to nat", err, "service.forwarding_mode")
	if after, _ := s.fsm.Service(fsm.Key{Tenant: "default", Name: "a"}); !proto.Equal(after, stored) {
		t.Errorf("refused update changed the service: %v", after)
	}
	upd.ForwardingMode, upd.Scheduler, upd.Vip, upd.Pool = fwd0, unset, "", ""
	res, err := s.UpdateVirtualService(admin, &edgelbv1.UpdateVirtualServiceRequest{Service: upd})
	if err != nil || res.Service.ForwardingMode != dr || res.Service.Generation != stored.Generation+1 {
		t.Errorf("update without modes: %v %v, want dr at the next generation", res.GetService(), err)
	}

	// An l2 pool takes rr and nat, and still defaults to nat.
	mustPool(t, s, "lan", "192.0.2.0/28")
	if got, err := create(svc("l", "lan", "", rr, nat)); err != nil || got.Scheduler != rr {
		t.Errorf("rr/nat in an l2 pool: %v %v", got, err)
	}
	if got, err := create(svc("m", "", "192.0.2.9", unset, fwd0)); err != nil || got.ForwardingMode != nat {
		t.Errorf("unspecified in an l2 pool: %v %v, want nat", got, err)
	}
}
