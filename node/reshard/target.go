package reshard

import (
	"errors"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/store"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// The target's side of a move: entries are written to the store and put
// into the table as they come, not served until the commit installs the
// map that gives the slots here.

const (
	phaseAborted    = "aborted"
	phaseCommitting = "committing"
)

// Entries takes a batch of a move's entries.
func (mv *Mover) Entries(id string, e *api.MoveEntries) error {
	if !moveID.MatchString(id) {
		return inputf("move id %q is not valid", id)
	}
	set, err := slotmap.ParseSet(e.Slots)
	if err != nil {
		return inputf("slots: %v", err)
	}
	if set.Len() == 0 {
		return inputf("a move must name its slots")
	}
	self := mv.opt.Router.Ordinal()
	if e.Target != self {
		return conflictf("this pod is pod %d, not the move's target %d", self, e.Target)
	}
	cur := mv.opt.Router.Map()
	if cur.IsZero() {
		return conflictf("this pod has no slot map yet")
	}
	for s := range slotmap.NumSlots {
		if set.Has(uint16(s)) && cur.Owner(uint16(s)) != e.Source {
			return conflictf("slot %d belongs to pod %d in this pod's map (epoch %d), not to the move's source %d", s, cur.Owner(uint16(s)), cur.Epoch(), e.Source)
		}
	}
	batch, err := entriesOf(e, &set)
	if err != nil {
		return inputf("%v", err)
	}

	mv.mu.Lock()
	m := mv.moves[id]
	switch {
	case m != nil && m.Role != roleTarget:
		mv.mu.Unlock()
		return conflictf("this pod is the source of move %s, not its target", id)
	case m != nil && (m.Phase == api.MoveCommitted || m.Phase == phaseCommitting):
		mv.mu.Unlock()
		return conflictf("move %s committed here already", id)
	case m != nil && !e.First && m.Phase == phaseAborted:
		mv.mu.Unlock()
		return conflictf("move %s was called off here; start it again", id)
	case m != nil && !e.First && m.Slots != set.String():
		mv.mu.Unlock()
		return conflictf("move %s moves slots %s, not %s", id, m.Slots, set.String())
	case m == nil && !e.First:
		mv.mu.Unlock()
		return conflictf("move %s is unknown here: its first batch did not come (this pod may have lost its volume); start the move again", id)
	}
	fresh := e.First
	var forget []string
	if fresh {
		m = &move{state: state{ID: id, Role: roleTarget, Phase: api.MoveImporting, Source: e.Source, Target: self, Slots: set.String()}, set: set}
		forget = mv.adopt(m)
	}
	mv.mu.Unlock()
	mv.forget(forget)
	if fresh {
		// What an earlier attempt left of these slots goes first.
		if err := mv.dropStored(set); err != nil {
			return err
		}
		if err := mv.save(m, nil); err != nil {
			return err
		}
	}
	conflicts, err := mv.opt.Core.Store().Import(batch, &set)
	if errors.Is(err, store.ErrForeignKey) {
		return inputf("%v", err)
	}
	if err != nil {
		return err
	}
	if conflicts > 0 {
		mv.log.Warn("idempotency keys of moved pushes were used here already for other uuids' pushes; those keep them, and a retry of a moved push under such a key is a new push",
			"id", id, "keys", conflicts)
	}
	// Into the table too, where they wait, not served, for the commit.
	if err := mv.opt.Core.PutRecords(batch.Records, batch.Gone); err != nil {
		return err
	}
	if len(e.Fronts) > 0 {
		mv.mu.Lock()
		if m.fronts == nil {
			m.fronts = map[wire.UUID]api.MoveFront{}
		}
		for _, f := range e.Fronts {
			if len(f.UUID) == wire.UUIDLen && set.HasUUID(wire.UUID(f.UUID)) {
				m.fronts[wire.UUID(f.UUID)] = f
			}
		}
		mv.mu.Unlock()
	}
	mv.update(m, func(s *state) { s.Records += int64(len(batch.Records)); s.Pushes += int64(len(batch.Pushes)) })
	return nil
}

// entriesOf checks a batch and turns it into the store's form.
func entriesOf(e *api.MoveEntries, set *slotmap.Set) (*store.SlotEntries, error) {
	out := &store.SlotEntries{}
	for _, kv := range e.Records {
		if len(kv.K) != wire.UUIDLen || len(kv.V) == 0 {
			return nil, errf("a record's key must be a 16-byte uuid and its value not empty")
		}
		if !set.HasUUID(wire.UUID(kv.K)) {
			return nil, errf("record %x is not in the move's slots", kv.K)
		}
		out.Records = append(out.Records, store.KV{K: kv.K, V: kv.V})
	}
	for _, kv := range e.Pushes {
		if len(kv.K) != 8 || len(kv.V) < 17 {
			return nil, errf("a push's key must be an 8-byte id and its value a stored push")
		}
		if !set.HasUUID(wire.UUID(kv.V[1:17])) {
			return nil, errf("push %x is not in the move's slots", kv.K)
		}
		out.Pushes = append(out.Pushes, store.KV{K: kv.K, V: kv.V})
	}
	for _, kv := range e.Keys {
		if len(kv.K) == 0 || len(kv.V) != 8 {
			return nil, errf("an idempotency key entry must have a key and an 8-byte id")
		}
		out.Keys = append(out.Keys, store.KV{K: kv.K, V: kv.V})
	}
	for _, g := range e.Gone {
		if len(g) != wire.UUIDLen || !set.HasUUID(wire.UUID(g)) {
			return nil, errf("a gone record must be a 16-byte uuid in the move's slots")
		}
		out.Gone = append(out.Gone, wire.UUID(g))
	}
	return out, nil
}

// Commit has this pod, the move's target, serve its slots: the map that
// gives them here is installed, stored with the move's new state. Their
// records are in the table already, put there as they came. While it
// runs the move is "committing", which an abort refuses: a move is either
// committed here or called off, never both.
func (mv *Mover) Commit(id string, c api.MoveCommit) (api.Move, error) {
	mv.mu.Lock()
	m := mv.moves[id]
	if m == nil || m.Role != roleTarget {
		mv.mu.Unlock()
		return api.Move{}, conflictf("this pod is not the target of a move %s", id)
	}
	switch m.Phase {
	case api.MoveCommitted:
		v := m.view()
		mv.mu.Unlock()
		return v, nil
	case phaseAborted:
		mv.mu.Unlock()
		return api.Move{}, conflictf("move %s was called off here", id)
	case phaseCommitting:
		mv.mu.Unlock()
		return api.Move{}, conflictf("a commit of move %s is under way; ask again", id)
	}
	m.Phase = phaseCommitting
	mv.mu.Unlock()
	mv.pause("install")
	undo := func() { mv.update(m, func(s *state) { s.Phase = api.MoveImporting }) }

	nm, err := api.MapOf(c.Map)
	if err != nil {
		undo()
		return api.Move{}, inputf("the move's map: %v", err)
	}
	self := mv.opt.Router.Ordinal()
	cur := mv.opt.Router.Map()
	gained, lost := slotmap.Gained(cur, nm, self), slotmap.Lost(cur, nm, self)
	if gained != m.set || lost.Len() > 0 {
		undo()
		return api.Move{}, inputf("the map would give this pod slots %q and take %q; the move brings slots %s", gained.String(), lost.String(), m.Slots)
	}
	mv.attach(m)
	mv.mu.Lock()
	stored := m.state
	mv.mu.Unlock()
	stored.Phase, stored.Epoch = api.MoveCommitted, nm.Epoch()
	b, err := jsonOf(&stored)
	if err == nil {
		_, err = mv.opt.Router.InstallMoved(nm, func(mb []byte) error { return mv.opt.Core.Store().PutMove(id, b, mb) })
	}
	if err != nil {
		undo()
		return api.Move{}, err
	}
	mv.update(m, func(s *state) { s.Phase, s.Epoch = api.MoveCommitted, nm.Epoch() })
	mv.log.Info("slots moved here", "id", id, "slots", m.Slots, "source", m.Source, "records", m.Records, "epoch", nm.Epoch())
	mv.mu.Lock()
	defer mv.mu.Unlock()
	return m.view(), nil
}

// Abort calls off a move at its target: what it sent is dropped, and a
// commit that comes later is refused.
func (mv *Mover) Abort(id string) (api.Move, error) {
	mv.mu.Lock()
	m := mv.moves[id]
	if m == nil {
		mv.mu.Unlock()
		return api.Move{ID: id, Phase: phaseAborted}, nil
	}
	if m.Role != roleTarget {
		mv.mu.Unlock()
		return api.Move{}, conflictf("this pod is the source of move %s, not its target", id)
	}
	switch m.Phase {
	case api.MoveCommitted:
		mv.mu.Unlock()
		return api.Move{}, conflictf("move %s committed here already: this pod serves its slots", id)
	case phaseCommitting:
		mv.mu.Unlock()
		return api.Move{}, conflictf("move %s is being committed here; ask again", id)
	}
	m.Phase = phaseAborted
	mv.mu.Unlock()
	if err := mv.save(m, nil); err != nil {
		return api.Move{}, err
	}
	if err := mv.dropStored(m.set); err != nil {
		return api.Move{}, err
	}
	mv.mu.Lock()
	defer mv.mu.Unlock()
	return m.view(), nil
}

// dropStored deletes every stored entry of slots this pod does not serve
// (a move's leftovers), and any record of them in the table.
func (mv *Mover) dropStored(set slotmap.Set) error {
	mv.opt.Core.DropSlots(set)
	var after uint64
	for {
		next, done, err := mv.opt.Core.Store().DeleteSlots(&set, after, batchRecords)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		after = next
	}
}

// attach tells the moved records where their phones are reached: the
// records say what the phones sent, not through which pods.
func (mv *Mover) attach(m *move) {
	mv.mu.Lock()
	fronts := m.fronts
	m.fronts = nil
	mv.mu.Unlock()
	self := mv.opt.Router.Ordinal()
	for u, f := range fronts {
		var front uint16
		if f.UDP >= 0 && f.UDP != self && f.UDP < slotmap.MaxOrdinals {
			front = uint16(f.UDP + 1)
		}
		var conn any
		if f.TCP >= 0 && f.TCP < slotmap.MaxOrdinals {
			conn = mv.opt.Router.ConnOf(f.TCP, f.Incarnation, f.ConnID)
		}
		mv.opt.Core.Attach(u, front, conn)
	}
}
