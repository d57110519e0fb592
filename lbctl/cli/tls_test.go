package cli

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgelb/edgelb/lbctl/exitcode"
	"github.com/edgelb/edgelb/lbd/certs"
	"github.com/edgelb/edgelb/lbd/lbdtest"
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

// Every TLS failure names the certificate that failed and why, and exits 7
// (a setting to fix), not 8 (unreachable). Before, all of them read
// "connection failed (TLS handshake or protocol mismatch? ...)" with exit 8.
func TestTLSFailuresSayWhichCertificateAndWhy(t *testing.T) {
	t.Setenv("LBCTL_ENDPOINTS", "")
	c := lbdtest.StartCluster(t, 1) // mutual TLS, its CA named "lbdtest ca"
	m := c.Members[0]
	alice := c.ClientFiles(t, "admin", "alice")
	rogue := t.TempDir()
	rca := newCA(t, rogue)
	issue(t, rca, rogue, "admin", "mallory")
	issue(t, rca, rogue, "member", "lb1", "127.0.0.1")
	// A foreign CA with the cluster CA's name: the client sends its
	// certificate, and the server's alert is what tells.
	twin := t.TempDir()
	issue(t, newNamedCA(t, twin, "lbdtest ca"), twin, "admin", "eve")

	plain := lbdtest.StartCluster(t, 1, lbdtest.Plaintext()).Members[0]
	cfg := filepath.Join(t.TempDir(), "lbctl.yaml")
	tlsFlags := func(caFile, certDir, name string) []string {
		return []string{"--ca-file", caFile, "--cert-file", filepath.Join(certDir, name+".crt"), "--key-file", filepath.Join(certDir, name+".key")}
	}
	// alice's files are the cluster's: ROLE-NAME.crt beside ca.crt.
	pki, rogueCA := filepath.Dir(alice.CA), filepath.Join(rogue, "ca.crt")
	eventually(t, "the TLS member leads", func() bool {
		r := lbctl(t, cfg, append(tlsFlags(alice.CA, pki, "admin-alice"), "--endpoints", m.Addr, "leader")...)
		return r.code == 0
	})

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"client certificate from a foreign CA", append(tlsFlags(alice.CA, rogue, "mallory"), "--endpoints", m.Addr),
			[]string{"client certificate --cert-file " + filepath.Join(rogue, "mallory.crt") + " (edgelb://admin/mallory", "not issued by a CA this server accepts (\"lbdtest ca\")"}},
		{"client certificate from a foreign CA of the same name", append(tlsFlags(alice.CA, twin, "eve"), "--endpoints", m.Addr),
			[]string{"the server does not trust the CA that issued the client certificate --cert-file " + filepath.Join(twin, "eve.crt")}},
		{"no client certificate", []string{"--ca-file", alice.CA, "--endpoints", m.Addr},
			[]string{"requires a client certificate", "--cert-file"}},
		{"wrong CA for the server", append(tlsFlags(rogueCA, pki, "admin-alice"), "--endpoints", m.Addr),
			[]string{"server's certificate (edgelb://member/lb1", "not signed by the CA in --ca-file " + rogueCA}},
		{"server name mismatch", append(tlsFlags(alice.CA, pki, "admin-alice"), "--endpoints", m.Addr, "--server-name", "lbd.example"),
			[]string{"server's certificate (edgelb://member/lb1", "valid for 127.0.0.1, not for --server-name lbd.example"}},
		{"endpoint's host not in the certificate", append(tlsFlags(alice.CA, pki, "admin-alice"), "--endpoints", "localhost:"+port(m.Addr)),
			[]string{"valid for 127.0.0.1, not for the endpoint's host localhost"}},
		{"plaintext client against TLS server", []string{"--endpoints", m.Addr},
			[]string{"requires TLS", "--ca-file"}},
		{"TLS client against plaintext server", append(tlsFlags(alice.CA, pki, "admin-alice"), "--endpoints", plain.Addr),
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
	if r := lbctl(t, cfg, append(tlsFlags(alice.CA, pki, "admin-alice"), "--endpoints", "127.0.0.1:1", "leader")...); r.code != exitcode.Unavailable {
		t.Errorf("refused TCP connection: exit %d, want %d\n%s", r.code, exitcode.Unavailable, r.err)
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
