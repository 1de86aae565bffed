package clients

import (
	"encoding/binary"
	"hash/maphash"
	"math/rand/v2"
	"testing"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// The index against a Go map, through the shard's insert, lookup and
// remove, over random sequences of inserts and removals, for uuids that
// are random, counters, or alike but for one byte: every lookup must
// agree with the map, before and after growth and backward shifts.
func TestUUIDIndexAgreesWithMap(t *testing.T) {
	kinds := map[string]func(r *rand.Rand, i int) wire.UUID{
		"random": func(r *rand.Rand, _ int) wire.UUID {
			var u wire.UUID
			binary.LittleEndian.PutUint64(u[:8], r.Uint64())
			binary.LittleEndian.PutUint64(u[8:], r.Uint64())
			return u
		},
		"counter": func(_ *rand.Rand, i int) wire.UUID {
			var u wire.UUID
			binary.BigEndian.PutUint64(u[8:], uint64(i))
			return u
		},
		"one byte": func(_ *rand.Rand, i int) wire.UUID {
			var u wire.UUID
			u[i%16] = byte(i / 16)
			u[(i/16/256)%16] ^= 0x80
			return u
		},
	}
	for name, gen := range kinds {
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, 8))
			var s shard
			ref := map[wire.UUID]bool{}
			var live []wire.UUID
			for step := range 60000 {
				switch op := r.IntN(10); {
				case op < 6 || len(live) == 0:
					u := gen(r, step)
					if ref[u] {
						continue
					}
					if s.lookup(&u) != nil {
						t.Fatalf("step %d: %x found before it was inserted", step, u)
					}
					s.insert(&u)
					ref[u] = true
					live = append(live, u)
				default:
					k := r.IntN(len(live))
					u := live[k]
					live[k] = live[len(live)-1]
					live = live[:len(live)-1]
					rec := s.lookup(&u)
					if rec == nil {
						t.Fatalf("step %d: live %x not found", step, u)
					}
					s.remove(rec)
					delete(ref, u)
					if s.lookup(&u) != nil {
						t.Fatalf("step %d: removed %x still found", step, u)
					}
				}
				if step%997 == 0 {
					for _, u := range live {
						if rec := s.lookup(&u); rec == nil || rec.UUID != u {
							t.Fatalf("step %d: live %x looked up as %v", step, u, rec)
						}
					}
				}
			}
			if s.idx.n != len(live) {
				t.Fatalf("index holds %d entries, %d uuids are live", s.idx.n, len(live))
			}
			for _, u := range live {
				if rec := s.lookup(&u); rec == nil || rec.UUID != u {
					t.Fatalf("live %x looked up as %v", u, rec)
				}
			}
			// Remove everything: the index ends empty, every entry zero.
			for _, u := range live {
				s.remove(s.lookup(&u))
			}
			if s.idx.n != 0 {
				t.Fatalf("%d entries left after removing all", s.idx.n)
			}
			for p, e := range s.idx.entries {
				if e != 0 {
					t.Fatalf("entry %d = %x after removing all", p, e)
				}
			}
		})
	}
}

// Removal at the end of the table moves entries that wrapped around to
// its start back, and growing keeps every entry findable.
func TestUUIDIndexWrapAndGrow(t *testing.T) {
	var s shard
	s.idx.seed = maphash.MakeSeed()
	var us []wire.UUID
	// Find uuids whose home is the last entries of a 16-entry table, so
	// that their run wraps to its start.
	for i := 0; len(us) < 8; i++ {
		var u wire.UUID
		binary.BigEndian.PutUint64(u[:8], uint64(i))
		if s.idx.hash(&u)>>28 >= 14 {
			us = append(us, u)
		}
	}
	for _, u := range us[:6] {
		s.insert(&u)
	}
	if s.idx.bits != indexMinBits {
		t.Fatalf("table has %d bits, want %d", s.idx.bits, indexMinBits)
	}
	s.remove(s.lookup(&us[0]))
	s.remove(s.lookup(&us[3]))
	for _, u := range us[1:6] {
		if u == us[3] {
			continue
		}
		if s.lookup(&u) == nil {
			t.Fatalf("%x lost after removals at the table's end", u)
		}
	}
	// Growing rebuilds from the tags alone.
	for i := 0; s.idx.bits == indexMinBits; i++ {
		var u wire.UUID
		binary.BigEndian.PutUint64(u[8:], uint64(i))
		s.insert(&u)
	}
	for _, u := range append(us[1:3], us[4:6]...) {
		if s.lookup(&u) == nil {
			t.Fatalf("%x lost after the index grew", u)
		}
	}
}

// A record that does not decode never enters the table: loading it after
// a good record of the same uuid leaves that record found and whole.
func TestLoadUndecodableLeavesTableAlone(t *testing.T) {
	tbl := New(Config{}, nil)
	u := wire.UUID{9}
	if err := tbl.Load(u, (&state.Record{LastSeen: 5}).AppendBinary(nil)); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Load(u, []byte{0xee}); err == nil {
		t.Fatal("an undecodable record was taken")
	}
	if snap, ok := tbl.Get(0, u); !ok || snap.Record.LastSeen != 5 || tbl.Len() != 1 {
		t.Fatalf("after an undecodable record: found %v, last seen %d, %d records", ok, snap.Record.LastSeen, tbl.Len())
	}
}
