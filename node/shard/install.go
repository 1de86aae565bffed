package shard

import (
	"errors"
	"fmt"

	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// ErrEpoch is a map refused because this pod already has a newer one, or
// another map of the same epoch: epochs only move forward.
var ErrEpoch = errors.New("slot map epoch conflict")

// ErrMovesSlots is a map refused because it gives this pod's slots to
// another pod, or another pod's slots to this one: the records of those
// slots would stay where they are, and what was accepted for them would
// be stranded. Only a slot move (see Mover) changes a pod's own slots; a
// new map may move slots between other pods, once they moved them.
var ErrMovesSlots = errors.New("the slot map moves this pod's slots")

// Install makes m this pod's slot map, stored durably first, so that a
// restarted pod knows its slots before anyone calls. The same map again
// changes nothing; an older epoch, or the same epoch with other content,
// is refused with ErrEpoch; a map that changes which slots this pod owns
// with ErrMovesSlots.
func (r *Router) Install(m slotmap.Map, persist func([]byte) error) (changed bool, err error) {
	return r.install(m, persist, false)
}

// InstallMoved installs the map a slot move ends with at its source or
// target: it may change this pod's slots, since the move carried their
// records. persist stores the map with the move's state.
func (r *Router) InstallMoved(m slotmap.Map, persist func([]byte) error) (changed bool, err error) {
	return r.install(m, persist, true)
}

func (r *Router) install(m slotmap.Map, persist func([]byte) error, moved bool) (changed bool, err error) {
	r.installMu.Lock()
	defer r.installMu.Unlock()
	cur := r.Map()
	if !cur.IsZero() {
		switch {
		case m.Epoch() < cur.Epoch():
			return false, fmt.Errorf("%w: this pod has epoch %d, newer than %d", ErrEpoch, cur.Epoch(), m.Epoch())
		case m.Epoch() == cur.Epoch() && !m.SameContent(cur):
			return false, fmt.Errorf("%w: this pod has another map of epoch %d; a changed map needs a new epoch", ErrEpoch, m.Epoch())
		case m.Epoch() == cur.Epoch():
			return false, nil
		}
		self := r.opt.Ordinal
		if gained, lost := slotmap.Gained(cur, m, self), slotmap.Lost(cur, m, self); !moved && (gained.Len() > 0 || lost.Len() > 0) {
			return false, fmt.Errorf("%w (it would gain slots %q and lose slots %q): a pod's slots change only by a slot move (POST /v1/moves), which carries their records", ErrMovesSlots, orNone(gained.String()), orNone(lost.String()))
		}
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return false, fmt.Errorf("encode slot map: %w", err)
	}
	if err := persist(b); err != nil {
		return false, fmt.Errorf("store slot map: %w", err)
	}
	if err := r.SetMap(m); err != nil {
		return false, err
	}
	return true, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// LoadStored installs the map a pod stored before it restarted, if any.
func (r *Router) LoadStored(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	var m slotmap.Map
	if err := m.UnmarshalBinary(b); err != nil {
		return fmt.Errorf("stored slot map: %w", err)
	}
	return r.SetMap(m)
}
