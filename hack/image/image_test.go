package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

const (
	testTag     = "ghcr.io/ddpush/ddpush-operator:v9.8.7-test"
	testVersion = "v9.8.7-test"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error

	archiveOnce   sync.Once
	archiveDir    string
	archivePath   string
	archiveDigest v1.Hash
)

// sharedArchive is one archive built for the tests that only read it.
func sharedArchive(t *testing.T) (string, v1.Hash) {
	t.Helper()
	archiveOnce.Do(func() {
		var err error
		if archiveDir, err = os.MkdirTemp("", "ddpush-image-archive-"); err != nil {
			t.Fatal(err)
		}
		archivePath = filepath.Join(archiveDir, "image.tar")
		archiveDigest = buildArchive(t, archivePath)
	})
	if archiveDigest.Hex == "" {
		t.Fatal("the shared archive was not built")
	}
	return archivePath, archiveDigest
}

// linuxBinaries builds the three programs for linux on this machine's
// architecture, as make image does, once per test run.
func linuxBinaries(t *testing.T) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Fatalf("the image's binaries are linux executables and must run here: GOOS=%s", runtime.GOOS)
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "ddpush-image-bin-")
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
			"-ldflags", "-s -w -X github.com/ddpush/ddpush-operator/node.Version="+testVersion,
			"-o", binDir+"/", "./cmd/manager", "./cmd/pushnode", "./cmd/pushctl")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOWORK=off", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range []string{binDir, archiveDir} {
		if d != "" {
			_ = os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

func buildArchive(t *testing.T, out string) v1.Hash {
	t.Helper()
	d, err := Build(Options{
		BinariesDir: linuxBinaries(t), Tag: testTag, Out: out, Arch: runtime.GOARCH,
		Version: testVersion, Created: time.Unix(1700000000, 0).UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// archiveFiles reads a tar file into name -> content (directories: nil).
func archiveFiles(t *testing.T, r io.Reader) (map[string][]byte, map[string]*tar.Header) {
	t.Helper()
	files, hdrs := map[string][]byte{}, map[string]*tar.Header{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, hdrs
		}
		if err != nil {
			t.Fatal(err)
		}
		var data []byte
		if h.Typeflag == tar.TypeReg {
			if data, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
		n := strings.TrimSuffix(h.Name, "/")
		files[n], hdrs[n] = data, h
	}
}

func TestArchiveHasBothLayouts(t *testing.T) {
	out, digest := sharedArchive(t)
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	files, _ := archiveFiles(t, f)

	for _, want := range []string{"oci-layout", "index.json", "manifest.json"} {
		if files[want] == nil {
			t.Errorf("no %s in the archive", want)
		}
	}
	// Every blob is named by its content's digest.
	for n, data := range files {
		if hex, ok := strings.CutPrefix(n, "blobs/sha256/"); ok && hex != "" {
			h, _, err := v1.SHA256(bytes.NewReader(data))
			if err != nil || h.Hex != hex {
				t.Errorf("blob %s has digest %v (%v)", n, h, err)
			}
		}
	}

	// OCI: index.json names the image as containerd and docker save do.
	var idx v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests", len(idx.Manifests))
	}
	m := idx.Manifests[0]
	if m.Digest != digest || m.MediaType != "application/vnd.oci.image.manifest.v1+json" ||
		m.Annotations["io.containerd.image.name"] != testTag || m.Annotations["org.opencontainers.image.ref.name"] != "v9.8.7-test" {
		t.Errorf("index.json manifest: %+v (want digest %s)", m, digest)
	}

	// Docker: manifest.json points at the same config and layer blobs.
	var dm tarball.Manifest
	if err := json.Unmarshal(files["manifest.json"], &dm); err != nil {
		t.Fatal(err)
	}
	if len(dm) != 1 || !slices.Equal(dm[0].RepoTags, []string{testTag}) || len(dm[0].Layers) != 1 {
		t.Fatalf("manifest.json: %+v", dm)
	}
	for _, p := range append([]string{dm[0].Config}, dm[0].Layers...) {
		if files[p] == nil {
			t.Errorf("manifest.json names %s, which the archive lacks", p)
		}
	}
}

// Both views of the archive, read back by the library's own loaders,
// are complete and consistent images (digests, sizes, diff ids), and the
// same image.
func TestArchiveLoadsAsDockerAndOCI(t *testing.T) {
	dir := t.TempDir()
	out, digest := sharedArchive(t)

	tag, err := name.NewTag(testTag)
	if err != nil {
		t.Fatal(err)
	}
	docker, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("docker view: %v", err)
	}
	if err := validate.Image(docker); err != nil {
		t.Fatalf("docker view: %v", err)
	}

	unpacked := filepath.Join(dir, "oci")
	untar(t, out, unpacked)
	idx, err := layout.ImageIndexFromPath(unpacked)
	if err != nil {
		t.Fatalf("OCI view: %v", err)
	}
	oci, err := idx.Image(digest)
	if err != nil {
		t.Fatalf("OCI view: %v", err)
	}
	if err := validate.Image(oci); err != nil {
		t.Fatalf("OCI view: %v", err)
	}
	dcfg, _ := docker.ConfigName()
	ocfg, _ := oci.ConfigName()
	if dcfg != ocfg {
		t.Errorf("the two views differ: config %s and %s", dcfg, ocfg)
	}
}

func TestImageConfigAndFiles(t *testing.T) {
	out, _ := sharedArchive(t)
	tag, _ := name.NewTag(testTag)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	if !slices.Equal(c.Entrypoint, []string{"/manager"}) || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q, cmd %q", c.Entrypoint, c.Cmd)
	}
	if c.User != "65532:65532" || c.WorkingDir != "/home/nonroot" {
		t.Errorf("user %q, working dir %q", c.User, c.WorkingDir)
	}
	if c.Labels["org.opencontainers.image.version"] != testVersion {
		t.Errorf("labels %v", c.Labels)
	}
	if !cf.Created.Time.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("created %v", cf.Created)
	}

	rc := mutate.Extract(img)
	defer func() { _ = rc.Close() }()
	files, hdrs := archiveFiles(t, rc)
	var names []string
	for n := range hdrs {
		names = append(names, n)
	}
	slices.Sort(names)
	want := []string{"etc", "etc/group", "etc/passwd", "home", "home/nonroot", "manager", "pushctl", "pushnode", "tmp"}
	if !slices.Equal(names, want) {
		t.Fatalf("files %q, want exactly %q (no shell, nothing else)", names, want)
	}
	for _, b := range Binaries {
		h := hdrs[b]
		if h.Mode != 0o755 || h.Uid != 0 || !h.ModTime.Equal(time.Unix(1700000000, 0)) {
			t.Errorf("/%s: mode %o uid %d time %v", b, h.Mode, h.Uid, h.ModTime)
		}
	}
	if h := hdrs["home/nonroot"]; h.Uid != UID || h.Gid != UID || h.Mode != 0o700 {
		t.Errorf("/home/nonroot: uid %d gid %d mode %o", h.Uid, h.Gid, h.Mode)
	}
	if h := hdrs["tmp"]; h.Mode != 0o1777 {
		t.Errorf("/tmp: mode %o", h.Mode)
	}
	if !strings.Contains(string(files["etc/passwd"]), "nonroot:x:65532:65532:") {
		t.Errorf("/etc/passwd:\n%s", files["etc/passwd"])
	}

	// The binaries in the image run: extracted and executed here.
	run := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		bin  string
		args []string
		want string
	}{
		{"pushnode", []string{"--help"}, "Runs a DDPush v1 push node"},
		{"pushnode", []string{"--version"}, testVersion},
		{"pushctl", []string{"--help"}, "pushctl"},
		{"manager", []string{"--version"}, testVersion},
		{"manager", []string{"--help"}, "-pushnode-image"},
	} {
		p := filepath.Join(run, tc.bin)
		if err := os.WriteFile(p, files[tc.bin], 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, p, tc.args...).CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("/%s %s: %v\n%s", tc.bin, strings.Join(tc.args, " "), err, out)
		}
	}
}

// The same binaries make the same archive, byte for byte.
func TestArchiveIsReproducible(t *testing.T) {
	a, da := sharedArchive(t)
	b := filepath.Join(t.TempDir(), "b.tar")
	db := buildArchive(t, b)
	if da != db {
		t.Fatalf("digests %s and %s", da, db)
	}
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ba, bb) {
		t.Fatal("archives differ")
	}
}

func TestBadInputsWriteNothing(t *testing.T) {
	bins := linuxBinaries(t)
	notELF := t.TempDir()
	for _, b := range Binaries {
		if err := os.WriteFile(filepath.Join(notELF, b), []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	partial := t.TempDir()
	data, err := os.ReadFile(filepath.Join(bins, "pushnode"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(partial, "pushnode"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, bins, tag, want string
	}{
		{"no tag", bins, "ghcr.io/ddpush/ddpush-operator", "--tag"},
		{"bad reference", bins, "Not A Reference:x", "--tag"},
		{"empty tag", bins, "", "--tag"},
		{"missing binaries", partial, testTag, "binary manager"},
		{"no such directory", filepath.Join(partial, "nope"), testTag, "binary manager"},
		{"not executables", notELF, testTag, "not a Linux (ELF) executable"},
	} {
		out := filepath.Join(t.TempDir(), "image.tar")
		_, err := Build(Options{BinariesDir: tc.bins, Tag: tc.tag, Out: out, Arch: runtime.GOARCH})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
		if _, statErr := os.Stat(out); !errors.Is(statErr, os.ErrNotExist) {
			t.Errorf("%s: an archive was written", tc.name)
		}
	}
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	files, hdrs := archiveFiles(t, f)
	for n, h := range hdrs {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
