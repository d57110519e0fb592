package linearizability

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/edgelb/edgelb/internal/freeport"
	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// member is one lbd process on loopback (control plane only).
type member struct {
	id, api, raft, dir, cfg string
	join                    string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool // SIGSTOPped
	log     *syncBuffer

	conn *grpc.ClientConn
	vs   edgelbv1.VirtualServiceServiceClient
	cl   edgelbv1.ClusterServiceClient
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func newCluster(t *testing.T, lbd string, n int, yaml string) []*member {
	t.Helper()
	root := t.TempDir()
	var ms []*member
	for i := 1; i <= n; i++ {
		m := &member{
			id:   fmt.Sprintf("edge%d", i),
			api:  fmt.Sprintf("127.0.0.1:%d", freeport.Loopback(t)),
			raft: fmt.Sprintf("127.0.0.1:%d", freeport.Loopback(t)),
			dir:  filepath.Join(root, fmt.Sprintf("edge%d", i)),
			cfg:  filepath.Join(root, fmt.Sprintf("edge%d.yaml", i)),
			log:  &syncBuffer{},
		}
		if err := os.WriteFile(m.cfg, []byte(yaml), 0o644); err != nil {
			t.Fatalf("write %s: %v", m.cfg, err)
		}
		if i > 1 {
			m.join = ms[0].api
		}
		cc, err := grpc.NewClient(m.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("grpc client for %s: %v", m.api, err)
		}
		m.conn = cc
		m.vs = edgelbv1.NewVirtualServiceServiceClient(cc)
		m.cl = edgelbv1.NewClusterServiceClient(cc)
		ms = append(ms, m)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.kill()
			m.conn.Close()
		}
		if t.Failed() {
			for _, m := range ms {
				t.Logf("---- %s log (tail) ----\n%s", m.id, m.log.tail(4000))
			}
		}
	})
	for _, m := range ms {
		if err := m.start(lbd); err != nil {
			t.Fatal(err)
		}
	}
	return ms
}

func (m *member) start(lbd string) error {
	args := []string{"--id", m.id, "--config", m.cfg, "--data-dir", m.dir, "--api-addr", m.api, "--raft-addr", m.raft, "--data-plane", "none"}
	if m.join != "" {
		args = append(args, "--join", m.join)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprintf(m.log, "==== test: starting %s\n", m.id)
	cmd := exec.Command(lbd, args...)
	cmd.Stdout, cmd.Stderr = m.log, m.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", m.id, err)
	}
	m.cmd, m.exited, m.stopped = cmd, make(chan struct{}), false
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(cmd, m.exited)
	return nil
}

// signal sends sig to the running process; false when it is not running.
func (m *member) signal(sig syscall.Signal) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
	}
	if err := m.cmd.Process.Signal(sig); err != nil {
		return false
	}
	switch sig {
	case syscall.SIGSTOP:
		m.stopped = true
	case syscall.SIGCONT:
		m.stopped = false
	}
	return true
}

// kill SIGKILLs the process and waits until it is gone.
func (m *member) kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	fmt.Fprintf(m.log, "==== test: SIGKILL %s\n", m.id)
	cmd.Process.Kill()
	<-exited
}

func (m *member) alive() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// status is the member's own view of itself, or an error.
func (m *member) status(ctx context.Context) (*edgelbv1.MemberStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	r, err := m.cl.GetMemberStatus(ctx, &edgelbv1.GetMemberStatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("%s: member status: %w", m.id, err)
	}
	return r.Status, nil
}

// until retries f every 50 ms until it returns nil, or fails the test once ctx
// or d runs out.
func until(ctx context.Context, t *testing.T, d time.Duration, what string, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		err := f(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s: %v", what, d, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// settled waits until every member runs, names the same leader and has
// applied the same revision as the leader.
func settled(ctx context.Context, ms []*member) error {
	var leader string
	var rev uint64
	for i, m := range ms {
		st, err := m.status(ctx)
		if err != nil {
			return err
		}
		if st.LeaderId == "" {
			return fmt.Errorf("%s knows no leader", m.id)
		}
		if i == 0 {
			leader, rev = st.LeaderId, st.Revision
			continue
		}
		if st.LeaderId != leader || st.Revision != rev {
			return fmt.Errorf("%s: leader %s at revision %d; %s: leader %s at revision %d", ms[0].id, leader, rev, m.id, st.LeaderId, st.Revision)
		}
	}
	return nil
}

func voters(ctx context.Context, m *member) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	r, err := m.cl.ListMembers(ctx, &edgelbv1.ListMembersRequest{})
	if err != nil {
		return 0, fmt.Errorf("%s: list members: %w", m.id, err)
	}
	n := 0
	for _, x := range r.Members {
		if x.Suffrage == "voter" && x.ApiAddress != "" {
			n++
		}
	}
	return n, nil
}

func logTails(ms []*member) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "---- %s ----\n%s\n", m.id, m.log.tail(2000))
	}
	return b.String()
}
