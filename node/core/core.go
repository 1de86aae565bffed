// Package core is the push node's engine: it owns the client table, the
// store and the delivery event log, accepts pushes durably (group commit),
// applies client messages, and expires old records. The listeners and the
// HTTP API are thin adapters over it.
package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/clients"
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
	// EventRetention is how many delivery events the store keeps.
	EventRetention uint64
	// PushRetention is how long a finished push stays readable by id
	// and idempotency key.
	PushRetention time.Duration
	Logger        *slog.Logger
	Stats         *stats.Stats
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

	nextID  atomic.Uint64 // last push id handed out
	udp     atomic.Pointer[udpHolder]
	started time.Time

	commitMu sync.Mutex
	next     *cycle
	kick     chan struct{}

	keyMu    sync.Mutex
	inflight map[string]*inflight

	onlineMu   sync.Mutex
	onlineAt   time.Time
	onlineLast int64

	bufPool sync.Pool
	closed  chan struct{}
	runDone chan struct{}
}

type udpHolder struct{ s UDPSender }

type cycle struct {
	done chan struct{}
	err  error
}

type inflight struct {
	done chan struct{}
	res  PushResult
	err  error
}

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
	if opt.ExpiryInterval <= 0 {
		opt.ExpiryInterval = time.Minute
	}
	if opt.EventRetention == 0 {
		opt.EventRetention = 1_000_000
	}
	if opt.PushRetention <= 0 {
		opt.PushRetention = 24 * time.Hour
	}
	st, err := store.Open(dir)
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
	start := time.Now()
	var tbl *clients.ClientTable
	var log *eventLog
	sink := &lateSink{}
	tbl = clients.New(opt.Table, sink)
	counters, err := st.Load(tbl.Load)
	if err != nil {
		st.Close()
		return nil, err
	}
	log = newEventLog(counters.NextEventSeq)
	sink.l = log
	c.table, c.ev = tbl, log
	c.nextID.Store(counters.NextPushID - 1)
	// Loading grew the table's slabs and maps by doubling; give what the
	// growth left behind back to the system now rather than leaving the
	// resident set at twice the table for good.
	debug.FreeOSMemory()
	c.log.Info("store loaded", "path", st.Path(), "records", tbl.Len(), "bytes", st.Size(), "took", time.Since(start).Round(time.Millisecond))
	return c, nil
}

// lateSink lets the table be built before the event log, whose first
// sequence number is only known once the store is read.
type lateSink struct{ l *eventLog }

func (s *lateSink) Append(evs []state.Event) { s.l.Append(evs) }

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

// Run commits, flushes and expires until ctx ends, then makes everything
// durable and closes the store.
func (c *Core) Run(ctx context.Context) error {
	defer close(c.runDone)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	expire := time.NewTicker(c.opt.ExpiryInterval)
	defer expire.Stop()
	trim := time.NewTicker(time.Minute)
	defer trim.Stop()
	last := time.Now()
	w := &committer{}
	for {
		select {
		case <-ctx.Done():
			close(c.closed)
			err := c.commitCycle(w)
			c.failWaiters(errors.New("node is shutting down"))
			if cerr := c.store.Close(); err == nil {
				err = cerr
			}
			return err
		case <-c.kick:
		case <-tick.C:
			if !c.ev.pending() && time.Since(last) < c.opt.FlushInterval {
				continue
			}
		case <-expire.C:
			if c.opt.ExpiryAge > 0 {
				c.Expire(c.opt.ExpiryAge)
			}
			continue
		case <-trim.C:
			c.trim()
			continue
		}
		last = time.Now()
		if err := c.commitCycle(w); err != nil {
			c.log.Error("commit failed; will retry", "err", err)
		}
	}
}

// Done is closed once Run has made everything durable and returned.
func (c *Core) Done() <-chan struct{} { return c.runDone }

func (c *Core) failWaiters(err error) {
	c.commitMu.Lock()
	cy := c.next
	c.next = nil
	c.commitMu.Unlock()
	if cy != nil {
		cy.err = err
		close(cy.done)
	}
}

type committer struct {
	changes clients.Changes
	evs     []store.Event
	pushes  []store.Push
	ackObs  []float64
}

func (c *Core) commitCycle(w *committer) error {
	c.commitMu.Lock()
	cy := c.next
	c.next = nil
	c.commitMu.Unlock()

	// Events first, records second: a record written is never older than
	// the events written with it.
	var nextSeq uint64
	w.evs, w.pushes, nextSeq = c.ev.take(w.evs, w.pushes)
	w.changes.Reset()
	c.table.CollectChanges(&w.changes)
	b := store.Batch{
		RecordKeys:   w.changes.Keys,
		RecordValues: w.changes.Values,
		Removed:      w.changes.Gone,
		Pushes:       w.pushes,
		Events:       w.evs,
	}
	var err error
	if !b.Empty() {
		b.NextPushID = c.nextID.Load() + 1
		b.NextEventSeq = nextSeq
		start := time.Now()
		w.ackObs = w.ackObs[:0]
		b.OnApplied = func(p *store.Push, e *store.Event) {
			if e.Fate == state.Acknowledged && p.AcceptedAt > 0 {
				w.ackObs = append(w.ackObs, float64(e.At-p.AcceptedAt)/1e9)
			}
		}
		err = c.store.Commit(&b)
		if err != nil {
			c.table.Redo(&w.changes)
			c.ev.giveBack(w.evs, w.pushes)
		} else {
			c.st.Commits.Add(1)
			c.st.CommitLatency.Observe(time.Since(start).Seconds())
			c.st.CommitBatch.Observe(float64(len(w.pushes)))
			for _, v := range w.ackObs {
				c.st.AckLatency.Observe(v)
			}
			for i := range w.evs {
				c.st.Deliveries[w.evs[i].Fate].Add(1)
			}
			if n := len(w.evs); n > 0 {
				c.ev.publish(w.evs[n-1].Seq)
			}
		}
	}
	if cy != nil {
		cy.err = err
		close(cy.done)
	}
	return err
}

// durable waits until everything changed before the call is on disk.
func (c *Core) durable(ctx context.Context) error {
	c.commitMu.Lock()
	select {
	case <-c.closed:
		c.commitMu.Unlock()
		return errors.New("node is shutting down")
	default:
	}
	cy := c.next
	if cy == nil {
		cy = &cycle{done: make(chan struct{})}
		c.next = cy
	}
	c.commitMu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	select {
	case <-cy.done:
		return cy.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush makes everything changed so far durable.
func (c *Core) Flush(ctx context.Context) error { return c.durable(ctx) }

func (c *Core) trim() {
	cutoff := time.Now().Add(-c.opt.PushRetention).UnixNano()
	ev, pu, err := c.store.Trim(c.ev.durable.Load(), c.opt.EventRetention, cutoff, 100_000)
	if err != nil {
		c.log.Error("trim store", "err", err)
		return
	}
	if ev > 0 || pu > 0 {
		c.log.Debug("trimmed store", "events", ev, "pushes", pu)
	}
}

// Expire removes records whose last activity is older than age, like the
// Java console's clean-N, and waits until the removal is durable.
func (c *Core) Expire(age time.Duration) int {
	now := time.Now()
	n := c.table.Expire(now.UnixNano(), now.Add(-age).UnixNano())
	if n > 0 {
		c.log.Info("expired records", "count", n, "older_than", age)
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return n
}

// HandleClient applies one decoded client message and appends the answer
// to out. For UDP, from is the source; for TCP, conn is the connection.
// This is the per-packet path: it allocates nothing for a known client.
func (c *Core) HandleClient(now int64, m *wire.ClientMessage, tr state.Transport, from netip.AddrPort, conn any, out []byte) []byte {
	switch m.Cmd {
	case wire.CmdHeartbeat:
		var res clients.HeartbeatResult
		out, res = c.table.Heartbeat(now, m.UUID, tr, from, conn, m.AppID, out)
		switch res {
		case clients.HeartbeatUnknown:
			c.st.Drop(stats.DropUnknownUUID)
		case clients.HeartbeatCapped:
			c.st.Drop(stats.DropRecordCap)
		}
	case wire.CmdGeneral, wire.CmdClassified, wire.CmdCustom:
		c.table.Ack(now, m.UUID, m.Cmd, m.Mask(), conn)
	case wire.CmdReset:
		// Valid on the wire, no action (docs/protocol.md section 2).
	}
	return out
}

// DetachConn forgets a closed TCP connection.
func (c *Core) DetachConn(u wire.UUID, conn any) { c.table.DetachConn(u, conn) }

// PushSpec is one push to make.
type PushSpec struct {
	UUID    wire.UUID
	Kind    state.Kind
	Bits    uint64 // Classified
	Payload []byte // Custom; owned by the core once passed
	// Key makes the push idempotent: a second push with the same key
	// returns the first one's result instead of pushing again.
	Key string
}

// PushResult says what became of an accepted push.
type PushResult struct {
	ID         uint64
	UUID       wire.UUID
	Kind       state.Kind
	Fate       state.Fate // Queued or Sent when new; the current fate for a duplicate
	AcceptedAt time.Time
	Duplicate  bool
}

// InputError is a push the node refuses as malformed.
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

// MaxKeyLen bounds idempotency keys.
const MaxKeyLen = 256

// Validate checks a push spec against the protocol and the node's limits.
func (c *Core) Validate(p *PushSpec) error {
	switch p.Kind {
	case state.General:
		if p.Bits != 0 || len(p.Payload) != 0 {
			return &InputError{"a general push carries no bits and no data"}
		}
	case state.Classified:
		if len(p.Payload) != 0 {
			return &InputError{"a classified push carries bits, not data"}
		}
	case state.Custom:
		if p.Bits != 0 {
			return &InputError{"a custom push carries data, not bits"}
		}
		if len(p.Payload) == 0 {
			return &InputError{"a custom push needs at least one byte of data"}
		}
		if len(p.Payload) > c.opt.MaxContentLen {
			return &InputError{fmt.Sprintf("data is %d bytes, above this node's maximum of %d", len(p.Payload), c.opt.MaxContentLen)}
		}
	default:
		return &InputError{"kind must be general, classified or custom"}
	}
	if len(p.Key) > MaxKeyLen {
		return &InputError{fmt.Sprintf("idempotency key is %d bytes, above the maximum of %d", len(p.Key), MaxKeyLen)}
	}
	return nil
}

// Push accepts a push and returns once it is durable. Pushes without a key
// from concurrent callers share one commit.
func (c *Core) Push(ctx context.Context, p PushSpec) (PushResult, error) {
	if err := c.Validate(&p); err != nil {
		return PushResult{}, err
	}
	if p.Key == "" {
		return c.push(ctx, p)
	}
	for {
		c.keyMu.Lock()
		if f := c.inflight[p.Key]; f != nil {
			c.keyMu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return PushResult{}, ctx.Err()
			}
			if f.err != nil {
				continue // the first attempt failed: try for real
			}
			return c.duplicate(f.res.ID, f.res)
		}
		stored, ok, err := c.store.PushByKey(p.Key)
		if err != nil {
			c.keyMu.Unlock()
			return PushResult{}, err
		}
		if ok {
			c.keyMu.Unlock()
			return c.resultOf(stored, true), nil
		}
		f := &inflight{done: make(chan struct{})}
		c.inflight[p.Key] = f
		c.keyMu.Unlock()

		f.res, f.err = c.push(ctx, p)
		c.keyMu.Lock()
		delete(c.inflight, p.Key)
		c.keyMu.Unlock()
		close(f.done)
		return f.res, f.err
	}
}

func (c *Core) duplicate(id uint64, fallback PushResult) (PushResult, error) {
	stored, ok, err := c.store.GetPush(id)
	if err != nil {
		return PushResult{}, err
	}
	if !ok {
		fallback.Duplicate = true
		return fallback, nil
	}
	return c.resultOf(stored, true), nil
}

func (c *Core) resultOf(p store.Push, dup bool) PushResult {
	return PushResult{ID: p.ID, UUID: p.UUID, Kind: p.Kind, Fate: p.Fate, AcceptedAt: time.Unix(0, p.AcceptedAt), Duplicate: dup}
}

func (c *Core) push(ctx context.Context, p PushSpec) (PushResult, error) {
	now := time.Now()
	id := c.nextID.Add(1)
	sp := store.Push{ID: id, UUID: p.UUID, Kind: p.Kind, Fate: state.Queued, Bits: p.Bits, Key: p.Key, AcceptedAt: now.UnixNano()}
	switch p.Kind {
	case state.Custom:
		sp.Size = len(p.Payload)
		if p.Key != "" {
			// Lets a reused idempotency key be told from a retry.
			sp.Digest = store.DigestOf(p.Payload)
		}
	case state.Classified:
		sp.Size = 8
	}
	c.ev.addPush(sp)
	bp, _ := c.bufPool.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, 64)
		bp = &b
	}
	d := c.table.Push(now.UnixNano(), p.UUID, id, p.Kind, p.Bits, p.Payload, (*bp)[:0])
	fate := state.Queued
	if d.SendUDP || d.Conn != nil {
		fate = state.Sent
		c.deliver(d)
	}
	if cap(d.Msg) > cap(*bp) {
		*bp = d.Msg
	}
	c.bufPool.Put(bp)
	res := PushResult{ID: id, UUID: p.UUID, Kind: p.Kind, Fate: fate, AcceptedAt: now}
	// The push is applied: it will be committed whether or not the caller
	// still waits, so the wait ignores the caller's cancellation. Else a
	// caller that gave up would report a failure for a push that lands,
	// and a retry with the same key would push twice.
	if err := c.durable(context.WithoutCancel(ctx)); err != nil {
		return PushResult{}, fmt.Errorf("make push %d durable: %w", id, err)
	}
	return res, nil
}

// deliver sends an instant push. Sending before the push is durable is
// safe: the phone may see it a moment early, and an unanswered push that
// a crash loses was never reported accepted.
func (c *Core) deliver(d clients.Delivery) {
	if d.SendUDP {
		if h := c.udp.Load(); h != nil {
			if err := h.s.SendUDP(d.Msg, d.UDP); err != nil {
				c.st.Drop(stats.DropUDPSendError)
			} else {
				c.st.PacketsOut[stats.UDP].Add(1)
			}
		}
	}
	if cs, ok := d.Conn.(ConnSender); ok {
		// The connection copies what it keeps, and counts what it
		// writes: a message it replaces before writing is not sent.
		cs.Send(d.Msg)
	}
}

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

// Started is when the node started.
func (c *Core) Started() time.Time { return c.started }

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
		if c.ev.durable.Load() > after {
			return c.store.Events(after, limit)
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
