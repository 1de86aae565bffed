package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/store"
)

const clients = 2000

// soundStore runs a node process, pushes to many clients and stops it
// gracefully: a real store, several hundred pages deep.
func soundStore(t *testing.T) []byte {
	t.Helper()
	data := filepath.Join(t.TempDir(), "data")
	proc := nodetest.StartProcess(t, data)
	req := api.BulkPushRequest{Kind: "custom", Data: strings.Repeat("x", 100)}
	for i := range clients {
		req.UserIDs = append(req.UserIDs, fmt.Sprint("user-", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r, err := proc.API.BulkPush(ctx, req); err != nil || r.Accepted != clients {
		t.Fatalf("bulk push: %d accepted, %v", r.Accepted, err)
	}
	if err := proc.Signal(t, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, proc.Logs())
	}
	b, err := os.ReadFile(store.Path(data))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// usedBytes is how much of a store file its last commit uses, read from
// its first meta page.
func usedBytes(b []byte) int {
	m := b[16:]
	return int(binaryLE(m[40:48])) * int(binaryLE(m[8:12]))
}

func binaryLE(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// logLines parses the process's JSON log lines.
func logLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON (a crash dump?): %q\nwhole output:\n%s", l, stderr)
		}
		out = append(out, m)
	}
	return out
}

// TestDamagedStoreExitsWithOneClearLine runs the real binary on stores
// damaged in every way the class takes. Each run must end at once with
// exit code 1 and exactly one log line naming the file and the damage:
// no panic, no fault, no stack dump, nothing a crash loop would hide.
// `pushnode check` must report the same store as damaged.
func TestDamagedStoreExitsWithOneClearLine(t *testing.T) {
	good := soundStore(t)
	used := usedBytes(good)
	t.Logf("sound store: %d bytes in use of %d", used, len(good))
	cases := []struct {
		name   string
		damage func(b []byte) []byte
		want   string
	}{
		{"zero-length file", func(b []byte) []byte { return nil }, "the file is empty"},
		{"truncated inside the first meta page", func(b []byte) []byte { return b[:100] }, "truncated inside its header"},
		{"truncated inside the second meta page", func(b []byte) []byte { return b[:4096+100] }, "truncated inside its header"},
		{"truncated mid-file", func(b []byte) []byte { return b[:used/2] }, "the file is truncated"},
		{"truncated by one page", func(b []byte) []byte { return b[:used-4096] }, "the file is truncated"},
		{"meta pages overwritten", func(b []byte) []byte { copy(b, randomBytes(8192, 1)); return b }, "header pages"},
		{"data pages overwritten with random bytes", func(b []byte) []byte { copy(b[8192:used], randomBytes(used-8192, 2)); return b }, "page"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			if err := os.MkdirAll(data, 0o750); err != nil {
				t.Fatal(err)
			}
			damaged := tc.damage(bytes.Clone(good))
			if err := os.WriteFile(store.Path(data), damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			expectDamaged(t, data, tc.want)
			if after, _ := os.ReadFile(store.Path(data)); !bytes.Equal(after, damaged) {
				t.Fatal("the refused store was changed")
			}
		})
	}
	t.Run("a directory where the file should be", func(t *testing.T) {
		data := filepath.Join(t.TempDir(), "data")
		if err := os.MkdirAll(store.Path(data), 0o750); err != nil {
			t.Fatal(err)
		}
		expectDamaged(t, data, "is a directory")
	})
}

func expectDamaged(t *testing.T, data, want string) {
	t.Helper()
	exit := nodetest.RunProcess(t, nil, nodetest.NodeArgs(t, data)...)
	if exit.Code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", exit.Code, exit.Stderr)
	}
	lines := logLines(t, exit.Stderr)
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want one:\n%s", len(lines), exit.Stderr)
	}
	l := lines[0]
	msg, _ := l["err"].(string)
	if l["level"] != "ERROR" || l["msg"] != "cannot start: the store is damaged" ||
		!strings.Contains(msg, "store at "+store.Path(data)+" is damaged: ") || !strings.Contains(msg, want) {
		t.Fatalf("log line %v: want the damaged store named, with %q", l, want)
	}
	if help, _ := l["help"].(string); !strings.Contains(help, "pushnode check") {
		t.Fatalf("log line %v says nothing of what to do", l)
	}
	check := nodetest.RunProcess(t, nil, "check", "--data-dir", data)
	if check.Code != 1 || !strings.Contains(check.Stdout, "DAMAGED") || !strings.Contains(check.Stdout, "docs/store.md") {
		t.Fatalf("check of a damaged store: exit %d\n%s%s", check.Code, check.Stdout, check.Stderr)
	}
}

// TestReadOnlyStoreExitsWithOneClearLine runs the node as an unprivileged
// user on a store it may read but not write (a volume with the wrong
// owner): one line saying so, exit 1. The check, which only reads, works.
func TestReadOnlyStoreExitsWithOneClearLine(t *testing.T) {
	good := soundStore(t)
	base := t.TempDir()
	data := filepath.Join(base, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(store.Path(data), good, 0o444); err != nil {
		t.Fatal(err)
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		// Root writes to a read-only file anyway; a pod runs as a user.
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		for _, d := range []string{filepath.Dir(base), base, data, filepath.Dir(nodetest.Binary(t))} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	exit := nodetest.RunProcess(t, cred, nodetest.NodeArgs(t, data)...)
	if exit.Code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", exit.Code, exit.Stderr)
	}
	lines := logLines(t, exit.Stderr)
	if len(lines) != 1 {
		t.Fatalf("%d log lines, want one:\n%s", len(lines), exit.Stderr)
	}
	if msg, _ := lines[0]["err"].(string); lines[0]["level"] != "ERROR" || !strings.Contains(msg, "open store "+store.Path(data)+" for writing") || !strings.Contains(msg, "permission denied") {
		t.Fatalf("log line %v: want the store named, not writable", lines[0])
	}
	check := nodetest.RunProcess(t, cred, "check", "--data-dir", data)
	if check.Code != 0 || !strings.Contains(check.Stdout, fmt.Sprintf("%d client records", clients)) {
		t.Fatalf("check of a read-only sound store: exit %d\n%s%s", check.Code, check.Stdout, check.Stderr)
	}
}

// TestUndecodableRecordIsSkippedWithAWarning: a client record that does
// not decode (the rest of the file sound) does not keep the node down:
// it starts, serves every other client, and warns, counting it; the
// check lists the record and fails.
func TestUndecodableRecordIsSkippedWithAWarning(t *testing.T) {
	good := soundStore(t)
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(store.Path(data), good, 0o600); err != nil {
		t.Fatal(err)
	}
	var victim string
	db, err := bolt.Open(store.Path(data), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("clients"))
		k, _ := b.Cursor().First()
		victim = fmt.Sprintf("%x", k)
		return b.Put(k, []byte{0xee, 0xee, 0xee})
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	check := nodetest.RunProcess(t, nil, "check", "--data-dir", data)
	if check.Code != 1 || !strings.Contains(check.Stdout, "client record "+victim+" does not decode") {
		t.Fatalf("check: exit %d\n%s%s", check.Code, check.Stdout, check.Stderr)
	}
	proc := nodetest.StartProcess(t, data)
	logs := proc.Logs()
	if !strings.Contains(logs, victim) || !strings.Contains(logs, "damaged") {
		t.Fatalf("no warning naming the damaged record:\n%s", logs)
	}
	ctx := context.Background()
	st, err := proc.API.Status(ctx)
	if err != nil || st.Records != clients-1 || !st.Ready {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if err := proc.Signal(t, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestCheck covers the check command's own answers: a sound store, a
// store in use by a running node, none at all, bad usage.
func TestCheck(t *testing.T) {
	good := soundStore(t)
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(store.Path(data), good, 0o600); err != nil {
		t.Fatal(err)
	}
	ok := nodetest.RunProcess(t, nil, "check", "--data-dir", data)
	if ok.Code != 0 || !strings.Contains(ok.Stdout, "OK") || !strings.Contains(ok.Stdout, fmt.Sprintf("%d client records (%d with pending pushes), %d pushes", clients, clients, clients)) {
		t.Fatalf("check of a sound store: exit %d\n%s%s", ok.Code, ok.Stdout, ok.Stderr)
	}
	env := nodetest.RunProcess(t, nil, "check", "--data-dir", filepath.Join(t.TempDir(), "nothing-here"))
	if env.Code != 1 || !strings.Contains(env.Stderr, "no store at") {
		t.Fatalf("check of no store: exit %d\n%s", env.Code, env.Stderr)
	}
	if u := nodetest.RunProcess(t, nil, "check", "--data-dir", data, "extra"); u.Code != 2 {
		t.Fatalf("check with an extra argument: exit %d", u.Code)
	}
	if u := nodetest.RunProcess(t, nil, "check", "--no-such-flag"); u.Code != 2 {
		t.Fatalf("check with an unknown flag: exit %d", u.Code)
	}

	proc := nodetest.StartProcess(t, data)
	busy := nodetest.RunProcess(t, nil, "check", "--data-dir", data)
	if busy.Code != 1 || !strings.Contains(busy.Stderr, "another process has the store open") {
		t.Fatalf("check of a store in use: exit %d\n%s%s", busy.Code, busy.Stdout, busy.Stderr)
	}
	if err := proc.Signal(t, syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
