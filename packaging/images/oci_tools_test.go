package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgelb/edgelb/internal/freeport"
)

// built is one line of the digests file.
type built struct{ digest, archive, tag string }

// TestMakeImagesWithOCITools (EDGELB_IMAGES=1; scripts/test.sh runs it after
// scripts/image-deps.sh) builds the images twice as `make images` does and
// requires the same digests and the same archive bytes; then Debian's skopeo
// reads each archive (its manifest digest is the one printed, its config the
// one intended) and copies it into an OCI layout, umoci unpacks that to a
// root filesystem, and the binaries run from it: chrooted, as the image's
// user, the CCM prints its version, and lbd serves on loopback to the
// image's own lbctl; and skopeo pushes both to a registry on loopback
// that keeps their digests. EDGELB_IMAGES_COLD=1 makes the second build use an
// empty Go build cache (minutes), so that nothing is reused from the first.
func TestMakeImagesWithOCITools(t *testing.T) {
	if os.Getenv("EDGELB_IMAGES") != "1" {
		t.Skip("set EDGELB_IMAGES=1 (needs skopeo, umoci and docker-registry: scripts/image-deps.sh)")
	}
	for _, tool := range []string{"skopeo", "umoci"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run scripts/image-deps.sh (as root)", tool)
		}
	}
	if _, err := os.Stat(registryBin); err != nil {
		t.Fatalf("%s not found: run scripts/image-deps.sh (as root)", registryBin)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	tool := filepath.Join(tmp, "edgelb-images")
	if out, err := exec.Command("go", "build", "-o", tool, "./cmd/edgelb-images").CombinedOutput(); err != nil {
		t.Fatalf("building cmd/edgelb-images: %v\n%s", err, out)
	}
	build := func(out string, env ...string) []built {
		t.Helper()
		start := time.Now()
		cmd := exec.Command(tool, "-out", out)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("make images into %s: %v\n%s", out, err, stderr.String())
		}
		b, err := os.ReadFile(filepath.Join(out, "digests"))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != stdout.String() {
			t.Errorf("printed %q, digests file says %q", stdout.String(), b)
		}
		var bs []built
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 || !strings.HasPrefix(f[0], "sha256:") {
				t.Fatalf("digests line %q: want <sha256:…> <archive> <tag>", line)
			}
			bs = append(bs, built{f[0], f[1], f[2]})
			t.Logf("%s %s %s", f[0], f[1], f[2])
		}
		t.Logf("built into %s in %s", out, time.Since(start).Round(time.Millisecond))
		return bs
	}
	out1, out2 := filepath.Join(tmp, "one"), filepath.Join(tmp, "two")
	first := build(out1)
	var env []string
	if os.Getenv("EDGELB_IMAGES_COLD") == "1" {
		env = append(env, "GOCACHE="+filepath.Join(tmp, "gocache"))
		t.Log("second build with an empty GOCACHE")
	}
	second := build(out2, env...)
	if fmt.Sprint(first) != fmt.Sprint(second) {
		t.Fatalf("two builds of the same sources gave\n%v\n%v", first, second)
	}
	names := map[string]built{}
	for _, b := range first {
		names[b.archive] = b
		h1, h2 := fileSHA(t, filepath.Join(out1, b.archive)), fileSHA(t, filepath.Join(out2, b.archive))
		if h1 != h2 {
			t.Errorf("%s: same manifest digest but archive bytes differ (%s, %s)", b.archive, h1, h2)
		}
	}
	if len(names) != 2 || names["lbd.oci.tar"].tag == "" || names["ccm.oci.tar"].tag == "" {
		t.Fatalf("want lbd.oci.tar and ccm.oci.tar, got %v", first)
	}

	// unpack reads an archive with skopeo and unpacks it with umoci; it
	// returns the root filesystem and the image's config.
	unpack := func(t *testing.T, b built) (string, imageConfig) {
		t.Helper()
		archive := "oci-archive:" + filepath.Join(out1, b.archive)
		raw := run(t, "skopeo", "inspect", "--raw", archive)
		if got := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(raw))); got != b.digest {
			t.Errorf("%s: skopeo reads a manifest of digest %s, make images printed %s", b.archive, got, b.digest)
		}
		var cfg struct {
			Config imageConfig `json:"config"`
		}
		if err := json.Unmarshal([]byte(run(t, "skopeo", "inspect", "--config", archive)), &cfg); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(tmp, strings.TrimSuffix(b.archive, ".oci.tar"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		run(t, "skopeo", "copy", "--quiet", archive, "oci:"+dir+"/layout:"+b.tag)
		args := []string{"unpack", "--image", dir + "/layout:" + b.tag, dir + "/bundle"}
		if os.Getuid() != 0 {
			args = append([]string{"--rootless"}, args...)
		}
		run(t, "umoci", args...)
		return filepath.Join(dir, "bundle", "rootfs"), cfg.Config
	}

	t.Run("ccm", func(t *testing.T) {
		b := names["ccm.oci.tar"]
		rootfs, cfg := unpack(t, b)
		if cfg.User != "65532:65532" || len(cfg.Entrypoint) != 1 || cfg.Entrypoint[0] != "/usr/bin/edgelb-cloud-controller-manager" {
			t.Fatalf("config: user %q entrypoint %q; want 65532:65532 and /usr/bin/edgelb-cloud-controller-manager", cfg.User, cfg.Entrypoint)
		}
		out := inImage(t, context.Background(), rootfs, cfg.User, append(cfg.Entrypoint, "--version")...)
		if want := "Kubernetes v" + strings.TrimPrefix(b.tag, "v"); strings.TrimSpace(out) != want {
			t.Fatalf("--version printed %q, want %q", out, want)
		}
		t.Logf("the CCM from the image: %s", strings.TrimSpace(out))
	})

	t.Run("lbd", func(t *testing.T) {
		b := names["lbd.oci.tar"]
		rootfs, cfg := unpack(t, b)
		if cfg.User != "0:0" || len(cfg.Entrypoint) != 1 || cfg.Entrypoint[0] != "/usr/bin/lbd" {
			t.Fatalf("config: user %q entrypoint %q; want 0:0 and /usr/bin/lbd", cfg.User, cfg.Entrypoint)
		}
		api := fmt.Sprintf("127.0.0.1:%d", freeport.Loopback(t))
		raft := fmt.Sprintf("127.0.0.1:%d", freeport.Loopback(t))
		// The image's lbd, control plane only (no kernel changes), on loopback.
		cmd := inImageCmd(context.Background(), rootfs, cfg.User, append(cfg.Entrypoint, "--id", "img", "--data-plane=none",
			"--api-addr", api, "--raft-addr", raft, "--metrics-addr", "", "--data-dir", "/var/lib/edgelb/data")...)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			cmd.Wait()
			if t.Failed() {
				t.Logf("lbd from the image:\n%s", log.String())
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var v map[string]string
		for {
			c := inImageCmd(ctx, rootfs, cfg.User, "/usr/bin/lbctl", "--endpoints", api, "version", "-o", "json")
			out, err := c.Output()
			if err == nil && json.Unmarshal(out, &v) == nil && v["serverVersion"] != "" {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("the image's lbctl got no answer from the image's lbd at %s within a minute: %v %s", api, err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if v["serverVersion"] != b.tag || v["clientVersion"] != b.tag || v["serverMember"] != "img" {
			t.Fatalf("lbctl version: %v; want client and server %s, member img", v, b.tag)
		}
		t.Logf("lbd and lbctl from the image: %v", v)
	})

	// docs/INSTALL.md's push: skopeo copy into a registry (Debian's
	// docker-registry, on loopback) keeps the digest make images printed, so
	// the Deployment can name the image by it.
	t.Run("push to a registry keeps the digest", func(t *testing.T) {
		reg := startRegistry(t, tmp)
		for _, b := range first {
			ref := "docker://" + reg + "/edgelb/" + strings.TrimSuffix(b.archive, ".oci.tar") + ":" + b.tag
			run(t, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci-archive:"+filepath.Join(out1, b.archive), ref)
			var got struct{ Digest string }
			if err := json.Unmarshal([]byte(run(t, "skopeo", "inspect", "--tls-verify=false", ref)), &got); err != nil {
				t.Fatal(err)
			}
			if got.Digest != b.digest {
				t.Errorf("%s in the registry has digest %s, make images printed %s", ref, got.Digest, b.digest)
			}
			byDigest := strings.TrimSuffix(ref, ":"+b.tag) + "@" + b.digest
			run(t, "skopeo", "inspect", "--tls-verify=false", "--raw", byDigest)
			t.Logf("pushed %s, pulled by %s", ref, byDigest)
		}
	})
}

const registryBin = "/usr/bin/docker-registry"

// startRegistry runs Debian's docker-registry on a loopback port with its
// storage under dir and returns its host:port; it is stopped when t ends.
func startRegistry(t *testing.T, dir string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freeport.Loopback(t))
	cfg := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "registry"), addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command(registryBin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("docker-registry:\n%s", log.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("docker-registry on %s did not answer /v2/ within 30 s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type imageConfig struct {
	User       string   `json:"User"`
	Entrypoint []string `json:"Entrypoint"`
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := exec.Command(name, args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// inImageCmd runs argv inside rootfs: chrooted as the image's user when we are
// root (so nothing from this machine's filesystem is used), else plainly.
func inImageCmd(ctx context.Context, rootfs, user string, argv ...string) *exec.Cmd {
	if os.Getuid() == 0 {
		return exec.CommandContext(ctx, "chroot", append([]string{"--userspec=" + user, rootfs}, argv...)...)
	}
	return exec.CommandContext(ctx, filepath.Join(rootfs, argv[0]), argv[1:]...)
}

func inImage(t *testing.T, ctx context.Context, rootfs, user string, argv ...string) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Log("not root: running the image's binary without chroot")
	}
	var stdout, stderr bytes.Buffer
	c := inImageCmd(ctx, rootfs, user, argv...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("%s in the image: %v\n%s", strings.Join(argv, " "), err, stderr.String())
	}
	return stdout.String()
}

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
