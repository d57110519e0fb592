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
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgelb/edgelb/internal/freeport"
	"github.com/edgelb/edgelb/lbd/config"
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

// startedCluster starts an n-member cluster (the first bootstraps, the
// others join it) and waits until all are voters; it returns every API
// endpoint too.
func startedCluster(t *testing.T, n int) (*cluster, []string) {
	c := newCluster(t, n)
	for _, m := range c.members {
		m.start(t)
	}
	all := c.endpoints()
	c.waitVoters(t, all, n)
	return c, all
}

// follower is a member other than leader.
func (c *cluster) follower(leader *member) *member {
	for _, m := range c.members {
		if m != leader {
			return m
		}
	}
	c.t.Fatalf("no member but the leader %s", leader.id)
	return nil
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
	return runLbctl(t, os.Environ(), append([]string{"--endpoints", strings.Join(endpoints, ","), "--timeout", "20s"}, args...)...)
}

// runLbctl runs the real CLI with env and a config directory of its own.
func runLbctl(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "lbctl"), args...)
	cmd.Env = append(env, "XDG_CONFIG_HOME="+t.TempDir())
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

// agreedLeader is the leader every member's `lbctl leader -o json` names, or
// an error while they do not agree.
func (c *cluster) agreedLeader(t *testing.T) (string, error) {
	t.Helper()
	agreed := ""
	for _, m := range c.members {
		out, errs, code := lbctl(t, []string{m.api}, "leader", "-o", "json")
		if code != 0 {
			return "", fmt.Errorf("%s: exit %d: %s", m.id, code, errs)
		}
		l, _ := decode(t, out)["leader"].(map[string]any)
		id, _ := l["id"].(string)
		if id == "" || agreed != "" && id != agreed {
			return "", fmt.Errorf("%s names leader %q, another member %q", m.id, id, agreed)
		}
		agreed = id
	}
	return agreed, nil
}

// lbctl exit codes (lbctl/exitcode) the tests retry on or accept.
const (
	exitNotFound      = 4
	exitAlreadyExists = 5
	exitUnavailable   = 8
)

// writeLbctl runs a write and retries it while the cluster elects a leader: a
// busy machine can cost the leader its lease, and a write cut short that way
// (exit 8) may or may not have been applied, so after a retry the exit code
// done (exitAlreadyExists for a create, exitNotFound for a delete) counts as
// success. It returns the output of the run that succeeded.
func writeLbctl(t *testing.T, eps []string, done int, args ...string) string {
	t.Helper()
	var out string
	retried := false
	eventually(t, 30*time.Second, "lbctl "+strings.Join(args, " "), func() error {
		o, errs, code := lbctl(t, eps, args...)
		switch {
		case code == 0 || retried && code == done:
			out = o
			return nil
		case code == exitUnavailable:
			retried = true
			return fmt.Errorf("exit %d: %s", code, errs)
		}
		t.Fatalf("lbctl %s: exit %d: %s%s", strings.Join(args, " "), code, errs, o)
		return nil
	})
	return out
}

// memberStatuses is `lbctl member status --all -o json` by member id.
func memberStatuses(t *testing.T, eps []string) (map[string]map[string]any, error) {
	t.Helper()
	out, errs, code := lbctl(t, eps, "member", "status", "--all", "-o", "json")
	if code != 0 {
		return nil, fmt.Errorf("member status --all: exit %d: %s", code, errs)
	}
	res := map[string]map[string]any{}
	for _, st := range items(t, out) {
		m, _ := st["member"].(map[string]any)
		id, _ := m["id"].(string)
		res[id] = st
	}
	return res, nil
}

// statusIndex reads a uint64 field of a status (protojson writes them as strings).
func statusIndex(t *testing.T, st map[string]any, field string) uint64 {
	t.Helper()
	s, _ := st[field].(string)
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("%s = %v in %v: %v", field, st[field], st, err)
	}
	return v
}

func TestClusterLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three lbd processes; skipped with -short")
	}
	c, all := startedCluster(t, 3)
	leader := c.leader(t, all)
	follower := c.follower(leader)
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

	t.Run("leadership transfer and per-member raft status", func(t *testing.T) {
		from := c.leader(t, all)
		var to *member
		for _, m := range c.members {
			if m != from {
				to = m
			}
		}
		// Sent to the target's own endpoint: a follower forwards it to the
		// leader. Repeated only if the call fails or the members do not come
		// to agree on the target (a busy machine may hold a stray election).
		transferred := false
		eventually(t, 60*time.Second, "leader transfer "+to.id+" makes it the leader", func() error {
			if id, err := c.agreedLeader(t); err != nil {
				return err
			} else if id == to.id && transferred {
				return nil
			}
			out, errs, code := lbctl(t, []string{to.api}, "leader", "transfer", to.id, "-o", "json")
			if code != 0 {
				return fmt.Errorf("leader transfer %s: exit %d: %s", to.id, code, errs)
			}
			if l, _ := decode(t, out)["leader"].(map[string]any); l["id"] != to.id {
				return fmt.Errorf("leader transfer %s answered %s", to.id, out)
			}
			transferred = true
			return fmt.Errorf("transferred; not every member names %s yet", to.id)
		})

		// Without a target: some other member.
		var newID string
		transferred = false
		eventually(t, 60*time.Second, "leader transfer (no target) moves leadership off "+to.id, func() error {
			id, err := c.agreedLeader(t)
			if err != nil {
				return err
			}
			if id != to.id && transferred {
				newID = id
				return nil
			}
			out, errs, code := lbctl(t, all, "leader", "transfer", "-o", "json")
			if code != 0 {
				return fmt.Errorf("leader transfer: exit %d: %s", code, errs)
			}
			if l, _ := decode(t, out)["leader"].(map[string]any); l["id"] == id || l["id"] == nil {
				return fmt.Errorf("leader transfer (no target) from %s answered %s", id, out)
			}
			transferred = true
			return fmt.Errorf("transferred; the members do not agree on a new leader yet")
		})

		// member status: raft's view of each member, from each member.
		var before map[string]map[string]any
		eventually(t, 30*time.Second, "member status shows one Leader and the rest Followers", func() error {
			sts, err := memberStatuses(t, all)
			if err != nil {
				return err
			}
			lead := ""
			for _, m := range c.members {
				if sts[m.id]["raftState"] == "Leader" {
					lead = m.id
				}
			}
			if lead == "" {
				return fmt.Errorf("no member reports raft state Leader")
			}
			for _, m := range c.members {
				st, ok := sts[m.id]
				if !ok {
					return fmt.Errorf("no status for %s", m.id)
				}
				want := "Follower"
				if m.id == lead {
					want = "Leader"
				}
				if st["raftState"] != want || st["leaderId"] != lead {
					return fmt.Errorf("%s: raftState %v, leaderId %v; want %s under %s", m.id, st["raftState"], st["leaderId"], want, lead)
				}
			}
			newID, before = lead, sts
			return nil
		})

		// A write through a follower. The member that took it has applied it
		// when it answers (read-after-write), so its lastAppliedIndex grew;
		// then every member reaches that index.
		var via *member
		for _, m := range c.members {
			if m.id != newID {
				via = m
			}
		}
		// The plain form answers for the member asked.
		st := decode(t, mustLbctl(t, []string{via.api}, "member", "status", "-o", "json"))
		if mm, _ := st["member"].(map[string]any); mm["id"] != via.id || st["raftState"] != "Follower" {
			t.Errorf("member status via %s's endpoint: %v", via.id, st)
		}
		writeLbctl(t, []string{via.api}, exitAlreadyExists, "vip", "create", "after-transfer", "--port", "tcp/8080", "--backend", "10.0.0.24")
		applied := statusIndex(t, decode(t, mustLbctl(t, []string{via.api}, "member", "status", "-o", "json")), "lastAppliedIndex")
		if was := statusIndex(t, before[via.id], "lastAppliedIndex"); applied <= was {
			t.Fatalf("%s's lastAppliedIndex is %d after a write it took, %d before it", via.id, applied, was)
		}
		eventually(t, 30*time.Second, "every member applies the write", func() error {
			sts, err := memberStatuses(t, all)
			if err != nil {
				return err
			}
			for _, m := range c.members {
				if a := statusIndex(t, sts[m.id], "lastAppliedIndex"); a < applied {
					return fmt.Errorf("%s applied %d, the write is at or before %d", m.id, a, applied)
				}
			}
			return nil
		})
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
		nl = c.leader(t, rest)
		var survivor *member // a follower that survived
		for _, m := range c.members {
			if m != leader && m != nl {
				survivor = m
			}
		}
		viaSurvivor := []string{survivor.api}
		writeLbctl(t, viaSurvivor, exitAlreadyExists, "vip", "create", "after-kill", "--port", "udp/53:30053", "--backend", "10.0.0.21")
		writeLbctl(t, viaSurvivor, exitAlreadyExists, "vip", "create", "after-kill-2", "--port", "tcp/8443", "--backend", "10.0.0.22")
		updated := decode(t, writeLbctl(t, viaSurvivor, 0, "vip", "update", "svc01", "--scheduler", "rr", "-o", "json"))
		writeLbctl(t, viaSurvivor, exitAlreadyExists, "backend", "add", "svc02", "10.0.0.99:30443")
		writeLbctl(t, viaSurvivor, exitNotFound, "vip", "delete", "svc03")
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
		restarted := []string{leader.api}
		eventually(t, 30*time.Second, "restarted member catches up with every write made while it was down", func() error {
			for _, name := range []string{"after-kill", "after-kill-2"} {
				if _, errs, code := lbctl(t, restarted, "vip", "get", name); code != 0 {
					return fmt.Errorf("get %s: exit %d: %s", name, code, errs)
				}
			}
			out, errs, code := lbctl(t, restarted, "vip", "get", "svc01", "-o", "json")
			if code != 0 {
				return fmt.Errorf("get svc01: exit %d: %s", code, errs)
			}
			if g := decode(t, out)["generation"]; g != updated["generation"] {
				return fmt.Errorf("svc01 at generation %v, the update made %v", g, updated["generation"])
			}
			out, errs, code = lbctl(t, restarted, "vip", "get", "svc02", "-o", "json")
			if code != 0 {
				return fmt.Errorf("get svc02: exit %d: %s", code, errs)
			}
			if !strings.Contains(out, "10.0.0.99") {
				return fmt.Errorf("svc02 lacks the added backend: %s", out)
			}
			if _, _, code := lbctl(t, restarted, "vip", "get", "svc03"); code != exitNotFound {
				return fmt.Errorf("deleted svc03: exit %d, want 4 (not found)", code)
			}
			return nil
		})
		// And it holds exactly what the survivors hold.
		eventually(t, 30*time.Second, "restarted member's services equal a survivor's", func() error {
			mine, theirs := specOnly(t, mustLbctl(t, restarted, "vip", "list", "-o", "json")), specOnly(t, mustLbctl(t, viaSurvivor, "vip", "list", "-o", "json"))
			if mine != theirs {
				return fmt.Errorf("restarted %s\nsurvivor  %s", mine, theirs)
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
				// Right after the full restart a leader change may still cut
				// a move short (exit 8): try again.
				if _, errs, code := lbctl(t, all, "vip", "move", vipOf(t, all, "svc00")["vip"].(string), lone.id); code != 0 {
					return fmt.Errorf("vip move: exit %d: %s", code, errs)
				}
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

// lbctlBare runs the real CLI with no connection flags, no LBCTL_ENDPOINTS and
// no config file: it must find lbd at its default endpoint.
func lbctlBare(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "LBCTL_") && !strings.HasPrefix(e, "XDG_CONFIG_HOME=") {
			env = append(env, e)
		}
	}
	return runLbctl(t, env, args...)
}

func mustLbctlBare(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := lbctlBare(t, args...)
	if code != 0 {
		t.Fatalf("lbctl %s: exit %d: %s%s", strings.Join(args, " "), code, errs, out)
	}
	return out
}

// TestDefaultSingleMember runs lbd as the README's first look does: nothing but
// --data-plane=none (the default ipvs data plane would change this host), so
// every other setting is the embedded default: a single-member cluster on the
// default loopback ports with its data under the working directory.
func TestDefaultSingleMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts lbd; skipped with -short")
	}
	def := config.Default()
	// lbd --help says what bare lbd does to the host, and how not to.
	help, err := exec.Command(filepath.Join(bin, "lbd"), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("lbd --help: %v\n%s", err, help)
	}
	flat := strings.Join(strings.Fields(string(help)), " ") // independent of line wrapping
	for _, want := range []string{"./lbd-data", "ipvs data plane on the default interface " + def.DataPlane.Interface, "needs root and a kernel with IPVS", "--data-plane=none is the control-plane-only mode"} {
		if !strings.Contains(flat, want) {
			t.Errorf("lbd --help does not say %q:\n%s", want, help)
		}
	}
	for _, addr := range []string{def.APIAddr, def.RaftAddr} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("lbd's default address %s is taken (%v); this test needs it free", addr, err)
		}
		l.Close()
	}
	dir := t.TempDir()
	var log bytes.Buffer
	var exited chan error
	var cmd *exec.Cmd
	start := func() {
		t.Helper()
		cmd = exec.Command(filepath.Join(bin, "lbd"), "--data-plane=none")
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatalf("start lbd: %v", err)
		}
		exited = make(chan error, 1)
		go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(cmd, exited)
	}
	// alive fails the check (and the test, or skips it when another process
	// took a default port in between) once lbd has exited.
	alive := func() {
		select {
		case err := <-exited:
			exited <- err
			if strings.Contains(log.String(), "address already in use") {
				t.Skipf("a default port was taken after the check: %s", tail(log.String(), 500))
			}
			t.Fatalf("lbd exited (%v):\n%s", err, tail(log.String(), 3000))
		default:
		}
	}
	stop := func() {
		t.Helper()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			exited <- err
			if err != nil {
				t.Fatalf("lbd exited with %v after SIGTERM:\n%s", err, tail(log.String(), 3000))
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("lbd did not stop within 15s of SIGTERM")
		}
	}
	t.Cleanup(func() {
		if cmd != nil && cmd.Process != nil {
			select {
			case err := <-exited:
				exited <- err
			default:
				cmd.Process.Kill()
				<-exited
			}
		}
		if t.Failed() {
			t.Logf("---- lbd log (tail) ----\n%s", tail(log.String(), 3000))
		}
	})
	// oneMember waits until lbd at the default endpoint leads a cluster of
	// itself alone, under its default id (the host name).
	oneMember := func() {
		t.Helper()
		eventually(t, 30*time.Second, "lbctl leader names the one member", func() error {
			alive()
			out, errs, code := lbctlBare(t, "leader", "-o", "json")
			if code != 0 {
				return fmt.Errorf("exit %d: %s", code, errs)
			}
			l, _ := decode(t, out)["leader"].(map[string]any)
			if l["id"] != def.ID {
				return fmt.Errorf("leader %s; want %s (the default id: the host name)", out, def.ID)
			}
			return nil
		})
		out := mustLbctlBare(t, "leader")
		if !strings.Contains(out, def.ID) || !strings.Contains(out, def.APIAddr) {
			t.Errorf("lbctl leader (table): %q; want %s at %s", out, def.ID, def.APIAddr)
		}
		eventually(t, 30*time.Second, "member list holds exactly one voter", func() error {
			alive()
			out, errs, code := lbctlBare(t, "member", "list", "-o", "json")
			if code != 0 {
				return fmt.Errorf("exit %d: %s", code, errs)
			}
			ms := items(t, out)
			if len(ms) != 1 || ms[0]["id"] != def.ID || ms[0]["suffrage"] != "voter" || ms[0]["apiAddress"] != def.APIAddr || ms[0]["raftAddress"] != def.RaftAddr {
				return fmt.Errorf("members %s; want only %s, a voter at %s / %s", out, def.ID, def.APIAddr, def.RaftAddr)
			}
			return nil
		})
		alive() // it was this lbd that answered, not another on the default port
	}

	start()
	oneMember()
	// The raft data lives under the working directory, in ./lbd-data.
	for _, f := range []string{"lbd-data", "lbd-data/raft", "lbd-data/raft/raft.db"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("./%s not created under lbd's working directory: %v", f, err)
		}
	}
	mustLbctlBare(t, "pool", "create", "public", "--range", "192.0.2.0/24")
	created := decode(t, mustLbctlBare(t, "vip", "create", "web", "--port", "tcp/80:30080", "--backend", "10.0.0.11", "-o", "json"))
	if created["vip"] != "192.0.2.1" {
		t.Fatalf("created %v; want VIP 192.0.2.1 from pool public", created)
	}
	// The README's first look sends nothing to its made-up backend
	// (10.0.0.11:30080): a data-plane-none member runs no health checks
	// unless told to, and says so.
	if !strings.Contains(log.String(), "no backend health probes") || strings.Contains(log.String(), "HEALTH PROBES WITHOUT A DATA PLANE") {
		t.Errorf("lbd --data-plane=none does not say that it probes no backend:\n%s", tail(log.String(), 3000))
	}

	// The same bare command again: it comes back from ./lbd-data.
	stop()
	start()
	oneMember()
	var got map[string]any
	eventually(t, 30*time.Second, "web is back after a restart", func() error {
		alive()
		out, errs, code := lbctlBare(t, "vip", "get", "web", "-o", "json")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, errs)
		}
		got = decode(t, out)
		return nil
	})
	for _, f := range []string{"name", "vip", "pool", "generation"} {
		if got[f] != created[f] {
			t.Errorf("web after a restart: %s = %v, before %v", f, got[f], created[f])
		}
	}
	if ms, _ := os.ReadDir(filepath.Join(dir, "lbd-data", "raft")); len(ms) == 0 {
		t.Errorf("lbd-data/raft is empty after a restart")
	}
}
