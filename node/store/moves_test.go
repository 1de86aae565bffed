package store

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// uuidIn is a uuid of slot s: its first two bytes are (hi<<10 | s), any hi.
func uuidIn(s uint16, hi byte, tail uint64) wire.UUID {
	var u wire.UUID
	v := uint16(hi&63)<<10 | s
	u[0], u[1] = byte(v>>8), byte(v)
	binary.BigEndian.PutUint64(u[8:], tail)
	return u
}

// fill stores n records and one push (with a key) per record, spread over
// every slot, and returns the uuids by slot.
func fill(t *testing.T, s *Store, n int) map[uint16][]wire.UUID {
	t.Helper()
	by := map[uint16][]wire.UUID{}
	b := &Batch{NextPushID: uint64(n) + 1}
	now := time.Now().UnixNano()
	for i := range n {
		slot := uint16(i % slotmap.NumSlots)
		u := uuidIn(slot, byte(rand.IntN(64)), uint64(i))
		if slotmap.Slot(u) != slot {
			t.Fatalf("uuid %s is in slot %d, not %d", u, slotmap.Slot(u), slot)
		}
		by[slot] = append(by[slot], u)
		rec := state.Record{UUID: u, LastSeen: int64(i)}
		b.RecordKeys = append(b.RecordKeys, u)
		b.RecordValues = append(b.RecordValues, rec.AppendBinary(nil))
		b.Pushes = append(b.Pushes, Push{ID: uint64(i + 1), UUID: u, Kind: state.General, Fate: state.Queued, Key: "k" + u.String(), AcceptedAt: now})
	}
	if err := s.Commit(b); err != nil {
		t.Fatal(err)
	}
	return by
}

func setOf(ranges ...[2]int) slotmap.Set {
	var set slotmap.Set
	for _, r := range ranges {
		set.Add(r[0], r[1])
	}
	return set
}

// TestSlotRecordsReadsExactlyTheSlots pages through the records of slot
// sets at the edges (slot 0, slot 1023, one slot, all, none) with pages
// of 1, a few and more than there are, and finds each record of the set
// once and none outside it.
func TestSlotRecordsReadsExactlyTheSlots(t *testing.T) {
	s := openT(t, t.TempDir())
	defer s.Close()
	by := fill(t, s, 5000)
	sets := map[string]slotmap.Set{
		"none": {}, "slot0": setOf([2]int{0, 0}), "slot1023": setOf([2]int{1023, 1023}),
		"low half": setOf([2]int{0, 511}), "scattered": setOf([2]int{1, 1}, [2]int{255, 257}, [2]int{1000, 1023}),
		"all": setOf([2]int{0, 1023}),
	}
	for name, set := range sets {
		for _, limit := range []int{1, 7, 100000} {
			seen := map[wire.UUID]int{}
			var after []byte
			for pages := 0; ; pages++ {
				if pages > 6000 {
					t.Fatalf("%s/%d: no end", name, limit)
				}
				recs, next, done, err := s.SlotRecords(&set, after, limit)
				if err != nil {
					t.Fatal(err)
				}
				if len(recs) > limit {
					t.Fatalf("%s: %d records in a page of %d", name, len(recs), limit)
				}
				for _, kv := range recs {
					seen[wire.UUID(kv.K)]++
				}
				if done {
					break
				}
				after = next
			}
			want := 0
			for slot, us := range by {
				if set.Has(slot) {
					want += len(us)
					for _, u := range us {
						if seen[u] != 1 {
							t.Fatalf("%s/%d: record %s (slot %d) read %d times", name, limit, u, slot, seen[u])
						}
					}
				}
			}
			if len(seen) != want {
				t.Fatalf("%s/%d: read %d records, want %d", name, limit, len(seen), want)
			}
		}
	}
}

// TestSlotPushesAndDeleteSlots reads the pushes and keys of a slot set,
// copies them to another store, and deletes them from the first: the
// other slots' entries stay, and the copy holds exactly the set's.
func TestSlotPushesAndDeleteSlots(t *testing.T) {
	src := openT(t, t.TempDir())
	defer src.Close()
	by := fill(t, src, 3000)
	set := setOf([2]int{0, 0}, [2]int{300, 511}, [2]int{1023, 1023})
	var e SlotEntries
	var after []byte
	for {
		recs, next, done, err := src.SlotRecords(&set, after, 500)
		if err != nil {
			t.Fatal(err)
		}
		e.Records = append(e.Records, recs...)
		if done {
			break
		}
		after = next
	}
	var id uint64
	for {
		pe, next, done, err := src.SlotPushes(&set, id, 333)
		if err != nil {
			t.Fatal(err)
		}
		e.Pushes, e.Keys = append(e.Pushes, pe.Pushes...), append(e.Keys, pe.Keys...)
		if done {
			break
		}
		id = next
	}
	in := 0
	for slot, us := range by {
		if set.Has(slot) {
			in += len(us)
		}
	}
	if len(e.Records) != in || len(e.Pushes) != in || len(e.Keys) != in {
		t.Fatalf("read %d records, %d pushes, %d keys of the set; it has %d of each", len(e.Records), len(e.Pushes), len(e.Keys), in)
	}
	dst := openT(t, t.TempDir())
	defer dst.Close()
	if n, err := dst.Import(&e, &set); err != nil || n != 0 {
		t.Fatal(n, err)
	}
	for slot, us := range by {
		for _, u := range us {
			p, ok, err := dst.PushByKey("k" + u.String())
			if err != nil || ok != set.Has(slot) || (ok && p.UUID != u) {
				t.Fatalf("copy: key of %s (slot %d): found %v (%v), push %+v", u, slot, ok, err, p)
			}
		}
	}

	var next uint64
	for rounds := 0; ; rounds++ {
		n, done, err := src.DeleteSlots(&set, next, 100)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			break
		}
		if rounds > 1000 {
			t.Fatal("DeleteSlots does not end")
		}
		next = n
	}
	left, err := src.Load(func(u wire.UUID, _ []byte) error {
		if set.HasUUID(u) {
			t.Errorf("record %s of a deleted slot is still there", u)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = left
	for slot, us := range by {
		for _, u := range us {
			_, ok, err := src.PushByKey("k" + u.String())
			if err != nil || ok == set.Has(slot) {
				t.Fatalf("source: key of %s (slot %d) found %v after the delete (%v)", u, slot, ok, err)
			}
		}
	}
}

// TestNextPushIDIgnoresMovedIDs: pushes moved here keep their ids from
// another pod's range, and this pod's next id stays in its own range.
func TestNextPushIDIgnoresMovedIDs(t *testing.T) {
	dir := t.TempDir()
	base := slotmap.IDBase(2)
	s, err := Open(dir, Options{IDLimit: base + slotmap.MaxIDSeq + 1})
	if err != nil {
		t.Fatal(err)
	}
	own := base + 7
	foreign := slotmap.IDBase(5) + 3
	if err := s.Commit(&Batch{Pushes: []Push{{ID: own, UUID: u(1), Kind: state.General}}, NextPushID: own + 1}); err != nil {
		t.Fatal(err)
	}
	p := Push{ID: foreign, UUID: u(2), Kind: state.General}
	all := setOf([2]int{0, 1023})
	if _, err := s.Import(&SlotEntries{Pushes: []KV{{K: binary.BigEndian.AppendUint64(nil, foreign), V: p.appendBinary(nil)}}}, &all); err != nil {
		t.Fatal(err)
	}
	c, err := s.Load(func(wire.UUID, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if c.NextPushID != own+1 {
		t.Fatalf("next push id %d, want %d (the moved push has id %d)", c.NextPushID, own+1, foreign)
	}
	s.Close()
}

// TestImportKeys: a key must name a push of the imported slots, or
// nothing of the batch is written; a key this pod holds for another push
// stays.
func TestImportKeys(t *testing.T) {
	s := openT(t, t.TempDir())
	defer s.Close()
	set := setOf([2]int{5, 5})
	in, out := uuidIn(5, 1, 1), uuidIn(6, 1, 2)
	own := Push{ID: 1, UUID: out, Kind: state.General, Key: "shared"}
	if err := s.Commit(&Batch{Pushes: []Push{own}, NextPushID: 2}); err != nil {
		t.Fatal(err)
	}
	moved := Push{ID: 900, UUID: in, Kind: state.General, Key: "shared"}
	id := binary.BigEndian.AppendUint64(nil, 900)
	pushKV := KV{K: id, V: moved.appendBinary(nil)}
	// A key naming a push outside the slots (this pod's own).
	_, err := s.Import(&SlotEntries{Pushes: []KV{pushKV}, Keys: []KV{{K: []byte("other"), V: binary.BigEndian.AppendUint64(nil, 1)}}}, &set)
	if !errors.Is(err, ErrForeignKey) {
		t.Fatalf("foreign key: %v", err)
	}
	if _, ok, _ := s.GetPush(900); ok {
		t.Fatal("a refused batch wrote its push")
	}
	// The same key as this pod's own push: this pod's stays.
	n, err := s.Import(&SlotEntries{Pushes: []KV{pushKV}, Keys: []KV{{K: []byte("shared"), V: id}}}, &set)
	if err != nil || n != 1 {
		t.Fatalf("conflicting key: %d %v", n, err)
	}
	if p, ok, _ := s.PushByKey("shared"); !ok || p.ID != 1 {
		t.Fatalf("key now names %+v", p)
	}
}
