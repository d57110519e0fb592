package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/liveness"
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

// servesPeerOnAPI says whether the API port serves PeerService too: with TLS
// to member certificates only (members of the previous release forward there
// during a rolling upgrade); in plaintext never, since every caller there is
// admin and PeerService would take raw commands from anyone.
func (s *security) servesPeerOnAPI() bool { return s.reloader != nil }

// peerServerOptions are those of the gRPC server on the raft port: the
// connection arrives there already accepted (and with TLS, handshaken with a
// member certificate) by the raft port's mux.
func (s *security) peerServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMsgSize),
		grpc.InitialWindowSize(liveness.PeerWindow), grpc.InitialConnWindowSize(liveness.PeerWindow),
		grpc.Creds(handshaken{tls: s.reloader != nil}),
		grpc.ChainUnaryInterceptor(s.authz.Unary),
		grpc.ChainStreamInterceptor(s.authz.Stream),
	}
}

// handshaken is the transport security of connections the raft port's mux
// hands over: TLS, when configured, is already done, and its state is passed
// on so the authorizer sees the member's certificate.
type handshaken struct{ tls bool }

func (h handshaken) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	pc, ok := c.(interface {
		TLSState() (tls.ConnectionState, bool)
	})
	if !h.tls {
		return insecure.NewCredentials().ServerHandshake(c)
	}
	if !ok {
		return nil, nil, errors.New("raft port connection without TLS state")
	}
	st, ok := pc.TLSState()
	if !ok {
		return nil, nil, errors.New("raft port connection is not TLS")
	}
	return c, credentials.TLSInfo{State: st, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (handshaken) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("handshaken credentials are for serving only")
}

func (h handshaken) Info() credentials.ProtocolInfo {
	if h.tls {
		return credentials.ProtocolInfo{SecurityProtocol: "tls"}
	}
	return credentials.ProtocolInfo{SecurityProtocol: "insecure"}
}

func (h handshaken) Clone() credentials.TransportCredentials { return h }
func (handshaken) OverrideServerName(string) error           { return nil }

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
