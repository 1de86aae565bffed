package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// What a slot move reads and writes. A move copies the client records,
// the pushes (with their ids, fates and keys) of a set of slots to
// another pod's store, which holds them without serving them until the
// move commits there; the source deletes its copy only after that.

// lastPushBelow is the key of the highest push id below limit (no limit
// when 0), nil when there is none.
func lastPushBelow(c *bolt.Cursor, limit uint64) []byte {
	if limit == 0 {
		k, _ := c.Last()
		return k
	}
	k, _ := c.Seek(binary.BigEndian.AppendUint64(nil, limit))
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	return k
}

// KV is one stored entry, as its bucket holds it.
type KV struct {
	K, V []byte
}

// SlotEntries are the entries of some slots, in their stored form.
type SlotEntries struct {
	Records []KV // uuid -> record
	Pushes  []KV // id (8 bytes) -> push
	Keys    []KV // idempotency key -> id (8 bytes)
	// Gone are records that no longer exist (a tail only).
	Gone []wire.UUID
}

// Len counts the entries.
func (e *SlotEntries) Len() int { return len(e.Records) + len(e.Pushes) + len(e.Keys) + len(e.Gone) }

// prefixes are the two-byte uuid prefixes whose slot is in set, ascending:
// a slot is 64 runs of uuids (one per value of the first byte's high six
// bits), so a scan seeks to each run instead of reading every record.
func prefixes(set *slotmap.Set) [][2]byte {
	var out [][2]byte
	for p := range 1 << 16 {
		if set.Has(uint16(p) % slotmap.NumSlots) {
			out = append(out, [2]byte{byte(p >> 8), byte(p)})
		}
	}
	return out
}

// SlotRecords reads up to limit client records of the slots in set whose
// uuid is above after (nil: from the start), in uuid order. next is where
// the next call starts; done says there are no more.
func (s *Store) SlotRecords(set *slotmap.Set, after []byte, limit int) (recs []KV, next []byte, done bool, err error) {
	pre := prefixes(set)
	err = s.view("read slot records", func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketClients).Cursor()
		i := 0
		if after != nil {
			for i < len(pre) && bytes.Compare(pre[i][:], after[:2]) < 0 {
				i++
			}
		}
		for ; i < len(pre); i++ {
			var k, v []byte
			if after != nil && bytes.Equal(pre[i][:], after[:2]) {
				k, v = c.Seek(after)
				if k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			} else {
				k, v = c.Seek(pre[i][:])
			}
			for ; k != nil && bytes.HasPrefix(k, pre[i][:]); k, v = c.Next() {
				if len(recs) == limit {
					next = recs[len(recs)-1].K
					return nil
				}
				recs = append(recs, KV{bytes.Clone(k), bytes.Clone(v)})
			}
		}
		done = true
		return nil
	})
	if err != nil {
		return nil, nil, false, fmt.Errorf("read records of slots %s: %w", set, err)
	}
	if done && len(recs) > 0 {
		next = recs[len(recs)-1].K
	}
	return recs, next, done, nil
}

// SlotPushes reads, from the push with id above after (0: the first), up
// to scan pushes and returns those whose uuid is in set, with their keys.
// next is the last id read; done says the bucket has no more.
func (s *Store) SlotPushes(set *slotmap.Set, after uint64, scan int) (e SlotEntries, next uint64, done bool, err error) {
	next = after
	err = s.view("read slot pushes", func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketPushes).Cursor()
		kb := tx.Bucket(bucketKeys)
		k, v := c.Seek(binary.BigEndian.AppendUint64(nil, after+1))
		for n := 0; k != nil; k, v = c.Next() {
			if n == scan {
				return nil
			}
			n++
			next = getU64(k, next)
			if len(v) < 17 {
				continue // damaged: Check reports it
			}
			var u wire.UUID
			copy(u[:], v[1:17])
			if !set.HasUUID(u) {
				continue
			}
			e.addPush(kb, k, v)
		}
		done = true
		return nil
	})
	if err != nil {
		return e, after, false, fmt.Errorf("read pushes of slots %s: %w", set, err)
	}
	return e, next, done, nil
}

func (e *SlotEntries) addPush(kb *bolt.Bucket, k, v []byte) {
	e.Pushes = append(e.Pushes, KV{bytes.Clone(k), bytes.Clone(v)})
	var p Push
	if p.unmarshal(getU64(k, 0), v) == nil && p.Key != "" {
		if id := kb.Get([]byte(p.Key)); bytes.Equal(id, k) {
			e.Keys = append(e.Keys, KV{[]byte(p.Key), bytes.Clone(k)})
		}
	}
}

// PushEntries reads the pushes with these ids (those that exist), with
// their keys.
func (s *Store) PushEntries(ids []uint64) (SlotEntries, error) {
	var e SlotEntries
	err := s.view("read pushes", func(tx *bolt.Tx) error {
		pb, kb := tx.Bucket(bucketPushes), tx.Bucket(bucketKeys)
		for _, id := range ids {
			k := binary.BigEndian.AppendUint64(nil, id)
			if v := pb.Get(k); v != nil {
				e.addPush(kb, k, v)
			}
		}
		return nil
	})
	if err != nil {
		return e, fmt.Errorf("read %d pushes: %w", len(ids), err)
	}
	return e, nil
}

// ErrForeignKey is an imported idempotency key that does not name a push
// of the imported slots.
var ErrForeignKey = errors.New("idempotency key of a push outside the slots")

// Import writes entries copied from another pod's store for the slots in
// set, in one transaction: records replace what is there, Gone records
// are deleted. A key must name a push of those slots (else nothing is
// written: ErrForeignKey); a key this pod holds already for another push
// (the same key used for uuids of two pods) stays as it is, and conflicts
// counts those.
func (s *Store) Import(e *SlotEntries, set *slotmap.Set) (conflicts int, err error) {
	err = s.update("import", func(tx *bolt.Tx) error {
		cl, pb, kb := tx.Bucket(bucketClients), tx.Bucket(bucketPushes), tx.Bucket(bucketKeys)
		for _, kv := range e.Records {
			if len(kv.K) != wire.UUIDLen {
				return fmt.Errorf("record key of %d bytes", len(kv.K))
			}
			if err := cl.Put(kv.K, kv.V); err != nil {
				return err
			}
		}
		for _, u := range e.Gone {
			if err := cl.Delete(u[:]); err != nil {
				return err
			}
		}
		for _, kv := range e.Pushes {
			if len(kv.K) != 8 {
				return fmt.Errorf("push key of %d bytes", len(kv.K))
			}
			if err := pb.Put(kv.K, kv.V); err != nil {
				return err
			}
		}
		for _, kv := range e.Keys {
			if len(kv.V) != 8 || len(kv.K) == 0 {
				return fmt.Errorf("bad idempotency key entry")
			}
			p := pb.Get(kv.V)
			if len(p) < 17 || !set.HasUUID(wire.UUID(p[1:17])) {
				return fmt.Errorf("%w: key %q names push %d", ErrForeignKey, kv.K, getU64(kv.V, 0))
			}
			if had := kb.Get(kv.K); had != nil && !bytes.Equal(had, kv.V) {
				conflicts++
				continue
			}
			if err := kb.Put(kv.K, kv.V); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("import %d entries into %s: %w", e.Len(), s.path, err)
	}
	return conflicts, nil
}

// DeleteSlots deletes up to limit records, and the pushes (with their
// keys) scanned from after id after, of the slots in set. It returns the
// push id to go on from and whether nothing of the slots is left.
func (s *Store) DeleteSlots(set *slotmap.Set, after uint64, limit int) (next uint64, done bool, err error) {
	pre := prefixes(set)
	next = after
	err = s.update("delete slots", func(tx *bolt.Tx) error {
		cl := tx.Bucket(bucketClients)
		n := 0
		var doomed [][]byte
		c := cl.Cursor()
		for _, p := range pre {
			for k, _ := c.Seek(p[:]); k != nil && bytes.HasPrefix(k, p[:]) && n < limit; k, _ = c.Next() {
				doomed = append(doomed, bytes.Clone(k))
				n++
			}
		}
		for _, k := range doomed {
			if err := cl.Delete(k); err != nil {
				return err
			}
		}
		pb, kb := tx.Bucket(bucketPushes), tx.Bucket(bucketKeys)
		doomed = doomed[:0]
		var keys [][]byte
		pc := pb.Cursor()
		pushesDone := true
		scanned := 0
		for k, v := pc.Seek(binary.BigEndian.AppendUint64(nil, after+1)); k != nil; k, v = pc.Next() {
			if scanned == limit*4 {
				pushesDone = false
				break
			}
			scanned++
			next = getU64(k, next)
			if len(v) < 17 {
				continue
			}
			var u wire.UUID
			copy(u[:], v[1:17])
			if !set.HasUUID(u) {
				continue
			}
			doomed = append(doomed, bytes.Clone(k))
			var p Push
			if p.unmarshal(getU64(k, 0), v) == nil && p.Key != "" && bytes.Equal(kb.Get([]byte(p.Key)), k) {
				keys = append(keys, []byte(p.Key))
			}
		}
		for _, k := range doomed {
			if err := pb.Delete(k); err != nil {
				return err
			}
		}
		for _, k := range keys {
			if err := kb.Delete(k); err != nil {
				return err
			}
		}
		done = n < limit && pushesDone
		return nil
	})
	if err != nil {
		return after, false, fmt.Errorf("delete slots %s from %s: %w", set, s.path, err)
	}
	return next, done, nil
}

// metaMovePrefix keys the state of the slot moves this pod takes part
// in, by move id.
var metaMovePrefix = []byte("move/")

// PutMove stores the state of a move; with slotMap set, the slot map is
// stored in the same transaction, so that a pod never holds a map that
// disagrees with its moves.
func (s *Store) PutMove(id string, state, slotMap []byte) error {
	err := s.update("write move", func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if slotMap != nil {
			if err := m.Put(metaSlotMap, slotMap); err != nil {
				return err
			}
		}
		return m.Put(append(bytes.Clone(metaMovePrefix), id...), state)
	})
	if err != nil {
		return fmt.Errorf("store move %s: %w", id, err)
	}
	return nil
}

// Moves returns the stored state of every move, by id.
func (s *Store) Moves() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := s.view("read moves", func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMeta).Cursor()
		for k, v := c.Seek(metaMovePrefix); k != nil && bytes.HasPrefix(k, metaMovePrefix); k, v = c.Next() {
			out[string(k[len(metaMovePrefix):])] = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read moves: %w", err)
	}
	return out, nil
}

// DeleteMoves deletes the stored state of these moves.
func (s *Store) DeleteMoves(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	err := s.update("delete moves", func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		for _, id := range ids {
			if err := m.Delete(append(bytes.Clone(metaMovePrefix), id...)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete %d moves: %w", len(ids), err)
	}
	return nil
}
