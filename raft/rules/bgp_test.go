package rules

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

func bgpPool(b *edgelbv1.BgpAttributes) *edgelbv1.AddressPool {
	return &edgelbv1.AddressPool{Name: "rack", Ranges: []string{"198.51.100.0/26"}, AnnounceMode: edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP, Bgp: b}
}

func TestBGPPoolAccepted(t *testing.T) {
	lp := uint32(200)
	p := bgpPool(&edgelbv1.BgpAttributes{Communities: []string{" 65000:0100", "0:0"}, LargeCommunities: []string{"4200000000:1:02"}, LocalPreference: &lp, AggregationLength: 24, AggregationLengthV6: 64})
	if err := AddressPool(p, DefaultLimits); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Bgp.Communities, ","); got != "65000:100,0:0" {
		t.Errorf("communities stored as %s, want the canonical 65000:100,0:0", got)
	}
	if p.Bgp.LargeCommunities[0] != "4200000000:1:2" {
		t.Errorf("large community stored as %s", p.Bgp.LargeCommunities[0])
	}
	// What the API stores, the FSM accepts.
	if err := StoredPool(p, Current); err != nil {
		t.Errorf("StoredPool of a checked pool: %v", err)
	}
	// A non-canonical spelling that bypassed the API is refused by the FSM.
	raw := proto.Clone(p).(*edgelbv1.AddressPool)
	raw.Bgp.Communities[0] = "65000:0100"
	if err := StoredPool(raw, Current); errinfo.Reason(err) != errinfo.MalformedCommand {
		t.Errorf("StoredPool of a raw pool = %v, want MALFORMED_COMMAND", err)
	}
	v4, v6 := AggregationLengths(p.Bgp)
	if v4 != 24 || v6 != 64 {
		t.Errorf("AggregationLengths = %d, %d", v4, v6)
	}
	if v4, v6 := AggregationLengths(nil); v4 != 32 || v6 != 128 {
		t.Errorf("default AggregationLengths = %d, %d, want host routes", v4, v6)
	}
	for _, m := range []edgelbv1.AnnounceMode{edgelbv1.AnnounceMode_ANNOUNCE_MODE_UNSPECIFIED, edgelbv1.AnnounceMode_ANNOUNCE_MODE_L2, edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP} {
		p := &edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/24"}, AnnounceMode: m}
		if err := AddressPool(p, DefaultLimits); err != nil {
			t.Errorf("mode %v without attributes: %v", m, err)
		}
	}
}

func TestBGPPoolRefused(t *testing.T) {
	many := make([]string, 33)
	for i := range many {
		many[i] = "65000:" + strings.Repeat("1", 1+i%4)
	}
	for name, c := range map[string]struct {
		p      *edgelbv1.AddressPool
		reason string
		field  string
		frag   string
	}{
		"attrs on l2": {&edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/24"}, Bgp: &edgelbv1.BgpAttributes{}},
			errinfo.BgpAttributesWithoutBgpMode, "pool.bgp", "--mode bgp"},
		"unknown mode":     {&edgelbv1.AddressPool{Name: "p", Ranges: []string{"192.0.2.0/24"}, AnnounceMode: 7}, errinfo.InvalidField, "pool.announce_mode", "7"},
		"community halves": {bgpPool(&edgelbv1.BgpAttributes{Communities: []string{"65000:100", "70000:1"}}), errinfo.BgpAttributesInvalid, "pool.bgp.communities[1]", "0..65535"},
		"community form":   {bgpPool(&edgelbv1.BgpAttributes{Communities: []string{"no-export"}}), errinfo.BgpAttributesInvalid, "pool.bgp.communities[0]", "ASN:value"},
		"graceful shutdown": {bgpPool(&edgelbv1.BgpAttributes{Communities: []string{"65535:0"}}), errinfo.BgpAttributesInvalid, "pool.bgp.communities[0]",
			"GRACEFUL_SHUTDOWN"},
		"duplicate":      {bgpPool(&edgelbv1.BgpAttributes{Communities: []string{"1:1", "01:1"}}), errinfo.BgpAttributesInvalid, "pool.bgp.communities[1]", "twice"},
		"too many":       {bgpPool(&edgelbv1.BgpAttributes{Communities: many}), errinfo.BgpAttributesInvalid, "pool.bgp", "limit is 32"},
		"large form":     {bgpPool(&edgelbv1.BgpAttributes{LargeCommunities: []string{"1:2"}}), errinfo.BgpAttributesInvalid, "pool.bgp.large_communities[0]", "global:local1:local2"},
		"large range":    {bgpPool(&edgelbv1.BgpAttributes{LargeCommunities: []string{"1:2:4294967296"}}), errinfo.BgpAttributesInvalid, "pool.bgp.large_communities[0]", "4294967295"},
		"aggregation v4": {bgpPool(&edgelbv1.BgpAttributes{AggregationLength: 33}), errinfo.BgpAttributesInvalid, "pool.bgp.aggregation_length", "1..32"},
		"aggregation v6": {bgpPool(&edgelbv1.BgpAttributes{AggregationLengthV6: 129}), errinfo.BgpAttributesInvalid, "pool.bgp.aggregation_length_v6", "1..128"},
	} {
		err := AddressPool(c.p, DefaultLimits)
		if status.Code(err) != codes.InvalidArgument || errinfo.Reason(err) != c.reason || !strings.Contains(err.Error(), c.frag) {
			t.Errorf("%s: %v (reason %q); want InvalidArgument %s mentioning %q", name, err, errinfo.Reason(err), c.reason, c.frag)
			continue
		}
		if ei, _ := errinfo.Of(err); ei.Metadata["field"] != c.field {
			t.Errorf("%s: field %q, want %q", name, ei.Metadata["field"], c.field)
		}
	}
}

func TestMemberBGPPeersDown(t *testing.T) {
	m := &edgelbv1.Member{Id: "m1", RaftAddress: "10.0.0.1:7701", ApiAddress: "10.0.0.1:7700", BgpPeersDown: []string{"10.0.0.254", "2001:db8::1"}}
	if err := Member(m); err != nil {
		t.Fatal(err)
	}
	m.BgpPeersDown = []string{"10.0.0.0254"}
	if err := Member(m); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "member.bgp_peers_down[0]") {
		t.Errorf("non-canonical peer: %v", err)
	}
}

// The defaults of a service follow its pool: mh everywhere, dr in a bgp pool
// and nat elsewhere; a bgp pool refuses an explicit rr or nat.
func TestVirtualServiceInBGPPool(t *testing.T) {
	bgp := &edgelbv1.AddressPool{Name: "rack", AnnounceMode: edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP}
	l2 := &edgelbv1.AddressPool{Name: "lan", AnnounceMode: edgelbv1.AnnounceMode_ANNOUNCE_MODE_L2}
	mk := func(s edgelbv1.Scheduler, m edgelbv1.ForwardingMode, backendPort uint32) *edgelbv1.VirtualService {
		return &edgelbv1.VirtualService{Name: "a", Scheduler: s, ForwardingMode: m, Ports: []*edgelbv1.Port{{Port: 80, BackendPort: backendPort}}}
	}
	const (
		unset = edgelbv1.Scheduler_SCHEDULER_UNSPECIFIED
		rr    = edgelbv1.Scheduler_SCHEDULER_RR
		mh    = edgelbv1.Scheduler_SCHEDULER_MH
		fwd0  = edgelbv1.ForwardingMode_FORWARDING_MODE_UNSPECIFIED
		nat   = edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
		dr    = edgelbv1.ForwardingMode_FORWARDING_MODE_DR
	)
	for _, c := range []struct {
		pool      *edgelbv1.AddressPool
		vs        *edgelbv1.VirtualService
		wantSched edgelbv1.Scheduler
		wantMode  edgelbv1.ForwardingMode
		reason    string
	}{
		{bgp, mk(unset, fwd0, 0), mh, dr, ""},
		{bgp, mk(mh, dr, 0), mh, dr, ""},
		{bgp, mk(rr, fwd0, 0), 0, 0, errinfo.BgpPoolNeedsMhDr},
		{bgp, mk(unset, nat, 0), 0, 0, errinfo.BgpPoolNeedsMhDr},
		{bgp, mk(unset, fwd0, 8080), 0, 0, errinfo.InvalidField}, // dr cannot remap a port
		{l2, mk(unset, fwd0, 8080), mh, nat, ""},
		{l2, mk(rr, nat, 0), rr, nat, ""},
		{nil, mk(unset, fwd0, 0), mh, nat, ""},
	} {
		err := VirtualServiceIn(c.vs, DefaultLimits, c.pool)
		what := fmt.Sprintf("pool %s, %v/%v port %d", c.pool.GetName(), c.vs.Scheduler, c.vs.ForwardingMode, c.vs.Ports[0].BackendPort)
		if c.reason != "" {
			if errinfo.Reason(err) != c.reason {
				t.Errorf("%s: %v, want reason %s", what, err, c.reason)
			}
			if c.reason == errinfo.BgpPoolNeedsMhDr && (status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "a pool in l2 mode")) {
				t.Errorf("%s: %v, want FailedPrecondition saying what to fix", what, err)
			}
			continue
		}
		if err != nil || c.vs.Scheduler != c.wantSched || c.vs.ForwardingMode != c.wantMode {
			t.Errorf("%s: %v, modes %v/%v, want %v/%v", what, err, c.vs.Scheduler, c.vs.ForwardingMode, c.wantSched, c.wantMode)
		}
	}
}
