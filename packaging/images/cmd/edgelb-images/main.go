// Command edgelb-images builds edgelb's OCI image archives with no container
// daemon and no base image from a registry (`make images`):
//
//	OUT/lbd.oci.tar  lbd and lbctl, as root (lbd needs NET_ADMIN and NET_RAW; see docs/INSTALL.md)
//	OUT/ccm.oci.tar  edgelb-cloud-controller-manager, as uid 65532
//	OUT/digests      "<manifest digest> <archive> <tag>" per image
//
// The same commit gives the same digests: static binaries built with
// CGO_ENABLED=0 -trimpath -buildvcs=false, and every time in the image is
// SOURCE_DATE_EPOCH (default: the commit time of HEAD). Run it from the
// module root.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/edgelb/edgelb/packaging/images"
)

func main() {
	out := flag.String("out", "bin/images", "directory for the archives and the digests file")
	version := flag.String("version", "", "version and tag (default: git describe, or 0.0.0-gitDATE.COMMIT; -dirty when the tree has changes)")
	goarch := flag.String("goarch", "", "GOARCH of the images (default: go env GOARCH)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *out, *version, *goarch); err != nil {
		slog.Error("make images failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out, version, goarch string) error {
	if _, err := os.Stat("go.mod"); err != nil {
		return fmt.Errorf("run from the module root (no go.mod here): %w", err)
	}
	var err error
	if goarch == "" {
		if goarch, err = output(ctx, "go", "env", "GOARCH"); err != nil {
			return err
		}
	}
	commit, _ := output(ctx, "git", "rev-parse", "HEAD")
	if version == "" {
		if version, err = gitVersion(ctx); err != nil {
			return err
		}
	}
	epoch, err := sourceDateEpoch(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "edgelb-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	ldflags := strings.Join([]string{"-s -w",
		"-X github.com/edgelb/edgelb/lbd/daemon.Version=" + version,
		"-X github.com/edgelb/edgelb/lbctl/cli.Version=" + version,
		// What the CCM's --version prints (k8s.io/component-base/version).
		"-X k8s.io/component-base/version.gitVersion=v" + strings.TrimPrefix(version, "v"),
		"-X k8s.io/component-base/version.gitCommit=" + commit,
		"-X k8s.io/component-base/version.gitTreeState=" + map[bool]string{true: "dirty", false: "clean"}[strings.HasSuffix(version, "-dirty")],
	}, " ")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", work+"/",
		"./lbd", "./lbctl", "./cloudprovider/cmd/edgelb-cloud-controller-manager")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := build.Run(); err != nil {
		return fmt.Errorf("building the binaries: %w", err)
	}
	slog.Info("binaries built", "version", version, "goarch", goarch, "took", time.Since(start).Round(time.Millisecond))

	plat := v1.Platform{OS: "linux", Architecture: goarch}
	labels := func(title string) map[string]string {
		return map[string]string{
			"org.opencontainers.image.title":    title,
			"org.opencontainers.image.version":  version,
			"org.opencontainers.image.revision": commit,
			"org.opencontainers.image.source":   "https://github.com/edgelb/edgelb",
			"org.opencontainers.image.created":  epoch.UTC().Format(time.RFC3339),
		}
	}
	path := []string{"PATH=/usr/bin"}
	specs := []struct {
		name string
		spec images.Spec
	}{
		{"lbd", images.Spec{
			Layers: [][]images.File{images.BaseFiles(), {
				{Path: "/usr/bin/lbd", Mode: 0o755, Src: filepath.Join(work, "lbd")},
				{Path: "/usr/bin/lbctl", Mode: 0o755, Src: filepath.Join(work, "lbctl")},
				{Path: "/etc/edgelb/", Mode: 0o755},
				{Path: "/var/lib/edgelb/", Mode: 0o700},
			}},
			// Root, as the systemd unit: /proc/sys/net and the xtables lock are
			// root's; the runtime grants only the capabilities it is given.
			User:       "0:0",
			Entrypoint: []string{"/usr/bin/lbd"},
			Cmd:        []string{"--config", "/etc/edgelb/lbd.yaml"},
			WorkingDir: "/var/lib/edgelb",
			Env:        path,
			Volumes:    []string{"/var/lib/edgelb"},
			Ports:      []string{"7700/tcp", "7701/tcp", "7702/tcp"},
			Labels:     labels("edgelb lbd"),
		}},
		{"ccm", images.Spec{
			Layers: [][]images.File{images.BaseFiles(), {
				{Path: "/usr/bin/edgelb-cloud-controller-manager", Mode: 0o755, Src: filepath.Join(work, "edgelb-cloud-controller-manager")},
			}},
			User:       fmt.Sprintf("%d:%d", images.NonrootUID, images.NonrootUID),
			Entrypoint: []string{"/usr/bin/edgelb-cloud-controller-manager"},
			WorkingDir: "/home/nonroot",
			Env:        path,
			Ports:      []string{"10258/tcp"},
			Labels:     labels("edgelb cloud-controller-manager"),
		}},
	}
	var digests strings.Builder
	for _, s := range specs {
		s.spec.Platform, s.spec.Created = plat, epoch
		img, err := images.Image(s.spec)
		if err != nil {
			return fmt.Errorf("image %s: %w", s.name, err)
		}
		name := s.name + ".oci.tar"
		d, err := writeArchive(filepath.Join(out, name), img, version, epoch)
		if err != nil {
			return fmt.Errorf("image %s: %w", s.name, err)
		}
		fmt.Fprintf(&digests, "%s %s %s\n", d, name, version)
	}
	if err := os.WriteFile(filepath.Join(out, "digests"), []byte(digests.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(digests.String())
	return nil
}

// writeArchive writes the archive next to its final name and renames it, so a
// failed build leaves no half archive under the name.
func writeArchive(dst string, img v1.Image, ref string, mtime time.Time) (v1.Hash, error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.Remove(f.Name())
	d, err := images.WriteArchive(f, img, ref, mtime)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return v1.Hash{}, err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return v1.Hash{}, err
	}
	return d, os.Rename(f.Name(), dst)
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Stderr = &stderr
	b, err := c.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(string(b)), nil
}

// gitVersion is the tag (git describe), else 0.0.0-gitYYYYMMDD.COMMIT, with
// -dirty when the work tree has uncommitted changes: an image tag
// ([A-Za-z0-9_.-]) that says which sources it was built from.
func gitVersion(ctx context.Context) (string, error) {
	v, err := output(ctx, "git", "describe", "--tags", "--match", "v[0-9]*", "--dirty")
	if err == nil {
		return strings.ReplaceAll(v, "+", "_"), nil
	}
	date, err := output(ctx, "git", "log", "-1", "--format=%cd", "--date=format:%Y%m%d")
	if err != nil {
		return "", fmt.Errorf("no version given and no git history to derive one (set -version): %w", err)
	}
	short, err := output(ctx, "git", "rev-parse", "--short=12", "HEAD")
	if err != nil {
		return "", err
	}
	v = "0.0.0-git" + date + "." + short
	if st, err := output(ctx, "git", "status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		v += "-dirty"
	}
	return v, nil
}

// sourceDateEpoch is $SOURCE_DATE_EPOCH, else the commit time of HEAD.
func sourceDateEpoch(ctx context.Context) (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		var err error
		if s, err = output(ctx, "git", "log", "-1", "--format=%ct"); err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH unset and no commit time to use: %w", err)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970 (e.g. git log -1 --format=%%ct)", s)
	}
	return time.Unix(n, 0).UTC(), nil
}
