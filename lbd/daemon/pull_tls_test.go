package daemon_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/lbd/lbdtest"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
)

// On a real member's raft port with mutual TLS, PushConnections answers
// another member asking as itself, and refuses a member asking as another
// (PermissionDenied) and any identity that is no member.
func TestPushConnectionsOverTLS(t *testing.T) {
	c := lbdtest.StartCluster(t, 2)
	m, lb2 := c.Members[0], c.Members[1]
	// lb2's own member certificate (lbdtest hands out client identities only).
	asLB2 := func() *tls.Config {
		pair, err := tls.LoadX509KeyPair(lb2.Config.TLS.CertFile, lb2.Config.TLS.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		ca, err := os.ReadFile(lb2.Config.TLS.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	call := func(role, name, from string) (*raftv1.PushConnectionsResponse, error) {
		tc := asLB2()
		if role != "member" {
			tc = c.ClientTLS(t, role, name)
		}
		cc, err := grpc.NewClient(m.Config.RaftAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return raftv1.NewLivenessServiceClient(cc).PushConnections(ctx, &raftv1.PushConnectionsRequest{From: from, Vips: []string{"192.0.2.1"}})
	}
	resp, err := call("member", "lb2", "lb2")
	if err != nil {
		t.Fatalf("member lb2 asking as itself: %v", err)
	}
	// Data plane "none": nothing to send, every VIP asked about answered.
	if resp.From != m.ID || len(resp.Sent) != 1 || resp.Sent["192.0.2.1"] != 0 {
		t.Errorf("answer %v, want from %s with 192.0.2.1: 0", resp, m.ID)
	}
	if _, err := call("member", "lb2", "lb3"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("member lb2 asking as lb3: %v, want PermissionDenied", err)
	}
	// The raft port admits member certificates only: an admin's is refused
	// at the handshake, before any handler.
	if _, err := call("admin", "test-admin", "lb2"); err == nil {
		t.Error("an admin's certificate was answered on the raft port")
	}
}
