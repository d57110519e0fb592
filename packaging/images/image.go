// Package images assembles edgelb's OCI images (lbd, the cloud-controller-
// manager) without a container daemon or a base image pulled from a
// registry: go-containerregistry builds the manifest and config from layers
// this package writes itself, and the result is an OCI image layout packed
// into one tar (an "oci-archive", what skopeo and podman load).
//
// Everything that goes into an image is fixed by its inputs, so the same
// sources give the same digest on every build: tar entries sorted, owned by
// 0:0 (or the named uid), with one modification time (SOURCE_DATE_EPOCH); the
// config's created time and history are that time too; gzip has no name or
// time in its header. cmd/edgelb-images builds the binaries for it
// (CGO_ENABLED=0, -trimpath, -buildvcs=false) and is what `make images` runs.
package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NonrootUID is the user the CCM image runs as (and configs/ccm/deployment.yaml's
// runAsUser): the uid distroless images call nonroot.
const NonrootUID = 65532

// File is one entry of a layer. A Path ending in "/" is a directory; Link
// makes a symbolic link.
type File struct {
	Path     string // absolute in the image, e.g. /usr/bin/lbd or /tmp/
	Mode     fs.FileMode
	UID, GID int
	Data     []byte // a file's content (unless Src is set)
	Src      string // a file on this machine to copy the content from
	Link     string
}

// BaseFiles is the layer under every edgelb image: the users a process may
// run as (a Go binary's os/user and logs want /etc/passwd to name them), a
// world-writable /tmp and the nonroot user's home. There is no CA bundle: the
// CCM's TLS peers are the kube-apiserver (CA from the ServiceAccount) and lbd
// (tls.caFile of the cloud-config), lbd's are its members and clients (its
// own CA), so none is verified against public roots — and a bundle copied
// from the build host would make the digest depend on that host.
func BaseFiles() []File {
	return []File{
		{Path: "/etc/", Mode: 0o755},
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(fmt.Sprintf(
			"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonrootUID, NonrootUID))},
		{Path: "/etc/group", Mode: 0o644, Data: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonrootUID))},
		// Go's resolver reads the order of /etc/hosts and DNS from here.
		{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte("hosts: files dns\n")},
		{Path: "/home/", Mode: 0o755},
		{Path: "/home/nonroot/", Mode: 0o700, UID: NonrootUID, GID: NonrootUID},
		{Path: "/root/", Mode: 0o700},
		{Path: "/tmp/", Mode: 0o777 | fs.ModeSticky},
		{Path: "/usr/", Mode: 0o755},
		{Path: "/usr/bin/", Mode: 0o755},
	}
}

// LayerTar writes files as a tar stream: sorted by path, parent directories
// listed before what they hold (missing ones added, 0755 root), every entry
// with modification time mtime and no user or group names, so that the bytes
// depend on nothing but the files.
func LayerTar(w io.Writer, files []File, mtime time.Time) error {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			return fmt.Errorf("layer entry %q: the root is no entry", f.Path)
		}
		if strings.HasSuffix(f.Path, "/") {
			f.Mode |= fs.ModeDir
		}
		if _, dup := byPath[p]; dup {
			return fmt.Errorf("layer entry %s listed twice", p)
		}
		byPath[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = File{Path: d + "/", Mode: fs.ModeDir | 0o755}
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	// Sorted path by path component, so that /usr/bin comes right after /usr
	// (a plain string sort puts /usr-x between them; harmless, but this is
	// the order every unpacker expects).
	slices.SortFunc(paths, func(a, b string) int {
		return slices.Compare(strings.Split(a, "/"), strings.Split(b, "/"))
	})
	tw := tar.NewWriter(w)
	mtime = mtime.UTC().Truncate(time.Second)
	for _, p := range paths {
		f := byPath[p]
		h := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    int64(f.Mode.Perm()),
			Uid:     f.UID,
			Gid:     f.GID,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if f.Mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		var data []byte
		switch {
		case f.Mode.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case f.Link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
		default:
			h.Typeflag, data = tar.TypeReg, f.Data
			if f.Src != "" {
				b, err := os.ReadFile(f.Src)
				if err != nil {
					return fmt.Errorf("layer entry %s: %w", p, err)
				}
				data = b
			}
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("layer entry %s: %w", p, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("layer entry %s: %w", p, err)
		}
	}
	return tw.Close()
}

// Layer is LayerTar as an OCI layer (gzip).
func Layer(files []File, mtime time.Time) (v1.Layer, error) {
	var buf bytes.Buffer
	if err := LayerTar(&buf, files, mtime); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// Spec describes one image.
type Spec struct {
	Layers     [][]File // bottom first
	Platform   v1.Platform
	Created    time.Time // also every entry's modification time
	User       string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	Env        []string
	Volumes    []string
	Ports      []string // e.g. 7700/tcp
	Labels     map[string]string
}

// Image builds the image of spec.
func Image(spec Spec) (v1.Image, error) {
	created := v1.Time{Time: spec.Created.UTC().Truncate(time.Second)}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for i, files := range spec.Layers {
		l, err := Layer(files, spec.Created)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{
			Created: created, CreatedBy: "edgelb packaging/images", Comment: fmt.Sprintf("layer %d", i)}})
		if err != nil {
			return nil, fmt.Errorf("adding layer %d: %w", i, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.OS, cf.Architecture, cf.Variant = spec.Platform.OS, spec.Platform.Architecture, spec.Platform.Variant
	cf.Config.User = spec.User
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.WorkingDir = spec.WorkingDir
	cf.Config.Env = spec.Env
	cf.Config.Labels = spec.Labels
	if len(spec.Volumes) > 0 {
		cf.Config.Volumes = map[string]struct{}{}
		for _, v := range spec.Volumes {
			cf.Config.Volumes[v] = struct{}{}
		}
	}
	if len(spec.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range spec.Ports {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting the image config: %w", err)
	}
	return img, nil
}

// WriteArchive writes img as an OCI image layout tar (skopeo's and podman's
// "oci-archive:") to w, its index naming it ref
// (org.opencontainers.image.ref.name), and returns the manifest's digest: the
// digest a registry keeps for it when the archive is copied there.
func WriteArchive(w io.Writer, img v1.Image, ref string, mtime time.Time) (v1.Hash, error) {
	dir, err := os.MkdirTemp("", "edgelb-oci-layout-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("writing the OCI layout: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, err
	}
	plat := v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}),
		layout.WithPlatform(plat)); err != nil {
		return v1.Hash{}, fmt.Errorf("writing the image into the OCI layout: %w", err)
	}
	if err := tarDir(w, dir, mtime); err != nil {
		return v1.Hash{}, fmt.Errorf("packing the OCI layout: %w", err)
	}
	return img.Digest()
}

// tarDir packs the layout directory: sorted, one mtime, 0:0, modes
// normalised (the layout writer's depend on the umask).
func tarDir(w io.Writer, dir string, mtime time.Time) error {
	var files []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			files = append(files, File{Path: "/" + filepath.ToSlash(rel) + "/", Mode: 0o755})
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", rel)
		}
		files = append(files, File{Path: "/" + filepath.ToSlash(rel), Mode: 0o644, Src: p})
		return nil
	})
	if err != nil {
		return err
	}
	return LayerTar(w, files, mtime)
}
