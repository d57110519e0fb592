package images

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

var epoch = time.Unix(1764806400, 0).UTC() // 2025-12-04

func testSpec(t *testing.T, created time.Time) Spec {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(bin, []byte("#!/bin/false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Spec{
		Layers:     [][]File{BaseFiles(), {{Path: "/usr/bin/app", Mode: 0o755, Src: bin}, {Path: "/var/lib/app/", Mode: 0o700}}},
		Platform:   v1.Platform{OS: "linux", Architecture: "amd64"},
		Created:    created,
		User:       "65532:65532",
		Entrypoint: []string{"/usr/bin/app"},
		Volumes:    []string{"/var/lib/app"},
		Ports:      []string{"7700/tcp"},
		Labels:     map[string]string{"a": "b"},
	}
}

type entry struct {
	name     string
	mode     int64
	uid, gid int
	mtime    time.Time
	uname    string
	typ      byte
}

func readTar(t *testing.T, r io.Reader) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{h.Name, h.Mode, h.Uid, h.Gid, h.ModTime, h.Uname + h.Gname, h.Typeflag})
	}
}

// TestLayerTarIsCanonical: whatever order files come in, the tar lists them
// by path with their parents first, all at the one mtime, with no owner names.
func TestLayerTarIsCanonical(t *testing.T) {
	files := []File{
		{Path: "/usr/bin/b", Mode: 0o755, Data: []byte("b")},
		{Path: "/etc/x", Mode: 0o600, UID: 7, GID: 8, Data: []byte("x")},
		{Path: "/usr/bin/a", Mode: 0o755, Data: []byte("a")},
		{Path: "/usr-local/z", Mode: 0o644},
		{Path: "/tmp/", Mode: 0o777 | fs.ModeSticky},
		{Path: "/usr/bin/sh", Link: "a"},
	}
	var one, two bytes.Buffer
	if err := LayerTar(&one, files, epoch); err != nil {
		t.Fatal(err)
	}
	rev := append([]File(nil), files...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if err := LayerTar(&two, rev, epoch); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Fatal("the same files in another order gave another tar")
	}
	got := readTar(t, bytes.NewReader(one.Bytes()))
	var names []string
	for _, e := range got {
		names = append(names, e.name)
		if !e.mtime.Equal(epoch) || e.uname != "" {
			t.Errorf("%s: mtime %v, owner names %q; want %v and none", e.name, e.mtime, e.uname, epoch)
		}
	}
	want := "etc/ etc/x tmp/ usr/ usr/bin/ usr/bin/a usr/bin/b usr/bin/sh usr-local/ usr-local/z"
	if strings.Join(names, " ") != want {
		t.Fatalf("entries %q\nwant    %q", strings.Join(names, " "), want)
	}
	for _, e := range got {
		switch e.name {
		case "tmp/":
			if e.mode != 0o1777 || e.typ != tar.TypeDir {
				t.Errorf("tmp/: mode %o type %c, want 1777 dir", e.mode, e.typ)
			}
		case "etc/x":
			if e.mode != 0o600 || e.uid != 7 || e.gid != 8 {
				t.Errorf("etc/x: mode %o %d:%d", e.mode, e.uid, e.gid)
			}
		case "usr/bin/sh":
			if e.typ != tar.TypeSymlink {
				t.Errorf("usr/bin/sh: type %c, want a symlink", e.typ)
			}
		}
	}
	if err := LayerTar(io.Discard, append(files, File{Path: "/etc/x"}), epoch); err == nil {
		t.Fatal("a path listed twice was accepted")
	}
}

// TestImageIsReproducible: the same spec gives the same digest and the same
// archive bytes; another creation time gives another digest.
func TestImageIsReproducible(t *testing.T) {
	archive := func(spec Spec) (v1.Hash, []byte) {
		img, err := Image(spec)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		d, err := WriteArchive(&buf, img, "v1", spec.Created)
		if err != nil {
			t.Fatal(err)
		}
		return d, buf.Bytes()
	}
	d1, a1 := archive(testSpec(t, epoch))
	d2, a2 := archive(testSpec(t, epoch))
	if d1 != d2 || !bytes.Equal(a1, a2) {
		t.Fatalf("two builds of one spec: %s and %s (archives equal: %v)", d1, d2, bytes.Equal(a1, a2))
	}
	d3, _ := archive(testSpec(t, epoch.Add(time.Second)))
	if d3 == d1 {
		t.Fatal("another SOURCE_DATE_EPOCH gave the same digest: the time is not in the image")
	}
}

// TestArchiveIsAnOCILayout reads the archive back as an OCI image layout: one
// manifest named by its ref, whose digest WriteArchive returned, with the
// config the spec asked for and the base layer under the application's.
func TestArchiveIsAnOCILayout(t *testing.T) {
	spec := testSpec(t, epoch)
	img, err := Image(spec)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	d, err := WriteArchive(&buf, img, "v1.2.3", epoch)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != d || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1.2.3" {
		b, _ := json.Marshal(im)
		t.Fatalf("index.json %s; want one manifest %s named v1.2.3", b, d)
	}
	back, err := idx.Image(d)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := back.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532:65532" || strings.Join(cf.Config.Entrypoint, " ") != "/usr/bin/app" || !cf.Created.Time.Equal(epoch) ||
		cf.Architecture != "amd64" || cf.OS != "linux" || cf.Config.Labels["a"] != "b" {
		t.Fatalf("config %+v", cf)
	}
	if _, ok := cf.Config.Volumes["/var/lib/app"]; !ok {
		t.Errorf("volumes %v", cf.Config.Volumes)
	}
	layers, err := back.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("%d layers, %v; want base and application", len(layers), err)
	}
	rc, err := layers[1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var names []string
	for _, e := range readTar(t, rc) {
		names = append(names, e.name)
	}
	if strings.Join(names, " ") != "usr/ usr/bin/ usr/bin/app var/ var/lib/ var/lib/app/" {
		t.Fatalf("application layer: %q", names)
	}
}
