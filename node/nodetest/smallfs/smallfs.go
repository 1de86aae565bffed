// Package smallfs mounts a small, size-limited filesystem for tests that
// need a disk that really fills up: a loop-mounted ext4 image where the
// machine allows it, else a tmpfs with a size limit. Mounting needs root
// (CAP_SYS_ADMIN); where it is impossible the test is skipped with a
// message that says why.
package smallfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// FS is a mounted filesystem.
type FS struct {
	// Dir is the mount point.
	Dir string
	// Kind is "ext4" or "tmpfs".
	Kind   string
	filler string
}

// Mount mounts a filesystem of size bytes on a fresh directory and
// unmounts it when the test ends.
func Mount(t testing.TB, size int64) *FS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting a size-limited filesystem needs root (CAP_SYS_ADMIN), and this test runs as uid", os.Geteuid())
	}
	base := t.TempDir()
	dir := filepath.Join(base, "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fs := &FS{Dir: dir, filler: filepath.Join(dir, "filler")}
	extErr := mountExt4(t, base, dir, size)
	if extErr == nil {
		fs.Kind = "ext4"
	} else {
		out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", size), "tmpfs", dir).CombinedOutput()
		if err != nil {
			t.Skipf("skipped: cannot mount a size-limited filesystem on this machine: loop-mounted ext4: %v; tmpfs: %v: %s", extErr, err, strings.TrimSpace(string(out)))
		}
		fs.Kind = "tmpfs"
	}
	t.Cleanup(func() {
		// A lazy unmount cannot fail on a file some test left open.
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return fs
}

func mountExt4(t testing.TB, base, dir string, size int64) error {
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		return err
	}
	img := filepath.Join(base, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(img, size); err != nil {
		return err
	}
	// -m 0: no blocks reserved for root, so the node (root in tests) sees
	// the same full disk as everyone else.
	if out, err := exec.Command(mkfs, "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4: %v: %s", err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("mount -o loop: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Fill writes a filler file until the filesystem has no space left.
func (f *FS) Fill(t testing.TB) {
	t.Helper()
	fh, err := os.OpenFile(f.filler, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	// Big writes first, then ever smaller ones for the last partial blocks.
	for _, n := range []int{1 << 20, 64 << 10, 4 << 10, 512, 1} {
		buf := make([]byte, n)
		for {
			if _, err := fh.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill %s: %v", f.Dir, err)
				}
				break
			}
		}
	}
	if err := fh.Sync(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("sync filler: %v", err)
	}
}

// Free removes the filler file.
func (f *FS) Free(t testing.TB) {
	t.Helper()
	if err := os.Remove(f.filler); err != nil {
		t.Fatal(err)
	}
}

// Avail is the space left for unprivileged writers, in bytes.
func (f *FS) Avail(t testing.TB) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(f.Dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}
