package clients

import (
	"hash/maphash"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// uuidIndex maps a shard's uuids to their record slots. It is an
// open-addressing table with linear probing whose entries are 8 bytes:
// the top 32 bits of the uuid's hash (the tag) and the slot + 1 (0 marks
// an empty entry). The uuid itself is not stored; a lookup compares it
// with the record's, which the heartbeat reads anyway. Against a Go map
// keyed by the uuid (20-byte entries and a control byte), the table is a
// third of the size and a lookup touches one cache line of it: the index
// is the hot part of the heartbeat path (cache misses on millions of
// records).
//
// An entry's home is the top bits of its tag, so the table grows and
// deletes (backward shift, no tombstones) without reading records.
type uuidIndex struct {
	seed    maphash.Seed
	entries []uint64
	bits    uint8 // len(entries) == 1<<bits
	n       int
}

const (
	indexMinBits = 4
	// indexMaxBits keeps a home computable from the 32-bit tag.
	indexMaxBits = 32
)

// hash is u's hash under the index's seed. Uuids come from phones, over
// UDP, from anyone: with a fixed mix (a multiply and a shift) a sender
// could make uuids that all hash alike and turn every lookup into a scan
// of one long run. The runtime's seeded hash (AES-based where the CPU has
// it) leaves no such collisions to find, and takes all 16 bytes.
func (ix *uuidIndex) hash(u *wire.UUID) uint32 {
	return uint32(maphash.Comparable(ix.seed, *u) >> 32)
}

func (ix *uuidIndex) home(tag uint32) uint64 { return uint64(tag) >> (32 - ix.bits) }

func (ix *uuidIndex) mask() uint64 { return uint64(len(ix.entries)) - 1 }

// get returns the slot of u in s, whose records it compares u with.
func (ix *uuidIndex) get(u *wire.UUID, s *shard) (uint32, bool) {
	if ix.n == 0 {
		return 0, false
	}
	tag := ix.hash(u)
	m := ix.mask()
	for p := ix.home(tag); ; p = (p + 1) & m {
		e := ix.entries[p]
		if e == 0 {
			return 0, false
		}
		if uint32(e>>32) == tag {
			if slot := uint32(e) - 1; s.rec(slot).UUID == *u {
				return slot, true
			}
		}
	}
}

// put adds u at slot; u must not be in the index.
func (ix *uuidIndex) put(u *wire.UUID, slot uint32) {
	if ix.seed == (maphash.Seed{}) {
		ix.seed = maphash.MakeSeed() // before the first entry, never after
	}
	if (ix.n+1)*4 > len(ix.entries)*3 {
		ix.grow(max(ix.bits+1, indexMinBits))
	}
	ix.place(uint64(ix.hash(u))<<32 | uint64(slot+1))
	ix.n++
}

func (ix *uuidIndex) place(e uint64) {
	m := ix.mask()
	p := ix.home(uint32(e >> 32))
	for ix.entries[p] != 0 {
		p = (p + 1) & m
	}
	ix.entries[p] = e
}

// grow rebuilds the index with 1<<bits entries.
func (ix *uuidIndex) grow(bits uint8) {
	if bits > indexMaxBits {
		panic("clients: uuid index beyond 2^32 entries")
	}
	old := ix.entries
	ix.entries, ix.bits = make([]uint64, 1<<bits), bits
	for _, e := range old {
		if e != 0 {
			ix.place(e)
		}
	}
}

// del removes u, at slot, from the index.
func (ix *uuidIndex) del(u *wire.UUID, slot uint32) {
	if ix.n == 0 {
		return
	}
	want := uint64(ix.hash(u))<<32 | uint64(slot+1)
	m := ix.mask()
	p := ix.home(uint32(want >> 32))
	for ix.entries[p] != want {
		if ix.entries[p] == 0 {
			return
		}
		p = (p + 1) & m
	}
	// Backward shift: move up every later entry of the run whose home
	// does not lie cyclically in (p, q], so that no probe stops early.
	for q := (p + 1) & m; ; q = (q + 1) & m {
		e := ix.entries[q]
		if e == 0 {
			break
		}
		h := ix.home(uint32(e >> 32))
		if (q-h)&m >= (q-p)&m {
			ix.entries[p] = e
			p = q
		}
	}
	ix.entries[p] = 0
	ix.n--
}
