package certs

import (
	"path/filepath"
	"testing"
	"time"
)

// Issue and NewCA refuse what would make a useless or dangerous certificate,
// for every caller, not only the lbd certs command.
func TestIssueRefusesBadRequests(t *testing.T) {
	if _, err := NewCA("x", -time.Hour); err == nil {
		t.Error("NewCA with a negative validity succeeded")
	}
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, req := range map[string]Request{
		"path":                {Role: "admin", Name: "../escaped"},
		"empty":               {Role: "admin", Name: ""},
		"empty label":         {Role: "admin", Name: "a..b"},
		"trailing dot":        {Role: "admin", Name: "alice."},
		"member without host": {Role: "member", Name: "edge1"},
		"bad host":            {Role: "member", Name: "edge1", Hosts: []string{"not a host"}},
		"negative validity":   {Role: "admin", Name: "alice", Validity: -time.Hour},
		"unknown role":        {Role: "root", Name: "alice"},
	} {
		if _, err := ca.Issue(req); err == nil {
			t.Errorf("%s: Issue(%+v) succeeded", name, req)
		}
	}
	for _, req := range []Request{
		{Role: "member", Name: "edge1", Hosts: []string{"127.0.0.1", "edge1.example"}},
		{Role: "admin", Name: "alice.ops"},
		{Role: "cloud-provider", Name: "cluster-a"}, // zero validity: the default year
	} {
		if _, err := ca.Issue(req); err != nil {
			t.Errorf("Issue(%+v): %v", req, err)
		}
	}
	// Save never writes outside its directory, whatever base it is given.
	is, _ := ca.Issue(Request{Role: "admin", Name: "alice"})
	dir := t.TempDir()
	for _, base := range []string{"../x", "a/b", "..", ""} {
		if err := is.Save(filepath.Join(dir, "out"), base, false); err == nil {
			t.Errorf("Save with base %q succeeded", base)
		}
	}
}
