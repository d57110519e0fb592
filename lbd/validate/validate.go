// Package validate checks API requests before they become raft commands, and
// fills in defaults so that what is stored is explicit. Every error is a gRPC
// InvalidArgument status whose message names the field and says what to fix.
//
// The rules themselves live in raft/rules, which the FSM applies to every
// command too: this package is the API's name for them, so that a request
// refused here is refused by the FSM as well, whichever way it arrives.
package validate

import (
	"net/netip"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/rules"
)

// Limits bound what one request may carry; see rules.Limits.
type Limits = rules.Limits

// DefaultLimits are generous for Kubernetes clusters of a few thousand nodes.
var DefaultLimits = rules.DefaultLimits

// DefaultTenant is used when a request names none.
const DefaultTenant = rules.DefaultTenant

// Name checks a name of a service, pool, tenant or member.
func Name(field, s string, max int) error { return rules.Name(field, s, max) }

// RefName checks a name that refers to an existing object: by the rules
// every release enforced, so objects stored under older rules stay reachable.
func RefName(field, s string, max int) error { return rules.RefName(field, s, max) }

// RefTenant is RefName for a tenant; empty means DefaultTenant.
func RefTenant(field string, t *string) error { return rules.RefTenant(field, t) }

// Tenant normalizes and checks a tenant name; empty means DefaultTenant.
func Tenant(field string, t *string) error { return rules.Tenant(field, t) }

// VIP parses a VIP address: a unicast IPv4 or IPv6 address without a zone.
func VIP(field, s string) (netip.Addr, error) { return rules.VIP(field, s) }

// VirtualService checks vs, fills in defaults and clears output-only fields.
func VirtualService(vs *edgelbv1.VirtualService, lim Limits) error {
	return rules.VirtualService(vs, lim)
}

// VirtualServiceIn is VirtualService for a service that goes to pool: a
// bgp pool has its own defaults and refuses modes it cannot serve.
func VirtualServiceIn(vs *edgelbv1.VirtualService, lim Limits, pool *edgelbv1.AddressPool) error {
	return rules.VirtualServiceIn(vs, lim, pool)
}

// Backends checks a backend list and fills in default weights.
func Backends(field string, bs []*edgelbv1.Backend, want6, dr bool, lim Limits) error {
	return rules.Backends(field, bs, want6, dr, lim)
}

// BackendsOf checks a backend list for the stored service vs and normalises it.
func BackendsOf(field string, bs []*edgelbv1.Backend, vs *edgelbv1.VirtualService, lim Limits) error {
	return rules.BackendsOf(field, bs, vs, lim)
}

// Backend checks one backend and fills in its default weight.
func Backend(field string, b *edgelbv1.Backend, want6, dr bool) error {
	return rules.Backend(field, b, want6, dr)
}

// BackendOf checks one backend for the stored service vs and normalises it.
func BackendOf(field string, b *edgelbv1.Backend, vs *edgelbv1.VirtualService) error {
	return rules.BackendOf(field, b, vs)
}

// BackendKey names a backend in messages: "10.0.0.1" or "10.0.0.1:8080".
func BackendKey(addr string, port uint32) string { return rules.BackendKey(addr, port) }

// HealthCheck checks a health check spec (nil is allowed: defaults apply).
func HealthCheck(field string, hc *edgelbv1.HealthCheck, lim Limits) error {
	return rules.HealthCheck(field, hc, lim)
}

// Labels checks label keys and values (Kubernetes syntax).
func Labels(field string, l map[string]string, lim Limits) error { return rules.Labels(field, l, lim) }

// AddressPool checks a pool and normalizes its ranges.
func AddressPool(p *edgelbv1.AddressPool, lim Limits) error { return rules.AddressPool(p, lim) }

// UpdateAddressPool checks a pool update and trims its ranges.
func UpdateAddressPool(req *edgelbv1.UpdateAddressPoolRequest, lim Limits) error {
	return rules.UpdateAddressPool(req, lim)
}

// MaxMemberAddresses bounds the interface addresses and the gateways one member reports.
const MaxMemberAddresses = rules.MaxMemberAddresses

// HostPort checks a host:port address of a member.
func HostPort(field, s string) error { return rules.HostPort(field, s) }

// Member checks a member being added.
func Member(m *edgelbv1.Member) error { return rules.Member(m) }
