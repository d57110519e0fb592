package daemon

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/auth"
	"github.com/edgelb/edgelb/lbd/config"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// A request above maxMsgSize is refused by gRPC before it is decoded, with
// ResourceExhausted; one below it reaches the handler.
func TestOversizedMessageIsRefused(t *testing.T) {
	ds := startCluster(t, 1)
	c := client(t, ds[0].Addr())
	create := func(size int) error {
		_, err := c.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
			Name: strings.Repeat("a", size), Ports: []*edgelbv1.Port{{Port: 80}},
		}})
		return err
	}
	err := create(maxMsgSize + 1)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than max") {
		t.Fatalf("a %d-byte request: %v; want ResourceExhausted (larger than max)", maxMsgSize+1, err)
	}
	// Just under the cap, the validator answers (the name is far too long).
	if err := create(maxMsgSize - 1024); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a request under the cap: %v; want the validator's InvalidArgument", err)
	}
}

// The create past auth.maxServicesPerTenant is refused with ResourceExhausted
// naming the tenant, the limit and the setting; other tenants are not affected.
func TestServicesPerTenantLimit(t *testing.T) {
	ds := startCluster(t, 1, func(c *config.Config) { c.Auth.MaxServicesPerTenant = 2 })
	setupPool(t, ds[0].Addr())
	c := client(t, ds[0].Addr())
	create := func(tenant, name string) error {
		_, err := c.CreateVirtualService(context.Background(), &edgelbv1.CreateVirtualServiceRequest{Service: &edgelbv1.VirtualService{
			Tenant: tenant, Name: name, Ports: []*edgelbv1.Port{{Port: 80}},
		}})
		return err
	}
	for _, n := range []string{"one", "two"} {
		if err := create("t", n); err != nil {
			t.Fatalf("create %s (within the limit of 2): %v", n, err)
		}
	}
	err := create("t", "three")
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || errinfo.Reason(err) != errinfo.TenantServiceLimit {
		t.Fatalf("the third service of tenant t: %v (reason %q); want ResourceExhausted %s", err, errinfo.Reason(err), errinfo.TenantServiceLimit)
	}
	if ei, _ := errinfo.Of(err); ei.Metadata["tenant"] != "t" || ei.Metadata["limit"] != "2" {
		t.Errorf("ErrorInfo metadata %v; want tenant t, limit 2", ei.Metadata)
	}
	for _, want := range []string{"tenant t", "already has 2 virtual services", "auth.maxServicesPerTenant"} {
		if !strings.Contains(st.Message(), want) {
			t.Errorf("refusal %q does not say %q", st.Message(), want)
		}
	}
	if err := create("u", "one"); err != nil {
		t.Errorf("another tenant's first service: %v", err)
	}
}

// Plaintext must never be silent: newSecurity warns when it runs without TLS
// (here the no-argument default, on loopback).
func TestPlaintextIsLoggedAsWarning(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	cfg := config.Default()
	sec, err := newSecurity(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if sec.reloader != nil || !sec.authz.Insecure {
		t.Fatalf("without tls files: reloader %v, insecure %v; want plaintext", sec.reloader, sec.authz.Insecure)
	}
	out := buf.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "PLAINTEXT") || !strings.Contains(out, cfg.APIAddr) {
		t.Errorf("plaintext start logged %q; want a WARN line saying PLAINTEXT with the addresses", out)
	}
}

// auth.identities in lbd's config file reaches the authorizer: a SPIFFE
// certificate gets the role and tenant mapped to it.
func TestConfigIdentityMapping(t *testing.T) {
	const spiffe = "spiffe://cluster-a.example/ns/kube-system/sa/cloud-controller-manager"
	path := filepath.Join(t.TempDir(), "lbd.yaml")
	yaml := "auth:\n  identities:\n    \"" + spiffe + "\": {role: cloud-provider, name: ccm-a, tenant: tenant-a}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	if err := cfg.Load(path); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sec, err := newSecurity(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(spiffe)
	for name, m := range map[string]auth.Mapping{"mapping": sec.mapping, "authorizer": sec.authz.Mapping} {
		id, err := auth.FromCert(&x509.Certificate{URIs: []*url.URL{u}}, m)
		want := auth.Identity{Role: auth.RoleCloudProvider, Name: "ccm-a", Tenant: "tenant-a"}
		if err != nil || id != want {
			t.Errorf("%s: FromCert = %+v, %v; want %+v", name, id, err, want)
		}
	}
}
