package dataplane

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/cloudflare/ipvs"

	"github.com/edgelb/edgelb/lbd/dataplane/ipvsdiff"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// Kernel is what a data plane that programs the kernel offers besides
// Reconcile and Withdraw: the kernel's counters, the services it cannot
// program, its source-range filter's drops, and a hook for metrics. *Engine
// implements it; the daemon reaches the engine only through this interface
// (and its own DataPlane), so nothing outside this package reads IPVS.
type Kernel interface {
	// Counters reads every IPVS service in the kernel with its
	// destinations; the caller keeps those it knows (edgelb's).
	Counters(ctx context.Context) ([]ServiceCounters, error)
	// ServiceCounters reads the IPVS services one virtual service maps to.
	ServiceCounters(ctx context.Context, vs *edgelbv1.VirtualService) ([]ServiceCounters, error)
	// Isolated lists the services the kernel refused, for status.
	Isolated() []string
	// SourceRangeDrops counts, per VIP with source ranges, the packets its
	// filter dropped.
	SourceRangeDrops(ctx context.Context) (map[netip.Addr]uint64, error)
	// SetObserver installs the receiver of what only the data plane sees.
	SetObserver(o Observer)
}

var _ Kernel = (*Engine)(nil)

// Counters are IPVS's cumulative counters and its rate estimates (the
// kernel's 2-second estimator) of one service or destination.
type Counters = ipvs.Stats

// ServiceCounters is one IPVS service as the kernel counts it.
type ServiceCounters struct {
	Protocol edgelbv1.Protocol
	Address  netip.Addr
	Port     uint16
	Counters Counters
	// Destinations are nil when the kernel could not list them while
	// Counters read every service (the service's own counters still count).
	Destinations []DestinationCounters
}

// DestinationCounters is one IPVS destination (backend) as the kernel counts it.
type DestinationCounters struct {
	Address  netip.Addr
	Port     uint16
	Weight   uint32
	Active   uint32 // connections established
	Inactive uint32 // connections in any other state
	Counters Counters
}

var apiProtocol = map[ipvs.Protocol]edgelbv1.Protocol{
	ipvs.TCP: edgelbv1.Protocol_PROTOCOL_TCP, ipvs.UDP: edgelbv1.Protocol_PROTOCOL_UDP, ipvs.SCTP: edgelbv1.Protocol_PROTOCOL_SCTP,
}

// Counters reads every IPVS service in the kernel. An empty table is no
// services, not an error. A service whose destinations cannot be listed is
// kept without them: one service removed between the two reads must not
// blank every other's series.
func (e *Engine) Counters(ctx context.Context) ([]ServiceCounters, error) {
	svcs, err := e.ipvs.Services()
	if err != nil {
		if isNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list IPVS services: %w", err)
	}
	out := make([]ServiceCounters, 0, len(svcs))
	for _, sv := range svcs {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		sc := serviceCounters(sv)
		if ds, err := e.ipvs.Destinations(sv.Service); err == nil {
			sc.Destinations = destinationCounters(ds)
		}
		out = append(out, sc)
	}
	return out, nil
}

// ServiceCounters reads the IPVS services vs maps to and their destinations;
// any read that fails fails the whole answer, naming the service.
func (e *Engine) ServiceCounters(ctx context.Context, vs *edgelbv1.VirtualService) ([]ServiceCounters, error) {
	svcs, err := ipvsdiff.FromService(vs)
	if err != nil {
		return nil, err
	}
	out := make([]ServiceCounters, 0, len(svcs))
	for _, sv := range svcs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		svc := sv.Service()
		got, err := e.ipvs.Service(svc)
		if err != nil {
			return nil, fmt.Errorf("IPVS service %s/%s: %w", svc.Protocol, netip.AddrPortFrom(svc.Address, svc.Port), err)
		}
		ds, err := e.ipvs.Destinations(svc)
		if err != nil {
			return nil, fmt.Errorf("IPVS destinations of %s/%s: %w", svc.Protocol, netip.AddrPortFrom(svc.Address, svc.Port), err)
		}
		sc := serviceCounters(got)
		sc.Destinations = destinationCounters(ds)
		out = append(out, sc)
	}
	return out, nil
}

func serviceCounters(sv ipvs.ServiceExtended) ServiceCounters {
	return ServiceCounters{Protocol: apiProtocol[sv.Protocol], Address: sv.Address, Port: sv.Port, Counters: sv.Stats64}
}

func destinationCounters(ds []ipvs.DestinationExtended) []DestinationCounters {
	out := make([]DestinationCounters, 0, len(ds))
	for _, d := range ds {
		out = append(out, DestinationCounters{
			Address: d.Address, Port: d.Port, Weight: d.Weight,
			Active: d.ActiveConnections, Inactive: d.InactiveConnections, Counters: d.Stats64,
		})
	}
	return out
}
