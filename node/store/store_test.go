package store

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

func u(b byte) wire.UUID { return wire.UUID{b, 1, 2, 3} }

func openT(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCommitThenReloadFromDisk(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	rec := state.Record{UUID: u(1), LastSeen: 42}
	now := time.Now().UnixNano()
	err := s.Commit(&Batch{
		RecordKeys:   []wire.UUID{u(1)},
		RecordValues: [][]byte{rec.AppendBinary(nil)},
		Pushes:       []Push{{ID: 5, UUID: u(1), Kind: state.Custom, Fate: state.Queued, Size: 3, Key: "k1", AcceptedAt: now}},
		Events: []Event{
			{Seq: 1, Event: state.Event{PushID: 5, UUID: u(1), Kind: state.Custom, Fate: state.Queued, At: now}},
			{Seq: 2, Event: state.Event{PushID: 5, UUID: u(1), Kind: state.Custom, Fate: state.Sent, At: now + 1}},
		},
		NextPushID: 6, NextEventSeq: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	// A later batch moves the stored push on.
	if err := s.Commit(&Batch{Events: []Event{{Seq: 3, Event: state.Event{PushID: 5, UUID: u(1), Kind: state.Custom, Fate: state.Acknowledged, At: now + 2}}}, NextEventSeq: 4}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, dir)
	defer s.Close()
	var got []wire.UUID
	c, err := s.Load(func(id wire.UUID, v []byte) error {
		var r state.Record
		got = append(got, id)
		return r.UnmarshalBinary(v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != u(1) || c.NextPushID != 6 || c.NextEventSeq != 4 {
		t.Fatalf("loaded %v, counters %+v", got, c)
	}
	p, ok, err := s.PushByKey("k1")
	if err != nil || !ok {
		t.Fatalf("push by key: %v %v", ok, err)
	}
	if p.ID != 5 || p.Fate != state.Acknowledged || p.SentAt != now+1 || p.DoneAt != now+2 || p.Size != 3 {
		t.Fatalf("push %+v", p)
	}
	evs, err := s.Events(1, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Seq != 2 || evs[1].Fate != state.Acknowledged || evs[1].Key != "k1" {
		t.Fatalf("events after 1: %+v", evs)
	}
	if evs, _ := s.Events(0, 1); len(evs) != 1 || evs[0].Seq != 1 {
		t.Fatalf("limit not honoured: %+v", evs)
	}
}

func TestTerminalFateIsFinal(t *testing.T) {
	s := openT(t, t.TempDir())
	defer s.Close()
	err := s.Commit(&Batch{
		Pushes: []Push{{ID: 1, UUID: u(1), Kind: state.Custom, Fate: state.Queued, AcceptedAt: 1}},
		Events: []Event{
			{Seq: 1, Event: state.Event{PushID: 1, Fate: state.Superseded, At: 2}},
			{Seq: 2, Event: state.Event{PushID: 1, Fate: state.Expired, At: 3}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p, _, _ := s.GetPush(1)
	if p.Fate != state.Superseded || p.DoneAt != 2 {
		t.Fatalf("push %+v", p)
	}
}

func TestTrimDropsOldEventsAndFinishedPushes(t *testing.T) {
	s := openT(t, t.TempDir())
	defer s.Close()
	var b Batch
	for i := uint64(1); i <= 10; i++ {
		fate := state.Acknowledged
		if i == 3 {
			fate = state.Queued // still pending: kept however old
		}
		b.Pushes = append(b.Pushes, Push{ID: i, UUID: u(1), Kind: state.General, Fate: fate, Key: "key" + string(rune('a'+i)), AcceptedAt: int64(i), DoneAt: int64(i)})
		b.Events = append(b.Events, Event{Seq: i, Event: state.Event{PushID: i, Fate: fate, At: int64(i)}})
	}
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	ev, pu, err := s.Trim(10, 4, 6, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if ev != 6 || s.FirstEventSeq() != 7 {
		t.Fatalf("trimmed %d events, first now %d", ev, s.FirstEventSeq())
	}
	if pu != 4 {
		t.Fatalf("trimmed %d pushes, want 4 (ids 1, 2, 4, 5)", pu)
	}
	for id, want := range map[uint64]bool{1: false, 2: false, 3: true, 4: false, 5: false, 6: true, 10: true} {
		if _, ok, _ := s.GetPush(id); ok != want {
			t.Errorf("push %d present=%v, want %v", id, ok, want)
		}
	}
	if _, ok, _ := s.PushByKey("key" + string(rune('a'+1))); ok {
		t.Error("key of a trimmed push still resolves")
	}
}

func TestUndecodableRecordIsSkippedAndReported(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	good := state.Record{UUID: u(8), LastSeen: 7}
	if err := s.Commit(&Batch{
		RecordKeys:   []wire.UUID{u(8), u(9)},
		RecordValues: [][]byte{good.AppendBinary(nil), {99, 0}},
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	var damaged []error
	s, err := Open(dir, Options{OnDamaged: func(err error) { damaged = append(damaged, err) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var loaded []wire.UUID
	if _, err := s.Load(func(id wire.UUID, v []byte) error {
		var r state.Record
		if err := r.UnmarshalBinary(v); err != nil {
			return err
		}
		loaded = append(loaded, id)
		return nil
	}); err != nil {
		t.Fatalf("one undecodable record failed the whole load: %v", err)
	}
	if len(loaded) != 1 || loaded[0] != u(8) {
		t.Fatalf("loaded %v, want only the good record", loaded)
	}
	if len(damaged) != 1 || !strings.Contains(damaged[0].Error(), u(9).String()) {
		t.Fatalf("damage reported: %v (want one error naming %s)", damaged, u(9))
	}
}

func TestOpenRefusesALockedStore(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir)
	defer s.Close()
	done := make(chan error, 1)
	go func() {
		_, err := Open(dir, Options{})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !errors.Is(err, bolterrors.ErrTimeout) {
			t.Fatalf("second open of a store in use: %v, want a timeout error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("second open hangs")
	}
}

func BenchmarkCommit(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := state.Record{LastSeen: 1}
	val := rec.AppendBinary(nil)
	var id uint64
	b.ReportAllocs()
	for b.Loop() {
		var batch Batch
		for range 32 {
			id++
			uu := wire.UUID{byte(id), byte(id >> 8), byte(id >> 16)}
			batch.RecordKeys = append(batch.RecordKeys, uu)
			batch.RecordValues = append(batch.RecordValues, val)
			batch.Pushes = append(batch.Pushes, Push{ID: id, UUID: uu, Kind: state.General, Fate: state.Queued, AcceptedAt: 1})
			batch.Events = append(batch.Events, Event{Seq: id, Event: state.Event{PushID: id, UUID: uu, Kind: state.General, Fate: state.Queued}})
		}
		if err := s.Commit(&batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(id), "ns/push")
}

// BenchmarkCommitNewRecords writes back a burst of records created by
// heartbeats: 65,536 new random uuids per commit (the write-back cap),
// in the table's order, into a store that grows by that much each time.
func BenchmarkCommitNewRecords(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rec := state.Record{LastSeen: 1}
	rec.SetAddr(netip.MustParseAddrPort("192.0.2.1:4000"))
	val := rec.AppendBinary(nil)
	r := rand.New(rand.NewPCG(3, 4))
	const n = 65536
	var records int
	for b.Loop() {
		var batch Batch
		for range n {
			var u wire.UUID
			binary.BigEndian.PutUint64(u[:8], r.Uint64())
			binary.BigEndian.PutUint64(u[8:], r.Uint64())
			batch.RecordKeys = append(batch.RecordKeys, u)
			batch.RecordValues = append(batch.RecordValues, val)
		}
		if err := s.Commit(&batch); err != nil {
			b.Fatal(err)
		}
		records += n
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(records), "ns/record")
}

// TestCommitRecordsInAnyOrder: records put in one commit in any order,
// with one uuid written twice (the later value wins, as before records
// were put in key order) and one written then removed, load back as
// written.
func TestCommitRecordsInAnyOrder(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	val := func(seen int64) []byte { r := state.Record{LastSeen: seen}; return r.AppendBinary(nil) }
	var b Batch
	want := map[wire.UUID]int64{}
	for i := 300; i > 0; i-- { // descending, then a few out of place
		u := wire.UUID{byte(i % 7), byte(i)}
		b.RecordKeys = append(b.RecordKeys, u)
		b.RecordValues = append(b.RecordValues, val(int64(i)))
		want[u] = int64(i)
	}
	twice := wire.UUID{3, 3}
	for _, seen := range []int64{1000, 1001, 1002} {
		b.RecordKeys = append(b.RecordKeys, twice)
		b.RecordValues = append(b.RecordValues, val(seen))
	}
	want[twice] = 1002
	gone := wire.UUID{1, 1}
	b.Removed = append(b.Removed, gone, wire.UUID{0xff})
	delete(want, gone)
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	got := map[wire.UUID]int64{}
	if _, err := s.Load(func(u wire.UUID, v []byte) error {
		var r state.Record
		if err := r.UnmarshalBinary(v); err != nil {
			return err
		}
		got[u] = r.LastSeen
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if len(got) != len(want) {
		t.Errorf("loaded %d records, want %d", len(got), len(want))
	}
	for u, seen := range want {
		if got[u] != seen {
			t.Errorf("record %x: last seen %d, want %d", u[:2], got[u], seen)
		}
	}
}

// TestLoadConcurrentReadsEveryRecordOnce: whatever the number of parts,
// every record is read exactly once, including keys at the parts' edges
// (first bytes 0x00, 0x7f, 0x80, 0xff and each part's first and last).
func TestLoadConcurrentReadsEveryRecordOnce(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var b Batch
	want := map[wire.UUID]bool{}
	add := func(u wire.UUID) {
		if !want[u] {
			want[u] = true
			b.RecordKeys = append(b.RecordKeys, u)
			b.RecordValues = append(b.RecordValues, (&state.Record{LastSeen: int64(len(want))}).AppendBinary(nil))
		}
	}
	for first := range 256 {
		add(wire.UUID{byte(first)})
		add(wire.UUID{byte(first), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 3000 {
		var u wire.UUID
		binary.LittleEndian.PutUint64(u[:8], r.Uint64())
		binary.LittleEndian.PutUint64(u[8:], r.Uint64())
		add(u)
	}
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	for _, parts := range []int{-1, 0, 1, 2, 3, 7, 16, 100} {
		var mu sync.Mutex
		got := map[wire.UUID]int{}
		if _, err := s.LoadConcurrent(parts, func(u wire.UUID, v []byte) error {
			mu.Lock()
			defer mu.Unlock()
			got[u]++
			return nil
		}); err != nil {
			t.Fatalf("%d parts: %v", parts, err)
		}
		if len(got) != len(want) {
			t.Errorf("%d parts: read %d records, want %d", parts, len(got), len(want))
		}
		for u, n := range got {
			if n != 1 || !want[u] {
				t.Errorf("%d parts: record %x read %d times (stored: %v)", parts, u[:2], n, want[u])
			}
		}
	}
}
