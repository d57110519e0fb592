package cloudprovider

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	k8scloud "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/edgelb/edgelb/cloudprovider/config"
	"github.com/edgelb/edgelb/cloudprovider/servicemap"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// LoadBalancer implements k8scloud.LoadBalancer over lbd VirtualServices.
type LoadBalancer struct {
	cfg   *config.Resolved
	c     VirtualServices
	watch *lbdWatch // nil: no re-queue on lbd's return (tests)
	// events receives the Warning Events for VirtualServices an lbd member
	// cannot program (nil: none; Initialize sets it).
	events record.EventRecorder
	// reports are the isolation checks still running (reportIsolated runs
	// after the sync returns, off the path to the status write).
	reports sync.WaitGroup
}

var _ k8scloud.LoadBalancer = (*LoadBalancer)(nil)

// conflictRetries bounds read-compare-update rounds lost to concurrent writers.
const conflictRetries = 5

// GetLoadBalancerName is the Service's stable name in lbd ("k8s-<uid>"; the
// VirtualServices add the family).
func (l *LoadBalancer) GetLoadBalancerName(_ context.Context, _ string, svc *v1.Service) string {
	return servicemap.BaseName(svc)
}

// GetLoadBalancer reports the VIPs that exist for the Service.
func (l *LoadBalancer) GetLoadBalancer(ctx context.Context, clusterName string, svc *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	t, err := tenant(l.cfg, clusterName)
	if err != nil {
		return nil, false, err
	}
	var found []*edgelbv1.VirtualService
	for _, fam := range servicemap.Families {
		vs, err := l.c.Get(ctx, t, servicemap.Name(svc, fam))
		if status.Code(err) == codes.NotFound {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("edgelb: looking up load balancer of Service %s/%s: %w", svc.Namespace, svc.Name, err)
		}
		found = append(found, vs)
	}
	if len(found) == 0 {
		return nil, false, nil
	}
	return servicemap.Ingress(svc, found), true, nil
}

// EnsureLoadBalancer creates or updates the Service's VirtualServices and
// returns their VIPs. A refusal by lbd comes back as an error that says what to
// change; the service controller records it as an Event and retries with backoff.
//
// Nothing on the way from the Service to lbd's write and back to the status
// waits on a timer: the isolation check (a read of the owner's status, up to
// isolationCheckTimeout when the owner is unreachable) runs after it. The
// log line "edgelb load balancer ensured" gives each step's time.
func (l *LoadBalancer) EnsureLoadBalancer(ctx context.Context, clusterName string, svc *v1.Service, nodes []*v1.Node) (*v1.LoadBalancerStatus, error) {
	start := time.Now()
	got, err := l.reconcile(ctx, clusterName, svc, nodes)
	l.record(svc, clusterName, err)
	if err != nil {
		return nil, err
	}
	l.reportLater(ctx, svc, got)
	st := servicemap.Ingress(svc, got)
	// Service created → this call (the informer and the controller's queue),
	// and the call itself (lbd's reads and writes); the status is written
	// by the service controller when this returns.
	klog.InfoS("edgelb load balancer ensured", "service", klog.KObj(svc),
		"sinceCreated", start.Sub(svc.CreationTimestamp.Time).Round(time.Millisecond),
		"lbdWrite", time.Since(start).Round(time.Microsecond), "ingress", len(st.Ingress))
	return st, nil
}

// reportLater runs reportIsolated beside the status write, bounded by its
// own timeout (the sync's context ends when it returns).
func (l *LoadBalancer) reportLater(ctx context.Context, svc *v1.Service, got []*edgelbv1.VirtualService) {
	l.reports.Add(1)
	go func() {
		defer l.reports.Done()
		l.reportIsolated(context.WithoutCancel(ctx), svc, got)
	}()
}

// UpdateLoadBalancer is called when the node set changes; it recomputes the
// whole desired state and writes only what differs.
func (l *LoadBalancer) UpdateLoadBalancer(ctx context.Context, clusterName string, svc *v1.Service, nodes []*v1.Node) error {
	got, err := l.reconcile(ctx, clusterName, svc, nodes)
	l.record(svc, clusterName, err)
	if err == nil {
		l.reportLater(ctx, svc, got)
	}
	return err
}

// MemberStatuses is what the isolation check needs from lbd (lbclient.Client
// implements it). It is optional: a VirtualServices without it skips the check.
type MemberStatuses interface {
	MemberStatus(ctx context.Context, id string) (*edgelbv1.MemberStatus, error)
}

// ReasonNotProgrammed is the reason of the Warning Event for a VirtualService
// that an lbd member's data plane cannot program: lbd stored it, so the sync
// succeeded and the Service shows its EXTERNAL-IP, yet the member leaves it out
// of its kernel (and serves every other service). Without the Event it would
// show only in lbd's log, its metric and `lbctl member status`.
const ReasonNotProgrammed = "LoadBalancerNotProgrammed"

// isolationCheckTimeout bounds the member-status read after a sync; it is
// advisory and must not hold the sync worker long.
const isolationCheckTimeout = 5 * time.Second

// reportIsolated asks the owner of each of got (the member that serves the
// VIP; at most two reads, one per family, fewer when they share the owner)
// which of this tenant's services its data plane left out, and records a
// Warning Event on svc for each of got among them. It runs on every
// successful sync, so it sees what the owner's last pass found: a service
// isolated by this very change shows from the next sync of the Service (an
// edit, a node change, a CCM restart). A failed read is logged, not returned:
// the VirtualServices are stored either way.
func (l *LoadBalancer) reportIsolated(ctx context.Context, svc *v1.Service, got []*edgelbv1.VirtualService) {
	ms, ok := l.c.(MemberStatuses)
	if !ok || l.events == nil {
		return
	}
	byKey := map[string]*edgelbv1.VirtualService{}
	for _, vs := range got {
		byKey[vs.GetTenant()+"/"+vs.GetName()] = vs
	}
	asked := map[string]bool{}
	for _, vs := range got {
		owner := vs.GetOwner()
		if owner == "" || asked[owner] {
			continue
		}
		asked[owner] = true
		cctx, cancel := context.WithTimeout(ctx, isolationCheckTimeout)
		st, err := ms.MemberStatus(cctx, owner)
		cancel()
		if err != nil {
			klog.V(2).InfoS("edgelb: cannot read the owner's status to look for services it cannot program", "service", klog.KObj(svc), "member", owner, "err", err)
			continue
		}
		for _, x := range st.GetIsolatedServices() {
			// The field's documented form is "tenant/name: why".
			key, why, _ := strings.Cut(x, ": ")
			if iv, ok := byKey[key]; ok {
				l.events.Eventf(svc, v1.EventTypeWarning, ReasonNotProgrammed,
					"lbd member %s cannot program load balancer %s (VIP %s) and leaves it out of its kernel: %s; see lbctl member status",
					owner, iv.GetName(), iv.GetVip(), why)
			}
		}
	}
}

// record tells the lbd watch how a sync of svc ended (see resync.go).
func (l *LoadBalancer) record(svc *v1.Service, clusterName string, err error) {
	if l.watch == nil {
		return
	}
	t, terr := tenant(l.cfg, clusterName)
	if terr != nil {
		return
	}
	l.watch.record(svc, t, err)
}

// EnsureLoadBalancerDeleted deletes the VirtualServices of every family; ones already gone are fine.
func (l *LoadBalancer) EnsureLoadBalancerDeleted(ctx context.Context, clusterName string, svc *v1.Service) error {
	err := l.ensureDeleted(ctx, clusterName, svc)
	l.record(svc, clusterName, err)
	return err
}

func (l *LoadBalancer) ensureDeleted(ctx context.Context, clusterName string, svc *v1.Service) error {
	t, err := tenant(l.cfg, clusterName)
	if err != nil {
		return err
	}
	for _, fam := range servicemap.Families {
		name := servicemap.Name(svc, fam)
		if err := l.c.Delete(ctx, t, name); err != nil && status.Code(err) != codes.NotFound {
			return fmt.Errorf("edgelb: deleting load balancer %s of Service %s/%s: %w", name, svc.Namespace, svc.Name, err)
		}
	}
	klog.V(2).InfoS("edgelb load balancer deleted", "service", klog.KObj(svc), "tenant", t)
	return nil
}

func (l *LoadBalancer) reconcile(ctx context.Context, clusterName string, svc *v1.Service, nodes []*v1.Node) ([]*edgelbv1.VirtualService, error) {
	t, err := tenant(l.cfg, clusterName)
	if err != nil {
		return nil, err
	}
	// The pools' announce modes decide the modes of a VIP in a bgp pool
	// (servicemap.DesiredIn); without them a create there could be refused.
	pools, err := l.c.Pools(ctx)
	if err != nil {
		return nil, fmt.Errorf("edgelb: reading address pools for Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	desired, err := servicemap.DesiredIn(l.cfg, t, svc, nodes, pools)
	if err != nil {
		return nil, fmt.Errorf("edgelb: Service %s/%s cannot be mapped: %w", svc.Namespace, svc.Name, err)
	}
	var got []*edgelbv1.VirtualService
	for _, d := range desired {
		vs, err := l.sync(ctx, svc, d)
		if err != nil {
			return nil, err
		}
		got = append(got, vs)
	}
	// A family the Service dropped (dual-stack → single) releases its VIP.
	for _, fam := range servicemap.Families {
		name := servicemap.Name(svc, fam)
		if slices.ContainsFunc(desired, func(d *edgelbv1.VirtualService) bool { return d.Name == name }) {
			continue
		}
		if err := l.c.Delete(ctx, t, name); err != nil && status.Code(err) != codes.NotFound {
			return nil, fmt.Errorf("edgelb: releasing %s VIP of Service %s/%s: %w", fam, svc.Namespace, svc.Name, err)
		}
	}
	return got, nil
}

// sync makes the stored VirtualService match d: create it, or update it with
// the generation it was read at, writing nothing when it already matches.
func (l *LoadBalancer) sync(ctx context.Context, svc *v1.Service, d *edgelbv1.VirtualService) (*edgelbv1.VirtualService, error) {
	for range conflictRetries {
		cur, err := l.c.Get(ctx, d.Tenant, d.Name)
		switch {
		case status.Code(err) == codes.NotFound:
			created, err := l.c.Create(ctx, d)
			if err == nil {
				klog.InfoS("edgelb VIP created", "service", klog.KObj(svc), "virtualService", d.Name, "vip", created.GetVip(), "pool", created.GetPool())
				return created, nil
			}
			if status.Code(err) == codes.AlreadyExists {
				// Either our own earlier attempt got through (then it is there:
				// compare it next round) or the address is taken (a refusal).
				if _, gerr := l.c.Get(ctx, d.Tenant, d.Name); gerr == nil {
					continue
				}
			}
			return nil, l.refusal(ctx, svc, d, err)
		case err != nil:
			return nil, fmt.Errorf("edgelb: reading load balancer %s of Service %s/%s: %w", d.Name, svc.Namespace, svc.Name, err)
		}
		if servicemap.Equal(d, cur) {
			return cur, nil
		}
		upd := proto.Clone(d).(*edgelbv1.VirtualService)
		if upd.Vip == "" && (upd.Pool == "" || upd.Pool == cur.Pool) {
			// Keep the allocated address: a VIP must not move because a node came or went.
			upd.Vip, upd.Pool = cur.Vip, cur.Pool
		}
		out, err := l.c.Update(ctx, upd, cur.Generation)
		if status.Code(err) == codes.Aborted {
			continue // someone wrote in between: read again and compare
		}
		if err != nil {
			return nil, l.refusal(ctx, svc, d, err)
		}
		klog.InfoS("edgelb VIP updated", "service", klog.KObj(svc), "virtualService", d.Name, "vip", out.GetVip(), "backends", len(out.GetBackends()), "generation", out.GetGeneration())
		return out, nil
	}
	return nil, fmt.Errorf("edgelb: load balancer %s of Service %s/%s kept changing under us (%d tries); will retry", d.Name, svc.Namespace, svc.Name, conflictRetries)
}

// RefusalError is lbd saying no to what the Service asks for. Its message is
// what `kubectl describe service` shows in the SyncLoadBalancerFailed Event.
type RefusalError struct {
	Code codes.Code
	Msg  string
	err  error
}

func (e *RefusalError) Error() string { return e.Msg }
func (e *RefusalError) Unwrap() error { return e.err }

// refusal turns an lbd error into one that names the Service, what was asked,
// lbd's reason, and what to change; transport errors pass through wrapped.
func (l *LoadBalancer) refusal(ctx context.Context, svc *v1.Service, d *edgelbv1.VirtualService, err error) error {
	// The lbd client wraps the gRPC status with what it was doing; take lbd's own message.
	var gs interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &gs) {
		return fmt.Errorf("edgelb: writing load balancer %s of Service %s/%s: %w", d.Name, svc.Namespace, svc.Name, err)
	}
	fam := "IPv4"
	if d.IpFamily == edgelbv1.IPFamily_IP_FAMILY_IPV6 {
		fam = "IPv6"
	}
	asked := "an allocated address"
	if d.Vip != "" {
		asked = "VIP " + d.Vip
	}
	if d.Pool != "" {
		asked += " from pool " + d.Pool
	}
	var hint string
	st := gs.GRPCStatus()
	reason := st.Message()
	switch st.Code() {
	case codes.FailedPrecondition, codes.PermissionDenied:
		if ei, ok := errinfo.Of(err); ok && ei.Reason == errinfo.BgpPoolNeedsMhDr {
			// The pool's VIPs are served by every edge at once, with dr only;
			// the CCM picks dr there itself, so an annotation asked for nat.
			hint = fmt.Sprintf("address pool %s announces by BGP and serves with direct routing only: remove annotation %s (or set it to dr), or name a pool in l2 mode (annotation %s)",
				cmp.Or(ei.Metadata["pool"], d.Pool, "?"), servicemap.AnnotationForwarding, servicemap.AnnotationPool)
			break
		}
		if ei, ok := errinfo.Of(err); ok && ei.Reason == errinfo.ReservedAddress {
			// lbd never hands out a CIDR's network/broadcast (or IPv6
			// subnet-router anycast) address; "not allowed" would send the
			// user looking at pools and tenants instead.
			m := ei.Metadata
			reason = fmt.Sprintf("%s is the %s of %s in address pool %s, which is never used for a VIP", cmp.Or(m["vip"], d.Vip), cmp.Or(m["kind"], "reserved address"), cmp.Or(m["range"], "its range"), cmp.Or(m["pool"], "?"))
			hint = fmt.Sprintf("request another address of the pool (spec.loadBalancerIP or annotation %s), or none to have one allocated", servicemap.AnnotationIPs)
			break
		}
		hint = fmt.Sprintf("request an address that tenant %s may use (spec.loadBalancerIP or annotation %s) or another pool (annotation %s)", d.Tenant, servicemap.AnnotationIPs, servicemap.AnnotationPool)
	case codes.ResourceExhausted:
		// lbd says ResourceExhausted for three different things; its
		// ErrorInfo reason says which.
		switch errinfo.Reason(err) {
		case errinfo.RateLimited:
			// Nothing about the Service: this CCM writes faster than lbd lets
			// one identity write. lbclient already retried with backoff; the
			// service controller retries again later.
			return fmt.Errorf("edgelb: lbd is rate-limiting this cloud-controller-manager's writes; writing load balancer %s of Service %s/%s is retried with backoff: %w", d.Name, svc.Namespace, svc.Name, err)
		case errinfo.TenantServiceLimit:
			hint = fmt.Sprintf("tenant %s is at its limit of virtual services: delete unused LoadBalancer Services, or ask the lbd operator to raise auth.maxServicesPerTenant", d.Tenant)
		case errinfo.PoolExhausted:
			hint = "the pool is full: free a VIP, add a range to the pool (lbctl pool update NAME --add-range), or name another pool (annotation " + servicemap.AnnotationPool + ")"
		default:
			hint = "lbd is out of a resource (its reason is above)"
		}
	case codes.AlreadyExists:
		// lbd names the holder by its lbd key (tenant/k8s-<uid>-ipv4), which
		// means nothing in kubectl; name the Kubernetes Service instead.
		reason, hint = l.conflict(ctx, svc, d, reason)
	case codes.InvalidArgument:
		hint = "fix the Service field named above"
		if f := invalidField(err); f != "" {
			reason = fmt.Sprintf("%s (Service field: %s)", reason, f)
		}
	default:
		return fmt.Errorf("edgelb: writing load balancer %s of Service %s/%s: %w", d.Name, svc.Namespace, svc.Name, err)
	}
	return &RefusalError{
		Code: st.Code(),
		Msg:  fmt.Sprintf("edgelb refused %s VIP (%s) for Service %s/%s: %s; %s. The Service stays pending and is retried", fam, asked, svc.Namespace, svc.Name, reason, hint),
		err:  err,
	}
}

// conflict explains lbd's AlreadyExists for a requested VIP from the
// tenant's own VirtualServices (their labels name the Kubernetes Services):
// held by Services with another or no sharing key, or by ones with the same
// key on a clashing port. It decides from the stored objects, not from lbd's
// wording; when the holder is not visible (another tenant, or not made by a
// CCM) lbd's message is kept, as it then names no object of ours.
func (l *LoadBalancer) conflict(ctx context.Context, svc *v1.Service, d *edgelbv1.VirtualService, lbdMsg string) (reason, hint string) {
	share := fmt.Sprintf("request another address, or share it: give both Services the same %s annotation and distinct ports", servicemap.AnnotationSharedIP)
	if d.Vip == "" || l.c == nil {
		return lbdMsg, share
	}
	lctx, cancel := context.WithTimeout(ctx, conflictLookupTimeout)
	defer cancel()
	all, err := l.c.List(lctx, d.Tenant, map[string]string{servicemap.LabelManagedBy: servicemap.ManagedBy})
	if err != nil {
		klog.V(2).InfoS("listing VirtualServices to name the holder of a VIP failed", "service", klog.KObj(svc), "vip", d.Vip, "err", err)
		return lbdMsg, share
	}
	var holders, clashes []string
	for _, o := range all {
		if o.GetVip() != d.Vip || o.GetLabels()[servicemap.LabelUID] == string(svc.UID) {
			continue
		}
		who := "Service " + o.GetLabels()[servicemap.LabelNamespace] + "/" + o.GetLabels()[servicemap.LabelName]
		holders = append(holders, who)
		if d.SharingKey == "" || o.GetSharingKey() != d.SharingKey {
			continue
		}
		for _, p := range d.Ports {
			for _, q := range o.GetPorts() {
				if p.Protocol == q.Protocol && p.Port == q.Port {
					clashes = append(clashes, fmt.Sprintf("port %d/%s is already used on it by %s", p.Port, strings.TrimPrefix(p.Protocol.String(), "PROTOCOL_"), who))
				}
			}
		}
	}
	switch {
	case len(clashes) > 0:
		return fmt.Sprintf("VIP %s is shared (%s %q), but %s", d.Vip, servicemap.AnnotationSharedIP, d.SharingKey, strings.Join(clashes, "; ")),
			"use distinct ports on a shared VIP, or request another address"
	case len(holders) > 0:
		return fmt.Sprintf("VIP %s is in use by %s", d.Vip, strings.Join(holders, ", ")), share
	}
	return lbdMsg, "request another address"
}

// conflictLookupTimeout bounds the extra read that names a VIP's holder: the
// refusal stands without it.
const conflictLookupTimeout = 5 * time.Second

// lbdFields maps lbd's VirtualService fields (ErrorInfo metadata "field" of
// an INVALID_FIELD error) to what the user writes in the Service.
var lbdFields = map[string]string{
	"service.sharing_key":   "annotation " + servicemap.AnnotationSharedIP,
	"service.vip":           "spec.loadBalancerIP or annotation " + servicemap.AnnotationIPs,
	"service.pool":          "annotation " + servicemap.AnnotationPool,
	"service.source_ranges": "spec.loadBalancerSourceRanges",
	"service.ports":         "spec.ports",
	"service.persistence":   "spec.sessionAffinityConfig",
}

// invalidField names the Service field behind lbd's INVALID_FIELD, if known.
func invalidField(err error) string {
	ei, ok := errinfo.Of(err)
	if !ok {
		return ""
	}
	f := ei.Metadata["field"]
	for k, v := range lbdFields {
		if f == k || strings.HasPrefix(f, k+"[") || strings.HasPrefix(f, k+".") {
			return v
		}
	}
	return ""
}

// IsRefusal reports whether err is lbd refusing the Service's request.
func IsRefusal(err error) bool {
	var r *RefusalError
	return errors.As(err, &r)
}
