package node

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// TLS secures the raft transport: every connection, in either direction, is
// mutual TLS, and the configs' verification admits only member certificates.
type TLS struct {
	Server *tls.Config
	Client *tls.Config
}

// tlsStream is a raft.StreamLayer over mutual TLS.
type tlsStream struct {
	net.Listener
	adv    net.Addr
	client *tls.Config
}

func newTLSStream(l net.Listener, adv net.Addr, t *TLS) *tlsStream {
	return &tlsStream{Listener: l, adv: adv, client: t.Client}
}

func (s *tlsStream) Addr() net.Addr { return s.adv }

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(addr))
	if err != nil {
		return nil, fmt.Errorf("raft peer address %q: %w", addr, err)
	}
	cfg := s.client.Clone()
	cfg.ServerName = host
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(addr), cfg)
	if err != nil {
		return nil, fmt.Errorf("dial raft peer %s over TLS: %w", addr, err)
	}
	return conn, nil
}
