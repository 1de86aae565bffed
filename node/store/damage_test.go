package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// fillStore writes n clients, each with a pending custom push, its event
// and an idempotency key, in batches: a file of a few hundred pages with
// branch pages in every bucket.
func fillStore(t testing.TB, dir string, n int) {
	t.Helper()
	s := openT(t, dir)
	defer s.Close()
	var seq uint64 = 1
	for start := 1; start <= n; start += 500 {
		var b Batch
		for id := start; id < start+500 && id <= n; id++ {
			u := wire.UUID{byte(id >> 8), byte(id), 0xd0, 0x0d}
			var r state.Record
			r.UUID = u
			_, _, _, evs := r.Push(int64(id), 0, uint64(id), state.Custom, 0, bytes.Repeat([]byte{byte(id)}, 100), nil)
			b.RecordKeys = append(b.RecordKeys, u)
			b.RecordValues = append(b.RecordValues, r.AppendBinary(nil))
			b.Pushes = append(b.Pushes, Push{ID: uint64(id), UUID: u, Kind: state.Custom, Fate: state.Queued, Size: 100, Key: fmt.Sprintf("key-%d", id), AcceptedAt: int64(id)})
			for _, e := range evs {
				b.Events = append(b.Events, Event{Seq: seq, Event: e})
				seq++
			}
		}
		b.NextPushID, b.NextEventSeq = uint64(min(start+500, n+1)), seq
		if err := s.Commit(&b); err != nil {
			t.Fatal(err)
		}
	}
}

// pristine is a filled store built once per test binary and copied.
var pristine []byte

func pristineStore(t testing.TB) []byte {
	t.Helper()
	if pristine == nil {
		dir := t.TempDir()
		fillStore(t, dir, 3000)
		b, err := os.ReadFile(Path(dir))
		if err != nil {
			t.Fatal(err)
		}
		// bbolt grows the file ahead of use; the tail is not data.
		pristine = b[:usedBytes(t, b)]
	}
	return pristine
}

// usedBytes is how much of the file the last commit uses.
func usedBytes(t testing.TB, b []byte) int {
	t.Helper()
	m, ok := parseMeta(b)
	if m1, ok1 := parseMeta(b[4096:]); ok1 && (!ok || m1.txid > m.txid) {
		m, ok = m1, true
	}
	if !ok {
		t.Fatal("pristine store has no valid meta page")
	}
	return int(m.pgid) * int(m.pageSize)
}

func writeStore(t testing.TB, b []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(Path(dir), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func loadAll(s *Store) (int, error) {
	n := 0
	_, err := s.Load(func(u wire.UUID, v []byte) error {
		var r state.Record
		if err := r.UnmarshalBinary(v); err != nil {
			return err
		}
		n++
		return nil
	})
	return n, err
}

func TestPristineStoreOpensAndChecks(t *testing.T) {
	dir := writeStore(t, pristineStore(t))
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := loadAll(s)
	s.Close()
	if err != nil || n != 3000 {
		t.Fatalf("loaded %d records, %v", n, err)
	}
	r, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Clients != 3000 || r.Pushes != 3000 || r.Keys != 3000 || r.Events != 3000 || r.Pending != 3000 {
		t.Fatalf("check of a sound store: %+v", r)
	}
}

// TestDamagedFilesAreRefusedAndLeftAlone opens files damaged in every way
// the class takes (truncated anywhere, headers or pages overwritten,
// empty, not a file): each is refused with a DamagedError that says what
// is wrong, nothing panics or faults, the file is not changed, and the
// check finds the same damage.
func TestDamagedFilesAreRefusedAndLeftAlone(t *testing.T) {
	good := pristineStore(t)
	used := usedBytes(t, good)
	m, _ := parseMeta(good)
	rootPage := int(m.root) * int(m.pageSize)
	overwrite := func(off int, junk []byte) func([]byte) []byte {
		return func(b []byte) []byte { copy(b[off:], junk); return b }
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	cases := []struct {
		name   string
		damage func([]byte) []byte
		want   string
	}{
		{"empty", func(b []byte) []byte { return b[:0] }, "empty"},
		{"truncated to one byte", func(b []byte) []byte { return b[:1] }, "truncated inside its header"},
		{"truncated inside the first meta page", func(b []byte) []byte { return b[:100] }, "truncated inside its header"},
		{"truncated inside the second meta page", func(b []byte) []byte { return b[:4096+100] }, "truncated inside its header"},
		{"truncated after the meta pages", func(b []byte) []byte { return b[:2*4096] }, "truncated: it is 8192 bytes"},
		{"truncated mid-file", func(b []byte) []byte { return b[:used/2] }, "truncated"},
		{"one byte short", func(b []byte) []byte { return b[:used-1] }, "truncated"},
		{"both meta pages overwritten", func(b []byte) []byte { copy(b, random(2*4096)); return b }, "header pages"},
		{"root page header overwritten", overwrite(rootPage, random(16)), "page"},
		{"root page zeroed", overwrite(rootPage, make([]byte, 4096)), "page"},
		{"data pages overwritten with random bytes", func(b []byte) []byte { copy(b[2*4096:used], random(used-2*4096)); return b }, "page"},
		{"data pages zeroed", func(b []byte) []byte { clear(b[2*4096 : used]); return b }, "page"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			damaged := tc.damage(bytes.Clone(good))
			dir := writeStore(t, damaged)
			s, err := Open(dir, Options{})
			if err == nil {
				s.Close()
				t.Fatal("damaged store opened")
			}
			var de *DamagedError
			if !errors.As(err, &de) || !strings.Contains(err.Error(), "is damaged") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: want a DamagedError mentioning %q", err, tc.want)
			}
			if de.Path != Path(dir) {
				t.Fatalf("error names %q, want %q", de.Path, Path(dir))
			}
			after, err := os.ReadFile(Path(dir))
			if err != nil || !bytes.Equal(after, damaged) {
				t.Fatalf("refusing the store changed the file (%v)", err)
			}
			r, err := Check(dir)
			if err != nil {
				t.Fatal(err)
			}
			if r.OK() {
				t.Fatalf("check found nothing wrong: %+v", r)
			}
			t.Logf("open: %v; check: %v", de.Reason, r.Problems)
		})
	}
}

func TestNotAFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(Path(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	var de *DamagedError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("open over a directory: %v", err)
	}
	if fi, err := os.Stat(Path(dir)); err != nil || !fi.IsDir() {
		t.Fatalf("the directory was touched: %v", err)
	}
	if r, err := Check(dir); err != nil || r.OK() {
		t.Fatalf("check: %+v, %v", r, err)
	}
}

// unwritableDirEnv, set, makes TestUnwritableStoreIsAClearError the child
// it starts as an unprivileged user when the tests run as root (root
// writes to a read-only file anyway).
const unwritableDirEnv = "STORE_TEST_UNWRITABLE_DIR"

func TestUnwritableStoreIsAClearError(t *testing.T) {
	if dir := os.Getenv(unwritableDirEnv); dir != "" {
		checkUnwritableStore(t, dir)
		return
	}
	dir := writeStore(t, pristineStore(t))
	if err := os.Chmod(Path(dir), 0o400); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		checkUnwritableStore(t, dir)
		return
	}
	// As root, run this test again as nobody on the same store: the
	// store file and its folder become nobody's, and the folders above
	// it (made private by the test) open to others.
	const nobody = 65534
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(Path(dir), nobody, nobody); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Clean(os.TempDir())
	if !strings.HasPrefix(dir, tmp+string(filepath.Separator)) {
		t.Fatalf("the store %s is not under the temporary folder %s", dir, tmp)
	}
	for d := filepath.Dir(dir); d != tmp; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary sits in the build's private folder: nobody runs a
	// copy of it.
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(filepath.Dir(dir), "store.test")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "-test.run=^TestUnwritableStoreIsAClearError$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), unwritableDirEnv+"="+dir)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the test as nobody (uid %d): %v\n%s", nobody, err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestUnwritableStoreIsAClearError") {
		t.Fatalf("the test as nobody did not pass:\n%s", out)
	}
}

func checkUnwritableStore(t *testing.T, dir string) {
	t.Helper()
	_, err := Open(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "for writing") || !errors.Is(err, os.ErrPermission) {
		t.Fatalf("open of a read-only store: %v", err)
	}
	if r, err := Check(dir); err != nil || !r.OK() {
		t.Fatalf("check of a read-only (sound) store: %+v, %v", r, err)
	}
}

// TestRandomDamageNeverCrashes overwrites random bytes of the pages in
// use, in many places and amounts, then opens, loads, reads, writes and
// checks the store. Whatever the damage, the process must survive it:
// refused as damaged, or opened with undecodable entries skipped. A fault
// or a panic bbolt cannot recover from ends the test binary.
func TestRandomDamageNeverCrashes(t *testing.T) {
	good := pristineStore(t)
	used := usedBytes(t, good)
	rounds := 150
	if testing.Short() {
		rounds = 30
	}
	refused, opened := 0, 0
	for seed := range uint64(rounds) {
		r := rand.New(rand.NewPCG(seed, 99))
		b := bytes.Clone(good)
		for range 1 + r.IntN(4) {
			off := 2*4096 + r.IntN(used-2*4096)
			n := min(1+r.IntN(64), used-off)
			for i := range n {
				b[off+i] = byte(r.Uint32())
			}
		}
		dir := filepath.Join(t.TempDir(), fmt.Sprint(seed))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(Path(dir), b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{OnDamaged: func(error) {}})
		if err != nil {
			var de *DamagedError
			if !errors.As(err, &de) {
				t.Fatalf("seed %d: open failed without saying the store is damaged: %v", seed, err)
			}
			refused++
		} else {
			opened++
			_, _ = loadAll(s)
			// As a node starts: several parts of the key space at once.
			_, _ = s.LoadConcurrent(3, func(u wire.UUID, v []byte) error {
				var r state.Record
				return r.UnmarshalBinary(v)
			})
			_, _ = s.Events(0, 5000)
			for id := uint64(1); id <= 3000; id += 97 {
				_, _, _ = s.GetPush(id)
			}
			_, _, _ = s.PushByKey("key-1500")
			u := wire.UUID{0xee, byte(seed)}
			rec := state.Record{UUID: u, LastSeen: 1}
			_ = s.Commit(&Batch{
				RecordKeys: []wire.UUID{u}, RecordValues: [][]byte{rec.AppendBinary(nil)},
				Events: []Event{{Seq: 3001, Event: state.Event{PushID: 1500, UUID: u, Kind: state.Custom, Fate: state.Acknowledged, At: 5}}},
			})
			_, _, _ = s.Trim(3001, 10, 1<<62, 1000)
			if err := s.Close(); err != nil {
				t.Logf("seed %d: close: %v", seed, err)
			}
		}
		if _, err := Check(dir); err != nil {
			t.Fatalf("seed %d: check could not run: %v", seed, err)
		}
	}
	t.Logf("%d damaged stores refused, %d opened (damage in values only, skipped where it mattered)", refused, opened)
}

// TestOpenIsReadOnlyWhenNothingIsMissing makes sure a sound store is not
// written to by opening it, so that a node on a full disk still starts.
func TestOpenIsReadOnlyWhenNothingIsMissing(t *testing.T) {
	dir := writeStore(t, pristineStore(t))
	before, _ := os.ReadFile(Path(dir))
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadAll(s); err != nil {
		t.Fatal(err)
	}
	s.Close()
	after, _ := os.ReadFile(Path(dir))
	if !bytes.Equal(before[:usedBytes(t, before)], after[:usedBytes(t, after)]) {
		t.Fatal("opening and loading a sound store wrote to it")
	}
}

// TestCountersNeverReuseStoredIDs covers a store whose counters are
// behind its buckets: the node must resume past what is stored, and the
// check must say the counters are wrong.
func TestCountersNeverReuseStoredIDs(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	if err := s.Commit(&Batch{
		Pushes: []Push{{ID: 41, UUID: u(1), Kind: state.General, Fate: state.Queued, AcceptedAt: 1}},
		Events: []Event{{Seq: 9, Event: state.Event{PushID: 41, UUID: u(1), Kind: state.General, Fate: state.Queued}}},
		// Counters behind what the batch stores, as damage would leave them.
		NextPushID: 3, NextEventSeq: 2,
	}); err != nil {
		t.Fatal(err)
	}
	c, err := s.Load(func(wire.UUID, []byte) error { return nil })
	s.Close()
	if err != nil || c.NextPushID != 42 || c.NextEventSeq != 10 {
		t.Fatalf("counters %+v, %v: want 42 and 10", c, err)
	}
	r, err := Check(dir)
	if err != nil || r.OK() || !strings.Contains(strings.Join(r.Problems, "\n"), "next push id is 3") {
		t.Fatalf("check: %+v, %v", r, err)
	}
}

// TestUndecodableEntriesDoNotStopCommits stores a push that does not
// decode and commits an event for it: the commit must succeed (failing
// it would fail every commit after it), and followers must get past an
// undecodable event.
func TestUndecodableEntriesDoNotStopCommits(t *testing.T) {
	dir := t.TempDir()
	var damaged []error
	s, err := Open(dir, Options{OnDamaged: func(err error) { damaged = append(damaged, err) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Commit(&Batch{Pushes: []Push{{ID: 1, UUID: u(1), Kind: state.General, Fate: state.Queued, AcceptedAt: 1}}}); err != nil {
		t.Fatal(err)
	}
	// Damage push 1 and add an undecodable event 2, as bit rot would.
	err = s.update("damage", func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketPushes).Put(binary.BigEndian.AppendUint64(nil, 1), []byte{7, 7}); err != nil {
			return err
		}
		return tx.Bucket(bucketEvents).Put(binary.BigEndian.AppendUint64(nil, 2), []byte{9})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Commit(&Batch{Events: []Event{{Seq: 3, Event: state.Event{PushID: 1, UUID: u(1), Kind: state.General, Fate: state.Acknowledged, At: 2}}}, NextEventSeq: 4})
	if err != nil {
		t.Fatalf("an event for a damaged push failed the commit: %v", err)
	}
	evs, err := s.Events(1, 10)
	if err != nil || len(evs) != 1 || evs[0].Seq != 3 {
		t.Fatalf("events after 1: %+v, %v (want event 3, past the undecodable 2)", evs, err)
	}
	if _, _, err := s.Trim(3, 0, 1<<62, 100); err != nil {
		t.Fatalf("trim stopped at a damaged push: %v", err)
	}
	if len(damaged) < 2 {
		t.Fatalf("damage reported: %v", damaged)
	}
}

// One header page damaged: bbolt opens at the other page's commit without a
// word, which drops the newest commit when that was the damaged one. The
// store opens (a crash in the middle of writing a header page does the
// same, and must not stop the node), but says so, naming the page.
func TestOneDamagedHeaderPageIsReported(t *testing.T) {
	b := pristineStore(t)
	m0, ok0 := parseMeta(b)
	m1, ok1 := parseMeta(b[4096:])
	if !ok0 || !ok1 {
		t.Fatal("pristine store lacks a valid header page")
	}
	newest := 0
	if m1.txid > m0.txid {
		newest = 1
	}
	for _, page := range []int{newest, 1 - newest} {
		damaged := bytes.Clone(b)
		clear(damaged[page*4096 : (page+1)*4096])
		dir := writeStore(t, damaged)
		var told []string
		s, err := Open(dir, Options{OnHeaderFallback: func(msg string) { told = append(told, msg) }})
		if err != nil {
			t.Fatalf("header page %d zeroed: %v", page, err)
		}
		s.Close()
		want := fmt.Sprintf("header page %d is not valid", page)
		if len(told) != 1 || !strings.Contains(told[0], want) || !strings.Contains(told[0], Path(dir)) {
			t.Errorf("header page %d zeroed: told %q, want one message with %q and the path", page, told, want)
		}
	}
	// A sound store says nothing.
	var told []string
	s, err := Open(writeStore(t, b), Options{OnHeaderFallback: func(msg string) { told = append(told, msg) }})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if len(told) != 0 {
		t.Errorf("sound store: told %q", told)
	}
}
