package lbclient

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/lbdtest"
)

// The client speaks mutual TLS with the files it is given, to a real lbd
// that requires it; a plaintext client does not get through, and a missing
// key fails at start.
func TestMutualTLS(t *testing.T) {
	lbd := lbdtest.StartCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c := newClient(t, lbd, Options{Endpoints: lbd.Endpoints()})
	if _, err := c.Get(ctx, "t", "x"); status.Code(err) != codes.NotFound {
		t.Fatalf("over mutual TLS: %v, want NotFound from the server", err)
	}

	plain, err := New(Options{Endpoints: lbd.Endpoints(), Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.Get(ctx, "t", "x"); status.Code(err) == codes.NotFound || err == nil {
		t.Fatalf("plaintext client reached a TLS server: %v", err)
	}

	f := lbd.ClientFiles(t, "cloud-provider", "t")
	if _, err := New(Options{Endpoints: []string{"127.0.0.1:1"}, CAFile: f.CA, CertFile: f.Cert, KeyFile: filepath.Join(t.TempDir(), "missing.key")}); err == nil {
		t.Fatal("a missing key file must fail at start, not at the first call")
	}
}
