// Package store keeps a node's durable state in one bbolt file: the client
// records, the accepted pushes with their fates and idempotency keys, and
// the delivery event log that followers read from a cursor. Every write is
// one Batch in one transaction, so what is on disk is always consistent.
package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

var (
	bucketClients = []byte("clients")
	bucketPushes  = []byte("pushes")
	bucketKeys    = []byte("keys")
	bucketEvents  = []byte("events")
	bucketMeta    = []byte("meta")

	metaNextPush  = []byte("next-push-id")
	metaNextEvent = []byte("next-event-seq")
	metaFormat    = []byte("format")
)

const format = 1

// FileName is the bbolt file inside the data directory.
const FileName = "pushnode.db"

// Store is an open data directory.
type Store struct {
	db   *bolt.DB
	path string
}

// Open opens (creating if needed) the store in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		// Another process holding the file is a configuration error;
		// say so instead of waiting forever.
		Timeout: 5 * time.Second,
		// The freelist is rebuilt on open instead of written on every
		// commit: commits are the push path's cost.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Avoid remapping (which waits for readers) while the file grows.
		InitialMmapSize: 256 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketClients, bucketPushes, bucketKeys, bucketEvents, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if v := m.Get(metaFormat); v != nil && (len(v) != 1 || v[0] != format) {
			return fmt.Errorf("data format %v is not %d", v, format)
		}
		return m.Put(metaFormat, []byte{format})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise store %s: %w", path, err)
	}
	return &Store{db: db, path: path}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Path is the bbolt file.
func (s *Store) Path() string { return s.path }

// Size is the file's size in bytes.
func (s *Store) Size() int64 {
	var n int64
	_ = s.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// Counters are the sequences a node resumes from.
type Counters struct {
	NextPushID   uint64 // the next push id to hand out
	NextEventSeq uint64 // the next event sequence number
}

// Load calls fn for every stored client record and returns the counters.
func (s *Store) Load(fn func(u wire.UUID, v []byte) error) (Counters, error) {
	var c Counters
	err := s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		c.NextPushID = getU64(m.Get(metaNextPush), 1)
		c.NextEventSeq = getU64(m.Get(metaNextEvent), 1)
		var u wire.UUID
		return tx.Bucket(bucketClients).ForEach(func(k, v []byte) error {
			if len(k) != wire.UUIDLen {
				return fmt.Errorf("client key of %d bytes", len(k))
			}
			copy(u[:], k)
			if err := fn(u, v); err != nil {
				return fmt.Errorf("client %s: %w", u, err)
			}
			return nil
		})
	})
	if err != nil {
		return c, fmt.Errorf("load %s: %w", s.path, err)
	}
	s.releaseMapped()
	return c, nil
}

// releaseMapped drops the pages of the bbolt file that reading it mapped
// into the process: once the records are in memory, keeping a second,
// file-backed copy of them resident only costs memory.
func (s *Store) releaseMapped() {
	_ = s.db.View(func(tx *bolt.Tx) error {
		info := s.db.Info()
		size := uintptr(tx.Size())
		page := uintptr(max(info.PageSize, 1))
		// The meta pages at the start stay: every transaction reads them.
		skip := 4 * page
		if size > skip {
			dropResident(info.Data+skip, (size-skip)/page*page)
		}
		return nil
	})
}

func getU64(v []byte, def uint64) uint64 {
	if len(v) != 8 {
		return def
	}
	return binary.BigEndian.Uint64(v)
}

// Push is what the store keeps of one accepted push.
type Push struct {
	ID         uint64
	UUID       wire.UUID
	Kind       state.Kind
	Fate       state.Fate
	Size       int    // payload bytes (custom) or 8 (classified)
	Bits       uint64 // classified bits
	Key        string // idempotency key, if any
	AcceptedAt int64
	SentAt     int64
	DoneAt     int64 // when it reached a terminal fate
	// Digest identifies the payload of a custom push made with a key, so
	// that a key reused for different content can be told from a retry.
	// It is kept only for pushes with a key; zero otherwise.
	Digest PayloadDigest
}

// Stored forms of a push: 1 without a digest, 2 with the digest after the
// key. A push without a key is written in form 1, which every version
// reads.
const (
	pushForm1 = 1
	pushForm2 = 2
)

func (p *Push) appendBinary(dst []byte) []byte {
	form := byte(pushForm1)
	if p.Key != "" {
		form = pushForm2
	}
	dst = append(dst, form)
	dst = append(dst, p.UUID[:]...)
	dst = append(dst, byte(p.Kind), byte(p.Fate))
	dst = binary.AppendUvarint(dst, uint64(p.Size))
	dst = binary.BigEndian.AppendUint64(dst, p.Bits)
	dst = binary.AppendVarint(dst, p.AcceptedAt)
	dst = binary.AppendVarint(dst, p.SentAt)
	dst = binary.AppendVarint(dst, p.DoneAt)
	dst = binary.AppendUvarint(dst, uint64(len(p.Key)))
	dst = append(dst, p.Key...)
	if form == pushForm2 {
		dst = append(dst, p.Digest[:]...)
	}
	return dst
}

var errCorrupt = errors.New("corrupt entry")

func (p *Push) unmarshal(id uint64, b []byte) error {
	if len(b) < 1+16+2+1+8 || (b[0] != pushForm1 && b[0] != pushForm2) {
		return errCorrupt
	}
	tail := 0
	if b[0] == pushForm2 {
		tail = len(p.Digest)
	}
	p.ID = id
	copy(p.UUID[:], b[1:17])
	p.Kind, p.Fate = state.Kind(b[17]), state.Fate(b[18])
	b = b[19:]
	size, n := binary.Uvarint(b)
	if n <= 0 || len(b) < n+8 {
		return errCorrupt
	}
	p.Size = int(size)
	p.Bits = binary.BigEndian.Uint64(b[n:])
	b = b[n+8:]
	for _, f := range []*int64{&p.AcceptedAt, &p.SentAt, &p.DoneAt} {
		v, n := binary.Varint(b)
		if n <= 0 {
			return errCorrupt
		}
		*f, b = v, b[n:]
	}
	kl, n := binary.Uvarint(b)
	if n <= 0 || len(b)-n < tail || uint64(len(b)-n-tail) != kl {
		return errCorrupt
	}
	p.Key = string(b[n : len(b)-tail])
	p.Digest = PayloadDigest{}
	copy(p.Digest[:], b[len(b)-tail:])
	return nil
}

// apply moves p to the fate of e, never back from a terminal one.
func (p *Push) apply(e *state.Event) bool {
	if p.Fate.Terminal() {
		return false
	}
	switch {
	case e.Fate == state.Sent:
		if p.Fate == state.Sent {
			return false
		}
		p.SentAt = e.At
	case e.Fate.Terminal():
		p.DoneAt = e.At
		if e.Fate == state.Acknowledged && p.SentAt == 0 {
			p.SentAt = e.At
		}
	}
	p.Fate = e.Fate
	return true
}

// Event is a delivery event with its place in the log.
type Event struct {
	Seq uint64
	state.Event
}

func appendEvent(dst []byte, e *state.Event) []byte {
	dst = append(dst, 1, byte(e.Kind), byte(e.Fate))
	dst = append(dst, e.UUID[:]...)
	dst = binary.AppendUvarint(dst, e.PushID)
	return binary.AppendVarint(dst, e.At)
}

func decodeEvent(seq uint64, b []byte) (Event, error) {
	ev := Event{Seq: seq}
	if len(b) < 3+16 || b[0] != 1 {
		return ev, errCorrupt
	}
	ev.Kind, ev.Fate = state.Kind(b[1]), state.Fate(b[2])
	copy(ev.UUID[:], b[3:19])
	b = b[19:]
	id, n := binary.Uvarint(b)
	if n <= 0 {
		return ev, errCorrupt
	}
	ev.PushID = id
	at, m := binary.Varint(b[n:])
	if m <= 0 || n+m != len(b) {
		return ev, errCorrupt
	}
	ev.At = at
	return ev, nil
}

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

// Commit writes b in one transaction and syncs it to disk.
func (s *Store) Commit(b *Batch) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
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
		for i := range b.RecordKeys {
			if err := cl.Put(b.RecordKeys[i][:], b.RecordValues[i]); err != nil {
				return err
			}
		}
		for i := range b.Removed {
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
					return fmt.Errorf("push %d: %w", e.PushID, err)
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
	return nil
}

// GetPush reads one push.
func (s *Store) GetPush(id uint64) (Push, bool, error) {
	var p Push
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
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
	err := s.db.View(func(tx *bolt.Tx) error {
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
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		pb := tx.Bucket(bucketPushes)
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], after+1)
		for key, v := c.Seek(k[:]); key != nil && len(out) < limit; key, v = c.Next() {
			ev, err := decodeEvent(binary.BigEndian.Uint64(key), v)
			if err != nil {
				return fmt.Errorf("event %x: %w", key, err)
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
	_ = s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketEvents).Cursor().First(); k != nil {
			seq = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return seq
}

// Trim removes events older than keepEvents behind lastSeq, and finished
// pushes (with their keys) that reached their fate before cutoff. It
// deletes at most limit entries of each so one call never holds the
// writer long.
func (s *Store) Trim(lastSeq, keepEvents uint64, cutoff int64, limit int) (events, pushes int, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
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
				return err
			}
			if p.AcceptedAt >= cutoff {
				break // ids grow with time: everything after is newer
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
