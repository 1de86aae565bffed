package core

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/store"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// What a slot move needs of the engine: which of the slots' records and
// pushes commits wrote since a point in time (the tail the target still
// needs after the bulk of the records went), and taking the slots'
// records out of the table, or putting records in.

// slotTracker collects what commits write of a set of slots.
type slotTracker struct {
	set   slotmap.Set
	mu    sync.Mutex
	uuids map[wire.UUID]struct{}
	ids   map[uint64]struct{}
}

// note runs on the committer after a commit succeeded.
func (t *slotTracker) note(b *store.Batch) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, u := range b.RecordKeys {
		if t.set.HasUUID(u) {
			t.uuids[u] = struct{}{}
		}
	}
	for _, u := range b.Removed {
		if t.set.HasUUID(u) {
			t.uuids[u] = struct{}{}
		}
	}
	for i := range b.Pushes {
		if p := &b.Pushes[i]; t.set.HasUUID(p.UUID) {
			t.uuids[p.UUID] = struct{}{}
			t.ids[p.ID] = struct{}{}
		}
	}
	for i := range b.Events {
		if e := &b.Events[i]; t.set.HasUUID(e.UUID) {
			t.ids[e.PushID] = struct{}{}
		}
	}
}

// TrackSlots starts noting the records and pushes of the slots in set
// that commits write, replacing any set tracked before. What a commit
// wrote is noted once the commit returns, so a reader that starts after
// TrackSlots returns misses nothing: it reads either the entry as the
// commit left it or the note.
func (c *Core) TrackSlots(set slotmap.Set) {
	c.tracker.Store(&slotTracker{set: set, uuids: map[wire.UUID]struct{}{}, ids: map[uint64]struct{}{}})
}

// Tracked stops tracking and returns what commits wrote of the slots
// since TrackSlots: the uuids of records written or removed, and the ids
// of pushes created or moved on.
func (c *Core) Tracked() (uuids []wire.UUID, ids []uint64) {
	t := c.tracker.Swap(nil)
	if t == nil {
		return nil, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for u := range t.uuids {
		uuids = append(uuids, u)
	}
	for id := range t.ids {
		ids = append(ids, id)
	}
	return uuids, ids
}

// Extracted is a record taken out of the table. Dirty says it changed
// since it was last written to the store. Its stored form leaves out
// where the phone is reached: the front of its UDP address
// (state.Record.Front) and its TCP connection.
type Extracted struct {
	Rec   state.Record
	Dirty bool
}

// Data is the record's stored form.
func (e *Extracted) Data() []byte { return e.Rec.AppendBinary(nil) }

// ExtractSlots takes every record of the slots in set out of the table,
// without touching the store, and makes durable what was committed for
// them before (the events of acks whose records it took). The caller must
// keep new work for these slots away first; records an expiry is
// committing are taken once it is done.
func (c *Core) ExtractSlots(ctx context.Context, set slotmap.Set) ([]Extracted, error) {
	var out []Extracted
	take := func(r *state.Record) {
		// The table forgets r once taken: its Ext is no one else's.
		// A last-seen time ahead of the stored one goes in the tail too.
		out = append(out, Extracted{Rec: *r, Dirty: r.Flags&(state.FlagDirty|state.FlagSeenLag) != 0})
	}
	in := func(u *wire.UUID) bool { return set.HasUUID(*u) }
	for {
		held := c.table.Take(in, take)
		if held == 0 {
			break
		}
		if err := c.Flush(ctx); err != nil {
			c.restore(out)
			return nil, fmt.Errorf("wait for commits holding %d records of slots %s: %w", held, &set, err)
		}
		select {
		case <-ctx.Done():
			c.restore(out)
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	if err := c.Flush(ctx); err != nil {
		c.restore(out)
		return nil, fmt.Errorf("commit what was done for slots %s: %w", &set, err)
	}
	return out, nil
}

// restore puts extracted records back; those that had changed are
// written back again.
func (c *Core) restore(recs []Extracted) {
	for i := range recs {
		r := &recs[i]
		if err := c.table.Put(r.Rec.UUID, r.Data(), r.Dirty); err != nil {
			c.log.Error("put a record back into the table", "uuid", r.Rec.UUID, "err", err)
			continue
		}
		c.table.Attach(r.Rec.UUID, r.Rec.Front, r.Rec.Conn())
	}
}

// PutBack undoes ExtractSlots: the records serve here again.
func (c *Core) PutBack(recs []Extracted) { c.restore(recs) }

// DropSlots takes the records of the slots in set out of the table and
// forgets them (records that moved away, or a move's leftovers).
func (c *Core) DropSlots(set slotmap.Set) int {
	n := 0
	c.table.Take(func(u *wire.UUID) bool { return set.HasUUID(*u) }, func(*state.Record) { n++ })
	return n
}

// ErrSlotMoving is a push refused because a move of its slot holds it:
// the caller routes it again, to wherever the slot is once the move
// lets go of it.
var ErrSlotMoving = errors.New("the uuid's slot is being moved to another pod")

// Fence makes the committer refuse, with ErrSlotMoving, pushes of the
// slots in set that reach it from now on (nil: none). Pushes committed
// before are in what Tracked returns.
func (c *Core) Fence(set *slotmap.Set) { c.fence.Store(set) }

// Attach sets where the phone of a record that moved here is reached.
func (c *Core) Attach(u wire.UUID, front uint16, conn any) bool {
	return c.table.Attach(u, front, conn)
}

// PutRecords puts records in their stored form into the table (a slot
// move's copy at its target, which the table holds before the move
// commits so that the commit need not read them), and removes gone.
func (c *Core) PutRecords(recs []store.KV, gone []wire.UUID) error {
	for _, kv := range recs {
		var u wire.UUID
		copy(u[:], kv.K)
		if err := c.table.Put(u, kv.V, false); err != nil {
			return fmt.Errorf("record %s: %w", u, err)
		}
	}
	if len(gone) > 0 {
		doomed := make(map[wire.UUID]bool, len(gone))
		for _, u := range gone {
			doomed[u] = true
		}
		c.table.Take(func(u *wire.UUID) bool { return doomed[*u] }, func(*state.Record) {})
	}
	return nil
}
