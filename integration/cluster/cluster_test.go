// Package cluster tests a real three-member lbd cluster on loopback, driven by
// the real lbctl binary: bootstrap and join, forwarding of writes from
// followers, refusals with their exit codes, SIGKILL of the leader, restart of
// one and of all members, and state that survives restarts through snapshots.
package cluster

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgelb/edgelb/integration/freeport"
)

var bin string // directory with lbd and lbctl

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "edgelb-cluster-bin")
	if err != nil {
		panic(err)
	}
	bin = dir
	code := func() int {
		if !testing.Short() {
			cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/edgelb/edgelb/lbd", "github.com/edgelb/edgelb/lbctl")
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "build lbd and lbctl:", err)
				return 1
			}
		}
		return m.Run()
	}()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t testing.TB) int { return freeport.Loopback(t) }

type member struct {
	id, api, raft, dir, cfg string
	join                    []string
	extra                   []string // more lbd flags
	cmd                     *exec.Cmd
	log                     *bytes.Buffer
}

type cluster struct {
	t       testing.TB
	members []*member
}

func newCluster(t testing.TB, n int) *cluster {
	c := &cluster{t: t}
	root := t.TempDir()
	for i := 1; i <= n; i++ {
		m := &member{
			id:   fmt.Sprintf("edge%d", i),
			api:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			raft: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			dir:  filepath.Join(root, fmt.Sprintf("edge%d", i)),
		}
		// A low snapshot threshold makes restarts go through snapshot restore.
		m.cfg = filepath.Join(root, m.id+".yaml")
		os.WriteFile(m.cfg, []byte("raft:\n  snapshotThreshold: 16\n  snapshotInterval: 200ms\nownership:\n  lease: 1s\n  grace: 1200ms\n"), 0o644)
		if i > 1 {
			m.join = []string{c.members[0].api}
		}
		c.members = append(c.members, m)
	}
	t.Cleanup(func() {
		for _, m := range c.members {
			m.kill()
		}
		if t.Failed() {
			for _, m := range c.members {
				t.Logf("---- %s log (tail) ----\n%s", m.id, tail(m.log.String(), 3000))
			}
		}
	})
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (m *member) start(t testing.TB) {
	t.Helper()
	args := []string{"--id", m.id, "--config", m.cfg, "--data-dir", m.dir, "--api-addr", m.api, "--raft-addr", m.raft, "--data-plane", "none"}
	if len(m.join) > 0 {
		args = append(args, "--join", strings.Join(m.join, ","))
	}
	args = append(args, m.extra...)
	if m.log == nil {
		m.log = &bytes.Buffer{}
	}
	m.cmd = exec.Command(filepath.Join(bin, "lbd"), args...)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", m.id, err)
	}
}

func (m *member) kill() {
	if m.cmd != nil && m.cmd.Process != nil && m.cmd.ProcessState == nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
	}
}

func (m *member) stop(t *testing.T) {
	t.Helper()
	m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM", m.id, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not stop within 15s of SIGTERM", m.id)
	}
}

// lbctl runs the real CLI against endpoints and returns stdout, stderr and the exit code.
func lbctl(t *testing.T, endpoints []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "lbctl"), append([]string{"--endpoints", strings.Join(endpoints, ","), "--timeout", "20s"}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run lbctl: %v", err)
	}
	return out.String(), errb.String(), code
}

func mustLbctl(t *testing.T, endpoints []string, args ...string) string {
	t.Helper()
	out, errs, code := lbctl(t, endpoints, args...)
	if code != 0 {
		t.Fatalf("lbctl %s: exit %d: %s%s", strings.Join(args, " "), code, errs, out)
	}
	return out
}

func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return v
}

// eventually retries f until it returns nil or the time runs out.
func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cluster) endpoints(except ...*member) []string {
	var out []string
	for _, m := range c.members {
		skip := false
		for _, e := range except {
			skip = skip || e == m
		}
		if !skip {
			out = append(out, m.api)
		}
	}
	return out
}

func (c *cluster) leader(t *testing.T, eps []string) *member {
	t.Helper()
	var id string
	eventually(t, 15*time.Second, "a leader is elected", func() error {
		out, errs, code := lbctl(t, eps, "leader", "-o", "json")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, errs)
		}
		l, _ := decode(t, out)["leader"].(map[string]any)
		id, _ = l["id"].(string)
		if id == "" {
			return fmt.Errorf("no leader id in %s", out)
		}
		return nil
	})
	for _, m := range c.members {
		if m.id == id {
			return m
		}
	}
	t.Fatalf("leader %q is not a member", id)
	return nil
}

// specOnly drops what changes by itself (backend health, owner) from a
// vip list, leaving what a request could have changed.
func specOnly(t *testing.T, out string) string {
	t.Helper()
	vss := items(t, out)
	for _, vs := range vss {
		delete(vs, "owner")
		bs, _ := vs["backends"].([]any)
		for _, b := range bs {
			delete(b.(map[string]any), "health")
		}
	}
	b, _ := json.Marshal(vss)
	return string(b)
}

func items(t *testing.T, out string) []map[string]any {
	t.Helper()
	raw, _ := decode(t, out)["items"].([]any)
	var res []map[string]any
	for _, r := range raw {
		res = append(res, r.(map[string]any))
	}
	return res
}

func (c *cluster) waitVoters(t *testing.T, eps []string, n int) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%d voters registered", n), func() error {
		out, errs, code := lbctl(t, eps, "member", "list", "-o", "json")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, errs)
		}
		voters := 0
		for _, m := range items(t, out) {
			if m["suffrage"] == "voter" && m["apiAddress"] != nil {
				voters++
			}
		}
		if voters != n {
			return fmt.Errorf("%d voters: %s", voters, out)
		}
		return nil
	})
}

func vipOf(t *testing.T, eps []string, name string) map[string]any {
	t.Helper()
	return decode(t, mustLbctl(t, eps, "vip", "get", name, "-o", "json"))
}

func TestClusterLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three lbd processes; skipped with -short")
	}
	c := newCluster(t, 3)
	for _, m := range c.members {
		m.start(t)
	}
	all := c.endpoints()
	c.waitVoters(t, all, 3)
	leader := c.leader(t, all)
	var follower *member
	for _, m := range c.members {
		if m != leader {
			follower = m
			break
		}
	}
	viaFollower := []string{follower.api}

	t.Run("writes through a follower are forwarded", func(t *testing.T) {
		mustLbctl(t, viaFollower, "pool", "create", "public", "--range", "192.0.2.0/26")
		out := mustLbctl(t, viaFollower, "vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.21", "--backend", "10.0.0.22", "-o", "json")
		vs := decode(t, out)
		if vs["vip"] != "192.0.2.1" || vs["pool"] != "public" {
			t.Fatalf("created %v; want vip 192.0.2.1 from pool public", vs)
		}
		// Read-after-write on the member that took the write.
		if got := vipOf(t, viaFollower, "web"); got["generation"] != "1" {
			t.Fatalf("read back on the follower: %v", got)
		}
		// Every member converges.
		for _, m := range c.members {
			eventually(t, 5*time.Second, "replicated to "+m.id, func() error {
				_, errs, code := lbctl(t, []string{m.api}, "vip", "get", "web")
				if code != 0 {
					return fmt.Errorf("exit %d: %s", code, errs)
				}
				return nil
			})
		}
		eventually(t, 5*time.Second, "web gets an owner", func() error {
			if o, _ := vipOf(t, viaFollower, "web")["owner"].(string); o == "" {
				return fmt.Errorf("no owner yet")
			}
			return nil
		})
	})

	t.Run("bad input is refused with the documented exit codes and changes nothing", func(t *testing.T) {
		before := mustLbctl(t, all, "vip", "list", "-o", "json")
		cases := []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{"vip", "create", "web", "--port", "tcp/80"}, 5, "already exists"},
			{[]string{"vip", "create", "far", "--vip", "203.0.113.9", "--port", "tcp/80"}, 6, "not in any address pool"},
			{[]string{"vip", "create", "Bad_Name", "--port", "tcp/80"}, 3, "name"},
			{[]string{"vip", "get", "nope"}, 4, "not found"},
			{[]string{"pool", "delete", "public"}, 6, "in use"},
			{[]string{"pool", "create", "overlap", "--range", "192.0.2.10-192.0.2.12"}, 6, "overlap"},
		}
		for _, tc := range cases {
			_, errs, code := lbctl(t, viaFollower, tc.args...)
			if code != tc.code || !strings.Contains(strings.ToLower(errs), tc.msg) {
				t.Errorf("lbctl %s: exit %d, stderr %q; want exit %d mentioning %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.msg)
			}
		}
		if after := mustLbctl(t, all, "vip", "list", "-o", "json"); specOnly(t, after) != specOnly(t, before) {
			t.Errorf("refused requests changed the state:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("optimistic concurrency", func(t *testing.T) {
		_, errs, code := lbctl(t, viaFollower, "vip", "update", "web", "--scheduler", "rr", "--if-generation", "7")
		if code != 6 {
			t.Fatalf("update with a stale generation: exit %d (%s); want 6", code, errs)
		}
		mustLbctl(t, viaFollower, "vip", "update", "web", "--scheduler", "rr", "--if-generation", "1")
		if g := vipOf(t, viaFollower, "web")["generation"]; g != "2" {
			t.Fatalf("generation after update = %v, want 2", g)
		}
	})

	t.Run("planned moves: vip move and member drain", func(t *testing.T) {
		web := vipOf(t, all, "web")
		var target *member
		for _, m := range c.members {
			if m.id != web["owner"] {
				target = m
				break
			}
		}
		mustLbctl(t, viaFollower, "vip", "move", web["vip"].(string), target.id)
		if o := vipOf(t, viaFollower, "web")["owner"]; o != target.id {
			t.Fatalf("after vip move, owner %v; want %s", o, target.id)
		}
		// Sticky: a few assignment rounds later it is still there.
		time.Sleep(300 * time.Millisecond)
		if o := vipOf(t, all, "web")["owner"]; o != target.id {
			t.Fatalf("moved VIP went back to %v", o)
		}
		mustLbctl(t, viaFollower, "member", "drain", target.id, "--wait", "--wait-timeout", "15s")
		if o := vipOf(t, all, "web")["owner"]; o == target.id || o == "" {
			t.Fatalf("after draining %s, web is owned by %q", target.id, o)
		}
		if _, errs, code := lbctl(t, all, "vip", "move", web["vip"].(string), target.id); code != 6 {
			t.Errorf("moving a VIP to a draining member: exit %d (%s); want 6", code, errs)
		}
		mustLbctl(t, all, "member", "drain", target.id, "--undo")
	})

	// Enough writes to pass the snapshot threshold, so restarts restore from snapshots.
	for i := 0; i < 20; i++ {
		mustLbctl(t, all, "vip", "create", fmt.Sprintf("svc%02d", i), "--port", "tcp/443:30443", "--backend", "10.0.0.23")
	}

	t.Run("SIGKILL of the leader: a new leader takes writes and its VIPs move", func(t *testing.T) {
		leader = c.leader(t, all)
		owned := 0
		for _, vs := range items(t, mustLbctl(t, all, "vip", "list", "-o", "json")) {
			if vs["owner"] == leader.id {
				owned++
			}
		}
		leader.kill()
		rest := c.endpoints(leader)
		nl := c.leader(t, rest)
		if nl == leader {
			// The survivors may still name the dead leader briefly.
			eventually(t, 10*time.Second, "survivors elect a new leader", func() error {
				if c.leader(t, rest) == leader {
					return fmt.Errorf("still %s", leader.id)
				}
				return nil
			})
		}
		mustLbctl(t, rest, "vip", "create", "after-kill", "--port", "udp/53:30053", "--backend", "10.0.0.21")
		if owned > 0 {
			eventually(t, 15*time.Second, "VIPs of the dead leader move to survivors", func() error {
				for _, vs := range items(t, mustLbctl(t, rest, "vip", "list", "-o", "json")) {
					if vs["owner"] == leader.id {
						return fmt.Errorf("%s still owned by %s", vs["name"], leader.id)
					}
				}
				return nil
			})
		}
		// The killed member comes back from its data dir and catches up.
		leader.start(t)
		eventually(t, 15*time.Second, "restarted member catches up", func() error {
			_, errs, code := lbctl(t, []string{leader.api}, "vip", "get", "after-kill")
			if code != 0 {
				return fmt.Errorf("exit %d: %s", code, errs)
			}
			return nil
		})
	})

	t.Run("restart of every member loses nothing", func(t *testing.T) {
		before := items(t, mustLbctl(t, all, "vip", "list", "-o", "json"))
		for _, m := range c.members {
			m.stop(t)
		}
		for _, m := range c.members {
			m.start(t)
		}
		c.leader(t, all)
		var after []map[string]any
		eventually(t, 15*time.Second, "state back after a full restart", func() error {
			out, errs, code := lbctl(t, all, "vip", "list", "-o", "json")
			if code != 0 {
				return fmt.Errorf("exit %d: %s", code, errs)
			}
			after = items(t, out)
			if len(after) != len(before) {
				return fmt.Errorf("%d services, want %d", len(after), len(before))
			}
			return nil
		})
		for i := range before {
			if before[i]["name"] != after[i]["name"] || before[i]["vip"] != after[i]["vip"] || before[i]["generation"] != after[i]["generation"] {
				t.Errorf("service %d changed across restart: %v → %v", i, before[i], after[i])
			}
		}
		snaps, _ := filepath.Glob(filepath.Join(c.members[0].dir, "raft", "snapshots", "*"))
		if len(snaps) == 0 {
			t.Errorf("no raft snapshot was written under %s", c.members[0].dir)
		}
	})

	t.Run("a member cut off from the others withdraws its VIPs by itself", func(t *testing.T) {
		// Freeze two members: the third loses its quorum and its leader. Past the
		// lease it must stop serving what it owns, without anyone telling it.
		lone := c.members[0]
		status := func() []any {
			out := mustLbctl(t, []string{lone.api}, "member", "status", lone.id, "-o", "json")
			vips, _ := decode(t, out)["ownedVips"].([]any)
			return vips
		}
		eventually(t, 15*time.Second, lone.id+" owns a VIP", func() error {
			if len(status()) == 0 {
				mustLbctl(t, all, "vip", "move", vipOf(t, all, "svc00")["vip"].(string), lone.id)
				return fmt.Errorf("owns nothing yet")
			}
			return nil
		})
		for _, m := range c.members[1:] {
			m.cmd.Process.Signal(syscall.SIGSTOP)
		}
		defer func() {
			for _, m := range c.members[1:] {
				m.cmd.Process.Signal(syscall.SIGCONT)
			}
		}()
		eventually(t, 10*time.Second, lone.id+" fences itself", func() error {
			if v := status(); len(v) > 0 {
				return fmt.Errorf("still serving %v", v)
			}
			return nil
		})
		for _, m := range c.members[1:] {
			m.cmd.Process.Signal(syscall.SIGCONT)
		}
		eventually(t, 15*time.Second, lone.id+" serves again once the cluster is back", func() error {
			out, _, code := lbctl(t, all, "vip", "list", "-o", "json")
			if code != 0 {
				return fmt.Errorf("cluster not answering")
			}
			owns := false
			for _, vs := range items(t, out) {
				owns = owns || vs["owner"] == lone.id
			}
			if owns && len(status()) == 0 {
				return fmt.Errorf("owns VIPs in the table but serves none")
			}
			return nil
		})
	})

	t.Run("member removal", func(t *testing.T) {
		victim := c.members[2]
		mustLbctl(t, all, "member", "remove", victim.id)
		victim.kill()
		c.waitVoters(t, c.endpoints(victim), 2)
		mustLbctl(t, c.endpoints(victim), "vip", "create", "after-remove", "--port", "tcp/8080")
	})
}
