package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Binaries are the programs in the image, at its root.
var Binaries = []string{"manager", "pushnode", "pushctl"}

// The image's user: distroless's "nonroot".
const (
	UID     = 65532
	User    = "65532:65532"
	HomeDir = "/home/nonroot"
)

// Options say what to build.
type Options struct {
	BinariesDir string // holds the linux binaries named in Binaries
	Tag         string // the image reference, with a tag
	Out         string // the archive to write
	Arch        string // GOARCH of the binaries
	Version     string
	Revision    string
	Created     time.Time // image creation time and every file's time
}

// Build writes the image archive and returns the image's manifest digest.
func Build(o Options) (v1.Hash, error) {
	tag, err := name.NewTag(o.Tag, name.StrictValidation)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("--tag %q: %w (want registry/repository:tag)", o.Tag, err)
	}
	img, err := Image(o)
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := writeArchive(img, tag, o); err != nil {
		return v1.Hash{}, fmt.Errorf("write %s: %w", o.Out, err)
	}
	return digest, nil
}

// Image assembles the image: one layer on an empty base.
func Image(o Options) (v1.Image, error) {
	if o.Created.IsZero() {
		o.Created = time.Unix(0, 0).UTC()
	}
	layerTar, err := rootFS(o)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.ConfigFile(img, configFile(o))
	if err != nil {
		return nil, err
	}
	return mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: o.Created},
			CreatedBy: "hack/image: /" + strings.Join(Binaries, " /") + ", user " + User,
		},
	})
}

func configFile(o Options) *v1.ConfigFile {
	cf := &v1.ConfigFile{
		Architecture: o.Arch,
		OS:           "linux",
		Created:      v1.Time{Time: o.Created},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			// The manager by default; push node pods run /pushnode as
			// their command.
			Entrypoint: []string{"/manager"},
			User:       User,
			WorkingDir: HomeDir,
			Env:        []string{"PATH=/"},
			// manager: 8080/8443 metrics, 8081 probes; pushnode: 9966
			// phones (UDP and TCP), 9999 app servers, 8080 HTTP API.
			ExposedPorts: map[string]struct{}{
				"8080/tcp": {}, "8081/tcp": {}, "8443/tcp": {},
				"9966/udp": {}, "9966/tcp": {}, "9999/tcp": {},
			},
			Labels: map[string]string{
				"org.opencontainers.image.title":       "ddpush-operator",
				"org.opencontainers.image.description": "Kubernetes operator for DDPush-compatible push nodes, and the push node itself (/manager, /pushnode, /pushctl)",
				"org.opencontainers.image.source":      "https://github.com/ddpush/ddpush-operator",
				"org.opencontainers.image.version":     o.Version,
				"org.opencontainers.image.revision":    o.Revision,
			},
		},
	}
	if o.Arch == "arm64" {
		cf.Variant = "v8"
	}
	return cf
}

// rootFS is the image's one layer: the binaries, a passwd and group file
// naming the user, its home (the working directory, writable by it) and
// /tmp. No shell, no package manager, nothing else.
func rootFS(o Options) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := func(h *tar.Header) error {
		h.ModTime = o.Created
		h.Format = tar.FormatPAX
		return tw.WriteHeader(h)
	}
	file := func(path string, mode int64, data []byte) error {
		if err := hdr(&tar.Header{Typeflag: tar.TypeReg, Name: path, Mode: mode, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	dir := func(path string, mode int64, uid int) error {
		return hdr(&tar.Header{Typeflag: tar.TypeDir, Name: path + "/", Mode: mode, Uid: uid, Gid: uid})
	}
	if err := dir("etc", 0o755, 0); err != nil {
		return nil, err
	}
	if err := file("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")); err != nil {
		return nil, err
	}
	if err := file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"+
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")); err != nil {
		return nil, err
	}
	if err := dir("home", 0o755, 0); err != nil {
		return nil, err
	}
	if err := dir(strings.TrimPrefix(HomeDir, "/"), 0o700, UID); err != nil {
		return nil, err
	}
	for _, b := range Binaries {
		data, err := os.ReadFile(filepath.Join(o.BinariesDir, b))
		if err != nil {
			return nil, fmt.Errorf("binary %s: %w (build the linux binaries first: make image)", b, err)
		}
		if !bytes.HasPrefix(data, []byte("\x7fELF")) {
			return nil, fmt.Errorf("binary %s in %s is not a Linux (ELF) executable", b, o.BinariesDir)
		}
		if err := file(b, 0o755, data); err != nil {
			return nil, err
		}
	}
	if err := dir("tmp", 0o1777, 0); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeArchive writes img as an OCI image layout plus a Docker
// manifest.json over the same blobs, into one tar file.
func writeArchive(img v1.Image, tag name.Tag, o Options) error {
	dir, err := os.MkdirTemp("", "ddpush-image-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		// What containerd (ctr import, kind load) names the image by.
		"io.containerd.image.name": containerdName(tag),
		// What the OCI layout calls it, as docker save writes it.
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return err
	}

	// The Docker view: the same config and layer blobs, and the tag.
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	d := tarball.Descriptor{Config: blobPath(cfgName), RepoTags: []string{o.Tag}}
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			return err
		}
		d.Layers = append(d.Layers, blobPath(h))
	}
	manifest, err := json.Marshal(tarball.Manifest{d})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), manifest, 0o644); err != nil {
		return err
	}
	return tarDir(dir, o.Out, o.Created)
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// containerdName is the fully qualified name containerd gives a reference
// (docker.io/library/x:tag for a Docker Hub short name).
func containerdName(tag name.Tag) string {
	reg := tag.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + tag.RepositoryStr() + ":" + tag.TagStr()
}

// tarDir writes every file under dir into the tar file out, in name order,
// with fixed times and modes, through a temporary file renamed into place.
func tarDir(dir, out string, mtime time.Time) error {
	var paths []string
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(paths)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp.")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(f.Name()) }()
	tw := tar.NewWriter(f)
	for _, path := range paths {
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Format: tar.FormatPAX}
		if st.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, st.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if err := copyFile(tw, path); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), out)
}

func copyFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	_, err = io.Copy(w, f)
	return err
}
