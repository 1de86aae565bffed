package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// maxProblems bounds the problems a Report lists; it counts them all.
const maxProblems = 50

// Report is what Check found in a store.
type Report struct {
	Path     string
	Bytes    int64
	PageSize uint32
	Pages    uint64 // pages in use
	Clients  int
	Pending  int // client records with pending pushes
	Pushes   int
	Keys     int
	Events   int
	// Problems lists the first maxProblems problems; ProblemCount
	// counts them all.
	Problems     []string
	ProblemCount int
}

// OK reports whether nothing is wrong.
func (r *Report) OK() bool { return r.ProblemCount == 0 }

func (r *Report) problem(format string, args ...any) {
	r.ProblemCount++
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Check verifies the store in dir without changing it: the file's
// structure as Open verifies it, bbolt's own consistency check, and the
// decoding of every stored client record, push, idempotency key and
// event, with the counters against what the buckets hold. Damage goes in
// the report; the error is for a store that could not be checked at all
// (none there, unreadable, or open in a running node).
func Check(dir string) (*Report, error) {
	path := Path(dir)
	r := &Report{Path: path}
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no store at %s (a node creates one when it first starts)", path)
		}
		return nil, err
	}
	fc, err := verifyPath(path, 0)
	r.Bytes, r.PageSize, r.Pages = fc.size, fc.meta.pageSize, fc.meta.pgid
	if err != nil {
		var de *DamagedError
		if !errors.As(err, &de) {
			return nil, err
		}
		r.problem("%s", de.Reason)
		return r, nil
	}
	s := &Store{path: path}
	err = s.guard("open", func() error {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
		s.db = db
		return err
	})
	if err != nil {
		var de *DamagedError
		if !errors.As(err, &de) {
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
		r.problem("%s", de.Reason)
		return r, nil
	}
	defer s.db.Close()
	err = s.view("check", func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			r.problem("bbolt: %v", err)
		}
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				r.problem("bucket %q is missing", b)
			}
		}
		if r.ProblemCount > 0 {
			return nil
		}
		checkEntries(tx, r)
		return nil
	})
	if err != nil {
		var de *DamagedError
		if !errors.As(err, &de) {
			return nil, err
		}
		r.problem("%s", de.Reason)
	}
	return r, nil
}

// checkEntries decodes every entry and checks that they agree.
func checkEntries(tx *bolt.Tx, r *Report) {
	var lastPush, lastEvent uint64
	pb := tx.Bucket(bucketPushes)
	_ = pb.ForEach(func(k, v []byte) error {
		r.Pushes++
		if len(k) != 8 {
			r.problem("push key %x is %d bytes, not 8", k, len(k))
			return nil
		}
		id := binary.BigEndian.Uint64(k)
		lastPush = id
		var p Push
		if err := p.unmarshal(id, v); err != nil {
			r.problem("push %d does not decode: %v", id, err)
		}
		return nil
	})
	pushKnown := func(id uint64) bool { return pb.Get(binary.BigEndian.AppendUint64(nil, id)) != nil }
	_ = tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
		r.Keys++
		if len(v) != 8 {
			r.problem("idempotency key %q points to a %d-byte push id", k, len(v))
			return nil
		}
		id := binary.BigEndian.Uint64(v)
		if !pushKnown(id) {
			r.problem("idempotency key %q points to push %d, which is not stored", k, id)
		}
		return nil
	})
	_ = tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
		r.Events++
		if len(k) != 8 {
			r.problem("event key %x is %d bytes, not 8", k, len(k))
			return nil
		}
		seq := binary.BigEndian.Uint64(k)
		lastEvent = seq
		if _, err := decodeEvent(seq, v); err != nil {
			r.problem("event %d does not decode: %v", seq, err)
		}
		return nil
	})
	_ = tx.Bucket(bucketClients).ForEach(func(k, v []byte) error {
		r.Clients++
		if len(k) != wire.UUIDLen {
			r.problem("client key %x is %d bytes, not %d", k, len(k), wire.UUIDLen)
			return nil
		}
		var u wire.UUID
		copy(u[:], k)
		var rec state.Record
		if err := rec.UnmarshalBinary(v); err != nil {
			r.problem("client record %s does not decode: %v", u, err)
			return nil
		}
		if !rec.HasPending() {
			return nil
		}
		r.Pending++
		e := rec.Ext
		ids := []uint64{e.GeneralID, e.CustomID}
		for _, c := range e.Classes {
			ids = append(ids, c.ID)
		}
		for _, id := range ids {
			if id != 0 && !pushKnown(id) {
				r.problem("client %s has pending push %d, which is not stored", u, id)
			}
		}
		return nil
	})
	m := tx.Bucket(bucketMeta)
	if v := m.Get(metaFormat); len(v) != 1 || v[0] != format {
		r.problem("data format is %x, not %d", v, format)
	}
	if next := getU64(m.Get(metaNextPush), 1); lastPush >= next {
		r.problem("the next push id is %d, but push %d is stored: new pushes would overwrite stored ones", next, lastPush)
	}
	if next := getU64(m.Get(metaNextEvent), 1); lastEvent >= next {
		r.problem("the next event number is %d, but event %d is stored", next, lastEvent)
	}
}
