package core

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/store"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// ErrShuttingDown refuses work queued after the node began to stop.
var ErrShuttingDown = errors.New("node is shutting down")

// op is a change that only a commit may make: a push or an expiry. The
// committer sets its result before closing its cycle's done channel.
type op struct {
	push   PushSpec
	expire bool
	age    time.Duration
	report bool // log what an expiry removed (the periodic cleaner)

	res PushResult
	n   int
	err error
}

// cycle is one commit: the ops it carries and everyone waiting for it.
type cycle struct {
	ops  []*op
	done chan struct{}
	err  error
	more bool // changed records were left for the next commit
}

// committer is the commit loop's reusable state.
type committer struct {
	changes clients.Changes
	more    bool // the last commit left changed records to write back
	logEvs  []state.Event
	evs     []store.Event
	pushes  []store.Push
	pushOps []*op // the push ops of the commit, by id (lastID+1, +2, ...)
	sends   []delivery
	msgs    []byte
	ackObs  []float64
}

// delivery is a committed push to send to its online client.
type delivery struct {
	off, end int // its message in committer.msgs
	udp      netip.AddrPort
	sendUDP  bool
	front    uint16 // see state.Record.Front
	conn     any
}

// storeFailure is the state of a store whose commits fail.
type storeFailure struct {
	err      error
	since    time.Time
	attempts int
	logged   time.Time
}

// StoreErr is the error of the last commit while the store's commits
// fail, and nil when they succeed: the node is not ready while it is set.
func (c *Core) StoreErr() error {
	if f := c.failure.Load(); f != nil {
		return f.err
	}
	return nil
}

// enqueue adds o (nil just waits for the next commit) to the next cycle
// and wakes the committer.
func (c *Core) enqueue(o *op) (*cycle, error) {
	c.commitMu.Lock()
	select {
	case <-c.closed:
		c.commitMu.Unlock()
		return nil, ErrShuttingDown
	default:
	}
	cy := c.next
	if cy == nil {
		cy = &cycle{done: make(chan struct{})}
		c.next = cy
	}
	if o != nil {
		cy.ops = append(cy.ops, o)
	}
	c.commitMu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	return cy, nil
}

// Flush makes everything changed so far durable. It commits as many
// times as the write-back pending at the call needs, not until nothing is
// pending: under steady heartbeats that could be never.
func (c *Core) Flush(ctx context.Context) error {
	rounds := 1
	if lim := c.opt.WriteBackBatch; lim > 0 {
		rounds += int(c.table.Dirty() / int64(lim))
	}
	for range rounds {
		cy, err := c.enqueue(nil)
		if err != nil {
			return err
		}
		select {
		case <-cy.done:
			if cy.err != nil || !cy.more {
				return cy.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Expire removes the records whose last activity is older than age, like
// the Java console's clean-N, and reports how many once the removal is
// durable. On an error nothing was removed.
func (c *Core) Expire(age time.Duration) (int, error) {
	o := &op{expire: true, age: age}
	cy, err := c.enqueue(o)
	if err != nil {
		return 0, err
	}
	<-cy.done
	if o.err != nil {
		return 0, fmt.Errorf("expire records: %w", o.err)
	}
	return o.n, nil
}

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
			c.commitMu.Lock()
			close(c.closed)
			c.commitMu.Unlock()
			// Pushes, acks and hand-overs are in every commit; what is
			// left after it is heartbeat state (last-seen times and
			// addresses), written back for as long as the stop allows.
			stop := time.Now()
			c.table.DirtySeenLag()
			err := c.commitCycle(w)
			for err == nil && w.more && time.Since(stop) < c.opt.StopWriteBack {
				err = c.commitCycle(w)
			}
			if n := c.table.Dirty(); err == nil && n > 0 {
				c.log.Warn("stopping with heartbeat state not written back; those phones' next heartbeats restore it",
					"records", n, "after", time.Since(stop).Round(time.Millisecond))
			}
			if cerr := c.store.Close(); err == nil {
				err = cerr
			}
			return err
		case <-c.kick:
		case <-tick.C:
			if c.failure.Load() != nil {
				if time.Since(last) < c.opt.RetryInterval {
					continue
				}
			} else if !c.ev.pending() && time.Since(last) < c.opt.FlushInterval {
				continue
			}
		case <-expire.C:
			if c.opt.ExpiryAge > 0 {
				_, _ = c.enqueue(&op{expire: true, age: c.opt.ExpiryAge, report: true})
			}
			continue
		case <-trim.C:
			if c.failure.Load() == nil {
				c.trim()
				if !w.more {
					c.releaseAfterGrowth(c.opt.ReleaseGrowth)
				}
			}
			continue
		}
		last = time.Now()
		if err := c.commitCycle(w); err == nil && w.more {
			// Write the rest back at once, as the next commit.
			select {
			case c.kick <- struct{}{}:
			default:
			}
		} else if err == nil {
			c.releaseAfterGrowth(max(c.opt.ReleaseGrowth, c.releasedLen/8))
		}
	}
}

// Done is closed once Run has made everything durable and returned.
func (c *Core) Done() <-chan struct{} { return c.runDone }

// commitCycle commits the next cycle and answers everyone waiting for it.
func (c *Core) commitCycle(w *committer) error {
	c.commitMu.Lock()
	cy := c.next
	c.next = nil
	c.commitMu.Unlock()
	var ops []*op
	if cy != nil {
		ops = cy.ops
	}
	err := c.commit(w, ops)
	c.noteHealth(err)
	if cy != nil {
		cy.err, cy.more = err, err == nil && w.more
		close(cy.done)
	}
	return err
}

// commit stages ops on the table, writes them with everything heartbeats
// and acks changed, and only then makes them visible: live in the table,
// numbered for followers, sent to phones. If the write fails, the stage
// is dropped, the ids and event numbers it took are handed out again,
// and the ops fail; what heartbeats and acks changed is kept for the
// next commit.
func (c *Core) commit(w *committer, ops []*op) error {
	now := time.Now()
	stage := c.table.Begin()
	lastID := c.nextID.Load()
	w.pushes, w.sends, w.msgs = w.pushes[:0], w.sends[:0], w.msgs[:0]
	clear(w.pushOps)
	w.pushOps = w.pushOps[:0]
	// Pushes first: a stage takes no push after an expiry.
	for _, o := range ops {
		if o.expire {
			continue
		}
		if nb := o.push.NotAfter; !nb.IsZero() && now.After(nb) {
			o.err = ErrTooLate
			continue
		}
		c.stagePush(w, stage, now, o)
	}
	for _, o := range ops {
		if o.expire {
			if r := c.relay.Load(); r != nil {
				stage.Spare = func(u *wire.UUID) bool { return !r.r.Local(*u) }
			}
			o.n = stage.Expire(now.UnixNano(), now.Add(-o.age).UnixNano())
		}
	}
	// A push is answered with the fate it is committed with: a later op
	// of the same commit may have moved it on (a newer push of the same
	// kind, an expiry).
	for _, e := range stage.Events() {
		if e.PushID > lastID && e.PushID-lastID <= uint64(len(w.pushOps)) {
			w.pushOps[e.PushID-lastID-1].res.Fate = e.Fate
		}
	}

	// Events of heartbeats and acks first, then the stage's: a record the
	// stage holds changed before it was staged, never since.
	w.logEvs = c.ev.take(w.logEvs)
	var nextSeq uint64
	w.evs, nextSeq = c.ev.number(w.evs[:0], c.ev.nextSeq, w.logEvs)
	w.evs, nextSeq = c.ev.number(w.evs, nextSeq, stage.Events())
	w.changes.Reset()
	w.changes.Limit = c.opt.WriteBackBatch
	w.more = c.table.CollectChanges(&w.changes)
	b := store.Batch{
		RecordKeys:   w.changes.Keys,
		RecordValues: w.changes.Values,
		Removed:      w.changes.Gone,
		Pushes:       w.pushes,
		Events:       w.evs,
		NextPushID:   c.nextID.Load() + 1,
		NextEventSeq: nextSeq,
	}
	if b.Empty() {
		stage.Release()
		if c.failure.Load() != nil {
			// Nothing to write, but the node is not ready until a write
			// succeeds: try one.
			return c.store.Probe()
		}
		return nil
	}
	start := time.Now()
	w.ackObs = w.ackObs[:0]
	b.OnApplied = func(p *store.Push, e *store.Event) {
		if e.Fate == state.Acknowledged && p.AcceptedAt > 0 {
			w.ackObs = append(w.ackObs, float64(e.At-p.AcceptedAt)/1e9)
		}
	}
	if err := c.store.Commit(&b); err != nil {
		stage.Abort()
		c.table.Redo(&w.changes)
		c.ev.giveBack(w.logEvs)
		c.nextID.Store(lastID)
		for _, o := range ops {
			o.err = err
		}
		return err
	}
	c.ev.nextSeq = nextSeq
	if t := c.tracker.Load(); t != nil {
		t.note(&b)
	}
	stage.Release()
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
	for i := range w.sends {
		d := &w.sends[i]
		c.deliver(w.msgs[d.off:d.end], d)
	}
	for _, o := range ops {
		if o.report && o.n > 0 {
			c.log.Info("expired records", "count", o.n, "older_than", o.age)
		}
	}
	return nil
}

func (c *Core) stagePush(w *committer, stage *clients.Stage, now time.Time, o *op) {
	p := &o.push
	if f := c.fence.Load(); f != nil && f.HasUUID(p.UUID) {
		// It passed the home check before a move held its slot: it
		// must go where the slot goes, not be committed here after the
		// slot's records were taken away.
		o.err = ErrSlotMoving
		return
	}
	id := c.nextID.Add(1)
	off := len(w.msgs)
	fate, d := stage.Push(now.UnixNano(), p.UUID, id, p.Kind, p.Bits, p.Payload, w.msgs)
	if d.Msg != nil {
		w.msgs = d.Msg
		w.sends = append(w.sends, delivery{off: off, end: len(w.msgs), udp: d.UDP, sendUDP: d.SendUDP, front: d.Front, conn: d.Conn})
	}
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
	w.pushes = append(w.pushes, sp)
	w.pushOps = append(w.pushOps, o)
	o.res = PushResult{ID: id, UUID: p.UUID, Kind: p.Kind, Fate: fate, AcceptedAt: now}
}

// noteHealth records whether the store's commits work, and says so in
// the log once per change (and now and then while they keep failing).
func (c *Core) noteHealth(err error) {
	f := c.failure.Load()
	now := time.Now()
	switch {
	case err == nil && f != nil:
		c.failure.Store(nil)
		c.log.Info("store commits succeed again; the node is ready", "failed_for", now.Sub(f.since).Round(time.Millisecond), "failed_attempts", f.attempts)
	case err != nil && f == nil:
		c.st.CommitFailures.Add(1)
		c.failure.Store(&storeFailure{err: err, since: now, attempts: 1, logged: now})
		c.log.Error("store commits fail: pushes are refused and the node is not ready until one succeeds", "err", err)
	case err != nil:
		c.st.CommitFailures.Add(1)
		nf := &storeFailure{err: err, since: f.since, attempts: f.attempts + 1, logged: f.logged}
		if now.Sub(f.logged) >= time.Minute {
			nf.logged = now
			c.log.Warn("store commits still fail", "since", f.since, "failed_attempts", nf.attempts, "err", err)
		}
		c.failure.Store(nf)
	}
}

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

// DefaultReleaseGrowth is the default Options.ReleaseGrowth.
const DefaultReleaseGrowth = 65_536

// releaseAfterGrowth gives back to the system the memory that creating
// records left behind, once the table has grown by at least `least`
// records since the last time and everything changed has been written
// back. Creating records grows the table's index maps by doubling, and
// writing them back holds a copy of every store page a commit changes,
// then maps the pages it read: after a burst of new records the garbage
// heap and the mapped file held several times what the records need, for
// good, since an idle node runs no garbage collection. Start-up does the
// same after loading the store.
//
// After a commit, least is an eighth of the table (and at least
// Options.ReleaseGrowth): a table growing steadily to N records is
// released about 8·ln(N/65,536) times in all. Once a minute it is
// Options.ReleaseGrowth, so that the end of a burst smaller than an
// eighth is released too. It runs beside the committer, which it does not
// hold up, one at a time.
func (c *Core) releaseAfterGrowth(least int64) {
	n := c.table.Len()
	if n < c.releasedLen {
		c.releasedLen = n // expiry shrank the table: count growth from here
	}
	if n-c.releasedLen < least || !c.releasing.CompareAndSwap(false, true) {
		return
	}
	c.releasedLen = n
	go func() {
		defer c.releasing.Store(false)
		c.store.ReleaseMapped()
		// Twice: the store keeps the page copies of its commits in a
		// sync.Pool, which a collection only moves aside and the next
		// one frees; after a large commit they are tens of MB.
		runtime.GC()
		debug.FreeOSMemory()
	}()
}
