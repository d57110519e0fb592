package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// lbd certs issue refuses what would make a useless or dangerous certificate
// and writes nothing for it.
func TestCertsIssueRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if code := run([]string{"certs", "ca", "--out", ca}); code != 0 {
		t.Fatalf("certs ca: exit %d", code)
	}
	out := filepath.Join(dir, "out")
	for name, args := range map[string][]string{
		"path in name":        {"--role", "admin", "--name", "../escaped"},
		"slash in name":       {"--role", "admin", "--name", "a/b"},
		"empty label":         {"--role", "admin", "--name", "a..b"},
		"upper case":          {"--role", "admin", "--name", "Alice"},
		"member without host": {"--role", "member", "--name", "edge1"},
		"negative validity":   {"--role", "admin", "--name", "alice", "--validity", "-1h"},
		"zero validity":       {"--role", "admin", "--name", "alice", "--validity", "0s"},
		"host not a name":     {"--role", "member", "--name", "edge1", "--host", "not a host"},
	} {
		if code := run(append([]string{"certs", "issue", "--ca", ca, "--out", out}, args...)); code == 0 {
			t.Errorf("%s: certs issue %v succeeded", name, args)
		}
	}
	if code := run([]string{"certs", "ca", "--out", filepath.Join(dir, "ca2"), "--validity", "-1h"}); code == 0 {
		t.Error("certs ca --validity -1h succeeded")
	}
	// Nothing was written, in --out or beside it.
	for _, p := range []string{out, filepath.Join(dir, "escaped.crt"), filepath.Join(dir, "ca2")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was written by a refused request", p)
		}
	}

	// The good cases still work, and a member certificate carries its IP.
	if code := run([]string{"certs", "issue", "--ca", ca, "--out", out, "--role", "member", "--name", "edge1", "--host", "127.0.0.1"}); code != 0 {
		t.Fatalf("member with --host: exit %d", code)
	}
	if code := run([]string{"certs", "issue", "--ca", ca, "--out", out, "--role", "admin", "--name", "alice.ops"}); code != 0 {
		t.Fatalf("admin alice.ops: exit %d", code)
	}
	data, err := os.ReadFile(filepath.Join(out, "edge1.crt"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "127.0.0.1" || cert.URIs[0].String() != "edgelb://member/edge1" {
		t.Errorf("member certificate: IPs %v, URIs %v", cert.IPAddresses, cert.URIs)
	}
}

// A typo in a certs subcommand fails instead of printing help with exit 0.
func TestCertsTypoFails(t *testing.T) {
	if code := run([]string{"certs", "isue"}); code == 0 {
		t.Error("lbd certs isue succeeded")
	}
	if code := run([]string{"certs"}); code != 0 {
		t.Errorf("lbd certs (its help): exit %d", code)
	}
}
