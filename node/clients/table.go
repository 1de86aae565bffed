// Package clients holds the ClientTable: every client record of a node in
// memory, sharded by uuid so that heartbeats from many sources do not
// contend on one lock, and laid out in slabs so that an idle record costs
// a few dozen bytes and looking one up allocates nothing.
package clients

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

const shardCount = 256

// EventSink receives delivery events while the record they describe is
// locked, so events of one uuid reach it in the order they happened.
type EventSink interface {
	Append(evs []state.Event)
}

// Config is what the table needs to apply the protocol.
type Config struct {
	// MaxRecords caps the records heartbeats may create; pushes still
	// create records past it. 0 means no cap.
	MaxRecords int64
	// CreateByHeartbeat lets a heartbeat from an unknown uuid create its
	// record (the Java server's CREATE_MACHINE_BY_CLIENT).
	CreateByHeartbeat bool
	Policy            state.Policy
	// OnlineWindow is how long after its last UDP heartbeat a client
	// receives instant pushes over UDP, in nanoseconds.
	OnlineWindow int64
	// SeenStep is how far, in nanoseconds, a record's last-seen time may
	// run ahead of the stored one before a heartbeat alone writes the
	// record back (see state.Record.Heartbeat); 0 writes back every
	// heartbeat.
	SeenStep int64
}

// ClientTable is the set of client records.
//
// Pushes and expiry change it only through a Stage, which the store
// commits before the table shows the change: what a phone or a reader
// sees of them is always durable. Heartbeats and acks change it
// directly; what they change is written back later.
type ClientTable struct {
	cfg    Config
	sink   EventSink
	count  atomic.Int64
	shards [shardCount]shard
	// released is closed when the stage holding records ends.
	released atomic.Pointer[chan struct{}]
	// heldWait bounds how long a client message waits for a held record.
	heldWait time.Duration
	waiting  atomic.Int32 // client messages waiting for a held record
}

// DefaultHeldWait is how long a heartbeat or an ack waits for a record
// whose change is being committed. A commit takes milliseconds; a commit
// stuck longer (a failing disk) must not stall the listeners, so the
// message is dropped and the phone repeats it.
const DefaultHeldWait = time.Second

// chunkLen is the records of one slab chunk: 256 records of 56 bytes
// fill a size class of the Go allocator exactly (14,336 bytes).
const (
	chunkBits = 8
	chunkLen  = 1 << chunkBits
)

// chunk is a fixed-size piece of a shard's slab. A shard grows by whole
// chunks, never by copying: a table grown live by heartbeats leaves no
// outgrown slabs behind as garbage, holds at most one partly used chunk
// per shard, and is laid out exactly as a table loaded from the store.
type chunk [chunkLen]state.Record

type shard struct {
	mu  sync.Mutex
	idx uuidIndex
	// chunks hold the records: slot i is chunks[i/chunkLen][i%chunkLen].
	// Slots below n are in use or free; slots at and past n were never
	// used.
	chunks []*chunk
	n      uint32
	free   []uint32
	dirty  []uint32
	// eventful lists the dirty records whose change came with events (an
	// ack, a heartbeat that handed pushes over): the change must be
	// durable in the same commit as its events, or a crash between them
	// would find a push acknowledged in the store and still pending in
	// its record, and send it again. Unlike dirty, it is never capped.
	eventful []uint32
	evs      []state.Event
	// What the stage being committed does to this shard (see Stage).
	staged   map[wire.UUID]*stagedRecord
	expiring []uint32 // live records the stage removes
}

// New returns an empty table.
func New(cfg Config, sink EventSink) *ClientTable {
	t := &ClientTable{cfg: cfg, sink: sink, heldWait: DefaultHeldWait}
	closed := make(chan struct{})
	close(closed)
	t.released.Store(&closed)
	return t
}

func (t *ClientTable) shard(u *wire.UUID) *shard { return &t.shards[shardOf(u)] }

// shardOf picks a uuid's shard from all 16 of its bytes. DDPush clients
// usually send md5 digests, but a client may send any 16 bytes (a
// counter, a padded name), and uuids sharing a first byte must not all
// contend on one lock. Multiplying carries every bit upwards, so the top
// byte of the product depends on every byte of the uuid.
func shardOf(u *wire.UUID) int {
	x := binary.LittleEndian.Uint64(u[:8])*0x9e3779b97f4a7c15 ^ binary.LittleEndian.Uint64(u[8:])
	return int((x * 0xc2b2ae3d27d4eb4f) >> 56)
}

// Len is the number of records.
func (t *ClientTable) Len() int64 { return t.count.Load() }

// Config returns the table's configuration.
func (t *ClientTable) Config() Config { return t.cfg }

// rec is the record in slot i (i < s.n).
func (s *shard) rec(i uint32) *state.Record {
	return &s.chunks[i>>chunkBits][i&(chunkLen-1)]
}

func (s *shard) lookup(u *wire.UUID) *state.Record {
	i, ok := s.idx.get(u, s)
	if !ok {
		return nil
	}
	return s.rec(i)
}

func (s *shard) insert(u *wire.UUID) *state.Record {
	var i uint32
	if n := len(s.free); n > 0 {
		i = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		i = s.n
		if int(i>>chunkBits) == len(s.chunks) {
			s.chunks = append(s.chunks, new(chunk))
		}
		s.n++
	}
	s.idx.put(u, i)
	r := s.rec(i)
	*r = state.Record{UUID: *u, Flags: state.FlagInUse}
	return r
}

// slotOf is the slot of r, a live record of s.
func (s *shard) slotOf(r *state.Record) uint32 {
	i, _ := s.idx.get(&r.UUID, s)
	return i
}

func (s *shard) markDirty(r *state.Record) {
	if r.Flags&state.FlagDirty != 0 {
		return
	}
	r.Flags |= state.FlagDirty
	s.dirty = append(s.dirty, s.slotOf(r))
}

// markDirtyAfter records that a transition set the dirty flag.
func (s *shard) trackDirty(r *state.Record, wasDirty bool) {
	if !wasDirty && r.Flags&state.FlagDirty != 0 {
		s.dirty = append(s.dirty, s.slotOf(r))
	}
}

func (s *shard) remove(r *state.Record) {
	i := s.slotOf(r)
	s.idx.del(&r.UUID, i)
	*r = state.Record{}
	s.free = append(s.free, i)
}

// held reports whether a stage holds u, whose live record is r (nil when
// it has none).
func (s *shard) held(u *wire.UUID, r *state.Record) bool {
	if r != nil {
		return r.Flags&state.FlagHeld != 0
	}
	if len(s.staged) == 0 {
		return false
	}
	_, ok := s.staged[*u]
	return ok
}

// lockFree locks u's shard once no stage holds u and returns its live
// record (nil if none). It gives up, unlocked, after the table's held
// wait.
func (t *ClientTable) lockFree(u *wire.UUID) (*shard, *state.Record, bool) {
	s := t.shard(u)
	var timeout <-chan time.Time
	for {
		s.mu.Lock()
		r := s.lookup(u)
		if !s.held(u, r) {
			return s, r, true
		}
		// The stage closes this channel only after releasing every
		// record, under the shard locks: the one read here is the one
		// that holds u.
		released := *t.released.Load()
		s.mu.Unlock()
		if timeout == nil {
			tm := time.NewTimer(t.heldWait)
			defer tm.Stop()
			timeout = tm.C
		}
		t.waiting.Add(1)
		select {
		case <-released:
			t.waiting.Add(-1)
		case <-timeout:
			t.waiting.Add(-1)
			return s, nil, false
		}
	}
}

func (t *ClientTable) emit(s *shard) {
	if len(s.evs) > 0 {
		t.sink.Append(s.evs)
		clear(s.evs)
		s.evs = s.evs[:0]
	}
}

// HeartbeatResult says what a heartbeat did to the table.
type HeartbeatResult uint8

const (
	HeartbeatKnown   HeartbeatResult = iota // applied to an existing record
	HeartbeatCreated                        // created a record
	HeartbeatUnknown                        // dropped: unknown uuid and creation disabled
	HeartbeatCapped                         // dropped: unknown uuid and the record cap is reached
	HeartbeatBusy                           // dropped: a commit held the record for too long
)

// Heartbeat applies a heartbeat and appends the answer (server messages
// with appID) to out. It allocates nothing for a known uuid.
//
// front is 1 + the ordinal of the pod that relayed a UDP heartbeat, 0
// when it came to this pod's own socket (see state.Record.Front).
func (t *ClientTable) Heartbeat(now int64, u wire.UUID, tr state.Transport, from netip.AddrPort, conn any, front uint16, appID byte, out []byte) ([]byte, HeartbeatResult) {
	s, r, ok := t.lockFree(&u)
	if !ok {
		return out, HeartbeatBusy
	}
	defer s.mu.Unlock()
	res := HeartbeatKnown
	if r == nil {
		if !t.cfg.CreateByHeartbeat {
			return out, HeartbeatUnknown
		}
		if t.cfg.MaxRecords > 0 && t.count.Load() >= t.cfg.MaxRecords {
			return out, HeartbeatCapped
		}
		r = s.insert(&u)
		t.count.Add(1)
		res = HeartbeatCreated
	}
	was := r.Flags&state.FlagDirty != 0
	evs := len(s.evs)
	var rep state.Reply
	rep, s.evs = r.Heartbeat(now, tr, from, conn, t.cfg.Policy, t.cfg.SeenStep, s.evs)
	if tr == state.UDP {
		r.Front = front
	}
	s.trackDirty(r, was)
	if len(s.evs) > evs {
		s.eventful = append(s.eventful, s.slotOf(r))
	}
	t.emit(s)
	return rep.Append(out, appID), res
}

// Ack applies a client's ack. Acks from unknown uuids are ignored. Over
// TCP, conn is attached as the client's connection, as any message on it
// proves the connection is the client's. It reports false, having done
// nothing, when a commit held the record for too long.
func (t *ClientTable) Ack(now int64, u wire.UUID, cmd byte, mask uint64, conn any) (changed, ok bool) {
	s, r, ok := t.lockFree(&u)
	if !ok {
		return false, false
	}
	defer s.mu.Unlock()
	if r == nil {
		return false, true
	}
	if conn != nil {
		r.SetConn(conn)
	}
	was := r.Flags&state.FlagDirty != 0
	evs := len(s.evs)
	s.evs, changed = r.Ack(now, cmd, mask, s.evs)
	s.trackDirty(r, was)
	if len(s.evs) > evs {
		s.eventful = append(s.eventful, s.slotOf(r))
	}
	t.emit(s)
	return changed, true
}

// Delivery is what an accepted push sends at once to an online client.
type Delivery struct {
	Msg []byte         // encoded server messages, appId 0
	UDP netip.AddrPort // valid when SendUDP
	// Front is the record's Front: 1 + the ordinal of the pod whose
	// socket UDP messages leave from, 0 for this pod's.
	Front uint16
	Conn  any // the TCP connection when non-nil
	// SendUDP is true when the client heartbeated over UDP within the
	// online window.
	SendUDP bool
}

// DetachConn forgets conn as u's connection, if it still is. It does not
// wait for a held record: the connection is not part of what a stage
// commits, and releasing the stage keeps the live record's connection.
func (t *ClientTable) DetachConn(u wire.UUID, conn any) {
	s := t.shard(&u)
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.lookup(&u); r != nil && r.Conn() == conn {
		r.SetConn(nil)
	}
}

// Snapshot is a copy of one record for reading outside the table.
type Snapshot struct {
	Record state.Record
	Ext    state.Ext
	Online bool
	UDP    bool // online over UDP
	TCP    bool // has a live TCP connection
}

// Get copies the record of u.
func (t *ClientTable) Get(now int64, u wire.UUID) (Snapshot, bool) {
	s := t.shard(&u)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.lookup(&u)
	if r == nil {
		return Snapshot{}, false
	}
	snap := Snapshot{Record: *r, UDP: r.UDPOnline(now, t.cfg.OnlineWindow), TCP: r.Conn() != nil}
	snap.Online = snap.UDP || snap.TCP
	if r.Ext != nil {
		snap.Ext = *r.Ext
		snap.Ext.Classes = append([]state.ClassPush(nil), r.Ext.Classes...)
		snap.Ext.Conn = nil
	}
	snap.Record.Ext = nil
	return snap, true
}

// Online counts the clients that would receive a push now. It scans the
// table, so callers cache it.
func (t *ClientTable) Online(now int64) int64 {
	var n int64
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for j := range s.n {
			r := s.rec(j)
			if r.Flags&state.FlagInUse != 0 && r.Online(now, t.cfg.OnlineWindow) {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Load puts a record read from the store into the table. It is meant for
// start-up, before any traffic, and u must not be in the table: the
// store's keys are unique, and not looking each one up first (a cache
// miss per record) is a sixth of the time a start takes. The store calls
// it from several goroutines at once.
//
// The record is decoded before it enters the table, so one that does not
// decode never touches it.
func (t *ClientTable) Load(u wire.UUID, data []byte) error {
	rec := state.Record{UUID: u, Flags: state.FlagInUse}
	if err := rec.UnmarshalBinary(data); err != nil {
		return err
	}
	s := t.shard(&u)
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.insert(&u) = rec
	t.count.Add(1)
	return nil
}

// Changes is what the table has to write back to the store.
type Changes struct {
	Keys   []wire.UUID
	Values [][]byte // stored form of each record in Keys; aliases Buf
	Buf    []byte
	Gone   []wire.UUID
	// Limit caps the records changed by heartbeats and acks that one
	// collection takes (0: no cap); the rest wait for the next one. What
	// the stage being committed changes is always taken whole. It bounds
	// the memory a write-back needs: the collected records, and the
	// store's copy of every page they touch.
	Limit int

	spans []span // where each of Values lies in Buf, while collecting
	from  int    // the shard a capped collection starts at
}

type span struct{ off, end int }

// maxIdleDirtyCap is the most capacity a shard's dirty list keeps once it
// is written back: 4,096 slots (16 KB) a shard.
const maxIdleDirtyCap = 4096

// Reset empties c for reuse.
func (c *Changes) Reset() {
	c.Keys = c.Keys[:0]
	clear(c.Values)
	c.Values = c.Values[:0]
	c.Buf = c.Buf[:0]
	c.Gone = c.Gone[:0]
	c.spans = c.spans[:0]
}

// CollectChanges appends to c every record changed since the last call,
// up to c.Limit of them, and marks them clean, with what the stage being
// committed (if any) writes and removes. It reports whether changed
// records were left for a later call. If writing them fails, the caller
// hands them back with Redo.
func (t *ClientTable) CollectChanges(c *Changes) (more bool) {
	budget := c.Limit
	if budget <= 0 {
		budget = -1
	}
	// A capped collection starts where the last one stopped, so that
	// while changes come faster than they are written back, every
	// shard's still get their turn.
	first := c.from
	for k := range t.shards {
		i := (first + k) % shardCount
		s := &t.shards[i]
		s.mu.Lock()
		// Changes that came with events first, all of them: their events
		// are in this commit (see shard.eventful). Their entries in the
		// dirty list are then skipped, as the records are clean.
		for _, j := range s.eventful {
			s.collect(c, s.rec(j))
		}
		s.eventful = s.eventful[:0]
		if cap(s.eventful) > maxIdleDirtyCap {
			s.eventful = nil
		}
		taken := 0
		for _, j := range s.dirty {
			if budget == 0 {
				break
			}
			taken++
			if s.collect(c, s.rec(j)) && budget > 0 {
				budget--
			}
		}
		s.dirty = s.dirty[:copy(s.dirty, s.dirty[taken:])]
		if len(s.dirty) == 0 && cap(s.dirty) > maxIdleDirtyCap {
			// A burst of new records grew it; do not keep that for good.
			s.dirty = nil
		}
		if len(s.dirty) > 0 {
			if !more {
				c.from = i
			}
			more = true
		}
		for u, sr := range s.staged {
			if sr.gone {
				if sr.live {
					c.Gone = append(c.Gone, u)
				}
				continue
			}
			off := len(c.Buf)
			c.Buf = sr.rec.AppendBinary(c.Buf)
			c.Keys = append(c.Keys, u)
			c.spans = append(c.spans, span{off, len(c.Buf)})
		}
		for _, j := range s.expiring {
			c.Gone = append(c.Gone, s.rec(j).UUID)
		}
		s.mu.Unlock()
	}
	// Slices into Buf are cut only now: appends may have moved it.
	for _, sp := range c.spans {
		c.Values = append(c.Values, c.Buf[sp.off:sp.end])
	}
	c.spans = c.spans[:0]
	return more
}

// collect appends r to c if it is live and dirty, and marks it clean. It
// reports whether it appended r.
func (s *shard) collect(c *Changes, r *state.Record) bool {
	if r.Flags&state.FlagInUse == 0 || r.Flags&state.FlagDirty == 0 {
		return false
	}
	r.Flags &^= state.FlagDirty | state.FlagSeenLag
	if _, ok := s.staged[r.UUID]; ok {
		return false // the staged record, written below, includes this change
	}
	off := len(c.Buf)
	c.Buf = r.AppendBinary(c.Buf)
	c.Keys = append(c.Keys, r.UUID)
	c.spans = append(c.spans, span{off, len(c.Buf)})
	return true
}

// DirtySeenLag makes dirty every record whose last-seen time is ahead of
// the stored one (state.FlagSeenLag), so that the next write-backs store
// it, and returns how many there were. A graceful stop calls it: what
// heartbeats leave unwritten in a running node is not lost in a planned
// restart.
func (t *ClientTable) DirtySeenLag() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for j := range s.n {
			r := s.rec(j)
			if r.Flags&state.FlagInUse != 0 && r.Flags&state.FlagSeenLag != 0 {
				s.markDirty(r)
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Dirty is the number of records changed by heartbeats and acks that
// wait to be written back.
func (t *ClientTable) Dirty() int64 {
	var n int64
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += int64(len(s.dirty))
		s.mu.Unlock()
	}
	return n
}

// Redo marks the live records of a failed write dirty again so that the
// next collection retries them. Call it after aborting the stage: what
// the stage wrote is not retried, only what heartbeats and acks changed.
func (t *ClientTable) Redo(c *Changes) {
	for _, u := range c.Keys {
		s := t.shard(&u)
		s.mu.Lock()
		if r := s.lookup(&u); r != nil {
			s.markDirty(r)
			// The failed commit's events are handed back too and go out
			// with the next one: so must these records, whatever changed
			// them.
			s.eventful = append(s.eventful, s.slotOf(r))
		}
		s.mu.Unlock()
	}
}

// Range calls fn for every record, with its shard locked; fn must not
// call back into the table.
func (t *ClientTable) Range(fn func(r *state.Record) bool) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for j := range s.n {
			if r := s.rec(j); r.Flags&state.FlagInUse != 0 && !fn(r) {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
	}
}

// Take removes every record for which in reports true, handing each to fn
// first (its shard locked; fn must not call back into the table). Records
// a stage holds, and new ones a stage is about to add, are left alone:
// Take reports how many, and the caller takes them after the stage ends.
// What Take removes leaves the store untouched: the caller decides what
// becomes of the stored copy.
func (t *ClientTable) Take(in func(u *wire.UUID) bool, fn func(r *state.Record)) (held int) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for u := range s.staged {
			if in(&u) {
				held++
			}
		}
		for j := range s.n {
			r := s.rec(j)
			if r.Flags&state.FlagInUse == 0 || !in(&r.UUID) {
				continue
			}
			if r.Flags&state.FlagHeld != 0 {
				held++
				continue
			}
			fn(r)
			s.remove(r)
			t.count.Add(-1)
		}
		s.mu.Unlock()
	}
	return held
}

// Put puts a record in its stored form into the table, replacing any
// record of the same uuid; with dirty set it is written back to the store
// with the next commit.
func (t *ClientTable) Put(u wire.UUID, data []byte, dirty bool) error {
	s, r, ok := t.lockFree(&u)
	if !ok {
		return fmt.Errorf("record %s is held by a commit that does not end", u)
	}
	defer s.mu.Unlock()
	if r == nil {
		r = s.insert(&u)
		t.count.Add(1)
	}
	if err := r.UnmarshalBinary(data); err != nil {
		s.remove(r)
		t.count.Add(-1)
		return err
	}
	if dirty {
		s.markDirty(r)
	}
	return nil
}

// Attach sets where a record's phone is reached: front (see
// state.Record.Front) and its TCP connection, if any. It reports false
// when there is no record of u.
func (t *ClientTable) Attach(u wire.UUID, front uint16, conn any) bool {
	s, r, ok := t.lockFree(&u)
	if !ok {
		return false
	}
	defer s.mu.Unlock()
	if r == nil {
		return false
	}
	r.Front = front
	if conn != nil {
		r.SetConn(conn)
	}
	return true
}
