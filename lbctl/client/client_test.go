package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

type pki struct {
	dir              string
	caPool           *x509.CertPool
	ca               *x509.Certificate
	caKey            *ecdsa.PrivateKey
	serverTLS        tls.Certificate
	caFile, certFile string
	keyFile          string
}

// newPKI writes a CA, a server certificate for "lbd.test" and a client
// certificate, as an operator would have them.
func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), caPool: x509.NewCertPool()}
	p.caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgelb test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.caPool.AddCert(p.ca)
	p.caFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	p.serverTLS = p.leaf(t, "server", []string{"lbd.test"}, x509.ExtKeyUsageServerAuth)
	client := p.leaf(t, "client", nil, x509.ExtKeyUsageClientAuth)
	p.certFile = p.write(t, "client.pem", "CERTIFICATE", client.Certificate[0])
	kder, _ := x509.MarshalECPrivateKey(client.PrivateKey.(*ecdsa.PrivateKey))
	p.keyFile = p.write(t, "client-key.pem", "EC PRIVATE KEY", kder)
	return p
}

func (p *pki) leaf(t *testing.T, cn string, dns []string, usage x509.ExtKeyUsage) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type leaderOnly struct {
	edgelbv1.UnimplementedClusterServiceServer
}

func (leaderOnly) GetLeader(context.Context, *edgelbv1.GetLeaderRequest) (*edgelbv1.GetLeaderResponse, error) {
	return &edgelbv1.GetLeaderResponse{Leader: &edgelbv1.Member{Id: "lb1"}}, nil
}

func serve(t *testing.T, opts ...grpc.ServerOption) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	edgelbv1.RegisterClusterServiceServer(s, leaderOnly{})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	addr := serve(t, grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{p.serverTLS}, ClientCAs: p.caPool, ClientAuth: tls.RequireAndVerifyClientCert,
	})))
	ctx := context.Background()
	o := Options{Endpoints: []string{addr}, ConnectTimeout: 3 * time.Second, CAFile: p.caFile, CertFile: p.certFile, KeyFile: p.keyFile, ServerName: "lbd.test"}
	c, err := Dial(ctx, o)
	if err != nil {
		t.Fatalf("mTLS dial: %v", err)
	}
	defer c.Close()
	if r, err := c.Cluster.GetLeader(ctx, &edgelbv1.GetLeaderRequest{}); err != nil || r.Leader.Id != "lb1" {
		t.Fatalf("GetLeader over mTLS: %v %v", r, err)
	}
	// Without a client certificate the server refuses the handshake.
	noCert := o
	noCert.CertFile, noCert.KeyFile = "", ""
	if c, err := Dial(ctx, noCert); err == nil {
		_, err = c.Cluster.GetLeader(ctx, &edgelbv1.GetLeaderRequest{})
		c.Close()
		if err == nil {
			t.Error("a client without certificate got an answer")
		}
	}
	// Plaintext against a TLS server does not connect, and says TLS is why.
	if _, err := Dial(ctx, Options{Endpoints: []string{addr}, ConnectTimeout: time.Second}); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "requires TLS") {
		t.Errorf("plaintext to TLS server: %v", err)
	}
	if _, err := Dial(ctx, Options{Endpoints: []string{addr}, CertFile: p.certFile}); err == nil || !strings.Contains(err.Error(), "together") {
		t.Errorf("cert without key: %v", err)
	}
}

func TestFirstAnsweringEndpoint(t *testing.T) {
	good := serve(t)
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := lis.Addr().String()
	lis.Close()
	c, err := Dial(context.Background(), Options{Endpoints: []string{dead, good}, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Endpoint != good {
		t.Errorf("endpoint = %s, want %s", c.Endpoint, good)
	}
	_, err = Dial(context.Background(), Options{Endpoints: []string{dead}, ConnectTimeout: 2 * time.Second})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("dead endpoint: %v", err)
	}
}

// vsServer answers ListVirtualServices with one service named after it, or
// refuses like a member that cannot vouch for its replica.
type vsServer struct {
	edgelbv1.UnimplementedVirtualServiceServiceServer
	name   string
	refuse string // an ErrorInfo reason, or "" to answer
	calls  int
}

func (v *vsServer) ListVirtualServices(context.Context, *edgelbv1.ListVirtualServicesRequest) (*edgelbv1.ListVirtualServicesResponse, error) {
	v.calls++
	if v.refuse != "" {
		st, _ := status.New(codes.Unavailable, "refused by "+v.name).WithDetails(&errdetails.ErrorInfo{Reason: v.refuse, Domain: errinfo.Domain})
		return nil, st.Err()
	}
	return &edgelbv1.ListVirtualServicesResponse{Services: []*edgelbv1.VirtualService{{Name: v.name}}}, nil
}

func (v *vsServer) CreateVirtualService(context.Context, *edgelbv1.CreateVirtualServiceRequest) (*edgelbv1.CreateVirtualServiceResponse, error) {
	v.calls++
	st, _ := status.New(codes.Unavailable, "no leader").WithDetails(&errdetails.ErrorInfo{Reason: errinfo.NoLeader, Domain: errinfo.Domain})
	return nil, st.Err()
}

func serveVS(t *testing.T, v *vsServer) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	edgelbv1.RegisterVirtualServiceServiceServer(s, v)
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// TestRefusedReadMovesToNextEndpoint: a read refused by a member that cannot
// vouch for its replica is answered by the next endpoint that can; writes
// stay where they were sent, and when no member can answer the first
// refusal is what the caller sees.
func TestRefusedReadMovesToNextEndpoint(t *testing.T) {
	lone := &vsServer{name: "lone", refuse: errinfo.NoLeader}
	removed := &vsServer{name: "removed", refuse: errinfo.RemovedMember}
	good := &vsServer{name: "good"}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := lis.Addr().String()
	lis.Close()
	ctx := context.Background()
	c, err := Dial(ctx, Options{Endpoints: []string{serveVS(t, lone), dead, serveVS(t, removed), serveVS(t, good)}, ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.VirtualServices.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{})
	if err != nil || len(resp.Services) != 1 || resp.Services[0].Name != "good" {
		t.Fatalf("list = %v, %v; want the answer of the member that can vouch for its replica", resp, err)
	}
	if lone.calls != 1 || removed.calls != 1 {
		t.Errorf("calls: lone %d, removed %d; want one each", lone.calls, removed.calls)
	}
	// A write is not moved.
	if _, err := c.VirtualServices.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{}); RefusedReason(err) != errinfo.NoLeader || good.calls != 1 {
		t.Errorf("create = %v (good called %d times); want lone's refusal, nothing sent elsewhere", err, good.calls)
	}
	// Nobody can answer: the first member's refusal.
	c2, err := Dial(ctx, Options{Endpoints: []string{serveVS(t, &vsServer{name: "a", refuse: errinfo.NoLeader}), serveVS(t, &vsServer{name: "b", refuse: errinfo.NotCaughtUp})}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := c2.VirtualServices.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{}); RefusedReason(err) != errinfo.NoLeader || !strings.Contains(status.Convert(err).Message(), "refused by a") {
		t.Errorf("list with every member refusing = %v; want the first one's refusal", err)
	}
}
