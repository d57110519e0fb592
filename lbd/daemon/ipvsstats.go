package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/cloudflare/ipvs"

	"github.com/edgelb/edgelb/lbd/dataplane"
	"github.com/edgelb/edgelb/lbd/dataplane/ipvsdiff"
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
		if dataplane.IsEmptyTable(err) {
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

// Service reads one virtual service's IPVS services and destinations, for
// GetServiceStats (lbctl vip get --stats).
func (s ipvsStats) Service(ctx context.Context, vs *edgelbv1.VirtualService) ([]*edgelbv1.PortStats, error) {
	svcs, err := ipvsdiff.FromService(vs)
	if err != nil {
		return nil, err
	}
	protos := map[ipvs.Protocol]edgelbv1.Protocol{ipvs.TCP: edgelbv1.Protocol_PROTOCOL_TCP, ipvs.UDP: edgelbv1.Protocol_PROTOCOL_UDP, ipvs.SCTP: edgelbv1.Protocol_PROTOCOL_SCTP}
	var out []*edgelbv1.PortStats
	for _, sv := range svcs {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		svc := sv.Service()
		got, err := s.e.IPVS().Service(svc)
		if err != nil {
			return nil, fmt.Errorf("IPVS service %s/%s: %w", svc.Protocol, netip.AddrPortFrom(svc.Address, svc.Port), err)
		}
		ps := &edgelbv1.PortStats{Protocol: protos[svc.Protocol], Port: uint32(svc.Port), Counters: apiCounters(got.Stats64)}
		ds, err := s.e.IPVS().Destinations(svc)
		if err != nil {
			return nil, fmt.Errorf("IPVS destinations of %s/%s: %w", svc.Protocol, netip.AddrPortFrom(svc.Address, svc.Port), err)
		}
		for _, d := range ds {
			ps.Backends = append(ps.Backends, &edgelbv1.BackendStats{
				Address: d.Address.String(), Port: uint32(d.Port), Weight: d.Weight,
				ActiveConnections: d.ActiveConnections, InactiveConnections: d.InactiveConnections, Counters: apiCounters(d.Stats64),
			})
		}
		out = append(out, ps)
	}
	return out, nil
}

func apiCounters(s ipvs.Stats) *edgelbv1.TrafficCounters {
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

func counters(s ipvs.Stats) metrics.Counters {
	return metrics.Counters{
		Connections: s.Connections, PacketsIn: s.IncomingPackets, PacketsOut: s.OutgoingPackets,
		BytesIn: s.IncomingBytes, BytesOut: s.OutgoingBytes, CPS: s.ConnectionRate,
		PPSIn: s.IncomingPacketRate, PPSOut: s.OutgoingPacketRate, BPSIn: s.IncomingByteRate, BPSOut: s.OutgoingByteRate,
	}
}
