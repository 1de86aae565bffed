package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// GetPush reads one push.
func (s *Store) GetPush(id uint64) (Push, bool, error) {
	var p Push
	var found bool
	err := s.view("read push", func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketPushes).Get(binary.BigEndian.AppendUint64(nil, id))
		if v == nil {
			return nil
		}
		found = true
		return p.unmarshal(id, v)
	})
	if err != nil {
		return p, false, fmt.Errorf("read push %d: %w", id, err)
	}
	return p, found, nil
}

// PushByKey finds the push accepted with an idempotency key.
func (s *Store) PushByKey(key string) (Push, bool, error) {
	var id uint64
	err := s.view("read key", func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketKeys).Get([]byte(key)); len(v) == 8 {
			id = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil || id == 0 {
		return Push{}, false, err
	}
	return s.GetPush(id)
}

// EventWithKey is an event joined with its push's idempotency key.
type EventWithKey struct {
	Event
	Key string
}

// Events returns up to limit events with a sequence number above after,
// joined with their pushes' idempotency keys.
func (s *Store) Events(after uint64, limit int) ([]EventWithKey, error) {
	var out []EventWithKey
	err := s.view("read events", func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		pb := tx.Bucket(bucketPushes)
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], after+1)
		for key, v := c.Seek(k[:]); key != nil && len(out) < limit; key, v = c.Next() {
			if len(key) != 8 {
				s.opt.OnDamaged(fmt.Errorf("event key %x is %d bytes, not 8", key, len(key)))
				continue
			}
			ev, err := decodeEvent(binary.BigEndian.Uint64(key), v)
			if err != nil {
				// Skipped, so that followers get past it rather than
				// fail at this cursor for good.
				s.opt.OnDamaged(fmt.Errorf("event %d: %w", binary.BigEndian.Uint64(key), err))
				continue
			}
			e := EventWithKey{Event: ev}
			if pv := pb.Get(binary.BigEndian.AppendUint64(nil, ev.PushID)); pv != nil {
				var p Push
				if p.unmarshal(ev.PushID, pv) == nil {
					e.Key = p.Key
				}
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read events after %d: %w", after, err)
	}
	return out, nil
}

// FirstEventSeq is the oldest event kept (0 if none).
func (s *Store) FirstEventSeq() uint64 {
	var seq uint64
	_ = s.view("read first event", func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketEvents).Cursor().First(); k != nil {
			seq = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return seq
}
