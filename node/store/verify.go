package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// The bbolt file format, read here with plain reads and no memory
// mapping, so that a damaged file is found and described before bbolt
// maps it: bbolt trusts what it maps, and a truncated or overwritten file
// makes it fault (SIGBUS, SIGSEGV) or fail an assertion, some of it in
// goroutines of its own where nothing can recover. The layout is bbolt's
// format version 2 (go.etcd.io/bbolt/internal/common), which bbolt has
// kept since its first release.
const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2

	pageHeaderSize  = 16 // id u64, flags u16, count u16, overflow u32
	elementSize     = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	bucketValueSize = 16 // root pgid u64, sequence u64; an inline bucket's page follows

	branchPage   = 0x01
	leafPage     = 0x02
	metaPage     = 0x04
	freelistPage = 0x10
	bucketLeaf   = 0x01

	noFreelist = ^uint64(0)

	// maxTreeDepth bounds the walk: a B+tree of 2^64 keys is far
	// shallower, so anything deeper is a loop in damaged pages.
	maxTreeDepth = 64
)

var ne = binary.NativeEndian

// meta is what a bbolt meta page says about the file.
type meta struct {
	pageSize uint32
	root     uint64 // root bucket's page
	freelist uint64
	pgid     uint64 // pages in use: the high water mark
	txid     uint64
}

// parseMeta reads a meta page (its header included) and reports whether
// it is valid: bbolt's magic, version and checksum.
func parseMeta(b []byte) (meta, bool) {
	if len(b) < pageHeaderSize+64 {
		return meta{}, false
	}
	m := b[pageHeaderSize:]
	if ne.Uint32(m[0:]) != boltMagic || ne.Uint32(m[4:]) != boltVersion {
		return meta{}, false
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != ne.Uint64(m[56:]) {
		return meta{}, false
	}
	return meta{pageSize: ne.Uint32(m[8:]), root: ne.Uint64(m[16:]), freelist: ne.Uint64(m[32:]), pgid: ne.Uint64(m[40:]), txid: ne.Uint64(m[48:])}, true
}

// fileCheck is what verifying a store file found.
type fileCheck struct {
	size int64
	meta meta
	// fallback, when set, says that one header page is not valid and the
	// store opens at the other one's (older or only) commit.
	fallback string
	pages    uint64   // pages the walk visited
	buckets  []string // top-level buckets
}

// damage is a reason a file is damaged, turned into a DamagedError by
// whoever knows the path.
type damage string

func (d damage) Error() string { return string(d) }

// verifyFile checks that f is a bbolt file whose last commit is intact as
// far as its structure goes: a valid meta page, a size that covers every
// page the commit uses, and a tree of pages whose every reference, key
// and value lies inside the file and the page that holds it. It reads
// every page reachable from the root once. Errors of type damage describe
// the damage; others are I/O errors.
func verifyFile(f *os.File) (fileCheck, error) {
	var fc fileCheck
	st, err := f.Stat()
	if err != nil {
		return fc, err
	}
	fc.size = st.Size()
	if fc.size == 0 {
		return fc, damage("the file is empty (0 bytes); a store is never empty, even a new one")
	}
	m, fallback, err := readMeta(f, fc.size)
	if err != nil {
		return fc, err
	}
	fc.meta, fc.fallback = m, fallback
	ps := uint64(m.pageSize)
	if m.pgid < 3 {
		return fc, damage(fmt.Sprintf("its header claims %d pages in use; a store has at least 3", m.pgid))
	}
	if need := m.pgid * ps; need/ps != m.pgid || uint64(fc.size) < need {
		return fc, damage(fmt.Sprintf("the file is truncated: it is %d bytes, but its last commit uses %d pages of %d bytes (%d bytes)", fc.size, m.pgid, ps, m.pgid*ps))
	}
	w := &walker{f: f, ps: ps, hwm: m.pgid, seen: make([]uint64, (m.pgid+63)/64)}
	w.mark(0, 2) // the meta pages
	if m.freelist != noFreelist {
		if err := w.freelist(m.freelist); err != nil {
			return fc, err
		}
	}
	if err := w.tree(m.root, 0, nil, nil, func(k []byte) { fc.buckets = append(fc.buckets, string(k)) }); err != nil {
		return fc, err
	}
	fc.pages = w.pages
	return fc, nil
}

// readMeta picks the meta page bbolt would use: the valid one with the
// highest transaction id. When only one is valid, fallback says so: bbolt
// then opens at that page's commit without a word, which is right after a
// crash in the middle of writing the other page (that commit was never
// acknowledged) and loses the newest commit when the disk damaged it.
func readMeta(f *os.File, size int64) (m meta, fallback string, err error) {
	buf := make([]byte, 4096)
	read := func(off int64) []byte {
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil
		}
		return buf[:n]
	}
	m0, ok0 := parseMeta(read(0))
	var m1 meta
	var ok1 bool
	if ok0 {
		m1, ok1 = parseMeta(read(int64(m0.pageSize)))
	} else {
		// Without the first page the page size is unknown; bbolt looks
		// for the second meta page at every power of two from 1 KiB.
		for i := 0; i <= 14 && !ok1; i++ {
			off := int64(1024) << i
			if off >= size {
				break
			}
			m1, ok1 = parseMeta(read(off))
			ok1 = ok1 && int64(m1.pageSize) == off
		}
	}
	switch {
	case ok0 && ok1:
		m = m0
		if m1.txid > m0.txid {
			m = m1
		}
	case ok0:
		m = m0
		fallback = fmt.Sprintf("header page 1 is not valid; the store opens at the commit of header page 0 (transaction %d)", m.txid)
	case ok1:
		m = m1
		fallback = fmt.Sprintf("header page 0 is not valid; the store opens at the commit of header page 1 (transaction %d)", m.txid)
	case size < 2*4096:
		return m, "", damage(fmt.Sprintf("the file is truncated inside its header: it is %d bytes, and neither of its two header pages is readable", size))
	default:
		return m, "", damage("neither of its two header pages (bbolt meta pages) is valid: the file is not a bbolt store, or its first pages were overwritten")
	}
	if m.pageSize < 512 || m.pageSize > 1<<24 || m.pageSize&(m.pageSize-1) != 0 {
		return m, "", damage(fmt.Sprintf("its header gives an impossible page size of %d bytes", m.pageSize))
	}
	if size < 2*int64(m.pageSize) {
		return m, "", damage(fmt.Sprintf("the file is truncated inside its header: it is %d bytes, shorter than its two header pages (%d bytes)", size, 2*m.pageSize))
	}
	return m, fallback, nil
}

// walker reads a bbolt page tree with plain reads.
type walker struct {
	f     *os.File
	ps    uint64
	hwm   uint64
	seen  []uint64 // bit per page: visited
	bufs  [][]byte // one page buffer per depth
	pages uint64
}

func (w *walker) mark(id, n uint64) {
	for i := id; i < id+n; i++ {
		w.seen[i/64] |= 1 << (i % 64)
	}
}

func (w *walker) marked(id, n uint64) bool {
	for i := id; i < id+n; i++ {
		if w.seen[i/64]&(1<<(i%64)) != 0 {
			return true
		}
	}
	return false
}

// read returns page id (with its overflow pages) in the buffer of depth.
func (w *walker) read(id uint64, depth int) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, damage(fmt.Sprintf("a reference points to page %d, outside the %d pages in use", id, w.hwm))
	}
	for len(w.bufs) <= depth {
		w.bufs = append(w.bufs, make([]byte, w.ps))
	}
	b := w.bufs[depth][:w.ps]
	if _, err := w.f.ReadAt(b, int64(id*w.ps)); err != nil {
		return nil, fmt.Errorf("read page %d: %w", id, err)
	}
	if got := ne.Uint64(b); got != id {
		return nil, damage(fmt.Sprintf("page %d holds the header of page %d", id, got))
	}
	over := uint64(ne.Uint32(b[12:]))
	if id+over >= w.hwm {
		return nil, damage(fmt.Sprintf("page %d claims %d overflow pages, past the %d pages in use", id, over, w.hwm))
	}
	if w.marked(id, over+1) {
		return nil, damage(fmt.Sprintf("page %d is referenced twice", id))
	}
	w.mark(id, over+1)
	w.pages += over + 1
	if over > 0 {
		n := (over + 1) * w.ps
		if uint64(cap(w.bufs[depth])) < n {
			w.bufs[depth] = make([]byte, n)
		}
		b = w.bufs[depth][:n]
		if _, err := w.f.ReadAt(b, int64(id*w.ps)); err != nil {
			return nil, fmt.Errorf("read page %d: %w", id, err)
		}
	}
	return b, nil
}

func (w *walker) freelist(id uint64) error {
	b, err := w.read(id, 0)
	if err != nil {
		return err
	}
	if flags := ne.Uint16(b[8:]); flags != freelistPage {
		return damage(fmt.Sprintf("the free list (page %d) is a page of type %#x", id, flags))
	}
	count, idx := uint64(ne.Uint16(b[10:])), uint64(0)
	if count == 0xFFFF {
		if len(b) < pageHeaderSize+8 {
			return damage(fmt.Sprintf("the free list (page %d) is cut short", id))
		}
		count, idx = ne.Uint64(b[pageHeaderSize:]), 1
	}
	if end := pageHeaderSize + (idx+count)*8; count > uint64(len(b)) || end > uint64(len(b)) {
		return damage(fmt.Sprintf("the free list (page %d) lists %d pages, more than it can hold", id, count))
	}
	for i := idx; i < idx+count; i++ {
		if p := ne.Uint64(b[pageHeaderSize+i*8:]); p < 2 || p >= w.hwm {
			return damage(fmt.Sprintf("the free list (page %d) lists page %d, outside the %d pages in use", id, p, w.hwm))
		}
	}
	return nil
}

// tree walks the B+tree rooted at page id, whose keys must lie in
// [lo, hi) (nil: unbounded). onBucket is called for every bucket at this
// level (the top level only: nested buckets pass nil).
func (w *walker) tree(id uint64, depth int, lo, hi []byte, onBucket func(k []byte)) error {
	if depth > maxTreeDepth {
		return damage(fmt.Sprintf("the page tree is deeper than %d levels at page %d: its references loop", maxTreeDepth, id))
	}
	b, err := w.read(id, depth)
	if err != nil {
		return err
	}
	return w.node(id, b, depth, lo, hi, onBucket)
}

// node checks one branch or leaf page b (id 0 for an inline bucket).
func (w *walker) node(id uint64, b []byte, depth int, lo, hi []byte, onBucket func(k []byte)) error {
	where := fmt.Sprintf("page %d", id)
	if id == 0 {
		where = "an inline bucket"
	}
	flags, count := ne.Uint16(b[8:]), uint64(ne.Uint16(b[10:]))
	if flags != branchPage && flags != leafPage {
		return damage(fmt.Sprintf("%s is of type %#x where a branch or leaf page belongs", where, flags))
	}
	if pageHeaderSize+count*elementSize > uint64(len(b)) {
		return damage(fmt.Sprintf("%s claims %d elements, more than it can hold", where, count))
	}
	if flags == branchPage && count == 0 {
		return damage(fmt.Sprintf("%s is an empty branch page", where))
	}
	field := func(off, n uint64) ([]byte, error) {
		if off > uint64(len(b)) || n > uint64(len(b))-off {
			return nil, damage(fmt.Sprintf("an element of %s points outside the page", where))
		}
		return b[off : off+n], nil
	}
	var prev []byte
	for i := uint64(0); i < count; i++ {
		e := pageHeaderSize + i*elementSize
		var key, val []byte
		var err error
		if flags == branchPage {
			pos, ksize := uint64(ne.Uint32(b[e:])), uint64(ne.Uint32(b[e+4:]))
			key, err = field(e+pos, ksize)
		} else {
			pos, ksize, vsize := uint64(ne.Uint32(b[e+4:])), uint64(ne.Uint32(b[e+8:])), uint64(ne.Uint32(b[e+12:]))
			key, err = field(e+pos, ksize+vsize)
			if err == nil {
				key, val = key[:ksize], key[ksize:]
			}
		}
		if err != nil {
			return err
		}
		if (prev != nil && bytes.Compare(prev, key) >= 0) || (lo != nil && bytes.Compare(key, lo) < 0) || (hi != nil && bytes.Compare(key, hi) >= 0) {
			return damage(fmt.Sprintf("the keys of %s are out of order", where))
		}
		prev = key
		if flags == branchPage {
			var next []byte
			if i+1 < count {
				e2 := pageHeaderSize + (i+1)*elementSize
				if next, err = field(e2+uint64(ne.Uint32(b[e2:])), uint64(ne.Uint32(b[e2+4:]))); err != nil {
					return err
				}
			} else {
				next = hi
			}
			// Deeper levels read into buffers of their own: b, and the
			// keys cut from it, stay valid.
			if err := w.tree(ne.Uint64(b[e+8:]), depth+1, key, next, onBucket); err != nil {
				return err
			}
			continue
		}
		if ne.Uint32(b[e:])&bucketLeaf == 0 {
			continue
		}
		if onBucket != nil {
			onBucket(key)
		}
		if len(val) < bucketValueSize {
			return damage(fmt.Sprintf("bucket %q in %s has a %d-byte header", key, where, len(val)))
		}
		if root := ne.Uint64(val); root != 0 {
			if err := w.tree(root, depth+1, nil, nil, nil); err != nil {
				return fmt.Errorf("bucket %q: %w", key, err)
			}
			continue
		}
		inline := val[bucketValueSize:]
		if len(inline) < pageHeaderSize {
			return damage(fmt.Sprintf("inline bucket %q in %s is cut short", key, where))
		}
		if ne.Uint16(inline[8:]) != leafPage {
			return damage(fmt.Sprintf("inline bucket %q in %s is not a leaf", key, where))
		}
		if err := w.node(0, inline, depth+1, nil, nil, nil); err != nil {
			return fmt.Errorf("bucket %q: %w", key, err)
		}
	}
	return nil
}
