// Package store keeps a node's durable state in one bbolt file: the client
// records, the accepted pushes with their fates and idempotency keys, and
// the delivery event log that followers read from a cursor. Every write is
// one Batch in one transaction, so what is on disk is always consistent.
//
// A damaged file is reported, never crashed on: Open verifies the file's
// structure with plain reads before bbolt maps it (verify.go), and every
// access to the mapping turns memory faults and bbolt's assertion panics
// into a DamagedError (guard).
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/ddpush/ddpush-operator/node/wire"
)

var (
	bucketClients = []byte("clients")
	bucketPushes  = []byte("pushes")
	bucketKeys    = []byte("keys")
	bucketEvents  = []byte("events")
	bucketMeta    = []byte("meta")

	allBuckets = [][]byte{bucketClients, bucketPushes, bucketKeys, bucketEvents, bucketMeta}

	metaNextPush  = []byte("next-push-id")
	metaNextEvent = []byte("next-event-seq")
	metaFormat    = []byte("format")
	metaProbe     = []byte("probe")
)

const format = 1

// FileName is the bbolt file inside the data directory.
const FileName = "pushnode.db"

// lockTimeout is how long Open waits for another process to let go of
// the file: another process holding it is a configuration error, said
// so rather than waited on forever.
const lockTimeout = 5 * time.Second

// DamagedError says the store file cannot be used as it is.
type DamagedError struct {
	Path   string
	Reason string
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("store at %s is damaged: %s", e.Path, e.Reason)
}

// Options configure a Store.
type Options struct {
	// OnDamaged is told about every stored entry that cannot be decoded
	// and is skipped (a client record at load, a push or an event later).
	OnDamaged func(err error)
	// OnHeaderFallback is told when one of the file's two header pages is
	// not valid and the store opens at the other one's commit: expected
	// after a crash in the middle of a commit (nothing acknowledged is
	// lost), a lost commit when the disk damaged the page.
	OnHeaderFallback func(msg string)
	// IDLimit, when set, is where this node's push ids end (exclusive):
	// pushes moved here from other pods keep their ids, from other
	// ordinals' ranges, and the next id of this node must not follow
	// theirs.
	IDLimit uint64
}

// Store is an open data directory.
type Store struct {
	db   *bolt.DB
	path string
	opt  Options
	// incarnation is fixed once Open returns.
	incarnation string
	// incarnationUnwritten is set while the incarnation is only in memory.
	incarnationUnwritten atomic.Bool
}

// Path is the store file in dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// Open opens the store in dir, creating it if there is none. A damaged
// file is refused with a *DamagedError and left as it is.
func Open(dir string, opt Options) (*Store, error) {
	if opt.OnDamaged == nil {
		opt.OnDamaged = func(error) {}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	path := Path(dir)
	switch _, err := os.Stat(path); {
	case errors.Is(err, os.ErrNotExist):
		if err := create(path); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	fc, err := verifyPath(path, lockTimeout)
	if err != nil {
		return nil, err
	}
	if fc.fallback != "" && opt.OnHeaderFallback != nil {
		opt.OnHeaderFallback(fmt.Sprintf("store at %s: %s", path, fc.fallback))
	}
	s := &Store{path: path, opt: opt}
	err = s.guard("open", func() error {
		db, err := bolt.Open(path, 0o600, boltOptions())
		if err != nil {
			return err
		}
		s.db = db
		return nil
	})
	if err != nil {
		var de *DamagedError
		if errors.As(err, &de) || errors.Is(err, bolterrors.ErrTimeout) {
			return nil, err
		}
		return nil, fmt.Errorf("open store %s for writing: %w", path, err)
	}
	if err := s.initialise(fc); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.loadIncarnation(); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

func boltOptions() *bolt.Options {
	return &bolt.Options{
		Timeout: lockTimeout,
		// The freelist is rebuilt on open instead of written on every
		// commit: commits are the push path's cost.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Avoid remapping (which waits for readers) while the file grows.
		InitialMmapSize: 256 << 20,
	}
}

// create makes a new, empty store at path. It is built under another name
// and renamed into place, so that a crash never leaves a half-made file
// where the store belongs: an empty or headless file there is damage.
func create(path string) error {
	tmp := path + ".new"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	db, err := bolt.Open(tmp, 0o600, boltOptions())
	if err != nil {
		return fmt.Errorf("create store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(metaFormat, []byte{format}); err != nil {
			return err
		}
		return putNewIncarnation(tx)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("create store %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// verifyPath verifies the file at path (see verifyFile) under a shared
// lock, so that it is not read while another process writes it.
func verifyPath(path string, wait time.Duration) (fileCheck, error) {
	var fc fileCheck
	fi, err := os.Stat(path)
	if err != nil {
		return fc, fmt.Errorf("open store %s: %w", path, err)
	}
	if fi.IsDir() {
		return fc, &DamagedError{Path: path, Reason: "it is a directory, not a file"}
	}
	if !fi.Mode().IsRegular() {
		return fc, &DamagedError{Path: path, Reason: fmt.Sprintf("it is not a regular file (%s)", fi.Mode().Type())}
	}
	f, err := os.Open(path)
	if err != nil {
		return fc, fmt.Errorf("open store %s: %w", path, err)
	}
	defer f.Close()
	if err := lockShared(f, wait); err != nil {
		return fc, fmt.Errorf("open store %s: %w", path, err)
	}
	fc, err = verifyFile(f)
	if err != nil {
		var d damage
		if errors.As(err, &d) {
			return fc, &DamagedError{Path: path, Reason: err.Error()}
		}
		return fc, fmt.Errorf("read store %s: %w", path, err)
	}
	return fc, nil
}

// initialise checks that the file is a store of this format, and creates
// the buckets of one that has none (a file made by bbolt but never
// written to). It writes nothing to a store that has them all, so that a
// node whose disk is full still starts, serves what it holds and reports
// itself not ready.
func (s *Store) initialise(fc fileCheck) error {
	have := map[string]bool{}
	for _, b := range fc.buckets {
		have[b] = true
	}
	if len(have) == 0 {
		return s.guard("initialise", func() error {
			return s.db.Update(func(tx *bolt.Tx) error {
				for _, b := range allBuckets {
					if _, err := tx.CreateBucket(b); err != nil {
						return err
					}
				}
				if err := tx.Bucket(bucketMeta).Put(metaFormat, []byte{format}); err != nil {
					return err
				}
				return putNewIncarnation(tx)
			})
		})
	}
	for _, b := range allBuckets {
		if !have[string(b)] {
			return &DamagedError{Path: s.path, Reason: fmt.Sprintf("bucket %q is missing", b)}
		}
	}
	return s.guard("read format", func() error {
		return s.db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bucketMeta).Get(metaFormat); len(v) != 1 || v[0] != format {
				return &DamagedError{Path: s.path, Reason: fmt.Sprintf("its data format is %x, not %d (written by another program or version)", v, format)}
			}
			return nil
		})
	})
}

// guard runs fn with memory faults turned into panics (a page of the
// mapping beyond the end of a truncated file is a SIGBUS, an address
// outside it a SIGSEGV), and turns any panic into a DamagedError: bbolt
// trusts the pages it reads and panics or faults on damaged ones.
func (s *Store) guard(what string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = &DamagedError{Path: s.path, Reason: fmt.Sprintf("%s failed on damaged data: %v", what, r)}
		}
	}()
	return fn()
}

// view runs a guarded read transaction.
func (s *Store) view(what string, fn func(tx *bolt.Tx) error) error {
	return s.guard(what, func() error { return s.db.View(fn) })
}

// update runs a guarded write transaction.
func (s *Store) update(what string, fn func(tx *bolt.Tx) error) error {
	return s.guard(what, func() error { return s.db.Update(fn) })
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

// Path is the bbolt file.
func (s *Store) Path() string { return s.path }

// Size is the file's size in bytes.
func (s *Store) Size() int64 {
	var n int64
	_ = s.view("size", func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// Counters are the sequences a node resumes from.
type Counters struct {
	NextPushID   uint64 // the next push id to hand out
	NextEventSeq uint64 // the next event sequence number
}

// Load calls fn for every stored client record, in key order, and
// returns the counters. A record fn cannot take (it does not decode) is
// skipped and reported to Options.OnDamaged: it stays in the file,
// untouched, until the client's next record replaces it, and `pushnode
// check` lists it.
func (s *Store) Load(fn func(u wire.UUID, v []byte) error) (Counters, error) {
	return s.LoadConcurrent(1, fn)
}

// LoadConcurrent is Load with the key space cut into parts ranges, each
// read by its own goroutine in its own read transaction: fn is called
// from parts goroutines at once (and Options.OnDamaged too). A start
// spends its time on cache misses, putting each record in the table, so
// two cores load nearly twice as fast.
func (s *Store) LoadConcurrent(parts int, fn func(u wire.UUID, v []byte) error) (Counters, error) {
	parts = min(max(parts, 1), 16)
	var c Counters
	err := s.view("load", func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		c.NextPushID = getU64(m.Get(metaNextPush), 1)
		c.NextEventSeq = getU64(m.Get(metaNextEvent), 1)
		// Never hand out an id or a sequence number that is taken, even
		// if the counters are behind what the buckets hold.
		if k := lastPushBelow(tx.Bucket(bucketPushes).Cursor(), s.opt.IDLimit); len(k) == 8 {
			c.NextPushID = max(c.NextPushID, getU64(k, 0)+1)
		}
		if k, _ := tx.Bucket(bucketEvents).Cursor().Last(); len(k) == 8 {
			c.NextEventSeq = max(c.NextEventSeq, getU64(k, 0)+1)
		}
		return nil
	})
	if err == nil {
		errs := make([]error, parts)
		var wg sync.WaitGroup
		for p := range parts {
			// Part p holds the keys whose first byte is in [lo, hi).
			lo, hi := p*256/parts, (p+1)*256/parts
			wg.Go(func() {
				errs[p] = s.view("load", func(tx *bolt.Tx) error {
					return s.loadRange(tx, lo, hi, fn)
				})
			})
		}
		wg.Wait()
		err = errors.Join(errs...)
	}
	if err != nil {
		var de *DamagedError
		if errors.As(err, &de) {
			return c, de
		}
		return c, fmt.Errorf("load %s: %w", s.path, err)
	}
	s.ReleaseMapped()
	return c, nil
}

// loadRange calls fn for the client records whose key's first byte is in
// [lo, hi).
func (s *Store) loadRange(tx *bolt.Tx, lo, hi int, fn func(u wire.UUID, v []byte) error) error {
	var u wire.UUID
	cur := tx.Bucket(bucketClients).Cursor()
	k, v := cur.First()
	if lo > 0 {
		k, v = cur.Seek([]byte{byte(lo)})
	}
	for ; k != nil; k, v = cur.Next() {
		if len(k) > 0 && int(k[0]) >= hi {
			break
		}
		if len(k) != wire.UUIDLen {
			s.opt.OnDamaged(fmt.Errorf("client key %x is %d bytes, not %d", k, len(k), wire.UUIDLen))
			continue
		}
		if v == nil {
			s.opt.OnDamaged(fmt.Errorf("client key %x names a bucket, not a record", k))
			continue
		}
		copy(u[:], k)
		if err := fn(u, v); err != nil {
			s.opt.OnDamaged(fmt.Errorf("client record %s: %w", u, err))
		}
	}
	return nil
}

// ReleaseMapped drops the pages of the bbolt file that reading it mapped
// into the process: once the records are in memory, keeping a second,
// file-backed copy of them resident only costs memory. After loading, and
// after commits that wrote many records (each reads the pages it
// changes), the mapping holds much of the file. Readers and commits may
// run meanwhile: a page they touch again is read back from the page
// cache.
func (s *Store) ReleaseMapped() {
	_ = s.view("release", func(tx *bolt.Tx) error {
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
