package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// The raft port carries two protocols: raft's own, and gRPC for PeerService
// (followers forwarding writes to the leader). Both are spoken only between
// members — with TLS the port admits member certificates only — so PeerService
// is never on the API port, where any client could send it raw commands.
//
// A connection is told apart by its first byte: raft starts every connection
// with an RPC type (0-4), HTTP/2 with its preface "PRI * HTTP/2.0".
const http2First = 'P'

// classifyTimeout bounds how long a connection may take to send its first
// byte (and, with TLS, to finish its handshake) before it is dropped, so a
// silent client holds a goroutine for a bounded time only.
const classifyTimeout = 10 * time.Second

// mux splits one listener into raft's and gRPC's.
type mux struct {
	inner     net.Listener
	raft      *subListener
	grpc      *subListener
	closeOnce sync.Once
	done      chan struct{}
}

func newMux(inner net.Listener) *mux {
	m := &mux{inner: inner, done: make(chan struct{})}
	m.raft = &subListener{m: m, ch: make(chan net.Conn)}
	m.grpc = &subListener{m: m, ch: make(chan net.Conn)}
	go m.run()
	return m
}

func (m *mux) run() {
	for {
		c, err := m.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.close()
			return
		}
		go m.classify(c)
	}
}

func (m *mux) classify(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(classifyTimeout))
	var first [1]byte
	if _, err := c.Read(first[:]); err != nil {
		// A failed handshake or a client that sent nothing: nothing to serve.
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	pc := &PeerConn{Conn: c, first: first[:]}
	if tc, ok := c.(*tls.Conn); ok {
		pc.tls = tc
	}
	to := m.raft
	if first[0] == http2First {
		to = m.grpc
	}
	select {
	case to.ch <- pc:
	case <-m.done:
		c.Close()
	}
}

func (m *mux) close() error {
	var err error
	m.closeOnce.Do(func() {
		close(m.done)
		err = m.inner.Close()
	})
	return err
}

// subListener is one protocol's side of the mux. Closing either closes the
// port: raft's transport and the gRPC server stop together anyway.
type subListener struct {
	m  *mux
	ch chan net.Conn
}

func (l *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.m.done:
		return nil, net.ErrClosed
	}
}

func (l *subListener) Close() error   { return l.m.close() }
func (l *subListener) Addr() net.Addr { return l.m.inner.Addr() }

// PeerConn is a connection accepted on the raft port, with the byte read to
// classify it put back.
type PeerConn struct {
	net.Conn
	first []byte
	tls   *tls.Conn
}

func (c *PeerConn) Read(b []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(b, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// TLSState returns the connection's TLS state (ok false: plaintext), so a
// gRPC server on the already-handshaken connection can see the peer's certificate.
func (c *PeerConn) TLSState() (tls.ConnectionState, bool) {
	if c.tls == nil {
		return tls.ConnectionState{}, false
	}
	return c.tls.ConnectionState(), true
}

// plainStream is a raft.StreamLayer over plain TCP, on the mux.
type plainStream struct {
	net.Listener
	adv net.Addr
}

func (s *plainStream) Addr() net.Addr { return s.adv }

func (s *plainStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, fmt.Errorf("dial raft peer %s: %w", addr, err)
	}
	return c, nil
}
