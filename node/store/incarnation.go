package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// metaIncarnation holds the store's incarnation id.
var metaIncarnation = []byte("incarnation")

// newIncarnation returns a fresh random incarnation id: 128 bits, so two
// stores never share one by chance.
func newIncarnation() ([]byte, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("generate store incarnation: %w", err)
	}
	return []byte(hex.EncodeToString(b[:])), nil
}

// putNewIncarnation gives a store being created its incarnation.
func putNewIncarnation(tx *bolt.Tx) error {
	inc, err := newIncarnation()
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(metaIncarnation, inc)
}

// Incarnation is the id this store was given when it was created. It
// stays the same across restarts and changes when the store is replaced by
// a new, empty one: push ids and event sequence numbers start again then,
// so a reader that remembers ids or a cursor must also remember this id
// to know they still name the same pushes and events. A store restored
// from a copy keeps the copy's incarnation.
func (s *Store) Incarnation() string { return s.incarnation }

// loadIncarnation reads the store's incarnation. A store made before
// stores had one is given one now; if that write fails (a full disk must
// not keep a node from starting) it is kept in memory and written with
// the next commit that succeeds, so until then a restart gives another id:
// readers then see the store as replaced, which costs a resync or a failed
// message but never a wrong fate.
func (s *Store) loadIncarnation() error {
	err := s.view("read incarnation", func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(metaIncarnation); len(v) > 0 {
			s.incarnation = string(v)
		}
		return nil
	})
	if err != nil || s.incarnation != "" {
		return err
	}
	inc, err := newIncarnation()
	if err != nil {
		return err
	}
	s.incarnation = string(inc)
	werr := s.update("write incarnation", func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(metaIncarnation, inc)
	})
	if werr != nil {
		s.incarnationUnwritten.Store(true)
	}
	return nil
}

// putIncarnationIfUnwritten adds the incarnation to a write transaction
// while it is not on disk yet (see loadIncarnation).
func (s *Store) putIncarnationIfUnwritten(tx *bolt.Tx) error {
	if !s.incarnationUnwritten.Load() {
		return nil
	}
	return tx.Bucket(bucketMeta).Put(metaIncarnation, []byte(s.incarnation))
}
