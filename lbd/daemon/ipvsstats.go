package daemon

import (
	"context"
	"net/netip"
	"strings"

	"github.com/edgelb/edgelb/lbd/dataplane"
	"github.com/edgelb/edgelb/lbd/metrics"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/fsm"
)

// ipvsStats reads per-VIP and per-backend counters from the kernel (through
// the data plane) at scrape time and names each IPVS service after the
// virtual service it belongs to.
type ipvsStats struct {
	k dataplane.Kernel
	f *fsm.FSM
}

func (s ipvsStats) Stats(ctx context.Context) ([]metrics.ServiceStats, error) {
	svcs, err := s.k.Counters(ctx)
	if err != nil {
		return nil, err
	}
	names := map[string][2]string{}
	s.f.View(fsm.Filter{}, func(vs *edgelbv1.VirtualService) {
		for _, p := range vs.Ports {
			names[statsKey(vs.Vip, protoName(p.Protocol), uint16(p.Port))] = [2]string{vs.Tenant, vs.Name}
		}
	})
	var out []metrics.ServiceStats
	for _, sv := range svcs {
		p := protoName(sv.Protocol)
		n, ours := names[statsKey(sv.Address.String(), p, sv.Port)]
		if !ours {
			continue // not an edgelb service
		}
		st := metrics.ServiceStats{Tenant: n[0], Name: n[1], VIP: sv.Address.String(), Protocol: p, Port: sv.Port, Counters: counters(sv.Counters)}
		for _, d := range sv.Destinations {
			st.Backends = append(st.Backends, metrics.BackendStats{
				Address: d.Address.String(), Port: d.Port, Weight: d.Weight,
				ActiveConns: d.Active, InactiveConns: d.Inactive, Counters: counters(d.Counters),
			})
		}
		out = append(out, st)
	}
	return out, nil
}

// Service reads one virtual service's IPVS services and destinations, for
// GetServiceStats (lbctl vip get --stats).
func (s ipvsStats) Service(ctx context.Context, vs *edgelbv1.VirtualService) ([]*edgelbv1.PortStats, error) {
	svcs, err := s.k.ServiceCounters(ctx, vs)
	if err != nil {
		return nil, err
	}
	out := make([]*edgelbv1.PortStats, 0, len(svcs))
	for _, sv := range svcs {
		ps := &edgelbv1.PortStats{Protocol: sv.Protocol, Port: uint32(sv.Port), Counters: apiCounters(sv.Counters)}
		for _, d := range sv.Destinations {
			ps.Backends = append(ps.Backends, &edgelbv1.BackendStats{
				Address: d.Address.String(), Port: uint32(d.Port), Weight: d.Weight,
				ActiveConnections: d.Active, InactiveConnections: d.Inactive, Counters: apiCounters(d.Counters),
			})
		}
		out = append(out, ps)
	}
	return out, nil
}

// protoName is the metrics label of a protocol: tcp, udp, sctp.
func protoName(p edgelbv1.Protocol) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "PROTOCOL_"))
}

func apiCounters(s dataplane.Counters) *edgelbv1.TrafficCounters {
	return &edgelbv1.TrafficCounters{
		Connections: s.Connections, PacketsIn: s.IncomingPackets, PacketsOut: s.OutgoingPackets,
		BytesIn: s.IncomingBytes, BytesOut: s.OutgoingBytes, ConnectionsPerSecond: s.ConnectionRate,
		BytesInPerSecond: s.IncomingByteRate, BytesOutPerSecond: s.OutgoingByteRate,
	}
}

func statsKey(vip, proto string, port uint16) string {
	if a, err := netip.ParseAddr(vip); err == nil {
		return proto + "/" + netip.AddrPortFrom(a, port).String()
	}
	return proto + "/" + vip
}

func counters(s dataplane.Counters) metrics.Counters {
	return metrics.Counters{
		Connections: s.Connections, PacketsIn: s.IncomingPackets, PacketsOut: s.OutgoingPackets,
		BytesIn: s.IncomingBytes, BytesOut: s.OutgoingBytes, CPS: s.ConnectionRate,
		PPSIn: s.IncomingPacketRate, PPSOut: s.OutgoingPacketRate, BPSIn: s.IncomingByteRate, BPSOut: s.OutgoingByteRate,
	}
}
