package auth

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbd/certs"
)

// pki is a directory of TLS files as lbd certs writes them, with the CAs that signed them.
type pki struct {
	t   *testing.T
	dir string
	ca  *certs.CA
	// bump moves every rewritten file's mtime forward, so the reloader's
	// fingerprint sees a change even on a filesystem with coarse timestamps.
	bump time.Time
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{t: t, dir: t.TempDir(), ca: newCA(t), bump: time.Now()}
	p.write("ca.crt", p.ca.PEM)
	p.issue(p.ca, "member", "m1", "m1")
	return p
}

func newCA(t *testing.T) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func (p *pki) files() Files {
	return Files{CA: p.path("ca.crt"), Cert: p.path("m1.crt"), Key: p.path("m1.key")}
}

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

func (p *pki) write(name string, data []byte) {
	p.t.Helper()
	if err := os.WriteFile(p.path(name), data, 0o600); err != nil {
		p.t.Fatal(err)
	}
	p.bump = p.bump.Add(2 * time.Second)
	if err := os.Chtimes(p.path(name), p.bump, p.bump); err != nil {
		p.t.Fatal(err)
	}
}

// issue signs a certificate with ca and writes it as base.crt and base.key.
func (p *pki) issue(ca *certs.CA, role, name, base string) *certs.Issued {
	p.t.Helper()
	is, err := ca.Issue(certs.Request{Role: role, Name: name, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		p.t.Fatal(err)
	}
	p.write(base+".key", is.KeyPEM)
	p.write(base+".crt", is.CertPEM)
	return is
}

// due makes the reloader look at the files on its next use instead of waiting
// out its once-a-second check.
func due(r *Reloader) {
	r.mu.Lock()
	r.checked = time.Time{}
	r.mu.Unlock()
}

func leafSerial(t *testing.T, r *Reloader) string {
	t.Helper()
	l, err := r.Leaf()
	if err != nil {
		t.Fatal(err)
	}
	return l.SerialNumber.String()
}

// served completes a handshake against r's server config and returns the
// serial of the certificate the server presented (or the handshake's error).
func served(t *testing.T, r *Reloader, client tls.Certificate, roots *x509.CertPool) (string, error) {
	t.Helper()
	cli, srvErr := handshake(t, tls.NewListener(listen(t), r.ServerConfig(nil, nil)), &tls.Config{
		MinVersion: tls.VersionTLS13, ServerName: "127.0.0.1", RootCAs: roots,
		Certificates: []tls.Certificate{client}, NextProtos: []string{"h2"},
	})
	if srvErr != nil {
		return "", srvErr
	}
	return cli.PeerCertificates[0].SerialNumber.String(), nil
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// handshake dials l with cfg and returns the client's view and the first
// error of either side: in TLS 1.3 the client is done before the server has
// checked its certificate, so the server's verdict counts too.
func handshake(t *testing.T, l net.Listener, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		errc <- c.(*tls.Conn).Handshake()
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(), cfg)
	if err != nil {
		<-errc
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	if err := <-errc; err != nil {
		return tls.ConnectionState{}, err
	}
	return c.ConnectionState(), nil
}

func keyPair(t *testing.T, is *certs.Issued) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func poolOf(cas ...*certs.CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Cert)
	}
	return p
}

func serial(t *testing.T, is *certs.Issued) string {
	t.Helper()
	return keyPair(t, is).Leaf.SerialNumber.String()
}

func TestReloaderServesRotatedCertificate(t *testing.T) {
	p := newPKI(t)
	var logs bytes.Buffer
	r, err := NewReloader(p.files(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	admin := keyPair(t, p.issue(p.ca, "admin", "alice", "alice"))
	old := leafSerial(t, r)
	if got, err := served(t, r, admin, poolOf(p.ca)); err != nil || got != old {
		t.Fatalf("before rotation: served %s, %v; want %s", got, err, old)
	}

	rotated := p.issue(p.ca, "member", "m1", "m1")
	// Within the once-a-second check, the old certificate is still served.
	if got := leafSerial(t, r); got != old {
		t.Fatalf("reloaded at once (%s); the files are checked at most once a second", got)
	}
	due(r)
	want := serial(t, rotated)
	if got, err := served(t, r, admin, poolOf(p.ca)); err != nil || got != want {
		t.Fatalf("after rotation: served %s, %v; want the new certificate %s", got, err, want)
	}
	if got := leafSerial(t, r); got != want {
		t.Errorf("Leaf after rotation = %s, want %s", got, want)
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") {
		t.Errorf("rotation was not logged: %s", logs.String())
	}
}

// A rotation caught half way (a truncated file, or the new certificate before
// its key) keeps the previous material, says so in the log, and is picked up
// once the files are whole.
func TestReloaderKeepsOldMaterialOnBrokenFiles(t *testing.T) {
	p := newPKI(t)
	var logs bytes.Buffer
	r, err := NewReloader(p.files(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	admin := keyPair(t, p.issue(p.ca, "admin", "alice", "alice"))
	old := leafSerial(t, r)
	next, err := p.ca.Issue(certs.Request{Role: "member", Name: "m1", Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}

	for _, step := range []struct {
		what  string
		write func()
	}{
		{"truncated certificate", func() { p.write("m1.crt", next.CertPEM[:len(next.CertPEM)/2]) }},
		{"new certificate, old key", func() { p.write("m1.crt", next.CertPEM) }},
		{"empty CA file", func() { p.write("m1.key", next.KeyPEM); p.write("ca.crt", nil) }},
	} {
		logs.Reset()
		step.write()
		due(r)
		if got, err := served(t, r, admin, poolOf(p.ca)); err != nil || got != old {
			t.Errorf("%s: served %s, %v; want the previous certificate %s", step.what, got, err, old)
		}
		if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "keeping the previous certificate") {
			t.Errorf("%s: not logged as an error: %q", step.what, l)
		}
	}

	// Whole again: the new material is served.
	p.write("ca.crt", p.ca.PEM)
	due(r)
	if got, err := served(t, r, admin, poolOf(p.ca)); err != nil || got != serial(t, next) {
		t.Errorf("after the files are whole: served %s, %v; want %s", got, err, serial(t, next))
	}
}

// The CA file is reloaded too: adding a new CA next to the old one (the usual
// CA rotation) admits clients of both; dropping the old one then refuses its clients.
func TestReloaderRotatesCA(t *testing.T) {
	p := newPKI(t)
	r, err := NewReloader(p.files(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ca2 := newCA(t)
	oldClient := keyPair(t, p.issue(p.ca, "admin", "alice", "alice"))
	newClient := keyPair(t, p.issue(ca2, "admin", "bob", "bob"))
	roots := poolOf(p.ca) // the server's certificate is still from the old CA

	if _, err := served(t, r, newClient, roots); err == nil {
		t.Fatal("a client of a CA not yet in ca.crt was admitted")
	}
	p.write("ca.crt", append(append([]byte{}, p.ca.PEM...), ca2.PEM...))
	due(r)
	for name, c := range map[string]tls.Certificate{"old CA's client": oldClient, "new CA's client": newClient} {
		if _, err := served(t, r, c, roots); err != nil {
			t.Errorf("%s with both CAs in ca.crt: %v", name, err)
		}
	}

	// The member moves to the new CA and the old one is dropped.
	p.issue(ca2, "member", "m1", "m1")
	p.write("ca.crt", ca2.PEM)
	due(r)
	if _, err := served(t, r, newClient, poolOf(ca2)); err != nil {
		t.Errorf("new CA's client after the old CA was dropped: %v", err)
	}
	if _, err := served(t, r, oldClient, poolOf(ca2)); err == nil {
		t.Error("the old CA's client is still admitted after ca.crt dropped it")
	}

	// The client side verifies servers against the reloaded CA as well.
	srvCert := keyPair(t, p.issue(p.ca, "member", "m2", "m2"))
	l := tls.NewListener(listen(t), &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{srvCert}})
	if _, err := handshake(t, l, r.ClientConfig("127.0.0.1", nil, nil)); err == nil || !strings.Contains(err.Error(), "verify server certificate") {
		t.Errorf("a server of the dropped CA: %v; want its certificate refused", err)
	}
}
