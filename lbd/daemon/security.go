package daemon

import (
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/raft/node"
)

// maxMsgSize bounds one API message: a 5,000-backend service is ~300 KB, so
// 4 MiB leaves room while keeping one client from making lbd buffer much more.
const maxMsgSize = 4 << 20

// security is lbd's TLS material and authorisation, or the explicit absence of both.
type security struct {
	reloader *auth.Reloader // nil: plaintext
	authz    *auth.Authorizer
	mapping  auth.Mapping
}

func newSecurity(cfg config.Config, log *slog.Logger) (*security, error) {
	m := auth.Mapping{}
	for uri, id := range cfg.Auth.Identities {
		m[uri] = auth.Identity{Role: id.Role, Name: id.Name, Tenant: id.Tenant}
	}
	s := &security{mapping: m, authz: &auth.Authorizer{
		Mapping: m, WriteRate: cfg.Auth.WriteRate, WriteBurst: cfg.Auth.WriteBurst, Log: log,
	}}
	if !cfg.TLS.Enabled() {
		s.authz.Insecure = true
		log.Warn("PLAINTEXT: the API and raft are neither encrypted nor authenticated; every caller is admin. Configure tls for anything but a local lab.",
			"api", cfg.APIAddr, "raft", cfg.RaftAddr)
		return s, nil
	}
	r, err := auth.NewReloader(auth.Files{CA: cfg.TLS.CAFile, Cert: cfg.TLS.CertFile, Key: cfg.TLS.KeyFile}, log.With("component", "tls"))
	if err != nil {
		return nil, err
	}
	leaf, err := r.Leaf()
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", cfg.TLS.CertFile, err)
	}
	id, err := auth.FromCert(leaf, m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.TLS.CertFile, err)
	}
	if id.Role != auth.RoleMember || id.Name != cfg.ID {
		return nil, fmt.Errorf("%s identifies %s, but this member is edgelb://member/%s; issue it with: lbd certs issue --role member --name %s", cfg.TLS.CertFile, id, cfg.ID, cfg.ID)
	}
	s.reloader = r
	return s, nil
}

func (s *security) serverOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.ChainUnaryInterceptor(s.authz.Unary),
		grpc.ChainStreamInterceptor(s.authz.Stream),
	}
	if s.reloader != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.reloader.ServerConfig(nil, s.mapping))))
	}
	return opts
}

// peerCreds secure this member's calls to other members' APIs.
func (s *security) peerCreds() credentials.TransportCredentials {
	if s.reloader == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(s.reloader.ClientConfig("", auth.RequireMember, s.mapping))
}

func (s *security) raftTLS() *node.TLS {
	if s.reloader == nil {
		return nil
	}
	return &node.TLS{
		Server: s.reloader.ServerConfig(auth.RequireMember, s.mapping),
		Client: s.reloader.ClientConfig("", auth.RequireMember, s.mapping),
	}
}
