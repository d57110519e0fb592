// Package auth authenticates lbd's peers and clients by their TLS certificates
// and decides what each may do. An identity is the certificate's URI SAN
// edgelb://<role>/<name>; a cloud-provider identity's name is its tenant, and it
// sees and changes that tenant's virtual services only.
package auth

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Roles, from most to least powerful.
const (
	RoleAdmin         = "admin"          // everything
	RoleMember        = "member"         // another lbd: raft, forwarded writes, joining
	RoleOperator      = "operator"       // virtual services and backends, drain; read everything
	RoleCloudProvider = "cloud-provider" // one tenant's virtual services
	RoleViewer        = "viewer"         // read only
)

// Identity is who is calling.
type Identity struct {
	Role string
	Name string
	// Tenant binds a cloud-provider to its tenant; empty means all tenants.
	Tenant string
}

func (i Identity) String() string {
	if i.Tenant != "" && i.Role != RoleCloudProvider {
		return fmt.Sprintf("%s/%s (tenant %s)", i.Role, i.Name, i.Tenant)
	}
	return i.Role + "/" + i.Name
}

// Anonymous is the identity of every caller on a plaintext (insecure) listener.
var Anonymous = Identity{Role: RoleAdmin, Name: "anonymous-plaintext"}

// Mapping overrides or supplies identities by certificate URI, for
// certificates not issued by `lbd certs` (e.g. SPIFFE IDs from an existing PKI).
type Mapping map[string]Identity

// FromCert derives the identity of a verified peer certificate.
func FromCert(c *x509.Certificate, m Mapping) (Identity, error) {
	for _, u := range c.URIs {
		if id, ok := m[u.String()]; ok {
			return id, nil
		}
	}
	for _, u := range c.URIs {
		if u.Scheme != "edgelb" {
			continue
		}
		role, name := u.Host, strings.TrimPrefix(u.Path, "/")
		if name == "" {
			continue
		}
		switch role {
		case RoleAdmin, RoleMember, RoleOperator, RoleViewer:
			return Identity{Role: role, Name: name}, nil
		case RoleCloudProvider:
			return Identity{Role: role, Name: name, Tenant: name}, nil
		}
		return Identity{}, fmt.Errorf("certificate %q has unknown role %q", c.Subject.CommonName, role)
	}
	return Identity{}, fmt.Errorf("certificate %q carries no edgelb identity (URI SAN edgelb://<role>/<name>) and no mapping in auth.identities", c.Subject.CommonName)
}

type ctxKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the caller's identity (set by the interceptors).
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// peerCert returns the verified leaf certificate of the gRPC peer, if any.
func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}
