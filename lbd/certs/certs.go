// Package certs creates the CA and the certificates an edgelb cluster uses, so
// an operator need not learn openssl. Identities are URI SANs of the form
// edgelb://<role>/<name> (see package auth); for a cloud provider the name is
// its tenant.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Roles a certificate can carry.
var Roles = []string{"member", "admin", "operator", "viewer", "cloud-provider"}

// CA is a certificate authority loaded from or written to a directory (ca.crt, ca.key).
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

// NewCA creates a self-signed CA valid for validity.
func NewCA(name string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("validity %s: must be positive, e.g. 87600h for ten years", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"edgelb"}},
		NotBefore:             time.Now().Add(-5 * time.Minute),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("sign CA: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// LoadCA reads ca.crt and ca.key from dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("%s: ca.crt or ca.key is not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// Save writes ca.crt (0644) and ca.key (0600) into dir, refusing to overwrite.
func (ca *CA) Save(dir string) error {
	der, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return err
	}
	return writeFiles(dir, "ca", ca.PEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), false)
}

// Request describes a certificate to issue.
type Request struct {
	Role string // one of Roles
	Name string // member id, user name, or (cloud-provider) tenant
	// Hosts are DNS names and IPs the certificate serves (members: their API and raft addresses).
	Hosts    []string
	Validity time.Duration
}

// Issued is a signed certificate and its key, PEM encoded.
type Issued struct{ CertPEM, KeyPEM []byte }

// Issue signs a certificate for req.
func (ca *CA) Issue(req Request) (*Issued, error) {
	ok := false
	for _, r := range Roles {
		ok = ok || r == req.Role
	}
	if !ok {
		return nil, fmt.Errorf("role %q is not one of %v", req.Role, Roles)
	}
	if err := CheckName(req.Name); err != nil {
		return nil, err
	}
	if req.Role == "member" && len(req.Hosts) == 0 {
		// Peers and lbctl verify a member by the address they dial; a member
		// certificate without one fails every TLS handshake with it.
		return nil, fmt.Errorf("a member certificate needs the member's address: pass --host with the IP (or DNS name) of its API and raft addresses, e.g. --host 10.0.0.11")
	}
	for _, h := range req.Hosts {
		if err := checkHost(h); err != nil {
			return nil, err
		}
	}
	switch {
	case req.Validity < 0:
		return nil, fmt.Errorf("validity %s: must be positive, e.g. 8760h for a year", req.Validity)
	case req.Validity == 0:
		req.Validity = 365 * 24 * time.Hour // the zero Request means the default
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id := &url.URL{Scheme: "edgelb", Host: req.Role, Path: "/" + req.Name}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: req.Name, OrganizationalUnit: []string{req.Role}, Organization: []string{"edgelb"}},
		NotBefore:    time.Now().Add(-5 * time.Minute),
		NotAfter:     time.Now().Add(req.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{id},
	}
	for _, h := range req.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}, nil
}

var labelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// CheckName refuses a certificate name that is not a DNS-style name
// (lowercase labels of letters, digits and '-', joined by '.'). The name
// becomes both the file name NAME.crt under --out and the identity
// edgelb://ROLE/NAME: "../escaped" would write outside --out and put a path
// into the identity.
func CheckName(name string) error {
	const rule = "lowercase letters, digits and '-', in labels joined by '.', e.g. edge1 or alice"
	if name == "" {
		return fmt.Errorf("name is required (member id, user or tenant): %s", rule)
	}
	if len(name) > 253 {
		return fmt.Errorf("name %q is longer than 253 characters", name)
	}
	for _, label := range strings.Split(name, ".") {
		if !labelRE.MatchString(label) {
			return fmt.Errorf("name %q is not a DNS-style name: use %s", name, rule)
		}
	}
	return nil
}

// checkHost refuses a --host that is neither an IP address nor a DNS name,
// since it would go into the certificate as a DNS name nobody can match.
func checkHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	for _, label := range strings.Split(strings.TrimPrefix(h, "*."), ".") {
		if !labelRE.MatchString(strings.ToLower(label)) {
			return fmt.Errorf("host %q is neither an IP address nor a DNS name", h)
		}
	}
	return nil
}

// Save writes <base>.crt and <base>.key into dir; with overwrite it replaces
// them atomically (rename), which is how a rotation reaches a running lbd.
func (is *Issued) Save(dir, base string, overwrite bool) error {
	return writeFiles(dir, base, is.CertPEM, is.KeyPEM, overwrite)
}

func writeFiles(dir, base string, cert, key []byte, overwrite bool) error {
	if base == "" || filepath.Base(base) != base || base == "." || base == ".." {
		return fmt.Errorf("file name %q must not name a directory", base) // never write outside dir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{base + ".key", key, 0o600}, {base + ".crt", cert, 0o644}} {
		path := filepath.Join(dir, f.name)
		if !overwrite {
			if _, err := os.Stat(path); err == nil {
				return fmt.Errorf("%s exists; remove it or choose another --out", path)
			}
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}
