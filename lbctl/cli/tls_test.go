package cli

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/edgelb/edgelb/lbd/certs"
	"github.com/edgelb/edgelb/lbd/config"
	"github.com/edgelb/edgelb/lbd/daemon"
)

// issue writes NAME.crt and NAME.key signed by the CA in dir, as
// `lbd certs issue` does (same package, same checks).
func issue(t *testing.T, ca *certs.CA, dir, role, name string, hosts ...string) {
	t.Helper()
	is, err := ca.Issue(certs.Request{Role: role, Name: name, Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	if err := is.Save(dir, name, false); err != nil {
		t.Fatal(err)
	}
}

func newCA(t *testing.T, dir string) *certs.CA {
	t.Helper()
	return newNamedCA(t, dir, "ca of "+filepath.Base(dir))
}

func newNamedCA(t *testing.T, dir, name string) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA(name, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	return ca
}

// startTLSMember runs a real lbd (control plane only) that requires mutual
// TLS with a certificate for lb1 on 127.0.0.1.
func startTLSMember(t *testing.T, pki string) *member {
	t.Helper()
	cfg := config.Default()
	cfg.ID = "lb1"
	cfg.DataDir = filepath.Join(t.TempDir(), "lb1")
	cfg.APIAddr, cfg.RaftAddr = freePort(t), freePort(t)
	cfg.MetricsAddr = ""
	cfg.DataPlane.Mode = "none"
	cfg.TLS = config.TLS{CAFile: filepath.Join(pki, "ca.crt"), CertFile: filepath.Join(pki, "lb1.crt"), KeyFile: filepath.Join(pki, "lb1.key")}
	d, err := daemon.Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	m := &member{cfg: cfg, d: d}
	t.Cleanup(m.stop)
	return m
}

// Every TLS failure names the certificate that failed and why, and exits 7
// (a setting to fix), not 8 (unreachable). Before, all of them read
// "connection failed (TLS handshake or protocol mismatch? ...)" with exit 8.
func TestTLSFailuresSayWhichCertificateAndWhy(t *testing.T) {
	t.Setenv("LBCTL_ENDPOINTS", "")
	pki, rogue := t.TempDir(), t.TempDir()
	ca := newCA(t, pki)
	issue(t, ca, pki, "member", "lb1", "127.0.0.1")
	issue(t, ca, pki, "admin", "alice")
	rca := newCA(t, rogue)
	issue(t, rca, rogue, "admin", "mallory")
	issue(t, rca, rogue, "member", "lb1", "127.0.0.1")
	// A foreign CA with the cluster CA's name: the client sends its
	// certificate, and the server's alert is what tells.
	twin := t.TempDir()
	issue(t, newNamedCA(t, twin, "ca of "+filepath.Base(pki)), twin, "admin", "eve")

	m := startTLSMember(t, pki)
	plain := startMember(t, "plain", t.TempDir(), nil)
	cfg := filepath.Join(t.TempDir(), "lbctl.yaml")
	tlsFlags := func(caDir, certDir, name string) []string {
		return []string{"--ca-file", filepath.Join(caDir, "ca.crt"), "--cert-file", filepath.Join(certDir, name+".crt"), "--key-file", filepath.Join(certDir, name+".key")}
	}
	eventually(t, "the TLS member leads", func() bool {
		r := lbctl(t, cfg, append(tlsFlags(pki, pki, "alice"), "--endpoints", m.cfg.APIAddr, "leader")...)
		return r.code == 0
	})

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"client certificate from a foreign CA", append(tlsFlags(pki, rogue, "mallory"), "--endpoints", m.cfg.APIAddr),
			[]string{"client certificate --cert-file " + filepath.Join(rogue, "mallory.crt") + " (edgelb://admin/mallory", "not issued by a CA this server accepts (\"ca of " + filepath.Base(pki) + "\")"}},
		{"client certificate from a foreign CA of the same name", append(tlsFlags(pki, twin, "eve"), "--endpoints", m.cfg.APIAddr),
			[]string{"the server does not trust the CA that issued the client certificate --cert-file " + filepath.Join(twin, "eve.crt")}},
		{"no client certificate", []string{"--ca-file", filepath.Join(pki, "ca.crt"), "--endpoints", m.cfg.APIAddr},
			[]string{"requires a client certificate", "--cert-file"}},
		{"wrong CA for the server", append(tlsFlags(rogue, pki, "alice"), "--endpoints", m.cfg.APIAddr),
			[]string{"server's certificate (edgelb://member/lb1", "not signed by the CA in --ca-file " + filepath.Join(rogue, "ca.crt")}},
		{"server name mismatch", append(tlsFlags(pki, pki, "alice"), "--endpoints", m.cfg.APIAddr, "--server-name", "lbd.example"),
			[]string{"server's certificate (edgelb://member/lb1", "valid for 127.0.0.1, not for --server-name lbd.example"}},
		{"endpoint's host not in the certificate", append(tlsFlags(pki, pki, "alice"), "--endpoints", "localhost:"+port(m.cfg.APIAddr)),
			[]string{"valid for 127.0.0.1, not for the endpoint's host localhost"}},
		{"plaintext client against TLS server", []string{"--endpoints", m.cfg.APIAddr},
			[]string{"requires TLS", "--ca-file"}},
		{"TLS client against plaintext server", append(tlsFlags(pki, pki, "alice"), "--endpoints", plain.cfg.APIAddr),
			[]string{"does not speak TLS"}},
	} {
		r := lbctl(t, cfg, append(tc.args, "leader")...)
		t.Logf("%s: exit %d: %s", tc.name, r.code, r.err)
		if r.code != exitcode.Denied {
			t.Errorf("%s: exit %d, want %d\n%s", tc.name, r.code, exitcode.Denied, r.err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(r.err, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", tc.name, w, r.err)
			}
		}
	}

	// An unreachable endpoint is still exit 8.
	if r := lbctl(t, cfg, append(tlsFlags(pki, pki, "alice"), "--endpoints", "127.0.0.1:1", "leader")...); r.code != exitcode.Unavailable {
		t.Errorf("refused TCP connection: exit %d, want %d\n%s", r.code, exitcode.Unavailable, r.err)
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
