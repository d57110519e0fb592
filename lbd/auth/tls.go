package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Files names the PEM files of one TLS identity.
type Files struct {
	CA, Cert, Key string
}

// Reloader serves a certificate, key and CA pool from files and reloads them
// when they change (checked at most once a second, on handshakes), so a
// rotated certificate takes effect without restarting lbd. A failed reload
// keeps the previous material and logs why.
type Reloader struct {
	files Files
	log   *slog.Logger

	mu      sync.Mutex
	checked time.Time
	stamp   string
	cert    *tls.Certificate
	pool    *x509.CertPool
}

// NewReloader loads the files once; errors here are fatal configuration errors.
func NewReloader(f Files, log *slog.Logger) (*Reloader, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("tls needs caFile, certFile and keyFile together")
	}
	r := &Reloader{files: f, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) fingerprint() string {
	s := ""
	for _, p := range []string{r.files.CA, r.files.Cert, r.files.Key} {
		if st, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%s:%d:%d;", p, st.Size(), st.ModTime().UnixNano())
		}
	}
	return s
}

func (r *Reloader) load() error {
	stamp := r.fingerprint()
	cert, err := tls.LoadX509KeyPair(r.files.Cert, r.files.Key)
	if err != nil {
		return fmt.Errorf("load certificate %s / key %s: %w", r.files.Cert, r.files.Key, err)
	}
	caPEM, err := os.ReadFile(r.files.CA)
	if err != nil {
		return fmt.Errorf("read CA %s: %w", r.files.CA, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("CA file %s holds no PEM certificate", r.files.CA)
	}
	r.mu.Lock()
	r.cert, r.pool, r.stamp, r.checked = &cert, pool, stamp, time.Now()
	r.mu.Unlock()
	return nil
}

// current returns the material, reloading it first if the files changed.
func (r *Reloader) current() (*tls.Certificate, *x509.CertPool) {
	r.mu.Lock()
	due := time.Since(r.checked) >= time.Second
	if due {
		r.checked = time.Now()
	}
	stamp := r.stamp
	r.mu.Unlock()
	if due && r.fingerprint() != stamp {
		if err := r.load(); err != nil {
			r.log.Error("TLS files changed but cannot be loaded; keeping the previous certificate", "err", err)
		} else {
			r.log.Info("TLS certificate reloaded", "cert", r.files.Cert)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert, r.pool
}

// Leaf returns the current certificate's parsed leaf.
func (r *Reloader) Leaf() (*x509.Certificate, error) {
	c, _ := r.current()
	if c.Leaf != nil {
		return c.Leaf, nil
	}
	return x509.ParseCertificate(c.Certificate[0])
}

// ServerConfig requires and verifies client certificates against the CA.
// verify, when set, further checks the verified client's identity.
func (r *Reloader) ServerConfig(verify func(Identity) error, m Mapping) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := r.current()
			cfg := &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    pool,
				NextProtos:   []string{"h2"},
			}
			if verify != nil {
				cfg.VerifyPeerCertificate = func(_ [][]byte, chains [][]*x509.Certificate) error {
					if len(chains) == 0 {
						return errors.New("no verified chain")
					}
					id, err := FromCert(chains[0][0], m)
					if err != nil {
						return err
					}
					return verify(id)
				}
			}
			return cfg, nil
		},
	}
}

// ClientConfig presents the current certificate and verifies the server
// against the current CA (and, when serverName is set, its name; otherwise the
// address dialled). verify, when set, further checks the server's identity.
func (r *Reloader) ClientConfig(serverName string, verify func(Identity) error, m Mapping) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, _ := r.current()
			return c, nil
		},
		// The CA pool may change at runtime, which a static RootCAs cannot
		// follow; verification is done here instead, with the same checks.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, pool := r.current()
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			opts := x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: cs.ServerName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
				return fmt.Errorf("verify server certificate: %w", err)
			}
			if verify != nil {
				id, err := FromCert(cs.PeerCertificates[0], m)
				if err != nil {
					return err
				}
				return verify(id)
			}
			return nil
		},
	}
}

// RequireMember is a verify func that admits only member identities.
func RequireMember(id Identity) error {
	if id.Role != RoleMember {
		return fmt.Errorf("%s is not a cluster member", id)
	}
	return nil
}
