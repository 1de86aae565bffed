package reshard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/shard"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/store"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// The source's side of a move.

var moveID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

const (
	// batchRecords and batchBytes bound one batch sent to the target.
	batchRecords = 4096
	batchBytes   = 1 << 20
	// scanPushes is how many stored pushes one read looks at.
	scanPushes = 16384
)

// Start starts the move req, of which this pod is the source, or
// resumes it: the same id again answers its state, and runs it again if
// it failed. The move runs in the background; Get follows it.
func (mv *Mover) Start(req api.MoveRequest) (api.Move, error) {
	if !moveID.MatchString(req.ID) {
		return api.Move{}, inputf("move id %q must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", req.ID)
	}
	mv.mu.Lock()
	if mv.closed {
		mv.mu.Unlock()
		return api.Move{}, errClosed
	}
	if m := mv.moves[req.ID]; m != nil {
		if m.Role != roleSource {
			mv.mu.Unlock()
			return api.Move{}, conflictf("this pod is the target of move %s, not its source", req.ID)
		}
		if m.Phase != api.MoveFailed || mv.active == req.ID {
			// The target may be back at another address (a pod's IP
			// changes when it restarts): a move settling its handoff
			// asks it there from now on.
			changed := false
			if req.TargetURL != "" && req.TargetURL != m.TargetURL && validURL(req.TargetURL) && (m.Phase == api.MoveHandoff || m.Phase == api.MoveStreaming) {
				m.TargetURL, changed = req.TargetURL, true
			}
			v := m.view()
			mv.mu.Unlock()
			if changed {
				if err := mv.save(m, nil); err != nil {
					mv.log.Warn("store a move's new target address", "id", m.ID, "err", err)
				}
			}
			return v, nil
		}
	}
	if mv.active != "" {
		active := mv.active
		mv.mu.Unlock()
		return api.Move{}, conflictf("move %s of this pod runs; one move at a time", active)
	}
	mv.mu.Unlock()

	self := mv.opt.Router.Ordinal()
	nm, err := api.MapOf(req.Map)
	if err != nil {
		return api.Move{}, inputf("the move's map: %v", err)
	}
	cur := mv.opt.Router.Map()
	switch {
	case cur.IsZero():
		return api.Move{}, conflictf("this pod has no slot map yet, so it owns no slots to move")
	case nm.Epoch() <= cur.Epoch():
		return api.Move{}, conflictf("the move's map has epoch %d; this pod already has epoch %d, and a move installs a newer one", nm.Epoch(), cur.Epoch())
	case req.Target == self || req.Target < 0 || req.Target >= slotmap.MaxOrdinals:
		return api.Move{}, inputf("target %d must be another pod's ordinal (0-%d, not this pod's %d)", req.Target, slotmap.MaxOrdinals-1, self)
	}
	if _, ok := nm.Peer(req.Target); !ok {
		return api.Move{}, inputf("the move's map has no peer address for the target, pod %d", req.Target)
	}
	lost := slotmap.Lost(cur, nm, self)
	if lost.Len() == 0 {
		return api.Move{}, inputf("the move's map gives none of this pod's slots away")
	}
	for _, d := range slotmap.Diff(cur, nm) {
		if d.Old != self || d.New != req.Target {
			return api.Move{}, inputf("the move's map changes more than this pod's slots going to pod %d (%s): one move has one source and one target", req.Target, d)
		}
	}
	if !validURL(req.TargetURL) {
		return api.Move{}, inputf("targetURL %q must be the target pod's HTTP API, e.g. http://pod-1.pods:8080", req.TargetURL)
	}
	mb, err := nm.MarshalBinary()
	if err != nil {
		return api.Move{}, err
	}
	m := &move{state: state{ID: req.ID, Role: roleSource, Phase: api.MoveStreaming, Source: self, Target: req.Target,
		TargetURL: req.TargetURL, Slots: lost.String(), Epoch: nm.Epoch(), Map: mb}, set: lost, m: nm}
	mv.mu.Lock()
	if mv.active == req.ID {
		// The same move, posted twice at once: the other POST started it.
		v := mv.moves[req.ID].view()
		mv.mu.Unlock()
		return v, nil
	}
	if mv.active != "" || mv.closed {
		mv.mu.Unlock()
		return api.Move{}, conflictf("another move of this pod started meanwhile")
	}
	forget := mv.adopt(m)
	mv.active = req.ID
	mv.wg.Add(1)
	mv.mu.Unlock()
	mv.forget(forget)
	if err := mv.save(m, nil); err != nil {
		mv.wg.Done()
		mv.finish(m, api.MoveFailed, err.Error())
		return api.Move{}, err
	}
	mv.log.Info("slot move started", "id", m.ID, "slots", m.Slots, "target", m.Target, "epoch", m.Epoch)
	go func() {
		defer mv.wg.Done()
		mv.run(m)
	}()
	mv.mu.Lock()
	defer mv.mu.Unlock()
	return m.view(), nil
}

// finish ends the move's run in phase (done or failed).
func (mv *Mover) finish(m *move, phase, why string) {
	mv.update(m, func(s *state) { s.Phase, s.Error = phase, why })
	mv.mu.Lock()
	if mv.active == m.ID {
		mv.active = ""
	}
	mv.mu.Unlock()
	if err := mv.save(m, nil); err != nil {
		mv.log.Error("store a move's state", "id", m.ID, "err", err)
	}
	if mv.opt.Metrics != nil {
		mv.opt.Metrics.Moves.WithLabelValues(phase).Inc()
	}
	if phase == api.MoveFailed {
		mv.log.Error("slot move failed; the slots stay at this pod", "id", m.ID, "slots", m.Slots, "target", m.Target, "err", why)
	}
}

func (mv *Mover) run(m *move) {
	ctx, cancel := mv.ctx()
	defer cancel()
	tc := mv.client(m.TargetURL)
	calloff := func(err error) {
		mv.opt.Core.Tracked()
		actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer acancel()
		if _, aerr := tc.AbortMove(actx, m.ID); aerr != nil {
			mv.log.Warn("could not tell the target to drop what a failed move sent it; the next move of these slots does", "id", m.ID, "err", aerr)
		}
		mv.finish(m, api.MoveFailed, err.Error())
	}

	mv.pause("stream")
	mv.opt.Core.TrackSlots(m.set)
	if err := mv.stream(ctx, tc, m); err != nil {
		calloff(fmt.Errorf("stream slots %s to pod %d: %w", m.Slots, m.Target, err))
		return
	}
	mv.pause("handoff")
	mv.update(m, func(s *state) { s.Phase = api.MoveHandoff })
	if err := mv.save(m, nil); err != nil {
		calloff(err)
		return
	}

	start := time.Now()
	mv.opt.Router.Hold(m.set)
	mv.opt.Core.Fence(&m.set)
	unhold := func() {
		mv.opt.Core.Fence(nil)
		mv.opt.Router.Release()
	}
	ext, err := mv.opt.Core.ExtractSlots(ctx, m.set)
	extracted := time.Since(start)
	if err != nil {
		unhold()
		calloff(fmt.Errorf("take the slots' records out of the table: %w", err))
		return
	}
	rollback := func(err error) {
		mv.opt.Core.PutBack(ext)
		unhold()
		calloff(err)
	}
	if err := mv.sendTail(ctx, tc, m, ext); err != nil {
		rollback(fmt.Errorf("send the handoff's tail: %w", err))
		return
	}
	tailSent := time.Since(start)
	mv.pause("commit")
	if _, err := tc.CommitMove(ctx, m.ID, api.MoveCommit{Map: api.FromMap(m.m)}); err != nil {
		// It may have committed all the same: the target says.
		mv.log.Warn("the target's answer to a move's commit did not come; asking it", "id", m.ID, "err", err)
		switch mv.resolve(m) {
		case outcomeAborted:
			mv.opt.Core.PutBack(ext)
			unhold()
			mv.finish(m, api.MoveFailed, fmt.Sprintf("the target did not commit: %v", err))
			return
		case outcomeStopped:
			return // the handoff resumes when the pod starts again
		}
	}
	if !mv.flip(m, time.Since(start)) {
		return
	}
	unhold()
	mv.log.Info("slot move committed", "id", m.ID, "slots", m.Slots, "target", m.Target, "records", m.Records, "pushes", m.Pushes,
		"hold", time.Since(start), "extracted_after", extracted, "tail_sent_after", tailSent)
	mv.pause("cleanup")
	mv.cleanup(m)
}

// flip takes up the move's map once the target committed: this pod
// forwards the slots from now on. A store that fails keeps the slots
// held (the target serves them; this pod must not) and is retried.
func (mv *Mover) flip(m *move, hold time.Duration) bool {
	mv.update(m, func(s *state) {
		s.Phase = api.MoveCommitted
		if hold > 0 {
			s.HoldMillis = float64(hold.Microseconds()) / 1000
		}
	})
	if mv.opt.Metrics != nil && hold > 0 {
		mv.opt.Metrics.Hold.Observe(hold.Seconds())
	}
	for {
		mv.mu.Lock()
		b, err := json.Marshal(&m.state)
		mv.mu.Unlock()
		if err == nil {
			_, err = mv.opt.Router.InstallMoved(m.m, func(mb []byte) error {
				return mv.opt.Core.Store().PutMove(m.ID, b, mb)
			})
		}
		if errors.Is(err, shard.ErrEpoch) {
			// A map as new as the move's came meanwhile (a pod back on
			// another address): the move's slots go to the target in it.
			err = mv.flipOnto(m, b)
		}
		if err == nil {
			return true
		}
		mv.log.Error("the target serves the moved slots, and this pod cannot store the map that says so; it keeps holding them and tries again", "id", m.ID, "err", err)
		if !mv.sleep(time.Second) {
			return false
		}
	}
}

// stream sends every stored entry of the move's slots.
func (mv *Mover) stream(ctx context.Context, tc *api.Client, m *move) error {
	st := mv.opt.Core.Store()
	first := true
	send := func(e *api.MoveEntries) error {
		e.Source, e.Target, e.Slots, e.First = m.Source, m.Target, m.Slots, first
		first = false
		if err := tc.SendMoveEntries(ctx, m.ID, e); err != nil {
			return err
		}
		mv.counted(m, int64(len(e.Records)), int64(len(e.Pushes)))
		return nil
	}
	var after []byte
	for {
		recs, next, done, err := st.SlotRecords(&m.set, after, batchRecords)
		if err != nil {
			return err
		}
		if len(recs) > 0 || first {
			if err := sendBatched(recs, nil, nil, nil, send); err != nil {
				return err
			}
		}
		if done {
			break
		}
		after = next
	}
	var id uint64
	for {
		e, next, done, err := st.SlotPushes(&m.set, id, scanPushes)
		if err != nil {
			return err
		}
		if len(e.Pushes) > 0 {
			if err := sendBatched(nil, e.Pushes, e.Keys, nil, send); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
		id = next
	}
}

// sendTail sends what changed of the slots since the stream began: the
// records that commits wrote or removed, or that changed in memory only,
// and the pushes commits created or moved on.
func (mv *Mover) sendTail(ctx context.Context, tc *api.Client, m *move, ext []core.Extracted) error {
	uuids, ids := mv.opt.Core.Tracked()
	changed := make(map[wire.UUID]bool, len(uuids))
	for _, u := range uuids {
		changed[u] = true
	}
	var recs []store.KV
	for i := range ext {
		r := &ext[i]
		if r.Dirty || changed[r.Rec.UUID] {
			recs = append(recs, store.KV{K: bytes.Clone(r.Rec.UUID[:]), V: r.Data()})
		}
		delete(changed, r.Rec.UUID)
	}
	var gone []wire.UUID
	for u := range changed {
		gone = append(gone, u)
	}
	pe, err := mv.opt.Core.Store().PushEntries(ids)
	if err != nil {
		return err
	}
	send := func(e *api.MoveEntries) error {
		e.Source, e.Target, e.Slots = m.Source, m.Target, m.Slots
		if err := tc.SendMoveEntries(ctx, m.ID, e); err != nil {
			return err
		}
		mv.counted(m, int64(len(e.Records)), int64(len(e.Pushes)))
		return nil
	}
	if err := sendBatched(recs, pe.Pushes, pe.Keys, gone, send); err != nil {
		return err
	}
	fronts := mv.fronts(ext)
	for len(fronts) > 0 {
		n := min(len(fronts), batchRecords)
		if err := send(&api.MoveEntries{Fronts: fronts[:n]}); err != nil {
			return err
		}
		fronts = fronts[n:]
	}
	return nil
}

// fronts says where the phones of the extracted records are reached.
func (mv *Mover) fronts(ext []core.Extracted) []api.MoveFront {
	self := mv.opt.Router.Ordinal()
	var out []api.MoveFront
	for i := range ext {
		r := &ext[i].Rec
		f := api.MoveFront{UDP: -1, TCP: -1}
		if _, ok := r.Addr(); ok {
			f.UDP = self
			if r.Front > 0 {
				f.UDP = int(r.Front) - 1
			}
		}
		if o, inc, id, ok := mv.opt.Router.Attachment(r.Conn()); ok {
			f.TCP, f.Incarnation, f.ConnID = o, inc, id
		}
		if f.UDP >= 0 || f.TCP >= 0 {
			f.UUID = bytes.Clone(r.UUID[:])
			out = append(out, f)
		}
	}
	return out
}

func (mv *Mover) counted(m *move, recs, pushes int64) {
	mv.update(m, func(s *state) { s.Records += recs; s.Pushes += pushes })
	if mv.opt.Metrics != nil {
		mv.opt.Metrics.RecordsMoved.Add(float64(recs))
		mv.opt.Metrics.PushesMoved.Add(float64(pushes))
	}
}

// sendBatched sends entries in batches of bounded count and size; at
// least one batch, even when there is nothing.
func sendBatched(recs, pushes, keys []store.KV, gone []wire.UUID, send func(*api.MoveEntries) error) error {
	e := &api.MoveEntries{}
	n, size := 0, 0
	flush := func() error {
		err := send(e)
		e, n, size = &api.MoveEntries{}, 0, 0
		return err
	}
	add := func(dst *[]api.EntryKV, kv store.KV) error {
		*dst = append(*dst, api.EntryKV{K: kv.K, V: kv.V})
		n, size = n+1, size+len(kv.K)+len(kv.V)
		if n >= batchRecords || size >= batchBytes {
			return flush()
		}
		return nil
	}
	for _, kv := range recs {
		if err := add(&e.Records, kv); err != nil {
			return err
		}
	}
	for _, kv := range pushes {
		if err := add(&e.Pushes, kv); err != nil {
			return err
		}
	}
	for _, kv := range keys {
		if err := add(&e.Keys, kv); err != nil {
			return err
		}
	}
	for _, u := range gone {
		e.Gone = append(e.Gone, append([]byte(nil), u[:]...))
		if n++; n >= batchRecords {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if n > 0 || (len(recs) == 0 && len(pushes) == 0 && len(keys) == 0 && len(gone) == 0) {
		return flush()
	}
	return nil
}

type outcome int

const (
	outcomeCommitted outcome = iota
	outcomeAborted
	outcomeStopped
)

// resolve learns whether the target committed a move whose commit got
// no answer, and calls the move off there if it did not. It asks until
// it knows: meanwhile the slots stay held, since either pod may be the
// one that serves them.
func (mv *Mover) resolve(m *move) outcome {
	for {
		tc := mv.targetClient(m)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		o, err := mv.askTarget(ctx, tc, m)
		cancel()
		if err == nil {
			return o
		}
		mv.log.Warn("cannot learn whether the target committed a move; its slots stay held until it answers", "id", m.ID, "target", m.Target, "err", err)
		if !mv.sleep(time.Second) {
			return outcomeStopped
		}
	}
}

// askTarget learns once whether the target committed m, and calls the
// move off there if it did not. The target's map decides first: a target
// that owns the slots at the move's epoch or later committed, whatever
// it remembers of the move (it forgets old ones).
func (mv *Mover) askTarget(ctx context.Context, tc *api.Client, m *move) (outcome, error) {
	sm, err := tc.SlotMap(ctx)
	if err != nil {
		var none *api.NoSlotMapError
		if !errors.As(err, &none) {
			return 0, fmt.Errorf("read the target's slot map: %w", err)
		}
	} else if tm, err := api.MapOf(sm); err == nil && tm.Epoch() >= m.Epoch && ownsAll(tm, m.Target, &m.set) {
		return outcomeCommitted, nil
	}
	got, err := tc.GetMove(ctx, m.ID)
	var se *api.StatusError
	switch {
	case err == nil && got.Phase == api.MoveCommitted:
		return outcomeCommitted, nil
	case err == nil && got.Phase == phaseCommitting:
		return 0, errors.New("the target is committing the move")
	case err != nil && !(errors.As(err, &se) && se.Code == http.StatusNotFound):
		return 0, err
	}
	// Not committed there: call it off, which the target refuses if a
	// commit overtook this question.
	got, err = tc.AbortMove(ctx, m.ID)
	if err != nil {
		return 0, err
	}
	if got.Phase != phaseAborted {
		return 0, fmt.Errorf("the target answered the abort with phase %q", got.Phase)
	}
	return outcomeAborted, nil
}

// ownsAll reports whether ordinal owns every slot of set in m.
func ownsAll(m slotmap.Map, ordinal int, set *slotmap.Set) bool {
	for s := range slotmap.NumSlots {
		if set.Has(uint16(s)) && m.Owner(uint16(s)) != ordinal {
			return false
		}
	}
	return true
}

// goResolve settles, after a restart, a move that stopped in its
// handoff: the slots are held until the target says.
func (mv *Mover) goResolve(m *move) {
	mv.wg.Add(1)
	go func() {
		defer mv.wg.Done()
		mv.log.Info("a slot move stopped in its handoff; its slots are held until the target says whether it committed", "id", m.ID, "slots", m.Slots, "target", m.Target)
		switch mv.resolve(m) {
		case outcomeStopped:
			return
		case outcomeAborted:
			mv.opt.Core.Fence(nil)
			mv.opt.Router.Release()
			mv.finish(m, api.MoveFailed, "this pod restarted in the handoff, before the target committed; start the move again")
			return
		}
		if !mv.flip(m, 0) {
			return
		}
		mv.opt.Core.Fence(nil)
		mv.opt.Router.Release()
		mv.cleanup(m)
	}()
}

// cleanup deletes this pod's copy of slots the target now serves.
func (mv *Mover) cleanup(m *move) {
	mv.opt.Core.DropSlots(m.set)
	var after uint64
	for {
		next, done, err := mv.opt.Core.Store().DeleteSlots(&m.set, after, batchRecords)
		if err != nil {
			mv.log.Error("delete the moved slots' copy here; trying again", "id", m.ID, "err", err)
			if !mv.sleep(time.Second) {
				return
			}
			continue
		}
		if done {
			break
		}
		after = next
		select {
		case <-mv.stop:
			return
		default:
		}
	}
	// Records a phone's packet created while the map changed.
	mv.opt.Core.DropSlots(m.set)
	if mv.opt.Metrics != nil {
		mv.opt.Metrics.SlotsMoved.Add(float64(m.set.Len()))
	}
	mv.finish(m, api.MoveDone, "")
	mv.log.Info("slot move done", "id", m.ID, "slots", m.Slots, "target", m.Target)
}

func validURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// targetClient is a client of the move's target at its latest address.
func (mv *Mover) targetClient(m *move) *api.Client {
	mv.mu.Lock()
	u := m.TargetURL
	mv.mu.Unlock()
	return mv.client(u)
}

// flipOnto gives the move's slots to its target in the map this pod
// holds, which is as new as the move's or newer, at the next epoch.
func (mv *Mover) flipOnto(m *move, state []byte) error {
	cur := mv.opt.Router.Map()
	next, err := reassign(cur, &m.set, m.Target, cur.Epoch()+1)
	if err != nil {
		return err
	}
	if _, ok := next.Peer(m.Target); !ok {
		return fmt.Errorf("the map this pod holds (epoch %d) names no peer for the target, pod %d", cur.Epoch(), m.Target)
	}
	if ownsAll(cur, m.Target, &m.set) {
		next = cur
	}
	mv.log.Warn("this pod took a newer map during the move; the moved slots go to the target in it", "id", m.ID, "epoch", next.Epoch())
	_, err = mv.opt.Router.InstallMoved(next, func(mb []byte) error { return mv.opt.Core.Store().PutMove(m.ID, state, mb) })
	return err
}

// reassign is m with the slots of set given to ordinal, at epoch.
func reassign(m slotmap.Map, set *slotmap.Set, ordinal int, epoch uint64) (slotmap.Map, error) {
	var ranges []slotmap.Range
	for s := 0; s < slotmap.NumSlots; {
		owner := func(s int) int {
			if set.Has(uint16(s)) {
				return ordinal
			}
			return m.Owner(uint16(s))
		}
		o, e := owner(s), s
		for e+1 < slotmap.NumSlots && owner(e+1) == o {
			e++
		}
		ranges = append(ranges, slotmap.Range{From: s, To: e, Ordinal: o})
		s = e + 1
	}
	return slotmap.New(epoch, ranges, m.Peers())
}
