// Package core is the push node's engine: it owns the client table, the
// store and the delivery event log, accepts pushes durably (group commit),
// applies client messages, and expires old records. The listeners and the
// HTTP API are thin adapters over it.
//
// Everything a push or an expiry changes is committed before anyone sees
// it: the committer stages the change on copies of the records, writes
// it, and only then makes it live, numbers its events for followers and
// sends it to the phone (commit.go). A commit that fails leaves no trace:
// the push is refused and nothing of it happened.
package core

import (
	"context"
	"log/slog"
	"net/netip"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/store"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// Options configure a Core.
type Options struct {
	Table         clients.Config
	MaxContentLen int
	// ExpiryAge removes records whose last activity is older; 0 disables.
	ExpiryAge time.Duration
	// ExpiryInterval is how often the cleaner runs.
	ExpiryInterval time.Duration
	// FlushInterval bounds how long soft state (heartbeat times and
	// addresses) stays only in memory.
	FlushInterval time.Duration
	// WriteBackBatch caps the records changed by heartbeats and acks
	// that one commit writes back (default DefaultWriteBackBatch); more
	// are written by the commits that follow at once.
	WriteBackBatch int
	// StopWriteBack bounds how long a stop spends writing back heartbeat
	// state beyond one commit (default DefaultStopWriteBack): a backlog of
	// millions of records takes minutes, longer than a pod is given to
	// stop, and what it holds is restored by the phones' next heartbeats.
	StopWriteBack time.Duration
	// ReleaseGrowth is the least growth of the table, in records, after
	// which the memory it left behind is given back to the system
	// (default DefaultReleaseGrowth; see releaseAfterGrowth).
	ReleaseGrowth int64
	// RetryInterval is how often a failing store is tried again when no
	// push asks for it.
	RetryInterval time.Duration
	// EventRetention is how many delivery events the store keeps.
	EventRetention uint64
	// PushRetention is how long a finished push stays readable by id
	// and idempotency key.
	PushRetention time.Duration
	// IDBase is the lowest push id this node may hand out after the ones
	// its store already used: pods of one PushNode hand out ids from
	// disjoint ranges (slotmap.IDBase), so an id names its home.
	IDBase uint64
	Logger *slog.Logger
	Stats  *stats.Stats
}

// UDPSender sends one datagram from the client port.
type UDPSender interface {
	SendUDP(b []byte, to netip.AddrPort) error
}

// ConnSender is a client's TCP connection as the table holds it.
type ConnSender interface {
	Send(b []byte) bool
}

// Core is a running node's engine.
type Core struct {
	opt   Options
	log   *slog.Logger
	st    *stats.Stats
	store *store.Store
	table *clients.ClientTable
	ev    *eventLog

	nextID atomic.Uint64 // last push id handed out; the committer's alone
	udp    atomic.Pointer[udpHolder]
	relay  atomic.Pointer[relayHolder]
	// tracker, while a slot move runs, notes what commits write of its
	// slots (see TrackSlots).
	tracker atomic.Pointer[slotTracker]
	// fence: slots whose pushes this pod no longer commits, from the
	// moment a move holds them (see Fence).
	fence   atomic.Pointer[slotmap.Set]
	started time.Time

	commitMu sync.Mutex
	next     *cycle
	kick     chan struct{}
	failure  atomic.Pointer[storeFailure]

	keyMu    sync.Mutex
	inflight map[string]*inflight

	onlineMu   sync.Mutex
	onlineAt   time.Time
	onlineLast int64

	closed  chan struct{}
	runDone chan struct{}

	// What the committer knows of the memory given back to the system
	// (see releaseAfterGrowth).
	releasedLen int64
	releasing   atomic.Bool
}

// DefaultWriteBackBatch is the default Options.WriteBackBatch. A commit
// holds a copy of every store page it changes, and records created by
// heartbeats have random keys, so every record written back touches a
// page of its own until most pages are touched: at 65,536 records a
// commit needs at most a few hundred MB, whatever the table's size,
// while a commit of every record of a burst of millions needed a copy of
// the whole file.
const DefaultWriteBackBatch = 65_536

// DefaultStopWriteBack is the default Options.StopWriteBack: within the
// 5 s the node gives its store at a stop (see node.Stop).
const DefaultStopWriteBack = 3 * time.Second

type udpHolder struct{ s UDPSender }

// Open opens the store in dir and loads every record into memory.
func Open(dir string, opt Options) (*Core, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Stats == nil {
		opt.Stats = stats.New()
	}
	if opt.MaxContentLen <= 0 {
		opt.MaxContentLen = wire.DefaultMaxContentLen
	}
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = time.Second
	}
	if opt.WriteBackBatch <= 0 {
		opt.WriteBackBatch = DefaultWriteBackBatch
	}
	if opt.StopWriteBack <= 0 {
		opt.StopWriteBack = DefaultStopWriteBack
	}
	if opt.ReleaseGrowth <= 0 {
		opt.ReleaseGrowth = DefaultReleaseGrowth
	}
	if opt.RetryInterval <= 0 {
		opt.RetryInterval = time.Second
	}
	if opt.ExpiryInterval <= 0 {
		opt.ExpiryInterval = time.Minute
	}
	if opt.EventRetention == 0 {
		opt.EventRetention = 1_000_000
	}
	if opt.PushRetention <= 0 {
		opt.PushRetention = 24 * time.Hour
	}
	start := time.Now()
	dl := &damageLog{log: opt.Logger, st: opt.Stats}
	st, err := store.Open(dir, store.Options{OnDamaged: dl.note, IDLimit: opt.IDBase + slotmap.MaxIDSeq + 1, OnHeaderFallback: func(msg string) {
		opt.Logger.Warn("store header damaged: opened at the previous commit", "detail", msg,
			"meaning", "after a crash during a commit this is expected and nothing acknowledged is lost; otherwise the disk damaged the newest commit, and pushes answered in it are gone: run pushnode check and see docs/store.md")
	}})
	if err != nil {
		return nil, err
	}
	c := &Core{
		opt:      opt,
		log:      opt.Logger,
		st:       opt.Stats,
		store:    st,
		kick:     make(chan struct{}, 1),
		inflight: make(map[string]*inflight),
		closed:   make(chan struct{}),
		runDone:  make(chan struct{}),
		started:  time.Now(),
	}
	ev := newEventLog(1)
	tbl := clients.New(opt.Table, ev)
	counters, err := st.LoadConcurrent(runtime.GOMAXPROCS(0), tbl.Load)
	if err != nil {
		st.Close()
		return nil, err
	}
	ev.nextSeq = counters.NextEventSeq
	ev.durable.Store(counters.NextEventSeq - 1)
	c.table, c.ev = tbl, ev
	c.nextID.Store(max(counters.NextPushID-1, opt.IDBase))
	// Loading grew the shards' uuid indexes by doubling, and bbolt read
	// the file; give what that left behind back to the system now rather
	// than leaving the resident set at twice the table for good.
	debug.FreeOSMemory()
	if n := dl.count(); n > 0 {
		c.log.Warn("the store holds damaged entries; they were skipped and stay in the file as they are: run `pushnode check` for the list, and see the recovery steps in docs/store.md", "path", st.Path(), "damaged", n)
	}
	c.log.Info("store loaded", "path", st.Path(), "records", tbl.Len(), "bytes", st.Size(), "took", time.Since(start).Round(time.Millisecond))
	return c, nil
}

// damageLog counts the stored entries found damaged and skipped, and logs
// the first few of them, then one a minute.
type damageLog struct {
	log    *slog.Logger
	st     *stats.Stats
	mu     sync.Mutex
	n      int
	logged time.Time
}

const damagedLoggedInFull = 10

func (d *damageLog) note(err error) {
	d.st.DamagedEntries.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	if d.n <= damagedLoggedInFull || time.Since(d.logged) >= time.Minute {
		d.logged = time.Now()
		d.log.Warn("damaged store entry skipped", "err", err, "damaged_so_far", d.n)
	}
}

func (d *damageLog) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// Table exposes the client table (for tests and benchmarks).
func (c *Core) Table() *clients.ClientTable { return c.table }

// Stats returns the node's counters.
func (c *Core) Stats() *stats.Stats { return c.st }

// Store returns the store.
func (c *Core) Store() *store.Store { return c.store }

// MaxContentLen is the largest 0x20 payload accepted.
func (c *Core) MaxContentLen() int { return c.opt.MaxContentLen }

// SetUDPSender sets where instant UDP pushes go out.
func (c *Core) SetUDPSender(s UDPSender) { c.udp.Store(&udpHolder{s}) }

// HandleClient applies one decoded client message and appends the answer
// to out. For UDP, from is the source; for TCP, conn is the connection.
// This is the per-packet path: it allocates nothing for a known client.
func (c *Core) HandleClient(now int64, m *wire.ClientMessage, tr state.Transport, from netip.AddrPort, conn any, out []byte) []byte {
	if r := c.relay.Load(); r != nil && !r.r.Local(m.UUID) {
		r.r.Phone(now, m.UUID, m.Raw, tr, from, conn)
		return out
	}
	return c.handleLocal(now, m, tr, from, conn, 0, out)
}

// HandleRelayed applies a client message that the pod with ordinal front
// received for a uuid homed here, and appends the answer to out for that
// pod to send. For TCP, conn stands for the phone's connection at the
// front (a core.ConnSender).
func (c *Core) HandleRelayed(now int64, m *wire.ClientMessage, tr state.Transport, from netip.AddrPort, conn any, front int, out []byte) []byte {
	return c.handleLocal(now, m, tr, from, conn, uint16(front+1), out)
}

func (c *Core) handleLocal(now int64, m *wire.ClientMessage, tr state.Transport, from netip.AddrPort, conn any, front uint16, out []byte) []byte {
	switch m.Cmd {
	case wire.CmdHeartbeat:
		var res clients.HeartbeatResult
		out, res = c.table.Heartbeat(now, m.UUID, tr, from, conn, front, m.AppID, out)
		switch res {
		case clients.HeartbeatUnknown:
			c.st.Drop(stats.DropUnknownUUID)
		case clients.HeartbeatCapped:
			c.st.Drop(stats.DropRecordCap)
		case clients.HeartbeatBusy:
			c.st.Drop(stats.DropRecordBusy)
		}
	case wire.CmdGeneral, wire.CmdClassified, wire.CmdCustom:
		if _, ok := c.table.Ack(now, m.UUID, m.Cmd, m.Mask(), conn); !ok {
			c.st.Drop(stats.DropRecordBusy)
		}
	case wire.CmdReset:
		// Valid on the wire, no action (docs/protocol.md section 2).
	}
	return out
}

// DetachConn forgets a closed TCP connection.
func (c *Core) DetachConn(u wire.UUID, conn any) {
	if r := c.relay.Load(); r != nil && !r.r.Local(u) {
		r.r.DetachPhone(u, conn)
		return
	}
	c.table.DetachConn(u, conn)
}

// DetachRelayed forgets a TCP connection of another pod that closed.
func (c *Core) DetachRelayed(u wire.UUID, conn any) { c.table.DetachConn(u, conn) }

// GetPush reads a push by id.
func (c *Core) GetPush(id uint64) (store.Push, bool, error) { return c.store.GetPush(id) }

// Lookup copies a client's record.
func (c *Core) Lookup(u wire.UUID) (clients.Snapshot, bool) {
	return c.table.Get(time.Now().UnixNano(), u)
}

// Online counts online clients, scanning at most once a second.
func (c *Core) Online() int64 {
	c.onlineMu.Lock()
	defer c.onlineMu.Unlock()
	if time.Since(c.onlineAt) > time.Second {
		c.onlineLast = c.table.Online(time.Now().UnixNano())
		c.onlineAt = time.Now()
	}
	return c.onlineLast
}

// Records is the number of client records.
func (c *Core) Records() int64 { return c.table.Len() }

// WriteBackPending is the records changed by heartbeats and acks that
// wait to be written to the store.
func (c *Core) WriteBackPending() int64 { return c.table.Dirty() }

// Started is when the node started.
func (c *Core) Started() time.Time { return c.started }

// Incarnation is the id of the store this node runs on (see
// store.Store.Incarnation): push ids and event numbers are only meaningful
// together with it.
func (c *Core) Incarnation() string { return c.store.Incarnation() }

// LastPushID is the last push id handed out: every accepted push has an
// id at most this. A store put back to an older copy hands out ids again
// from where the copy was, so this goes back with it.
func (c *Core) LastPushID() uint64 { return c.nextID.Load() }

// DurableSeq is the last event sequence number followers can read.
func (c *Core) DurableSeq() uint64 { return c.ev.durable.Load() }

// Events returns durable events after the cursor. With wait > 0 and none
// available, it waits up to wait for one.
func (c *Core) Events(ctx context.Context, after uint64, limit int, wait time.Duration) ([]store.EventWithKey, error) {
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	for {
		ch := c.ev.wait()
		if durable := c.ev.durable.Load(); durable > after {
			evs, err := c.store.Events(after, limit)
			// A commit is in the file a moment before it is counted
			// durable: hand out only what is counted, or a reader's
			// cursor could pass DurableSeq and its next call be told
			// that the log went back (a false gap).
			for len(evs) > 0 && evs[len(evs)-1].Seq > durable {
				evs = evs[:len(evs)-1]
			}
			if len(evs) > 0 || err != nil {
				return evs, err
			}
			// Only damaged, skipped events lie after the cursor: wait
			// for newer ones rather than answer nothing at once.
			after = durable
		}
		if timer == nil {
			return nil, nil
		}
		select {
		case <-ch:
		case <-timer:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.closed:
			return nil, nil
		}
	}
}

// FirstEventSeq is the oldest event still kept.
func (c *Core) FirstEventSeq() uint64 { return c.store.FirstEventSeq() }
