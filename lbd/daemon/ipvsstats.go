package daemon

import (
	"context"
	"net/netip"
	"strings"

	"github.com/cloudflare/ipvs"

	"github.com/edgelb/edgelb/lbd/dataplane"
	"github.com/edgelb/edgelb/lbd/metrics"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
)

// ipvsStats reads per-VIP and per-backend counters from the kernel at scrape
// time and names each IPVS service after the virtual service it belongs to.
type ipvsStats struct {
	e *dataplane.Engine
	f *fsm.FSM
}

func (s ipvsStats) Stats(ctx context.Context) ([]metrics.ServiceStats, error) {
	svcs, err := s.e.IPVS().Services()
	if err != nil {
		if strings.Contains(err.Error(), "no such file") {
			return nil, nil // an empty table
		}
		return nil, err
	}
	names := map[string][2]string{}
	s.f.View(fsm.Filter{}, func(vs *edgelbv1.VirtualService) {
		for _, p := range vs.Ports {
			names[statsKey(vs.Vip, strings.ToLower(strings.TrimPrefix(p.Protocol.String(), "PROTOCOL_")), uint16(p.Port))] = [2]string{vs.Tenant, vs.Name}
		}
	})
	proto := map[ipvs.Protocol]string{ipvs.TCP: "tcp", ipvs.UDP: "udp", ipvs.SCTP: "sctp"}
	var out []metrics.ServiceStats
	for _, sv := range svcs {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		p := proto[sv.Protocol]
		n, ours := names[statsKey(sv.Address.String(), p, sv.Port)]
		if !ours {
			continue // not an edgelb service
		}
		st := metrics.ServiceStats{Tenant: n[0], Name: n[1], VIP: sv.Address.String(), Protocol: p, Port: sv.Port, Counters: counters(sv.Stats64)}
		ds, err := s.e.IPVS().Destinations(sv.Service)
		if err == nil {
			for _, d := range ds {
				st.Backends = append(st.Backends, metrics.BackendStats{
					Address: d.Address.String(), Port: d.Port, Weight: d.Weight,
					ActiveConns: d.ActiveConnections, InactiveConns: d.InactiveConnections, Counters: counters(d.Stats64),
				})
			}
		}
		out = append(out, st)
	}
	return out, nil
}

func statsKey(vip, proto string, port uint16) string {
	if a, err := netip.ParseAddr(vip); err == nil {
		return proto + "/" + netip.AddrPortFrom(a, port).String()
	}
	return proto + "/" + vip
}

func counters(s ipvs.Stats) metrics.Counters {
	return metrics.Counters{
		Connections: s.Connections, PacketsIn: s.IncomingPackets, PacketsOut: s.OutgoingPackets,
		BytesIn: s.IncomingBytes, BytesOut: s.OutgoingBytes, CPS: s.ConnectionRate,
		PPSIn: s.IncomingPacketRate, PPSOut: s.OutgoingPacketRate, BPSIn: s.IncomingByteRate, BPSOut: s.OutgoingByteRate,
	}
}
