// Package clients holds the ClientTable: every client record of a node in
// memory, sharded by uuid so that heartbeats from many sources do not
// contend on one lock, and laid out in slabs so that an idle record costs
// a few dozen bytes and looking one up allocates nothing.
package clients

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"

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
}

// ClientTable is the set of client records.
type ClientTable struct {
	cfg    Config
	sink   EventSink
	count  atomic.Int64
	shards [shardCount]shard
}

type shard struct {
	mu    sync.Mutex
	idx   map[wire.UUID]uint32
	recs  []state.Record
	free  []uint32
	dirty []uint32
	gone  []wire.UUID // removed since the last flush
	evs   []state.Event
}

// New returns an empty table.
func New(cfg Config, sink EventSink) *ClientTable {
	t := &ClientTable{cfg: cfg, sink: sink}
	for i := range t.shards {
		t.shards[i].idx = make(map[wire.UUID]uint32)
	}
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

func (s *shard) lookup(u *wire.UUID) *state.Record {
	i, ok := s.idx[*u]
	if !ok {
		return nil
	}
	return &s.recs[i]
}

func (s *shard) insert(u *wire.UUID) *state.Record {
	var i uint32
	if n := len(s.free); n > 0 {
		i = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		s.recs = append(s.recs, state.Record{})
		i = uint32(len(s.recs) - 1)
	}
	s.idx[*u] = i
	r := &s.recs[i]
	*r = state.Record{UUID: *u, Flags: state.FlagInUse}
	return r
}

func (s *shard) markDirty(r *state.Record) {
	if r.Flags&state.FlagDirty != 0 {
		return
	}
	r.Flags |= state.FlagDirty
	s.dirty = append(s.dirty, s.idx[r.UUID])
}

// markDirtyAfter records that a transition set the dirty flag.
func (s *shard) trackDirty(r *state.Record, wasDirty bool) {
	if !wasDirty && r.Flags&state.FlagDirty != 0 {
		s.dirty = append(s.dirty, s.idx[r.UUID])
	}
}

func (s *shard) remove(r *state.Record) {
	i := s.idx[r.UUID]
	delete(s.idx, r.UUID)
	s.gone = append(s.gone, r.UUID)
	*r = state.Record{}
	s.free = append(s.free, i)
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
)

// Heartbeat applies a heartbeat and appends the answer (server messages
// with appID) to out. It allocates nothing for a known uuid.
func (t *ClientTable) Heartbeat(now int64, u wire.UUID, tr state.Transport, from netip.AddrPort, conn any, appID byte, out []byte) ([]byte, HeartbeatResult) {
	s := t.shard(&u)
	s.mu.Lock()
	defer s.mu.Unlock()
	res := HeartbeatKnown
	r := s.lookup(&u)
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
	var rep state.Reply
	rep, s.evs = r.Heartbeat(now, tr, from, conn, t.cfg.Policy, s.evs)
	s.trackDirty(r, was)
	t.emit(s)
	return rep.Append(out, appID), res
}

// Ack applies a client's ack. Acks from unknown uuids are ignored. Over
// TCP, conn is attached as the client's connection, as any message on it
// proves the connection is the client's.
func (t *ClientTable) Ack(now int64, u wire.UUID, cmd byte, mask uint64, conn any) bool {
	s := t.shard(&u)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.lookup(&u)
	if r == nil {
		return false
	}
	if conn != nil {
		r.SetConn(conn)
	}
	was := r.Flags&state.FlagDirty != 0
	var changed bool
	s.evs, changed = r.Ack(now, cmd, mask, s.evs)
	s.trackDirty(r, was)
	t.emit(s)
	return changed
}

// Delivery is what an accepted push sends at once to an online client.
type Delivery struct {
	Msg  []byte         // encoded server messages, appId 0
	UDP  netip.AddrPort // valid when SendUDP
	Conn any            // the TCP connection when non-nil
	// SendUDP is true when the client heartbeated over UDP within the
	// online window.
	SendUDP bool
}

// Push applies an accepted push. It always succeeds: pushes create
// records even past the cap. The returned delivery is empty when the
// client is offline.
func (t *ClientTable) Push(now int64, u wire.UUID, id uint64, kind state.Kind, bits uint64, payload []byte, out []byte) Delivery {
	s := t.shard(&u)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.lookup(&u)
	if r == nil {
		r = s.insert(&u)
		r.LastSeen = now
		t.count.Add(1)
	}
	was := r.Flags&state.FlagDirty != 0
	rep, udp, tcp, evs := r.Push(now, t.cfg.OnlineWindow, id, kind, bits, payload, s.evs)
	s.evs = evs
	s.trackDirty(r, was)
	t.emit(s)
	var d Delivery
	if udp || tcp {
		d.Msg = rep.Append(out, 0)
		if udp {
			d.UDP, _ = r.Addr()
			d.SendUDP = true
		}
		if tcp {
			d.Conn = r.Conn()
		}
	}
	return d
}

// DetachConn forgets conn as u's connection, if it still is.
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
		for j := range s.recs {
			r := &s.recs[j]
			if r.Flags&state.FlagInUse != 0 && r.Online(now, t.cfg.OnlineWindow) {
				n++
			}
		}
		s.mu.Unlock()
	}
	return n
}

// Expire removes the records whose last activity is before cutoff and
// reports how many it removed. Their pending pushes become Expired. A
// client with a live TCP connection is kept: it is demonstrably there.
func (t *ClientTable) Expire(now, cutoff int64) int {
	removed := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for j := range s.recs {
			r := &s.recs[j]
			if r.Flags&state.FlagInUse == 0 || r.LastSeen >= cutoff || r.Conn() != nil {
				continue
			}
			s.evs = r.Expire(now, s.evs)
			s.remove(r)
			removed++
		}
		t.emit(s)
		s.mu.Unlock()
	}
	t.count.Add(int64(-removed))
	return removed
}

// Load puts a record read from the store into the table. It is meant for
// start-up, before any traffic.
func (t *ClientTable) Load(u wire.UUID, data []byte) error {
	s := t.shard(&u)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.lookup(&u)
	if r == nil {
		r = s.insert(&u)
		t.count.Add(1)
	}
	if err := r.UnmarshalBinary(data); err != nil {
		s.remove(r)
		s.gone = s.gone[:len(s.gone)-1]
		t.count.Add(-1)
		return err
	}
	return nil
}

// Changes is what the table has to write back to the store.
type Changes struct {
	Keys   []wire.UUID
	Values [][]byte // stored form of each record in Keys; aliases Buf
	Buf    []byte
	Gone   []wire.UUID
}

// Reset empties c for reuse.
func (c *Changes) Reset() {
	c.Keys = c.Keys[:0]
	clear(c.Values)
	c.Values = c.Values[:0]
	c.Buf = c.Buf[:0]
	c.Gone = c.Gone[:0]
}

// CollectChanges appends to c every record changed since the last call and
// every uuid removed, and marks them clean. If writing them fails, the
// caller hands them back with Redo.
func (t *ClientTable) CollectChanges(c *Changes) {
	type span struct{ off, end int }
	var spans []span
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for _, j := range s.dirty {
			r := &s.recs[j]
			if r.Flags&state.FlagInUse == 0 || r.Flags&state.FlagDirty == 0 {
				continue
			}
			r.Flags &^= state.FlagDirty
			off := len(c.Buf)
			c.Buf = r.AppendBinary(c.Buf)
			c.Keys = append(c.Keys, r.UUID)
			spans = append(spans, span{off, len(c.Buf)})
		}
		s.dirty = s.dirty[:0]
		c.Gone = append(c.Gone, s.gone...)
		s.gone = s.gone[:0]
		s.mu.Unlock()
	}
	// Slices into Buf are cut only now: appends may have moved it.
	for _, sp := range spans {
		c.Values = append(c.Values, c.Buf[sp.off:sp.end])
	}
}

// Redo marks the records of a failed write dirty again so that the next
// collection retries them.
func (t *ClientTable) Redo(c *Changes) {
	for _, u := range c.Keys {
		s := t.shard(&u)
		s.mu.Lock()
		if r := s.lookup(&u); r != nil {
			s.markDirty(r)
		}
		s.mu.Unlock()
	}
	for _, u := range c.Gone {
		s := t.shard(&u)
		s.mu.Lock()
		if s.lookup(&u) == nil {
			s.gone = append(s.gone, u)
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
		for j := range s.recs {
			if s.recs[j].Flags&state.FlagInUse != 0 && !fn(&s.recs[j]) {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
	}
}
