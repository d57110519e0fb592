package rules

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// GracefulShutdown is the well-known community 65535:0 (RFC 8326) a draining
// member adds to its routes; pools may not carry it themselves.
const GracefulShutdown uint32 = 0xFFFF0000

// maxCommunities bounds each list of a pool's communities: they ride on
// every UPDATE for the pool's VIPs.
const maxCommunities = 32

// LargeCommunity is an RFC 8092 large community.
type LargeCommunity struct{ Global, Local1, Local2 uint32 }

func (l LargeCommunity) String() string { return fmt.Sprintf("%d:%d:%d", l.Global, l.Local1, l.Local2) }

// ParseCommunity parses a standard community, "ASN:value" with each half
// 0..65535.
func ParseCommunity(s string) (uint32, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return 0, fmt.Errorf("%q is not ASN:value (e.g. 65000:100)", s)
	}
	hi, err1 := strconv.ParseUint(a, 10, 16)
	lo, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q is not ASN:value with each part 0..65535 (e.g. 65000:100)", s)
	}
	return uint32(hi)<<16 | uint32(lo), nil
}

// FormatCommunity is the canonical text of a standard community.
func FormatCommunity(c uint32) string { return fmt.Sprintf("%d:%d", c>>16, c&0xFFFF) }

// ParseLargeCommunity parses "global:local1:local2", each 0..4294967295.
func ParseLargeCommunity(s string) (LargeCommunity, error) {
	parts := strings.Split(strings.TrimSpace(s), ":")
	if len(parts) != 3 {
		return LargeCommunity{}, fmt.Errorf("%q is not global:local1:local2 (e.g. 65000:1:2)", s)
	}
	var v [3]uint32
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return LargeCommunity{}, fmt.Errorf("%q is not global:local1:local2 with each part 0..4294967295 (e.g. 65000:1:2)", s)
		}
		v[i] = uint32(n)
	}
	return LargeCommunity{v[0], v[1], v[2]}, nil
}

// AggregationLengths are the prefix lengths a bgp pool advertises its IPv4
// and IPv6 VIPs with (0 in the pool means a host route).
func AggregationLengths(b *edgelbv1.BgpAttributes) (v4, v6 int) {
	v4, v6 = 32, 128
	if b.GetAggregationLength() != 0 {
		v4 = int(b.GetAggregationLength())
	}
	if b.GetAggregationLengthV6() != 0 {
		v6 = int(b.GetAggregationLengthV6())
	}
	return v4, v6
}

func invalidBGP(field, format string, args ...any) error {
	return invalidR(errinfo.BgpAttributesInvalid, field, format, args...)
}

// poolAnnounce checks a pool's announce mode and BGP attributes, and writes
// the communities in their canonical form.
func poolAnnounce(p *edgelbv1.AddressPool) error {
	switch p.AnnounceMode {
	case edgelbv1.AnnounceMode_ANNOUNCE_MODE_UNSPECIFIED, edgelbv1.AnnounceMode_ANNOUNCE_MODE_L2:
		if p.Bgp != nil {
			return invalidR(errinfo.BgpAttributesWithoutBgpMode, "pool.bgp", "BGP attributes on a pool in l2 mode; set announce_mode ANNOUNCE_MODE_BGP (lbctl: --mode bgp) or drop them")
		}
		return nil
	case edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP:
	default:
		return invalid("pool.announce_mode", "%d is not ANNOUNCE_MODE_L2 or ANNOUNCE_MODE_BGP", p.AnnounceMode)
	}
	b := p.Bgp
	if b == nil {
		return nil
	}
	if len(b.Communities) > maxCommunities || len(b.LargeCommunities) > maxCommunities {
		return invalidBGP("pool.bgp", "%d communities and %d large communities; the limit is %d of each", len(b.Communities), len(b.LargeCommunities), maxCommunities)
	}
	seen := map[string]bool{}
	for i, s := range b.Communities {
		f := fmt.Sprintf("pool.bgp.communities[%d]", i)
		c, err := ParseCommunity(s)
		if err != nil {
			return invalidBGP(f, "%v", err)
		}
		if c == GracefulShutdown {
			return invalidBGP(f, "65535:0 is GRACEFUL_SHUTDOWN (RFC 8326), which members add themselves while draining; a pool carrying it would always be depreferred")
		}
		b.Communities[i] = FormatCommunity(c)
		if seen[b.Communities[i]] {
			return invalidBGP(f, "%s is listed twice", b.Communities[i])
		}
		seen[b.Communities[i]] = true
	}
	for i, s := range b.LargeCommunities {
		f := fmt.Sprintf("pool.bgp.large_communities[%d]", i)
		l, err := ParseLargeCommunity(s)
		if err != nil {
			return invalidBGP(f, "%v", err)
		}
		b.LargeCommunities[i] = l.String()
		if seen[b.LargeCommunities[i]] {
			return invalidBGP(f, "%s is listed twice", b.LargeCommunities[i])
		}
		seen[b.LargeCommunities[i]] = true
	}
	if b.AggregationLength > 32 {
		return invalidBGP("pool.bgp.aggregation_length", "%d is longer than an IPv4 address; use 1..32 (0 means 32, one route per VIP)", b.AggregationLength)
	}
	if b.AggregationLengthV6 > 128 {
		return invalidBGP("pool.bgp.aggregation_length_v6", "%d is longer than an IPv6 address; use 1..128 (0 means 128, one route per VIP)", b.AggregationLengthV6)
	}
	return nil
}

// IsBGP reports whether pool announces its VIPs by BGP (nil: no pool).
func IsBGP(pool *edgelbv1.AddressPool) bool {
	return pool.GetAnnounceMode() == edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP
}

// defaultModes is the one place that decides the scheduler and forwarding
// mode of a service whose request left them unspecified. Every service
// defaults to mh. Forwarding defaults to nat, except in a bgp pool
// (bgpPool), where every member serves the VIP at once and only dr can
// (BGPPoolModes): there an unspecified mode means dr, and only an explicit
// nat is refused. The API knows the pool before it proposes (lbd/server), so
// what it proposes, and the FSM stores, is always explicit.
func defaultModes(vs *edgelbv1.VirtualService, bgpPool bool) {
	if vs.Scheduler == edgelbv1.Scheduler_SCHEDULER_UNSPECIFIED {
		vs.Scheduler = edgelbv1.Scheduler_SCHEDULER_MH
	}
	if vs.ForwardingMode == edgelbv1.ForwardingMode_FORWARDING_MODE_UNSPECIFIED {
		vs.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
		if bgpPool {
			vs.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_DR
		}
	}
}

// BGPPoolModes refuses a service of bgp pool pool whose modes the data plane
// cannot serve from every member at once (lbd/dataplane/ipvsdiff
// ActiveActive): a scheduler other than mh would send one flow's packets,
// spread over the members by the routers' ECMP, to different backends, and
// nat would send replies back through whichever member did the rewrite, not
// the one the next packet reaches. The API checks it on every write that
// places a service, the FSM again from level BGPModes on.
func BGPPoolModes(vs *edgelbv1.VirtualService, pool string) error {
	field := ""
	switch {
	case vs.Scheduler != edgelbv1.Scheduler_SCHEDULER_MH:
		field = "service.scheduler"
	case vs.ForwardingMode != edgelbv1.ForwardingMode_FORWARDING_MODE_DR:
		field = "service.forwarding_mode"
	default:
		return nil
	}
	sched := strings.ToLower(strings.TrimPrefix(vs.Scheduler.String(), "SCHEDULER_"))
	mode := strings.ToLower(strings.TrimPrefix(vs.ForwardingMode.String(), "FORWARDING_MODE_"))
	return errinfo.Errorf(codes.FailedPrecondition, errinfo.BgpPoolNeedsMhDr,
		map[string]string{"field": field, "pool": pool, "scheduler": sched, "forwarding_mode": mode},
		"%s: address pool %s announces by BGP, so every member serves the VIP at once (ECMP), which needs scheduler mh and forwarding dr; this service asks for scheduler %s and forwarding %s: use --scheduler mh --mode dr (or leave both out), or a pool in l2 mode",
		field, pool, sched, mode)
}
