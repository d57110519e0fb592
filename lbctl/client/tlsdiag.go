package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TLSError is a connection that failed on TLS: which certificate (or which
// side's setting) failed and why. Retrying does not help, so it is
// Unauthenticated (lbctl exit 7), not Unavailable.
type TLSError struct {
	Endpoint string
	// Reason says which certificate failed and what to change.
	Reason string
	// Err is the underlying TLS or x509 error, when there is one.
	Err error
}

func (e *TLSError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s (%v)", e.Endpoint, e.Reason, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Endpoint, e.Reason)
}

func (e *TLSError) Unwrap() error { return e.Err }

// GRPCStatus makes lbctl's exit code 7 (PermissionDenied/Unauthenticated).
func (e *TLSError) GRPCStatus() *status.Status {
	return status.New(codes.Unauthenticated, e.Error())
}

// probeTimeout bounds each diagnostic handshake.
const probeTimeout = 2 * time.Second

// diagnose runs after a connection to ep failed although its TCP connect
// succeeded: gRPC reports only "TransientFailure", so one extra handshake
// (sending no request) finds out, from the typed errors of crypto/tls and
// crypto/x509, whether TLS was the cause. It returns nil when it cannot tell.
func diagnose(ctx context.Context, ep string, o Options, cfg *tls.Config) *TLSError {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if cfg == nil {
		// Plaintext: does the endpoint speak TLS? The probe verifies nothing
		// and sends nothing after the handshake; it only asks the question.
		probe := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}} //nolint:gosec // diagnostic only
		c, err := (&tls.Dialer{Config: probe}).DialContext(ctx, "tcp", ep)
		if err != nil {
			return nil
		}
		c.Close()
		return &TLSError{Endpoint: ep, Reason: "the server requires TLS, but this connection is plaintext: pass --ca-file with the cluster CA and --cert-file/--key-file with your certificate (or set them in the context)"}
	}
	probe := cfg.Clone()
	probe.NextProtos = []string{"h2"}
	// crypto/tls sends no certificate that the server's list of acceptable
	// CAs rules out, so a certificate of another CA arrives as none at all;
	// ask the server's request directly instead of guessing from its alert.
	var refusedHere error
	var acceptable []string
	if len(probe.Certificates) > 0 {
		own := probe.Certificates[0]
		probe.Certificates = nil
		probe.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if err := cri.SupportsCertificate(&own); err != nil {
				refusedHere = err
				acceptable = caNames(cri.AcceptableCAs)
				return &tls.Certificate{}, nil
			}
			return &own, nil
		}
	}
	raw, err := (&tls.Dialer{Config: probe}).DialContext(ctx, "tcp", ep)
	if err != nil {
		return serverSide(ep, o, cfg, err)
	}
	if refusedHere != nil {
		return &TLSError{Endpoint: ep, Err: refusedHere, Reason: fmt.Sprintf("the client certificate --cert-file %s%s is not issued by a CA this server accepts (%s): use a certificate from the cluster's CA (lbd certs issue)", o.CertFile, describeFile(o.CertFile), strings.Join(acceptable, ", "))}
	}
	c := raw.(*tls.Conn)
	defer c.Close()
	// TLS 1.3: the server judges our certificate after our side of the
	// handshake is done; its verdict is the first thing we read.
	deadline := time.Now().Add(probeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c.SetReadDeadline(deadline)
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		return nil // the server accepted us: not a TLS problem
	}
	if o.CertFile == "" {
		return &TLSError{Endpoint: ep, Reason: "the server requires a client certificate: pass --cert-file and --key-file with one issued by the cluster CA (lbd certs issue)", Err: err}
	}
	cert := "the client certificate --cert-file " + o.CertFile + describeFile(o.CertFile)
	switch code, _ := alertCode(err); code {
	case alertUnknownCA:
		return &TLSError{Endpoint: ep, Err: err, Reason: fmt.Sprintf("the server does not trust the CA that issued %s: it is another CA than the cluster's, even if named alike; use a certificate from the cluster's CA (lbd certs issue)", cert)}
	case alertCertificateExpired:
		return &TLSError{Endpoint: ep, Err: err, Reason: fmt.Sprintf("the server says %s has expired (or is not yet valid): issue a new one, or check the clocks", cert)}
	}
	return &TLSError{Endpoint: ep, Err: err, Reason: fmt.Sprintf("the server refused %s: it must be issued by the cluster's CA, be valid now and carry an edgelb identity", cert)}
}

// TLS alert numbers (RFC 8446 section 6) that name a client certificate's fault.
const (
	alertCertificateExpired = 45
	alertUnknownCA          = 48
)

// alertCode is the number of the TLS alert the server sent. crypto/tls
// returns it as a net.OpError around its unexported alert type, a uint8,
// so the number is read by kind, never from the message.
func alertCode(err error) (uint8, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Err == nil {
		return 0, false
	}
	v := reflect.ValueOf(op.Err)
	if v.Kind() != reflect.Uint8 {
		return 0, false
	}
	return uint8(v.Uint()), true
}

// serverSide explains a handshake that failed on our side.
func serverSide(ep string, o Options, cfg *tls.Config, err error) *TLSError {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &unknown):
		ca := "the system's CAs"
		if o.CAFile != "" {
			ca = "the CA in --ca-file " + o.CAFile + describeFile(o.CAFile)
		}
		return &TLSError{Endpoint: ep, Err: err, Reason: fmt.Sprintf("the server's certificate%s is not signed by %s: a wrong --ca-file, or a server of another cluster", describe(unknown.Cert), ca)}
	case errors.As(err, &hostname):
		// The name verified is --server-name, else the host dialled.
		how := "--server-name " + cfg.ServerName
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(ep)
			how = "the endpoint's host " + host
		}
		return &TLSError{Endpoint: ep, Err: err, Reason: fmt.Sprintf("the server's certificate%s is valid for %s, not for %s: set --server-name to one of those names, or dial an address in the certificate", describe(hostname.Certificate), sans(hostname.Certificate), how)}
	case errors.As(err, &invalid):
		return &TLSError{Endpoint: ep, Err: err, Reason: fmt.Sprintf("the server's certificate%s is not valid: %s", describe(invalid.Cert), invalidReason(invalid))}
	case errors.As(err, &record):
		return &TLSError{Endpoint: ep, Err: err, Reason: "the server does not speak TLS (a plaintext lbd?): drop --ca-file/--cert-file/--key-file/--server-name for it, or check the endpoint"}
	}
	return nil
}

// caNames turns the DER distinguished names of a certificate request into
// readable CA names.
func caNames(ders [][]byte) []string {
	var names []string
	for _, der := range ders {
		var rdn pkix.RDNSequence
		if _, err := asn1.Unmarshal(der, &rdn); err != nil {
			continue
		}
		var n pkix.Name
		n.FillFromRDNSequence(&rdn)
		names = append(names, fmt.Sprintf("%q", n.CommonName))
	}
	if len(names) == 0 {
		return []string{"it names none"}
	}
	return names
}

func invalidReason(e x509.CertificateInvalidError) string {
	switch e.Reason {
	case x509.Expired:
		return "expired or not yet valid (check the clocks, or issue a new one)"
	case x509.NotAuthorizedToSign:
		return "signed by a certificate that is not a CA"
	case x509.IncompatibleUsage:
		return "not issued for TLS server use"
	default:
		return e.Error()
	}
}

// describe names a certificate for an operator: its identity and issuer.
func describe(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	id := c.Subject.CommonName
	for _, u := range c.URIs {
		id = u.String()
	}
	return fmt.Sprintf(" (%s, issued by %q)", id, c.Issuer.CommonName)
}

// describeFile names the certificate in a PEM file, when it can be read.
func describeFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return ""
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			return describe(c)
		}
	}
}

func sans(c *x509.Certificate) string {
	var names []string
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	names = append(names, c.DNSNames...)
	if len(names) == 0 {
		return "no name or address"
	}
	return strings.Join(names, ", ")
}
