package auth

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"strings"
	"testing"
)

func certWithURIs(t *testing.T, uris ...string) *x509.Certificate {
	t.Helper()
	c := &x509.Certificate{Subject: pkix.Name{CommonName: "ccm"}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		c.URIs = append(c.URIs, u)
	}
	return c
}

// A certificate from another PKI (a SPIFFE ID) gets its role and tenant from
// auth.identities; a mapping also overrides an edgelb:// URI.
func TestFromCertMappedURI(t *testing.T) {
	const spiffe = "spiffe://cluster-a.example/ns/kube-system/sa/cloud-controller-manager"
	m := Mapping{
		spiffe:                     {Role: RoleCloudProvider, Name: "ccm-a", Tenant: "tenant-a"},
		"edgelb://admin/demoted":   {Role: RoleViewer, Name: "demoted"},
		"spiffe://other/ns/x/sa/y": {Role: RoleOperator, Name: "ops"},
	}
	for _, tc := range []struct {
		uris []string
		want Identity
	}{
		{[]string{spiffe}, Identity{Role: RoleCloudProvider, Name: "ccm-a", Tenant: "tenant-a"}},
		// The mapped URI wins over an unmapped one listed first.
		{[]string{"spiffe://unmapped/x", spiffe}, Identity{Role: RoleCloudProvider, Name: "ccm-a", Tenant: "tenant-a"}},
		{[]string{"edgelb://admin/demoted"}, Identity{Role: RoleViewer, Name: "demoted"}},
		{[]string{"edgelb://viewer/v", "spiffe://other/ns/x/sa/y"}, Identity{Role: RoleOperator, Name: "ops"}},
	} {
		got, err := FromCert(certWithURIs(t, tc.uris...), m)
		if err != nil || got != tc.want {
			t.Errorf("FromCert(%v) = %+v, %v; want %+v", tc.uris, got, err, tc.want)
		}
	}
	// A mapped tenant binds the caller like a cloud-provider certificate's name does.
	id, _ := FromCert(certWithURIs(t, spiffe), m)
	if got, err := TenantScope(WithIdentity(t.Context(), id), ""); err != nil || got != "tenant-a" {
		t.Errorf("TenantScope of the mapped identity = %q, %v; want tenant-a", got, err)
	}
	if _, err := FromCert(certWithURIs(t, "spiffe://unmapped/x"), m); err == nil || !strings.Contains(err.Error(), "auth.identities") {
		t.Errorf("an unmapped SPIFFE ID: %v; want a refusal pointing at auth.identities", err)
	}
}
