package bgp

import (
	"net/netip"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Pools maps the name of every bgp-mode pool to its pool.
func Pools(pools []*edgelbv1.AddressPool) map[string]*edgelbv1.AddressPool {
	out := map[string]*edgelbv1.AddressPool{}
	for _, p := range pools {
		if p.GetAnnounceMode() == edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP {
			out[p.Name] = p
		}
	}
	return out
}

// Mode reports whether vs's VIP is announced by BGP: its pool is in bgp
// mode. Such a VIP has no owner (owner ""): every eligible member serves it.
func Mode(vs *edgelbv1.VirtualService, bgpPools map[string]*edgelbv1.AddressPool) bool {
	_, ok := bgpPools[vs.GetPool()]
	return ok && vs.GetPool() != ""
}

// WithoutBGP is vss without the services of bgp pools: what the L2
// ownership assigner places. (A new slice; vss is not modified.)
func WithoutBGP(vss []*edgelbv1.VirtualService, bgpPools map[string]*edgelbv1.AddressPool) []*edgelbv1.VirtualService {
	if len(bgpPools) == 0 {
		return vss
	}
	out := make([]*edgelbv1.VirtualService, 0, len(vss))
	for _, vs := range vss {
		if !Mode(vs, bgpPools) {
			out = append(out, vs)
		}
	}
	return out
}

// VIPsOf gathers Decide's VIPs from the replicated services: one per
// address of a bgp pool, healthy when any service on it has a backend that
// is not drained and not reported unhealthy.
func VIPsOf(vss []*edgelbv1.VirtualService, bgpPools map[string]*edgelbv1.AddressPool) []VIP {
	byAddr := map[netip.Addr]int{}
	var out []VIP
	for _, vs := range vss {
		p, ok := bgpPools[vs.GetPool()]
		if !ok {
			continue
		}
		a, err := netip.ParseAddr(vs.GetVip())
		if err != nil {
			continue
		}
		a = a.Unmap()
		i, seen := byAddr[a]
		if !seen {
			i = len(out)
			byAddr[a] = i
			out = append(out, VIP{Addr: a, Pool: p.Name, Attrs: p.Bgp})
		}
		if !out[i].Healthy {
			out[i].Healthy = anyUp(vs)
		}
	}
	return out
}

func anyUp(vs *edgelbv1.VirtualService) bool {
	for _, b := range vs.GetBackends() {
		if !b.GetDrained() && b.GetHealth().GetState() != edgelbv1.BackendHealthState_BACKEND_HEALTH_STATE_UNHEALTHY {
			return true
		}
	}
	return false
}
