// Package servicemap is where a Kubernetes Service becomes edgelb
// VirtualServices: one per IP family, named after the Service's UID, with the
// Service's ports forwarded to every eligible node's NodePort. It is pure: no
// I/O, so every mapping rule is unit-tested here.
package servicemap

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	v1 "k8s.io/api/core/v1"

	"github.com/edgelb/edgelb/cloudprovider/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/ipam"
)

// Annotations and labels.
const (
	// AnnotationIPs requests VIPs: a comma-separated list, at most one per family.
	AnnotationIPs = "edgelb.io/load-balancer-ips"
	// AnnotationPool names the address pool to allocate from.
	AnnotationPool = "edgelb.io/address-pool"
	// AnnotationSharedIP is a sharing key: Services with the same key may share a VIP on distinct ports.
	AnnotationSharedIP = "edgelb.io/allow-shared-ip"
	// AnnotationIPMode overrides status.loadBalancer.ingress[].ipMode ("VIP" or "Proxy").
	AnnotationIPMode = "edgelb.io/ip-mode"
	// AnnotationForwarding overrides the forwarding mode: "nat" or "dr".
	AnnotationForwarding = "edgelb.io/forwarding"
	// MaxSharingKey is lbd's limit on service.sharing_key (raft/rules).
	MaxSharingKey = 253
	// LabelExcludeLB is upstream's label for nodes that must not receive load-balancer traffic.
	LabelExcludeLB = "node.kubernetes.io/exclude-from-external-load-balancers"

	LabelNamespace = "k8s.edgelb.io/namespace"
	LabelName      = "k8s.edgelb.io/name"
	LabelUID       = "k8s.edgelb.io/uid"
	LabelManagedBy = "k8s.edgelb.io/managed-by"
	ManagedBy      = "edgelb-cloud-controller-manager"

	// DefaultAffinityTimeout is Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds.
	DefaultAffinityTimeout = 10800
)

// Families lists the VIP families edgelb knows, in a fixed order.
var Families = []v1.IPFamily{v1.IPv4Protocol, v1.IPv6Protocol}

// BaseName is the stable, DNS-safe load balancer name of a Service: its UID
// survives renames and is unique across namespaces, unlike namespace/name.
func BaseName(svc *v1.Service) string {
	return "k8s-" + strings.ToLower(string(svc.UID))
}

// Name is the VirtualService name of the Service's VIP of family fam.
func Name(svc *v1.Service, fam v1.IPFamily) string {
	if fam == v1.IPv6Protocol {
		return BaseName(svc) + "-ipv6"
	}
	return BaseName(svc) + "-ipv4"
}

// ServiceFamilies returns the families the Service wants VIPs for.
func ServiceFamilies(svc *v1.Service) []v1.IPFamily {
	if len(svc.Spec.IPFamilies) > 0 {
		return svc.Spec.IPFamilies
	}
	if a, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil && a.Is6() {
		return []v1.IPFamily{v1.IPv6Protocol}
	}
	return []v1.IPFamily{v1.IPv4Protocol}
}

// Desired computes the VirtualServices (one per family, in the Service's
// family order) that the Service and nodes call for. Errors say what to change
// in the Service.
//
// Desired knows no pools: every VIP is taken to be in an l2 pool. DesiredIn
// takes lbd's pools, so a VIP of a bgp pool gets the modes it needs.
func Desired(cfg *config.Resolved, tenant string, svc *v1.Service, nodes []*v1.Node) ([]*edgelbv1.VirtualService, error) {
	return DesiredIn(cfg, tenant, svc, nodes, nil)
}

// DesiredIn is Desired with lbd's address pools (ListAddressPools): a VIP
// that goes to a bgp pool (BGPPool) is served by every edge at once, which
// lbd takes only with scheduler mh and forwarding dr, so those are chosen for
// it unless the edgelb.io/forwarding annotation says otherwise (lbd then
// refuses, and the refusal becomes the Service's Warning Event).
func DesiredIn(cfg *config.Resolved, tenant string, svc *v1.Service, nodes []*v1.Node, pools []*edgelbv1.AddressPool) ([]*edgelbv1.VirtualService, error) {
	l2Mode, err := Forwarding(cfg, svc)
	if err != nil {
		return nil, err
	}
	// The ports each mode maps to (the families' VIPs may be in pools of
	// either mode), mapped once.
	ports := map[edgelbv1.ForwardingMode][]*edgelbv1.Port{}
	portsFor := func(mode edgelbv1.ForwardingMode) ([]*edgelbv1.Port, error) {
		if p, ok := ports[mode]; ok {
			return p, nil
		}
		p, err := mapPorts(svc, mode == edgelbv1.ForwardingMode_FORWARDING_MODE_DR)
		ports[mode] = p
		return p, err
	}
	if _, err := IPMode(svc); err != nil {
		return nil, err
	}
	fams := ServiceFamilies(svc)
	requested, err := requestedVIPs(svc, fams)
	if err != nil {
		return nil, err
	}
	ranges, err := sourceRanges(svc)
	if err != nil {
		return nil, err
	}
	sharingKey, err := sharingKey(svc)
	if err != nil {
		return nil, err
	}
	// An empty (or blank) pool annotation is "unset", as an empty
	// loadBalancerIP is: templating tools often render an empty value.
	pool, poolAnnotated := cfg.DefaultPool, false
	if p := strings.TrimSpace(svc.Annotations[AnnotationPool]); p != "" {
		pool, poolAnnotated = p, true
		if !config.ValidName(pool) {
			return nil, fmt.Errorf("annotation %s: %q is not a valid pool name", AnnotationPool, p)
		}
	}
	var out []*edgelbv1.VirtualService
	for _, fam := range fams {
		want6 := fam == v1.IPv6Protocol
		vip := requested[fam]
		vsPool := pool
		if vip != "" && !poolAnnotated {
			// A requested VIP may lie in any pool open to the tenant; naming the
			// default pool as well would refuse addresses from the others.
			vsPool = ""
		}
		mode, sched := l2Mode, edgelbv1.Scheduler_SCHEDULER_UNSPECIFIED
		if BGPPool(pools, tenant, vsPool, vip, want6) {
			mode, sched = ForwardingIn(cfg, svc, true), edgelbv1.Scheduler_SCHEDULER_MH
		}
		famPorts, err := portsFor(mode)
		if err != nil {
			return nil, err
		}
		vs := &edgelbv1.VirtualService{
			Name:           Name(svc, fam),
			Tenant:         tenant,
			Vip:            vip,
			Ports:          clonePorts(famPorts),
			Backends:       Backends(nodes, want6),
			Pool:           vsPool,
			Scheduler:      sched,
			ForwardingMode: mode,
			IpFamily:       protoFamily(fam),
			SharingKey:     sharingKey,
			HealthCheck:    healthCheck(cfg, svc),
			Labels: map[string]string{
				LabelNamespace: svc.Namespace,
				LabelName:      svc.Name,
				LabelUID:       string(svc.UID),
				LabelManagedBy: ManagedBy,
			},
		}
		if svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
			t := uint32(DefaultAffinityTimeout)
			if c := svc.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
				t = uint32(*c.ClientIP.TimeoutSeconds)
			}
			vs.Persistence = &edgelbv1.Persistence{TimeoutSeconds: t}
		}
		if len(ranges) > 0 {
			// Each family gets its own ranges. A family the ranges leave out
			// is closed, never opened: dropping the restriction there would
			// let everyone reach a Service whose spec shows a restriction,
			// and refusing the whole Service would leave the other family's
			// VIP as open as it was before the change.
			for _, p := range ranges {
				if p.Addr().Is6() == want6 {
					vs.SourceRanges = append(vs.SourceRanges, p.String())
				}
			}
			vs.DenyAllSources = len(vs.SourceRanges) == 0
		}
		out = append(out, vs)
	}
	return out, nil
}

func protoFamily(f v1.IPFamily) edgelbv1.IPFamily {
	if f == v1.IPv6Protocol {
		return edgelbv1.IPFamily_IP_FAMILY_IPV6
	}
	return edgelbv1.IPFamily_IP_FAMILY_IPV4
}

// Forwarding is the mode the Service's VIPs are programmed in. dr sends the
// client's packets to the node unchanged (still addressed to VIP:port), so
// the pods see the client's own address; nat rewrites them to
// node:NodePort with the VIP as the source. Without the annotation, dr is
// chosen only where it is both possible (the cloud-config's directRouting:
// edges and nodes on one L2 segment, nodes accepting the VIP) and useful:
// externalTrafficPolicy: Local, which users pick to keep the client's
// address, and where kube-proxy delivers to local pods only, so the health
// check of healthCheckNodePort steers traffic to nodes that have one.
func Forwarding(cfg *config.Resolved, svc *v1.Service) (edgelbv1.ForwardingMode, error) {
	return forwarding(cfg, svc, false)
}

// ForwardingIn is Forwarding for a VIP whose pool is known to be a bgp pool
// (bgp) or not. A bgp pool's VIP is served by every edge at once, which only
// dr can do: without the annotation it is dr whatever the cloud-config says,
// and an annotated nat is kept, for lbd to refuse where the user sees it. An
// invalid annotation gives nat; Forwarding reports it.
func ForwardingIn(cfg *config.Resolved, svc *v1.Service, bgp bool) edgelbv1.ForwardingMode {
	m, err := forwarding(cfg, svc, bgp)
	if err != nil {
		return edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
	}
	return m
}

func forwarding(cfg *config.Resolved, svc *v1.Service, bgp bool) (edgelbv1.ForwardingMode, error) {
	switch a := strings.TrimSpace(svc.Annotations[AnnotationForwarding]); a {
	case "nat":
		return edgelbv1.ForwardingMode_FORWARDING_MODE_NAT, nil
	case "dr":
		return edgelbv1.ForwardingMode_FORWARDING_MODE_DR, nil
	case "":
		if bgp || cfg.DirectRouting && svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
			return edgelbv1.ForwardingMode_FORWARDING_MODE_DR, nil
		}
		return edgelbv1.ForwardingMode_FORWARDING_MODE_NAT, nil
	default:
		return 0, fmt.Errorf("annotation %s: %q is neither \"nat\" nor \"dr\"", AnnotationForwarding, a)
	}
}

// mapPorts maps the Service's ports. In nat each goes to the node's
// NodePort; in dr the packet keeps its destination port (IPVS direct routing
// rewrites nothing but the MAC), and kube-proxy's rules for the VIP:port on
// the node deliver it, so no NodePort is needed.
func mapPorts(svc *v1.Service, dr bool) ([]*edgelbv1.Port, error) {
	if len(svc.Spec.Ports) == 0 {
		return nil, fmt.Errorf("the Service has no ports")
	}
	var out []*edgelbv1.Port
	for i, p := range svc.Spec.Ports {
		var proto edgelbv1.Protocol
		switch p.Protocol {
		case v1.ProtocolTCP, "":
			proto = edgelbv1.Protocol_PROTOCOL_TCP
		case v1.ProtocolUDP:
			proto = edgelbv1.Protocol_PROTOCOL_UDP
		case v1.ProtocolSCTP:
			proto = edgelbv1.Protocol_PROTOCOL_SCTP
		default:
			return nil, fmt.Errorf("spec.ports[%d]: protocol %q is not supported (TCP, UDP, SCTP)", i, p.Protocol)
		}
		if dr {
			out = append(out, &edgelbv1.Port{Protocol: proto, Port: uint32(p.Port), BackendPort: uint32(p.Port), Name: p.Name})
			continue
		}
		if p.NodePort == 0 {
			// edgelb forwards to nodeIP:nodePort; without one there is nowhere to send traffic.
			return nil, fmt.Errorf("spec.ports[%d] (%d/%s) has no nodePort; edgelb forwards to NodePorts: set allocateLoadBalancerNodePorts: true", i, p.Port, p.Protocol)
		}
		out = append(out, &edgelbv1.Port{Protocol: proto, Port: uint32(p.Port), BackendPort: uint32(p.NodePort), Name: p.Name})
	}
	return out, nil
}

func clonePorts(ps []*edgelbv1.Port) []*edgelbv1.Port {
	out := make([]*edgelbv1.Port, len(ps))
	for i, p := range ps {
		out[i] = proto.Clone(p).(*edgelbv1.Port)
	}
	return out
}

// sharingKey is the allow-shared-ip annotation, checked against lbd's rules
// for service.sharing_key here so that the error names the annotation the
// user wrote rather than lbd's field.
func sharingKey(svc *v1.Service) (string, error) {
	k := strings.TrimSpace(svc.Annotations[AnnotationSharedIP])
	if len(k) > MaxSharingKey {
		return "", fmt.Errorf("annotation %s is %d characters long; at most %d are allowed: use a shorter key", AnnotationSharedIP, len(k), MaxSharingKey)
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return "", fmt.Errorf("annotation %s holds a control or invalid character (%U); use printable text", AnnotationSharedIP, r)
		}
	}
	return k, nil
}

// requestedVIPs reads edgelb.io/load-balancer-ips or spec.loadBalancerIP.
// Both set is refused, as MetalLB does: letting one silently win would hide
// a typo or a stale field, and the Service would get an address nobody meant.
func requestedVIPs(svc *v1.Service, fams []v1.IPFamily) (map[v1.IPFamily]string, error) {
	src, raw := "annotation "+AnnotationIPs, svc.Annotations[AnnotationIPs]
	lbIP := strings.TrimSpace(svc.Spec.LoadBalancerIP)
	switch {
	case strings.TrimSpace(raw) != "" && lbIP != "":
		return nil, fmt.Errorf("both annotation %s (%q) and spec.loadBalancerIP (%q) are set; set only one (spec.loadBalancerIP is deprecated: keep the annotation and clear spec.loadBalancerIP)",
			AnnotationIPs, strings.TrimSpace(raw), lbIP)
	case strings.TrimSpace(raw) == "":
		src, raw = "spec.loadBalancerIP", lbIP
	}
	out := map[v1.IPFamily]string{}
	for _, s := range strings.Split(raw, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%s: %q is not an IP address", src, s)
		}
		a = a.Unmap()
		fam := v1.IPv4Protocol
		if a.Is6() {
			fam = v1.IPv6Protocol
		}
		if _, dup := out[fam]; dup {
			return nil, fmt.Errorf("%s: more than one %s address; give at most one per family", src, fam)
		}
		if !slices.Contains(fams, fam) {
			return nil, fmt.Errorf("%s: %s is %s but the Service's ipFamilies are %v", src, s, fam, fams)
		}
		out[fam] = a.String()
	}
	return out, nil
}

func sourceRanges(svc *v1.Service) ([]netip.Prefix, error) {
	src, list := "spec.loadBalancerSourceRanges", svc.Spec.LoadBalancerSourceRanges
	if len(list) == 0 {
		if a := svc.Annotations[v1.AnnotationLoadBalancerSourceRangesKey]; a != "" {
			src, list = "annotation "+v1.AnnotationLoadBalancerSourceRangesKey, strings.Split(a, ",")
		}
	}
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a CIDR", src, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// healthCheck: Local → kube-proxy's per-Service /healthz on healthCheckNodePort
// (200 only where the node has a ready endpoint); Cluster → TCP connect to the
// first TCP NodePort; with no TCP port, an SCTP association with the first
// SCTP NodePort (it completes only where kube-proxy delivers SCTP to a pod
// that answers, which kube-proxy's own /healthz does not show); with neither,
// kube-proxy's own /healthz (a TCP connect to a UDP NodePort proves nothing).
func healthCheck(cfg *config.Resolved, svc *v1.Service) *edgelbv1.HealthCheck {
	hc := &edgelbv1.HealthCheck{
		Interval: durationpb.New(cfg.IntervalD),
		Timeout:  durationpb.New(cfg.TimeoutD),
		Rise:     cfg.HealthCheck.Rise,
		Fall:     cfg.HealthCheck.Fall,
	}
	if svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal && svc.Spec.HealthCheckNodePort != 0 {
		hc.Type, hc.Port, hc.Path, hc.ExpectedCodes = edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, uint32(svc.Spec.HealthCheckNodePort), "/healthz", []uint32{200}
		return hc
	}
	for _, p := range svc.Spec.Ports {
		if (p.Protocol == v1.ProtocolTCP || p.Protocol == "") && p.NodePort != 0 {
			hc.Type, hc.Port = edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_TCP, uint32(p.NodePort)
			return hc
		}
	}
	for _, p := range svc.Spec.Ports {
		if p.Protocol == v1.ProtocolSCTP && p.NodePort != 0 {
			hc.Type, hc.Port = edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_SCTP, uint32(p.NodePort)
			return hc
		}
	}
	hc.Type, hc.Port, hc.Path, hc.ExpectedCodes = edgelbv1.HealthCheckType_HEALTH_CHECK_TYPE_HTTP, cfg.HealthCheck.ProxyHealthPort, "/healthz", []uint32{200}
	return hc
}

// Backends returns the nodes' addresses of one family, sorted and without
// duplicates: the InternalIP, or the ExternalIP for nodes with no InternalIP
// of that family. Nodes that Excluded reports are left out.
func Backends(nodes []*v1.Node, want6 bool) []*edgelbv1.Backend {
	seen := map[netip.Addr]bool{}
	var addrs []netip.Addr
	for _, n := range nodes {
		if n == nil {
			continue
		}
		if Excluded(n) {
			continue
		}
		if a, ok := nodeAddr(n, want6); ok && !seen[a] {
			seen[a] = true
			addrs = append(addrs, a)
		}
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	out := make([]*edgelbv1.Backend, len(addrs))
	for i, a := range addrs {
		out[i] = &edgelbv1.Backend{Address: a.String(), Weight: 1}
	}
	return out
}

// Excluded reads node.kubernetes.io/exclude-from-external-load-balancers as
// the upstream service controller (k8s.io/cloud-provider v0.36
// nodeIncludedPredicate) does: the value is a bool (strconv.ParseBool), so
// "false" keeps the node; "true", and any value that is no bool (including
// ""), excludes it — failing closed. Reading it the same way matters twice:
// upstream hands in only the nodes it includes, and it resyncs every
// Service exactly when this answer flips for a node, so a node labelled
// "false" again comes back without a restart.
func Excluded(n *v1.Node) bool {
	v, ok := n.Labels[LabelExcludeLB]
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err != nil || b
}

func nodeAddr(n *v1.Node, want6 bool) (netip.Addr, bool) {
	for _, t := range []v1.NodeAddressType{v1.NodeInternalIP, v1.NodeExternalIP} {
		for _, na := range n.Status.Addresses {
			if na.Type != t {
				continue
			}
			a, err := netip.ParseAddr(na.Address)
			if err == nil && a.Unmap().Is6() == want6 {
				return a.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}

// Equal reports whether stored already is what desired asks for, ignoring
// output-only fields and the defaults lbd fills in. An address that desired
// leaves to allocation matches whatever stored got.
func Equal(desired, stored *edgelbv1.VirtualService) bool {
	d, s := Normalize(desired), Normalize(stored)
	if d.Vip == "" {
		d.Vip = s.Vip
		if d.Pool == "" || d.Pool == s.Pool {
			d.Pool = s.Pool
		}
	} else if d.Pool == "" {
		d.Pool = s.Pool
	}
	return proto.Equal(d, s)
}

// Normalize returns a copy of vs with lbd's defaults made explicit and
// output-only fields cleared, so that two specs can be compared.
func Normalize(in *edgelbv1.VirtualService) *edgelbv1.VirtualService {
	vs := proto.Clone(in).(*edgelbv1.VirtualService)
	vs.Generation, vs.Owner, vs.CreateTime, vs.UpdateTime = 0, "", nil, nil
	if vs.Scheduler == edgelbv1.Scheduler_SCHEDULER_UNSPECIFIED {
		vs.Scheduler = edgelbv1.Scheduler_SCHEDULER_MH
	}
	if vs.ForwardingMode == edgelbv1.ForwardingMode_FORWARDING_MODE_UNSPECIFIED {
		vs.ForwardingMode = edgelbv1.ForwardingMode_FORWARDING_MODE_NAT
	}
	if vs.IpFamily == edgelbv1.IPFamily_IP_FAMILY_UNSPECIFIED {
		vs.IpFamily = edgelbv1.IPFamily_IP_FAMILY_IPV4
	}
	if a, err := netip.ParseAddr(vs.Vip); err == nil {
		vs.Vip = a.String()
	}
	for _, p := range vs.Ports {
		if p.Protocol == edgelbv1.Protocol_PROTOCOL_UNSPECIFIED {
			p.Protocol = edgelbv1.Protocol_PROTOCOL_TCP
		}
		if p.BackendPort == 0 {
			p.BackendPort = p.Port
		}
	}
	for _, b := range vs.Backends {
		b.Health = nil
		if b.Weight == 0 {
			b.Weight = 1
		}
	}
	if vs.Persistence != nil && vs.Persistence.TimeoutSeconds == 0 {
		vs.Persistence = nil
	}
	if len(vs.Labels) == 0 {
		vs.Labels = nil
	}
	return vs
}

// IPMode validates the ip-mode annotation: "" (unset), or exactly one of
// Kubernetes' values, VIP or Proxy (case as in the API).
func IPMode(svc *v1.Service) (v1.LoadBalancerIPMode, error) {
	switch m := v1.LoadBalancerIPMode(strings.TrimSpace(svc.Annotations[AnnotationIPMode])); m {
	case "", v1.LoadBalancerIPModeVIP, v1.LoadBalancerIPModeProxy:
		return m, nil
	default:
		return "", fmt.Errorf("annotation %s: %q is neither %q nor %q", AnnotationIPMode, m, v1.LoadBalancerIPModeVIP, v1.LoadBalancerIPModeProxy)
	}
}

// Ingress is the Service status for the VIPs. ipMode says how packets for the
// VIP arrive at the nodes, which tells kube-proxy whether to short-cut
// in-cluster traffic to the VIP:
//   - nat: the edge rewrites the destination to
//     node:NodePort, so packets reach the node addressed to the node — Proxy.
//     kube-proxy then does not bind the VIP on the nodes, and pods reaching
//     the VIP go through the load balancer (its source ranges, health checks
//     and SNAT apply to them too).
//   - dr: packets reach the node still addressed to the VIP and kube-proxy's
//     rules for the VIP deliver them — VIP.
//
// The edgelb.io/ip-mode annotation overrides (e.g. VIP in nat mode to keep
// in-cluster traffic on the nodes); an invalid value is refused by Desired.
func Ingress(svc *v1.Service, vss []*edgelbv1.VirtualService) *v1.LoadBalancerStatus {
	override, _ := IPMode(svc)
	st := &v1.LoadBalancerStatus{}
	seen := map[string]bool{}
	for _, vs := range vss {
		if vs.GetVip() == "" || seen[vs.Vip] {
			continue
		}
		seen[vs.Vip] = true
		mode := v1.LoadBalancerIPModeProxy
		if vs.GetForwardingMode() == edgelbv1.ForwardingMode_FORWARDING_MODE_DR {
			mode = v1.LoadBalancerIPModeVIP
		}
		if override != "" {
			mode = override
		}
		st.Ingress = append(st.Ingress, v1.LoadBalancerIngress{IP: vs.Vip, IPMode: &mode})
	}
	return st
}

// BGPPool reports whether a VIP of the family (want6) that the Service asks
// for in pool (named, or "") at vip ("" to allocate) goes to a bgp pool, as
// far as pools (lbd's, ListAddressPools) tell: the named pool, else the pool
// holding the VIP, else, for an allocation, only when every pool lbd could
// allocate from is a bgp pool. Guessing bgp wrongly would program dr where
// the nodes do not expect it, silently; guessing l2 wrongly only gets the
// create refused (BGP_POOL_NEEDS_MH_DR), which the Service's events show.
func BGPPool(pools []*edgelbv1.AddressPool, tenant, pool, vip string, want6 bool) bool {
	isBGP := func(p *edgelbv1.AddressPool) bool {
		return p.GetAnnounceMode() == edgelbv1.AnnounceMode_ANNOUNCE_MODE_BGP
	}
	if pool != "" {
		for _, p := range pools {
			if p.GetName() == pool {
				return isBGP(p)
			}
		}
		return false
	}
	if a, err := netip.ParseAddr(vip); err == nil {
		for _, p := range pools {
			if parsed, err := ipam.ParsePool(p.GetRanges()); err == nil && parsed.Contains(a.Unmap()) {
				return isBGP(p)
			}
		}
		return false
	}
	candidates := 0
	for _, p := range pools {
		parsed, err := ipam.ParsePool(p.GetRanges())
		if err != nil || p.GetManual() || !parsed.HasFamily(want6) ||
			len(p.GetTenants()) > 0 && !slices.Contains(p.GetTenants(), tenant) {
			continue
		}
		if !isBGP(p) {
			return false
		}
		candidates++
	}
	return candidates > 0
}
