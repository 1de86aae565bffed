package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// Batch is everything one commit writes.
type Batch struct {
	RecordKeys   []wire.UUID
	RecordValues [][]byte
	Removed      []wire.UUID
	Pushes       []Push  // newly accepted pushes
	Events       []Event // in sequence order
	NextPushID   uint64
	NextEventSeq uint64
	// OnApplied, if set, is called for every event that moved a push.
	OnApplied func(p *Push, e *Event)
}

// Empty reports whether the batch writes nothing.
func (b *Batch) Empty() bool {
	return len(b.RecordKeys) == 0 && len(b.Removed) == 0 && len(b.Pushes) == 0 && len(b.Events) == 0
}

// Commit writes b in one transaction and syncs it to disk. On an error
// nothing of b is written.
func (s *Store) Commit(b *Batch) error {
	err := s.update("commit", func(tx *bolt.Tx) error {
		// bbolt keeps references to keys and values until the commit, so
		// every one is cut from an arena that is only ever appended to.
		var arena []byte
		cut := func(start int) []byte { return arena[start:len(arena):len(arena)] }
		idKey := func(id uint64) []byte {
			st := len(arena)
			arena = binary.BigEndian.AppendUint64(arena, id)
			return cut(st)
		}
		cl := tx.Bucket(bucketClients)
		// In key order: a bbolt leaf grows in memory until the commit
		// splits it, and each put shifts the entries after its key, so a
		// burst of new records in the table's (random) order costs time
		// quadratic in the burst; in order each one lands at its leaf's
		// end.
		for _, i := range keyOrder(b.RecordKeys) {
			if err := cl.Put(b.RecordKeys[i][:], b.RecordValues[i]); err != nil {
				return err
			}
		}
		for _, i := range keyOrder(b.Removed) {
			if err := cl.Delete(b.Removed[i][:]); err != nil {
				return err
			}
		}
		pb := tx.Bucket(bucketPushes)
		kb := tx.Bucket(bucketKeys)
		// New pushes are written last, with the fate their own events in
		// this batch gave them.
		pending := make(map[uint64]*Push, len(b.Pushes))
		for i := range b.Pushes {
			pending[b.Pushes[i].ID] = &b.Pushes[i]
		}
		updated := make(map[uint64]*Push)
		eb := tx.Bucket(bucketEvents)
		for i := range b.Events {
			e := &b.Events[i]
			k := idKey(e.Seq)
			st := len(arena)
			arena = appendEvent(arena, &e.Event)
			if err := eb.Put(k, cut(st)); err != nil {
				return err
			}
			p := pending[e.PushID]
			if p == nil {
				p = updated[e.PushID]
			}
			if p == nil {
				v := pb.Get(binary.BigEndian.AppendUint64(nil, e.PushID))
				if v == nil {
					continue // trimmed already
				}
				p = &Push{}
				if err := p.unmarshal(e.PushID, v); err != nil {
					// A damaged push cannot be moved on; the event is
					// still written. Failing the commit instead would
					// fail every later one too.
					s.opt.OnDamaged(fmt.Errorf("push %d: %w", e.PushID, err))
					continue
				}
				updated[e.PushID] = p
			}
			if p.apply(&e.Event) && b.OnApplied != nil {
				b.OnApplied(p, e)
			}
		}
		for id, p := range updated {
			k := idKey(id)
			st := len(arena)
			arena = p.appendBinary(arena)
			if err := pb.Put(k, cut(st)); err != nil {
				return err
			}
		}
		for i := range b.Pushes {
			p := &b.Pushes[i]
			k := idKey(p.ID)
			st := len(arena)
			arena = p.appendBinary(arena)
			if err := pb.Put(k, cut(st)); err != nil {
				return err
			}
			if p.Key != "" {
				if err := kb.Put([]byte(p.Key), k); err != nil {
					return err
				}
			}
		}
		if err := s.putIncarnationIfUnwritten(tx); err != nil {
			return err
		}
		m := tx.Bucket(bucketMeta)
		if b.NextPushID != 0 {
			if err := m.Put(metaNextPush, binary.BigEndian.AppendUint64(nil, b.NextPushID)); err != nil {
				return err
			}
		}
		if b.NextEventSeq != 0 {
			if err := m.Put(metaNextEvent, binary.BigEndian.AppendUint64(nil, b.NextEventSeq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("commit to %s: %w", s.path, err)
	}
	s.incarnationUnwritten.Store(false)
	return nil
}

// Probe writes a little to find out whether the store can be written to.
func (s *Store) Probe() error {
	err := s.update("probe", func(tx *bolt.Tx) error {
		if err := s.putIncarnationIfUnwritten(tx); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(metaProbe, binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano())))
	})
	if err != nil {
		return fmt.Errorf("write to %s: %w", s.path, err)
	}
	s.incarnationUnwritten.Store(false)
	return nil
}

// Trim removes events older than keepEvents behind lastSeq, and finished
// pushes (with their keys) that reached their fate before cutoff. It
// deletes at most limit entries of each so one call never holds the
// writer long.
func (s *Store) Trim(lastSeq, keepEvents uint64, cutoff int64, limit int) (events, pushes int, err error) {
	err = s.update("trim", func(tx *bolt.Tx) error {
		if lastSeq > keepEvents {
			c := tx.Bucket(bucketEvents).Cursor()
			end := binary.BigEndian.AppendUint64(nil, lastSeq-keepEvents)
			for k, _ := c.First(); k != nil && bytes.Compare(k, end) <= 0 && events < limit; k, _ = c.First() {
				if err := c.Delete(); err != nil {
					return err
				}
				events++
			}
		}
		pb := tx.Bucket(bucketPushes)
		kb := tx.Bucket(bucketKeys)
		var doomed [][]byte
		var doomedKeys []string
		seen := 0
		c := pb.Cursor()
		for k, v := c.First(); k != nil && seen < limit; k, v = c.Next() {
			seen++
			var p Push
			if err := p.unmarshal(binary.BigEndian.Uint64(k), v); err != nil {
				// Whether a damaged push is finished is unknown: keep it.
				continue
			}
			if p.AcceptedAt >= cutoff {
				if s.ownID(p.ID) {
					break // this pod's ids grow with time: everything after is newer
				}
				continue // moved here from another pod, whose ids are not in time order with ours
			}
			if !p.Fate.Terminal() || p.DoneAt >= cutoff {
				continue
			}
			// Deleting under a live cursor can skip entries; collect first.
			doomed = append(doomed, append([]byte(nil), k...))
			if p.Key != "" {
				doomedKeys = append(doomedKeys, p.Key)
			}
		}
		for _, k := range doomed {
			if err := pb.Delete(k); err != nil {
				return err
			}
		}
		for _, k := range doomedKeys {
			if err := kb.Delete([]byte(k)); err != nil {
				return err
			}
		}
		pushes = len(doomed)
		return nil
	})
	if err != nil {
		err = fmt.Errorf("trim %s: %w", s.path, err)
	}
	return events, pushes, err
}

// ownID reports whether this pod handed out id (always, without
// Options.IDLimit): pushes moved here keep ids from other pods' ranges.
func (s *Store) ownID(id uint64) bool {
	lim := s.opt.IDLimit
	return lim == 0 || (id < lim && id >= lim-slotmap.MaxIDSeq-1)
}

// keyOrder returns the indexes of keys in ascending key order.
func keyOrder(keys []wire.UUID) []int32 {
	idx := make([]int32, len(keys))
	for i := range idx {
		idx[i] = int32(i)
	}
	if !slices.IsSortedFunc(keys, func(a, b wire.UUID) int { return bytes.Compare(a[:], b[:]) }) {
		// Stable: of two writes of one key, the later still wins.
		slices.SortStableFunc(idx, func(a, b int32) int { return bytes.Compare(keys[a][:], keys[b][:]) })
	}
	return idx
}
