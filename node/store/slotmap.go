package store

import (
	bolt "go.etcd.io/bbolt"
)

// metaSlotMap holds the slot map this pod was last given, in its binary
// form (slotmap.Map.MarshalBinary), so that a restarted pod knows its
// slots before the operator calls again.
var metaSlotMap = []byte("slotmap")

// SlotMap returns the stored slot map, nil when none was ever stored.
func (s *Store) SlotMap() ([]byte, error) {
	var out []byte
	err := s.view("read slot map", func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(metaSlotMap); len(v) > 0 {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// PutSlotMap stores a slot map (its binary form) durably, replacing the
// one stored before.
func (s *Store) PutSlotMap(b []byte) error {
	return s.update("write slot map", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaSlotMap, b)
	})
}
