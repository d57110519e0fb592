package cluster

// Faults of the machine under lbd, against real processes: every member
// SIGKILLed at once; a leader SIGKILLed in a stream of writes whose data then
// shows what a crash can leave (a half-written snapshot, a torn snapshot file,
// a torn boltdb meta page); a data directory that fills up or turns
// read-only. In each, no write acknowledged to a client may be lost.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	edgelbv1 "github.com/edgelb/edgelb/proto/edgelb/v1"
)

// api is a gRPC client of one member.
type api struct {
	vs    edgelbv1.VirtualServiceServiceClient
	pools edgelbv1.AddressPoolServiceClient
	cl    edgelbv1.ClusterServiceClient
}

func dial(t *testing.T, m *member) api {
	t.Helper()
	cc, err := grpc.NewClient(m.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc client for %s: %v", m.api, err)
	}
	t.Cleanup(func() { cc.Close() })
	return api{edgelbv1.NewVirtualServiceServiceClient(cc), edgelbv1.NewAddressPoolServiceClient(cc), edgelbv1.NewClusterServiceClient(cc)}
}

// waitFor retries f every 100 ms until it returns nil; it fails the test
// once d has passed.
func waitFor(t *testing.T, d time.Duration, what string, f func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(cctx)
		ccancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s: %v", what, d, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// running reports whether the member's process is alive (not gone, not a
// zombie), without waiting for it.
func (m *member) running() bool {
	if m.cmd == nil || m.cmd.Process == nil || m.cmd.ProcessState != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.cmd.Process.Pid))
	if err != nil {
		return false
	}
	// pid (comm) state …: the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

// startCluster starts n members, waits for n voters and creates an address pool.
func startCluster(t *testing.T, n int) (*cluster, map[string]api) {
	t.Helper()
	c := newCluster(t, n)
	apis := map[string]api{}
	for _, m := range c.members {
		m.start(t)
		apis[m.id] = dial(t, m)
	}
	c.waitVoters(t, c.endpoints(), n)
	first := apis[c.members[0].id]
	waitFor(t, 30*time.Second, "address pool created", func(ctx context.Context) error {
		_, err := first.pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.98.0.0/20"}}})
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
	return c, apis
}

func newService(name string) *edgelbv1.VirtualService {
	return &edgelbv1.VirtualService{Name: name, Ports: []*edgelbv1.Port{{Protocol: edgelbv1.Protocol_PROTOCOL_TCP, Port: 80}},
		Backends: []*edgelbv1.Backend{{Address: "10.0.0.1"}}}
}

// acked is the services whose create a member acknowledged.
type acked struct {
	mu    sync.Mutex
	names []string
}

func (a *acked) add(n string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.names = append(a.names, n)
}

func (a *acked) list() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.names)
}

// streamCreates creates services prefix-0000, prefix-0001, … one after the
// other through the members in turn (skipping none: a call to a dead member
// fails and the next goes elsewhere) until ctx ends, recording the
// acknowledged ones. Calls that fail have an unknown outcome and are not
// checked.
func streamCreates(ctx context.Context, c *cluster, apis map[string]api, prefix string, ok *acked) {
	for i := 0; ctx.Err() == nil; i++ {
		m := c.members[i%len(c.members)]
		name := fmt.Sprintf("%s-%04d", prefix, i)
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := apis[m.id].vs.CreateVirtualService(cctx, &edgelbv1.CreateVirtualServiceRequest{Service: newService(name)})
		cancel()
		if err == nil {
			ok.add(name)
		}
	}
}

// allPresent fails with the first acknowledged service a member does not
// return (reads are linearizable: the member reads its own replica once it
// has applied everything the leader committed).
func allPresent(ctx context.Context, a api, names []string) error {
	r, err := a.vs.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{})
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	have := map[string]bool{}
	for _, vs := range r.Services {
		have[vs.Name] = true
	}
	var missing []string
	for _, n := range names {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d of %d acknowledged services missing, e.g. %v", len(missing), len(names), missing[:min(5, len(missing))])
	}
	return nil
}

// waitAcked waits until at least n creates were acknowledged.
func waitAcked(t *testing.T, ok *acked, n int) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d writes acknowledged", n), func(context.Context) error {
		if got := len(ok.list()); got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

func TestRestartAllMembersAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three lbd processes; skipped with -short")
	}
	c, apis := startCluster(t, 3)
	var ok acked
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { streamCreates(ctx, c, apis, "all", &ok); close(done) }()
	waitAcked(t, &ok, 40)
	// SIGKILL every member while writes are in flight.
	for _, m := range c.members {
		m.kill()
	}
	stop()
	<-done
	names := ok.list()
	for _, m := range c.members {
		m.start(t)
	}
	c.leader(t, c.endpoints())
	for _, m := range c.members {
		waitFor(t, 60*time.Second, "every acknowledged service readable through "+m.id, func(ctx context.Context) error {
			return allPresent(ctx, apis[m.id], names)
		})
	}
	waitFor(t, 30*time.Second, "a write after the restart", func(ctx context.Context) error {
		_, err := apis[c.members[1].id].vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: newService("after-restart")})
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
	t.Logf("%d acknowledged services survived SIGKILL of all three members", len(names))
}

// tornSnapshotState truncates the newest snapshot's state.bin to half: its
// rename reached the disk, not all of its data.
func tornSnapshotState(t *testing.T, raftDir string) string {
	snaps := snapshotDirs(t, raftDir)
	if len(snaps) == 0 {
		t.Fatalf("no snapshot in %s to tear", raftDir)
	}
	f := filepath.Join(snaps[len(snaps)-1], "state.bin")
	st, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, st.Size()/2); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s truncated from %d to %d bytes", f, st.Size(), st.Size()/2)
}

// everySnapshotTorn truncates the state.bin of every snapshot the member
// keeps (raft keeps 3): there is none to restore from.
func everySnapshotTorn(t *testing.T, raftDir string) string {
	snaps := snapshotDirs(t, raftDir)
	for _, d := range snaps {
		f := filepath.Join(d, "state.bin")
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f, st.Size()/2); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf("all %d snapshots in %s truncated to half", len(snaps), raftDir)
}

// halfWrittenSnapshot leaves what a crash while writing a snapshot leaves:
// a .tmp directory with a partial meta.json and state.bin.
func halfWrittenSnapshot(t *testing.T, raftDir string) string {
	dir := filepath.Join(raftDir, "snapshots", fmt.Sprintf("99-999999-%d.tmp", time.Now().UnixMilli()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "meta.json"), []byte(`{"Version":1,"ID":"99-999999-1","Index":999999,"Te`), 0o644)
	os.WriteFile(filepath.Join(dir, "state.bin"), []byte{0x0a, 0x80, 0x01}, 0o644)
	return dir + " left half-written"
}

// tornBoltMeta damages the newest of raft.db's two meta pages (the one with
// the higher transaction id), as a write of it cut short by power loss would:
// bbolt must fall back to the older one.
func tornBoltMeta(t *testing.T, raftDir string) string {
	path := filepath.Join(raftDir, "raft.db")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 80)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	// page header 16 bytes, then magic, version, pageSize, flags, root(16),
	// freelist, pgid, txid, checksum (bbolt's meta).
	pageSize := int64(binary.LittleEndian.Uint32(hdr[24:28]))
	txid := func(off int64) uint64 {
		b := make([]byte, 8)
		if _, err := f.ReadAt(b, off+64); err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint64(b)
	}
	newest := int64(0)
	if txid(pageSize) > txid(0) {
		newest = pageSize
	}
	if _, err := f.WriteAt(make([]byte, 24), newest+56); err != nil { // pgid, txid, checksum zeroed
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s: meta page %d (txid %d) torn", path, newest/pageSize, max(txid(0), txid(pageSize)))
}

func snapshotDirs(t *testing.T, raftDir string) []string {
	ents, err := os.ReadDir(filepath.Join(raftDir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && filepath.Ext(e.Name()) != ".tmp" {
			out = append(out, filepath.Join(raftDir, "snapshots", e.Name()))
		}
	}
	// Names are term-index-timestamp: oldest first by term, then index.
	key := func(dir string) (term, index uint64) {
		fmt.Sscanf(filepath.Base(dir), "%d-%d-", &term, &index)
		return term, index
	}
	sort.Slice(out, func(i, j int) bool {
		ti, ii := key(out[i])
		tj, ij := key(out[j])
		return ti < tj || ti == tj && ii < ij
	})
	return out
}

func TestTornTailAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three lbd processes; skipped with -short")
	}
	for _, tc := range []struct {
		name string
		tear func(t *testing.T, raftDir string) string
		// refuses: lbd cannot rebuild its state from what is left; it must
		// exit with an error naming its data directory, and once that is
		// emptied, join again and get everything from the others.
		refuses bool
		// mayExit: lbd either recovers in place or exits non-zero, and then
		// the operator's way back (set the data aside, join again) works.
		// bbolt falls back to the older meta page, but a write after that
		// has been seen (2 in 14 runs) to panic with "freelist pgid above
		// high water mark": fail-closed, never a member running with less.
		mayExit bool
	}{
		{"half-written snapshot", halfWrittenSnapshot, false, false},
		{"torn snapshot state", tornSnapshotState, false, false},
		{"torn boltdb meta page", tornBoltMeta, false, true},
		{"every snapshot torn", everySnapshotTorn, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, apis := startCluster(t, 3)
			leader := c.leader(t, c.endpoints())
			var ok acked
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { streamCreates(ctx, c, apis, "torn", &ok); close(done) }()
			defer func() { stop(); <-done }()
			waitAcked(t, &ok, 60) // past the snapshot threshold (16) several times
			leader.kill()
			before := len(ok.list())
			waitAcked(t, &ok, before+20) // the survivors take writes
			stop()
			<-done
			names := ok.list()

			what := tc.tear(t, filepath.Join(leader.dir, "raft"))
			t.Logf("%s; %d acknowledged writes", what, len(names))
			logFrom := leader.log.Len()
			leader.start(t)
			// Either lbd refuses to start, and says why, or it recovers and
			// holds everything: never a member that runs with less.
			waitFor(t, 60*time.Second, leader.id+" recovers (or exits with an error)", func(ctx context.Context) error {
				if !leader.running() {
					return nil
				}
				return allPresent(ctx, apis[leader.id], names)
			})
			if tc.refuses || tc.mayExit && !leader.running() {
				if leader.running() {
					t.Fatalf("%s runs after %s", leader.id, what)
				}
				err := leader.cmd.Wait()
				raftDir := filepath.Join(leader.dir, "raft")
				named := tc.mayExit || strings.Contains(leader.log.String()[logFrom:], raftDir)
				if tc.mayExit {
					t.Logf("%s exited after %s (%v); the operator's way back follows:\n%s", leader.id, what, err, tail(leader.log.String()[logFrom:], 1500))
				}
				if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() == 0 || !named {
					t.Fatalf("%s after %s: exit %v; want a non-zero exit with an error naming %s:\n%s", leader.id, what, err, raftDir, leader.log.String()[logFrom:])
				}
				// The operator's way back: set the damaged data aside and join
				// the others again, under the same id and addresses.
				if err := os.Rename(raftDir, raftDir+".damaged"); err != nil {
					t.Fatal(err)
				}
				for _, m := range c.members {
					if m != leader {
						leader.join = []string{m.api}
						break
					}
				}
				leader.start(t)
				waitFor(t, 60*time.Second, leader.id+" rejoins with an empty data directory and catches up", func(ctx context.Context) error {
					return allPresent(ctx, apis[leader.id], names)
				})
			}
			if !leader.running() {
				t.Fatalf("%s exited after %s; log:\n%s", leader.id, what, tail(leader.log.String(), 3000))
			}
			// Its own replica equals a survivor's.
			var other *member
			for _, m := range c.members {
				if m != leader {
					other = m
				}
			}
			waitFor(t, 30*time.Second, leader.id+"'s services equal "+other.id+"'s", func(ctx context.Context) error {
				mine, err := apis[leader.id].vs.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{})
				if err != nil {
					return err
				}
				theirs, err := apis[other.id].vs.ListVirtualServices(ctx, &edgelbv1.ListVirtualServicesRequest{})
				if err != nil {
					return err
				}
				if a, b := specNames(mine.Services), specNames(theirs.Services); !slices.Equal(a, b) {
					return fmt.Errorf("%s has %d services, %s %d", leader.id, len(a), other.id, len(b))
				}
				return nil
			})
			// And it can lead: the writes go on after a transfer to it.
			eventually(t, 60*time.Second, "leadership moves to "+leader.id, func() error {
				if id, err := c.agreedLeader(t); err != nil || id == leader.id {
					return err
				}
				if _, errs, code := lbctl(t, []string{leader.api}, "leader", "transfer", leader.id); code != 0 {
					return fmt.Errorf("leader transfer: exit %d: %s", code, errs)
				}
				return fmt.Errorf("transferred; members to agree")
			})
			waitFor(t, 30*time.Second, "a write with "+leader.id+" leading", func(ctx context.Context) error {
				_, err := apis[leader.id].vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: newService("after-tear")})
				if status.Code(err) == codes.AlreadyExists {
					return nil
				}
				return err
			})
		})
	}
}

func specNames(vss []*edgelbv1.VirtualService) []string {
	var out []string
	for _, vs := range vss {
		out = append(out, fmt.Sprintf("%s@%d/%s", vs.Name, vs.Generation, vs.Vip))
	}
	sort.Strings(out)
	return out
}

// needRoot skips a test that mounts file systems when not root.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small file system as the data directory needs root")
	}
}

// mountTmpfs mounts a tmpfs of size at dir for the test (root only).
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	needRoot(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a tmpfs at %s (%v): this test needs CAP_SYS_ADMIN", dir, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
}

// run runs a command the test needs, failing the test with its output.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// ext4 is a small ext4 file system on a loop device, mounted with
// errors=remount-ro: on an error the kernel turns it read-only under its
// writers, as it does for a failing disk.
type ext4 struct {
	dev, dir string
}

func mountExt4(t *testing.T, dir string) *ext4 {
	t.Helper()
	needRoot(t)
	for _, tool := range []string{"losetup", "mkfs.ext4", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (e2fsprogs, util-linux): %v", tool, err)
		}
	}
	img := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device (%v: %s): this test needs one", err, out)
	}
	e := &ext4{dev: strings.TrimSpace(string(out)), dir: dir}
	t.Cleanup(func() {
		syscall.Unmount(dir, syscall.MNT_DETACH)
		exec.Command("losetup", "-d", e.dev).Run()
	})
	run(t, "mkfs.ext4", "-q", "-F", e.dev)
	e.mount(t)
	if _, err := os.Stat(e.errorTrigger()); err != nil {
		t.Skipf("this kernel cannot trigger an ext4 error (%v)", err)
	}
	return e
}

func (e *ext4) mount(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(e.dev, e.dir, "ext4", 0, "errors=remount-ro"); err != nil {
		t.Fatalf("mount %s at %s: %v", e.dev, e.dir, err)
	}
}

func (e *ext4) errorTrigger() string {
	return filepath.Join("/sys/fs/ext4", filepath.Base(e.dev), "trigger_fs_error")
}

// fail makes the kernel record an error and turn the file system read-only.
func (e *ext4) fail(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(e.errorTrigger(), []byte("edgelb fault test"), 0o200); err != nil {
		t.Fatalf("trigger an ext4 error on %s: %v", e.dev, err)
	}
	waitFor(t, 10*time.Second, e.dir+" turns read-only", func(context.Context) error {
		probe := filepath.Join(e.dir, "probe")
		err := os.WriteFile(probe, nil, 0o600)
		if errors.Is(err, syscall.EROFS) {
			return nil
		}
		os.Remove(probe)
		return fmt.Errorf("still writable (%v)", err)
	})
}

// repair is what an operator does: unmount, check, mount again.
func (e *ext4) repair(t *testing.T) {
	t.Helper()
	if err := syscall.Unmount(e.dir, 0); err != nil {
		t.Fatalf("unmount %s: %v", e.dir, err)
	}
	// e2fsck exits 1 when it corrected errors.
	if out, err := exec.Command("e2fsck", "-f", "-y", e.dev).CombinedOutput(); err != nil {
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck %s: %v\n%s", e.dev, err, out)
		}
	}
	e.mount(t)
}

// fill writes path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			break
		}
	}
	for _, n := range []int{4096, 512, 1} { // the last blocks
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
	f.Sync()
}

// TestDataDirFullOrReadOnly runs a single member (its disk is the cluster's:
// every write must reach it) with its data directory on a small file system
// that fills up (tmpfs), or that the kernel turns read-only under lbd after
// an error (ext4 with errors=remount-ro on a loop device). Writes must fail
// with a clear error, in time, without lbd exiting; once space is back (or
// the file system is checked and mounted again, lbd restarted), writes work
// again and nothing acknowledged is lost, also across a restart.
func TestDataDirFullOrReadOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts lbd; skipped with -short")
	}
	for _, tc := range []struct {
		name string
		// prepare mounts the data directory and returns how to break and mend it.
		prepare func(t *testing.T, m *member) (break_, mend func())
	}{
		{"full", func(t *testing.T, m *member) (func(), func()) {
			mountTmpfs(t, m.dir, "16m")
			filler := filepath.Join(m.dir, "filler")
			return func() { fill(t, filler) }, func() {
				if err := os.Remove(filler); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"read-only", func(t *testing.T, m *member) (func(), func()) {
			fs := mountExt4(t, m.dir)
			return func() { fs.fail(t) }, func() {
				// lbd must stop on SIGTERM, as systemd would ask it to (it
				// may say that it could not stop cleanly).
				m.cmd.Process.Signal(syscall.SIGTERM)
				exited := make(chan error, 1)
				go func() { exited <- m.cmd.Wait() }()
				select {
				case err := <-exited:
					t.Logf("lbd after SIGTERM with its data directory read-only: %v", err)
				case <-time.After(30 * time.Second):
					t.Fatalf("lbd did not stop within 30s of SIGTERM with its data directory read-only")
				}
				fs.repair(t)
				m.start(t)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 1)
			m := c.members[0]
			break_, mend := tc.prepare(t, m)
			m.start(t)
			a := dial(t, m)
			c.leader(t, c.endpoints())
			waitFor(t, 30*time.Second, "address pool created", func(ctx context.Context) error {
				_, err := a.pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.98.0.0/20"}}})
				return err
			})
			var names []string
			create := func(ctx context.Context, name string) error {
				_, err := a.vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: newService(name)})
				if status.Code(err) == codes.AlreadyExists {
					err = nil // an earlier try that answered Unavailable was applied after all
				}
				if err == nil {
					names = append(names, name)
				}
				return err
			}
			for i := 0; i < 40; i++ { // past the snapshot threshold
				waitFor(t, 10*time.Second, "create", func(ctx context.Context) error { return create(ctx, fmt.Sprintf("before-%02d", i)) })
			}

			break_()
			// Writes now fail, each with an error before its deadline; lbd
			// keeps running. The bolt file may still hold free pages, so a
			// few writes can succeed first: they count as acknowledged.
			var failed error
			for i := 0; i < 200 && failed == nil; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				err := create(ctx, fmt.Sprintf("during-%03d", i))
				cancel()
				switch status.Code(err) {
				case codes.OK:
				case codes.DeadlineExceeded:
					t.Fatalf("a write hung for 20 s with the data directory %s", tc.name)
				default:
					failed = err
				}
			}
			if failed == nil {
				t.Fatalf("200 writes succeeded with the data directory %s", tc.name)
			}
			t.Logf("write with the data directory %s: %v", tc.name, failed)
			// The writes that follow answer too, none hangs.
			for i := 0; i < 3; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				err := create(ctx, fmt.Sprintf("after-failure-%d", i))
				cancel()
				if status.Code(err) == codes.DeadlineExceeded {
					t.Fatalf("a write hung for 20 s with the data directory %s, after one failed with %v", tc.name, failed)
				}
				t.Logf("next write: %v", err)
			}
			if c := status.Code(failed); c != codes.Unavailable && c != codes.ResourceExhausted {
				t.Errorf("write with the data directory %s: code %s, want Unavailable or ResourceExhausted", tc.name, c)
			}
			// Not a crash: lbd still answers.
			waitFor(t, 10*time.Second, "lbd answers with the data directory "+tc.name, func(ctx context.Context) error {
				if !m.running() {
					t.Fatalf("lbd exited with the data directory %s:\n%s", tc.name, tail(m.log.String(), 3000))
				}
				_, err := a.cl.GetMemberStatus(ctx, &edgelbv1.GetMemberStatusRequest{})
				return err
			})

			if !m.running() {
				t.Fatalf("lbd exited with the data directory %s:\n%s", tc.name, tail(m.log.String(), 3000))
			}
			mend()
			waitFor(t, 60*time.Second, "writes work again once the data directory is "+tc.name+" no more", func(ctx context.Context) error {
				return create(ctx, "after-mend")
			})
			waitFor(t, 30*time.Second, "every acknowledged service is there", func(ctx context.Context) error {
				return allPresent(ctx, a, names)
			})
			// And across a restart: nothing on disk was corrupted.
			m.stop(t)
			m.start(t)
			waitFor(t, 60*time.Second, "every acknowledged service is there after a restart", func(ctx context.Context) error {
				return allPresent(ctx, a, names)
			})
			t.Logf("%d acknowledged services kept", len(names))
		})
	}
}

// TestDataDirFullOneOfThree fills the data directory of the member that leads
// a three-member cluster: the others carry on (a new leader, writes through
// them acknowledged), the full member refuses writes with the reason instead
// of holding them, and once space is back it catches up with every write.
func TestDataDirFullOneOfThree(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three lbd processes; skipped with -short")
	}
	c := newCluster(t, 3)
	full := c.members[0] // it bootstraps the cluster, so it leads first
	mountTmpfs(t, full.dir, "16m")
	apis := map[string]api{}
	for _, m := range c.members {
		m.start(t)
		apis[m.id] = dial(t, m)
	}
	c.waitVoters(t, c.endpoints(), 3)
	waitFor(t, 30*time.Second, "address pool created", func(ctx context.Context) error {
		_, err := apis[full.id].pools.CreateAddressPool(ctx, &edgelbv1.CreateAddressPoolRequest{Pool: &edgelbv1.AddressPool{Name: "p", Ranges: []string{"10.98.0.0/20"}}})
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
	var ok acked
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { streamCreates(ctx, c, apis, "full", &ok); close(done) }()
	defer func() { stop(); <-done }()
	waitAcked(t, &ok, 20)

	filler := filepath.Join(full.dir, "filler")
	fill(t, filler)
	before := len(ok.list())
	waitAcked(t, &ok, before+40) // the others go on
	// Through the full member: an answer with a reason, in time, or the
	// write is acknowledged (as a follower it forwards; the leader commits).
	// Never a hang; and lbd keeps running.
	waitFor(t, 30*time.Second, full.id+" refuses writes while its disk is full", func(ctx context.Context) error {
		if !full.running() {
			t.Fatalf("%s exited with its data directory full:\n%s", full.id, tail(full.log.String(), 3000))
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		_, err := apis[full.id].vs.CreateVirtualService(cctx, &edgelbv1.CreateVirtualServiceRequest{Service: newService(fmt.Sprintf("via-full-%d", time.Now().UnixNano()))})
		switch status.Code(err) {
		case codes.Unavailable:
			t.Logf("write through %s: %v", full.id, err)
			return nil
		case codes.DeadlineExceeded:
			t.Fatalf("a write through %s hung for 20 s with its data directory full", full.id)
		}
		return fmt.Errorf("write through %s: %v", full.id, err)
	})
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, &ok, len(ok.list())+20)
	stop()
	<-done
	names := ok.list()
	waitFor(t, 60*time.Second, full.id+" catches up once space is back", func(ctx context.Context) error {
		return allPresent(ctx, apis[full.id], names)
	})
	waitFor(t, 30*time.Second, "a write through "+full.id+" once space is back", func(ctx context.Context) error {
		_, err := apis[full.id].vs.CreateVirtualService(ctx, &edgelbv1.CreateVirtualServiceRequest{Service: newService("after-space")})
		if status.Code(err) == codes.AlreadyExists {
			return nil
		}
		return err
	})
	t.Logf("%d acknowledged services, all on %s after its disk was full", len(names), full.id)
}
