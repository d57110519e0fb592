package auth

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgelb/edgelb/raft/errinfo"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// access is what a method needs.
type access int

const (
	accRead     access = iota // any identity
	accService                // virtual services: admin, operator, cloud-provider (own tenant)
	accOperator               // planned moves and drains: admin, operator
	accAdmin                  // pools, membership, leadership
	accMember                 // raft peers only
	accJoin                   // AddMember: admin, or a member joining
	accInternal               // health, reflection: any identity
)

// methods maps every gRPC method to the access it needs. A method missing here
// is refused, so a new RPC cannot ship unguarded by accident.
var methods = map[string]access{
	"/edgelb.v1.VirtualServiceService/CreateVirtualService": accService,
	"/edgelb.v1.VirtualServiceService/GetVirtualService":    accRead,
	"/edgelb.v1.VirtualServiceService/ListVirtualServices":  accRead,
	"/edgelb.v1.VirtualServiceService/UpdateVirtualService": accService,
	"/edgelb.v1.VirtualServiceService/DeleteVirtualService": accService,
	"/edgelb.v1.VirtualServiceService/SetBackends":          accService,
	"/edgelb.v1.VirtualServiceService/AddBackend":           accService,
	"/edgelb.v1.VirtualServiceService/RemoveBackend":        accService,
	"/edgelb.v1.VirtualServiceService/DrainBackend":         accService,
	"/edgelb.v1.VirtualServiceService/MoveVIP":              accOperator,
	"/edgelb.v1.VirtualServiceService/GetServiceStats":      accRead,
	"/edgelb.v1.ClusterService/DrainMember":                 accOperator,
	"/edgelb.v1.AddressPoolService/CreateAddressPool":       accAdmin,
	"/edgelb.v1.AddressPoolService/GetAddressPool":          accRead,
	"/edgelb.v1.AddressPoolService/ListAddressPools":        accRead,
	"/edgelb.v1.AddressPoolService/UpdateAddressPool":       accAdmin,
	"/edgelb.v1.AddressPoolService/DeleteAddressPool":       accAdmin,
	"/edgelb.v1.ClusterService/ListMembers":                 accRead,
	"/edgelb.v1.ClusterService/AddMember":                   accJoin,
	"/edgelb.v1.ClusterService/RemoveMember":                accAdmin,
	"/edgelb.v1.ClusterService/GetLeader":                   accRead,
	"/edgelb.v1.ClusterService/TransferLeadership":          accAdmin,
	"/edgelb.v1.ClusterService/GetMemberStatus":             accRead,
	"/edgelb.v1.ClusterService/GetBgpStatus":                accOperator,
	"/edgelb.v1.WatchService/Watch":                         accRead,
	"/edgelb.raft.v1.PeerService/Apply":                     accMember,
	"/edgelb.raft.v1.LivenessService/Ping":                  accMember,
	"/edgelb.raft.v1.LivenessService/Probe":                 accMember,
	"/edgelb.raft.v1.LivenessService/PushConnections":       accMember,
	"/grpc.health.v1.Health/Check":                          accInternal,
	"/grpc.health.v1.Health/List":                           accInternal,
	"/grpc.health.v1.Health/Watch":                          accInternal,

	// A backup holds every tenant's services, the pools and the member table:
	// admin only, like restore, so a cloud provider or viewer cannot carry
	// other tenants' configuration away in one call.
	"/edgelb.v1.ClusterService/SaveSnapshot":    accAdmin,
	"/edgelb.v1.ClusterService/RestoreSnapshot": accAdmin,

	// A cloud provider renews its own tenant only (TenantScope); deleting a
	// whole tenant is the operator's decision, never a tenant's.
	"/edgelb.v1.TenantService/RenewTenantHeartbeat": accService,
	"/edgelb.v1.TenantService/ListTenants":          accRead,
	"/edgelb.v1.TenantService/DeleteTenantServices": accOperator,
}

// DefaultTenant is the tenant of requests that name none.
const DefaultTenant = "default"

// Authorizer is the gRPC interceptor pair that authenticates callers and
// enforces roles and per-identity write rates.
type Authorizer struct {
	// Insecure accepts plaintext callers as Anonymous (development only).
	Insecure bool
	Mapping  Mapping
	// WriteRate and WriteBurst bound writes per identity (0: unlimited).
	WriteRate  float64
	WriteBurst int
	Log        *slog.Logger

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

func (a *Authorizer) identify(ctx context.Context) (Identity, error) {
	c := peerCert(ctx)
	if c == nil {
		if a.Insecure {
			return Anonymous, nil
		}
		return Identity{}, status.Error(codes.Unauthenticated, "no verified client certificate; connect with --ca-file, --cert-file and --key-file (lbd certs issue makes one)")
	}
	id, err := FromCert(c, a.Mapping)
	if err != nil {
		return Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

func (a *Authorizer) authorize(ctx context.Context, method string, req any) (context.Context, error) {
	id, err := a.identify(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := a.check(id, method); err != nil {
		return nil, err
	}
	return WithIdentity(ctx, id), nil
}

// check decides whether id may call method now.
func (a *Authorizer) check(id Identity, method string) (Identity, error) {
	acc, known := methods[method]
	if !known {
		if strings.HasPrefix(method, "/grpc.reflection.") {
			acc, known = accInternal, true
		}
	}
	if !known {
		return id, status.Errorf(codes.PermissionDenied, "%s is not allowed to call %s", id, method)
	}
	// Members are the cluster itself: they forward callers' requests (already
	// authorised where they arrived) and can commit any command through raft anyway.
	// On a plaintext cluster there are no identities to tell apart.
	allowed := id.Role == RoleMember || a.Insecure && id == Anonymous
	switch {
	case allowed:
	case acc == accRead, acc == accInternal:
		allowed = true
	case acc == accService:
		allowed = id.Role == RoleAdmin || id.Role == RoleOperator || id.Role == RoleCloudProvider
	case acc == accOperator:
		allowed = id.Role == RoleAdmin || id.Role == RoleOperator
	case acc == accAdmin, acc == accJoin:
		allowed = id.Role == RoleAdmin
	}
	if !allowed {
		return id, status.Errorf(codes.PermissionDenied, "%s (role %s) may not call %s; ask an admin for a certificate with the right role", id, id.Role, method[strings.LastIndexByte(method, '/')+1:])
	}
	if (acc == accService || acc == accAdmin || acc == accOperator) && id.Role != RoleMember {
		if ok, wait := a.allow(id); !ok {
			// Refused before the request was looked at: a retry after wait
			// is safe, and RetryInfo says so to clients (lbclient waits it).
			return id, errinfo.Retry(codes.ResourceExhausted, errinfo.RateLimited,
				map[string]string{"identity": id.String(), "rate": strconv.FormatFloat(a.WriteRate, 'f', -1, 64)}, wait,
				fmt.Sprintf("%s exceeds %.0f writes/s; slow down and retry", id, a.WriteRate))
		}
	}
	return id, nil
}

// allow takes a write token of id; when there is none, wait is how long
// until the next one.
func (a *Authorizer) allow(id Identity) (ok bool, wait time.Duration) {
	if a.WriteRate <= 0 {
		return true, 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.limiters == nil {
		a.limiters = map[string]*rate.Limiter{}
	}
	key := id.String()
	l, ok := a.limiters[key]
	if !ok {
		l = rate.NewLimiter(rate.Limit(a.WriteRate), max(a.WriteBurst, 1))
		a.limiters[key] = l
	}
	if l.Allow() {
		return true, 0
	}
	return false, max(time.Millisecond, time.Duration((1-l.Tokens())/a.WriteRate*float64(time.Second)))
}

// Unary is the unary server interceptor.
func (a *Authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := a.authorize(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// Stream is the stream server interceptor.
func (a *Authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := a.authorize(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
}

// TenantScope returns the tenant a caller is bound to ("" for none) and
// refuses a request that names another tenant. Handlers call it with the
// request's tenant and use the result. For a bound caller the default tenant
// is its own, so clients that fill in "default" need no special case.
func TenantScope(ctx context.Context, requested string) (string, error) {
	id, ok := FromContext(ctx)
	if !ok || id.Tenant == "" {
		return requested, nil
	}
	if requested != "" && requested != DefaultTenant && requested != id.Tenant {
		return "", status.Errorf(codes.PermissionDenied, "%s may only use tenant %s, not %s", id, id.Tenant, requested)
	}
	return id.Tenant, nil
}
