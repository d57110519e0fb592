package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/edgelb/edgelb/internal/logcapture"
	raftv1 "github.com/edgelb/edgelb/proto/edgelb/raft/v1"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
	"github.com/edgelb/edgelb/raft/errinfo"
)

// rawApply sends the command of issue 18 — tenant "", name "raw plain!\n",
// protocol 99, port 0, backend 255.255.255.255, weight 999999, scheduler 42 —
// straight to PeerService.Apply at addr.
func rawApply(t *testing.T, addr string, creds credentials.TransportCredentials) (*raftv1.ApplyResponse, error) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return raftv1.NewPeerServiceClient(cc).Apply(ctx, &raftv1.ApplyRequest{Command: &raftv1.Command{Version: 1,
		Op: &raftv1.Command_CreateVirtualService{CreateVirtualService: &raftv1.CreateVirtualService{Service: &edgelbv1.VirtualService{
			Tenant: "", Name: "raw plain!\n", Vip: "192.0.2.5",
			Ports:     []*edgelbv1.Port{{Protocol: 99, Port: 0}},
			Backends:  []*edgelbv1.Backend{{Address: "255.255.255.255", Weight: 999999}},
			Scheduler: 42,
		}}}}})
}

func lbd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(bin, "lbd"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("lbd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// creds returns lbctl's TLS flags for the certificate NAME in dir.
func creds(dir, name string) []string {
	return []string{"--ca-file", filepath.Join(dir, "ca.crt"), "--cert-file", filepath.Join(dir, name+".crt"), "--key-file", filepath.Join(dir, name+".key")}
}

func tlsClient(t *testing.T, caDir, certDir, name string) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, name+".crt"), filepath.Join(certDir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	pem, _ := os.ReadFile(filepath.Join(caDir, "ca.crt"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}}
}

// handshake dials addr with cfg and completes a TLS 1.3 handshake including the
// server's verdict on our certificate (which arrives with the first read).
func handshake(addr string, cfg *tls.Config) (*tls.ConnectionState, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, err = c.Read(make([]byte, 1))
	if err != nil && !strings.Contains(err.Error(), "timeout") {
		return nil, err
	}
	st := c.ConnectionState()
	return &st, nil
}

func TestClusterSecurity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three lbd processes; skipped with -short")
	}
	pki := t.TempDir()
	lbd(t, "certs", "ca", "--out", pki)
	for _, c := range []struct{ role, name string }{
		{"member", "edge1"}, {"member", "edge2"}, {"member", "edge3"},
		{"admin", "alice"}, {"viewer", "victor"}, {"cloud-provider", "tenant-a"}, {"cloud-provider", "tenant-b"},
		{"operator", "oscar"},
	} {
		lbd(t, "certs", "issue", "--ca", pki, "--role", c.role, "--name", c.name, "--host", "127.0.0.1", "--out", pki)
	}
	// A certificate with the right shape from a CA the cluster does not trust.
	rogue := t.TempDir()
	lbd(t, "certs", "ca", "--out", rogue)
	lbd(t, "certs", "issue", "--ca", rogue, "--role", "admin", "--name", "mallory", "--host", "127.0.0.1", "--out", rogue)
	os.WriteFile(filepath.Join(rogue, "ca.crt"), must(os.ReadFile(filepath.Join(pki, "ca.crt"))), 0o644)

	c := newCluster(t, 3)
	for _, m := range c.members {
		m.extra = []string{"--tls-ca", filepath.Join(pki, "ca.crt"), "--tls-cert", filepath.Join(pki, m.id+".crt"), "--tls-key", filepath.Join(pki, m.id+".key")}
		m.start(t)
	}
	all := c.endpoints()
	admin := func(args ...string) []string { return append(creds(pki, "alice"), args...) }
	eventually(t, 30*time.Second, "TLS cluster forms", func() error {
		out, errs, code := lbctl(t, all, admin("member", "list", "-o", "json")...)
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, errs)
		}
		if n := strings.Count(out, `"suffrage": "voter"`) + strings.Count(out, `"suffrage":"voter"`); n != 3 {
			return fmt.Errorf("%d voters", n)
		}
		return nil
	})
	mustLbctl(t, all, admin("pool", "create", "a", "--range", "192.0.2.0/28", "--tenant-allowed", "tenant-a")...)
	mustLbctl(t, all, admin("pool", "create", "b", "--range", "198.51.100.0/28", "--tenant-allowed", "tenant-b")...)

	t.Run("no client certificate is refused", func(t *testing.T) {
		_, errs, code := lbctl(t, all, "--ca-file", filepath.Join(pki, "ca.crt"), "vip", "list")
		if code == 0 {
			t.Fatalf("listing without a client certificate succeeded")
		}
		_, errs2, code2 := lbctl(t, all, "vip", "list") // plaintext
		if code2 == 0 {
			t.Fatalf("plaintext listing succeeded: %s", errs2)
		}
		if code != 7 || !strings.Contains(errs, "requires a client certificate") || code2 != 7 || !strings.Contains(errs2, "requires TLS") {
			t.Errorf("without certificate: exit %d %q, plaintext: exit %d %q; want 7 saying what is missing", code, errs, code2, errs2)
		}
	})

	t.Run("a certificate from another CA is refused", func(t *testing.T) {
		_, errs, code := lbctl(t, all, append(creds(rogue, "mallory"), "pool", "list")...)
		if code == 0 {
			t.Fatalf("a foreign-CA admin was served: %s", errs)
		}
		if code != 7 || !strings.Contains(errs, "the server does not trust the CA that issued the client certificate") || !strings.Contains(errs, "--cert-file "+filepath.Join(rogue, "mallory.crt")) {
			t.Errorf("foreign-CA admin: exit %d %q; want 7 naming the client certificate and why", code, errs)
		}
		// The server's TLS alert says the same.
		if _, err := handshake(c.members[0].api, tlsClient(t, pki, rogue, "mallory")); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
			t.Errorf("foreign-CA handshake: %v; want the server's unknown certificate authority alert", err)
		}
	})

	t.Run("the server's certificate fails: exit 7 naming it and why", func(t *testing.T) {
		other := t.TempDir()
		lbd(t, "certs", "ca", "--out", other)
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"another cluster's CA in --ca-file", []string{"--ca-file", filepath.Join(other, "ca.crt"), "--cert-file", filepath.Join(pki, "alice.crt"), "--key-file", filepath.Join(pki, "alice.key")},
				"is not signed by the CA in --ca-file " + filepath.Join(other, "ca.crt")},
			{"server name mismatch", admin("--server-name", "lbd.example"), "valid for 127.0.0.1, not for --server-name lbd.example"},
		} {
			_, errs, code := lbctl(t, all[:1], append(tc.args, "vip", "list")...)
			if code != 7 || !strings.Contains(errs, "the server's certificate (edgelb://member/") || !strings.Contains(errs, tc.want) {
				t.Errorf("%s: exit %d %q; want 7 with %q", tc.name, code, errs, tc.want)
			}
		}
	})

	t.Run("viewer reads but may not write", func(t *testing.T) {
		mustLbctl(t, all, append(creds(pki, "victor"), "vip", "list")...)
		_, errs, code := lbctl(t, all, append(creds(pki, "victor"), "vip", "create", "x", "--tenant", "tenant-a", "--port", "tcp/80")...)
		if code != 7 || !strings.Contains(errs, "may not") {
			t.Fatalf("viewer create: exit %d %q; want 7 (PermissionDenied)", code, errs)
		}
	})

	t.Run("tenants are isolated", func(t *testing.T) {
		ta := func(args ...string) []string { return append(creds(pki, "tenant-a"), args...) }
		tb := func(args ...string) []string { return append(creds(pki, "tenant-b"), args...) }
		out := mustLbctl(t, all, ta("vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.21", "-o", "json")...)
		if !strings.Contains(out, `"tenant-a"`) || !strings.Contains(out, "192.0.2.") {
			t.Fatalf("tenant-a's VIP is not in its tenant and pool: %s", out)
		}
		if out := mustLbctl(t, all, tb("vip", "list", "-o", "json")...); strings.Contains(out, "web") {
			t.Fatalf("tenant-b sees tenant-a's VIP: %s", out)
		}
		for _, args := range [][]string{
			{"vip", "get", "web", "--tenant", "tenant-a"},
			{"vip", "delete", "web", "--tenant", "tenant-a"},
			{"vip", "list", "--tenant", "tenant-a"},
		} {
			if _, errs, code := lbctl(t, all, tb(args...)...); code != 7 {
				t.Errorf("tenant-b %s: exit %d (%s); want 7", strings.Join(args, " "), code, errs)
			}
		}
		// B cannot take A's address, nor allocate from A's pool. The address is
		// refused as outside B's pools (FailedPrecondition, exit 6), the same
		// answer as for an address in no pool: pool a stays hidden from B.
		if _, errs, code := lbctl(t, all, tb("vip", "create", "steal", "--vip", "192.0.2.1", "--port", "tcp/81")...); code != 6 || !strings.Contains(errs, "not in any address pool open to tenant tenant-b") {
			t.Errorf("tenant-b requesting tenant-a's address: exit %d (%s); want 6 (FailedPrecondition: not in any address pool open to tenant tenant-b)", code, errs)
		}
		if _, errs, code := lbctl(t, all, tb("vip", "create", "pool-a", "--pool", "a", "--port", "tcp/81")...); code != 7 {
			t.Errorf("tenant-b allocating from pool a: exit %d (%s); want 7", code, errs)
		}
		mustLbctl(t, all, ta("vip", "get", "web")...)

		// Pools closed to a tenant are hidden from it: by name, and in a watch.
		if _, errs, code := lbctl(t, all, ta("pool", "get", "b")...); code != 4 || !strings.Contains(errs, "address pool b not found") {
			t.Errorf("tenant-a getting pool b: exit %d (%s); want 4 (NotFound)", code, errs)
		}
		mustLbctl(t, all, ta("pool", "get", "a")...)
		mustLbctl(t, all, tb("vip", "create", "web-b", "--port", "tcp/80", "-o", "json")...)
		events := watchUntil(t, all, "vip tenant-a/web ", ta("watch")...)
		if !strings.Contains(events, " pool a ") || strings.Contains(events, " pool b ") || strings.Contains(events, "tenant-b") {
			t.Errorf("tenant-a's watch shows pool b or tenant-b's services, or misses pool a:\n%s", events)
		}

		// A member's status lists the VIPs it owns; a tenant sees only its own.
		vipOf := func(args ...string) string {
			v, _ := decode(t, mustLbctl(t, all, append(args, "-o", "json")...))["vip"].(string)
			return v
		}
		vipA, vipB := vipOf(ta("vip", "get", "web")...), vipOf(tb("vip", "get", "web-b")...)
		eventually(t, 20*time.Second, "both tenants' VIPs are owned", func() error {
			out := mustLbctl(t, all, admin("member", "status", "--all", "-o", "json")...)
			if !strings.Contains(out, `"`+vipA+`"`) || !strings.Contains(out, `"`+vipB+`"`) {
				return fmt.Errorf("owned VIPs do not include %s and %s: %s", vipA, vipB, out)
			}
			return nil
		})
		out = mustLbctl(t, all, ta("member", "status", "--all", "-o", "json")...)
		if !strings.Contains(out, `"`+vipA+`"`) || strings.Contains(out, `"`+vipB+`"`) {
			t.Errorf("tenant-a's member status: want its VIP %s and not tenant-b's %s:\n%s", vipA, vipB, out)
		}
	})

	// Issue 23: a cloud provider renews only its own tenant's heartbeat and
	// sees only its own tenant; deleting a tenant is for operators.
	t.Run("tenant heartbeats and gc are scoped", func(t *testing.T) {
		tenants := func(who string) edgelbv1.TenantServiceClient {
			cc, err := grpc.NewClient(c.members[1].api, grpc.WithTransportCredentials(credentials.NewTLS(tlsClient(t, pki, pki, who))))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cc.Close() })
			return edgelbv1.NewTenantServiceClient(cc)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := tenants("tenant-a").RenewTenantHeartbeat(ctx, &edgelbv1.RenewTenantHeartbeatRequest{}); err != nil {
			t.Fatalf("tenant-a renewing its own heartbeat: %v", err)
		}
		if _, err := tenants("tenant-b").RenewTenantHeartbeat(ctx, &edgelbv1.RenewTenantHeartbeatRequest{Tenant: "tenant-a"}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("tenant-b renewing tenant-a's heartbeat: %v; want PermissionDenied", err)
		}
		if _, err := tenants("victor").RenewTenantHeartbeat(ctx, &edgelbv1.RenewTenantHeartbeatRequest{Tenant: "tenant-a"}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("a viewer renewing a heartbeat: %v; want PermissionDenied", err)
		}
		l, err := tenants("tenant-b").ListTenants(ctx, &edgelbv1.ListTenantsRequest{})
		if err != nil || len(l.Tenants) != 1 || l.Tenants[0].Name != "tenant-b" {
			t.Errorf("tenant-b's tenant list: %v %v; want only tenant-b", l, err)
		}
		out := mustLbctl(t, all, admin("tenant", "list", "-o", "json")...)
		if !strings.Contains(out, `"tenant-a"`) || !strings.Contains(out, `"tenant-b"`) || !strings.Contains(out, "lastSeen") {
			t.Errorf("admin's tenant list lacks a tenant or tenant-a's heartbeat:\n%s", out)
		}
		for _, who := range []string{"tenant-a", "victor"} {
			if _, errs, code := lbctl(t, all, append(creds(pki, who), "tenant", "gc", "tenant-a", "--force", "--yes")...); code != 7 || !strings.Contains(errs, "may not") {
				t.Errorf("%s running tenant gc: exit %d %s; want 7 (PermissionDenied)", who, code, errs)
			}
		}
		oscar := func(args ...string) []string { return append(creds(pki, "oscar"), args...) }
		if _, errs, code := lbctl(t, all, oscar("tenant", "gc", "tenant-a", "--yes")...); code != 6 || !strings.Contains(errs, "TENANT_NOT_SILENT") && !strings.Contains(errs, "less than the 10m0s") {
			t.Errorf("operator gc of a live tenant: exit %d %s; want 6 (FailedPrecondition)", code, errs)
		}
		if _, errs, code := lbctl(t, all, oscar("tenant", "gc", "tennant-a", "--force", "--yes")...); code != 4 || !strings.Contains(errs, "known tenants: tenant-a, tenant-b") {
			t.Errorf("operator gc of a misspelt tenant: exit %d %s; want 4 naming the known tenants", code, errs)
		}
		if out := mustLbctl(t, all, admin("vip", "list", "--tenant", "tenant-a", "-o", "json")...); !strings.Contains(out, `"web"`) {
			t.Errorf("a refused gc deleted tenant-a's services: %s", out)
		}
	})

	t.Run("the raft port accepts only members", func(t *testing.T) {
		raftAddr := c.members[0].raft
		if _, err := handshake(raftAddr, tlsClient(t, pki, pki, "alice")); err == nil {
			t.Fatal("an admin (non-member) certificate completed a handshake with the raft port")
		}
		if _, err := handshake(raftAddr, tlsClient(t, pki, pki, "edge2")); err != nil {
			t.Fatalf("a member certificate was refused by the raft port: %v", err)
		}
	})

	// Issue 18: PeerService takes raw raft commands; only members may call it.
	t.Run("PeerService only for members", func(t *testing.T) {
		for _, who := range []string{"alice", "oscar", "victor", "tenant-a"} {
			for _, m := range c.members {
				_, err := rawApply(t, m.api, credentials.NewTLS(tlsClient(t, pki, pki, who)))
				if status.Code(err) != codes.PermissionDenied {
					t.Errorf("%s calling PeerService.Apply on %s's API port: %v; want PermissionDenied", who, m.id, err)
				}
			}
			if _, err := handshake(c.members[0].raft, tlsClient(t, pki, pki, who)); err == nil {
				t.Errorf("%s completed a TLS handshake with the raft port, where PeerService is served", who)
			}
		}
		// A member reaches it on the raft port; even so, the FSM refuses the
		// malformed command of issue 18 (or a follower says it does not lead).
		refused := 0
		for _, m := range c.members {
			resp, err := rawApply(t, m.raft, credentials.NewTLS(tlsClient(t, pki, pki, "edge2")))
			switch {
			case status.Code(err) == codes.Unavailable && errinfo.Reason(err) == errinfo.NotLeader:
			case err != nil:
				t.Errorf("member calling PeerService.Apply on %s's raft port: %v", m.id, err)
			case codes.Code(resp.Code) != codes.InvalidArgument:
				t.Errorf("raw command of issue 18 on %s's raft port: %v %q; want InvalidArgument", m.id, codes.Code(resp.Code), resp.Message)
			default:
				refused++
			}
		}
		if refused != 1 {
			t.Errorf("%d members (want the leader alone) served PeerService on the raft port and refused the raw command", refused)
		}
		if out := mustLbctl(t, all, admin("vip", "list", "-A", "-o", "json")...); strings.Contains(out, "raw plain") {
			t.Errorf("the raw service was stored: %s", out)
		}
	})

	t.Run("a rotated certificate is served without a restart", func(t *testing.T) {
		m := c.members[0]
		// The API and the raft port serve the same member certificate.
		ports := []struct{ name, addr, client string }{{"API", m.api, "alice"}, {"raft", m.raft, "edge2"}}
		before := map[string]string{}
		for _, p := range ports {
			st, err := handshake(p.addr, tlsClient(t, pki, pki, p.client))
			if err != nil {
				t.Fatalf("%s port before rotation: %v", p.name, err)
			}
			before[p.name] = st.PeerCertificates[0].SerialNumber.String()
		}
		lbd(t, "certs", "issue", "--ca", pki, "--role", "member", "--name", m.id, "--host", "127.0.0.1", "--out", pki, "--force")
		for _, p := range ports {
			eventually(t, 10*time.Second, "new certificate served on the "+p.name+" port", func() error {
				st, err := handshake(p.addr, tlsClient(t, pki, pki, p.client))
				if err != nil {
					return err
				}
				if st.PeerCertificates[0].SerialNumber.String() == before[p.name] {
					return fmt.Errorf("still the old certificate (serial %s)", before[p.name])
				}
				return nil
			})
		}
		mustLbctl(t, []string{m.api}, admin("vip", "list")...)
		// The cluster still commits through the rotated member, and the write
		// reaches every member's replica over raft.
		mustLbctl(t, []string{m.api}, admin("vip", "create", "rotated", "--tenant", "tenant-a", "--port", "tcp/82")...)
		for _, o := range c.members {
			eventually(t, 10*time.Second, o.id+" has the write made after rotation", func() error {
				if _, errs, code := lbctl(t, []string{o.api}, admin("vip", "get", "rotated", "--tenant", "tenant-a")...); code != 0 {
					return fmt.Errorf("exit %d: %s", code, errs)
				}
				return nil
			})
		}
	})
}

// watchUntil runs lbctl watch until its output holds until (or 20 s pass),
// then stops it, and returns what it printed.
func watchUntil(t *testing.T, endpoints []string, until string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "lbctl"), append([]string{"--endpoints", strings.Join(endpoints, ",")}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	var out logcapture.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start lbctl watch: %v", err)
	}
	for ctx.Err() == nil && !strings.Contains(out.String(), until) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	cmd.Wait()
	if !strings.Contains(out.String(), until) {
		t.Fatalf("lbctl %s never printed %q:\n%s", strings.Join(args, " "), until, out.String())
	}
	return out.String()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
