package shard

import (
	"errors"
	"fmt"

	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// ErrEpoch is a map refused because this pod already has a newer one, or
// another map of the same epoch: epochs only move forward.
var ErrEpoch = errors.New("slot map epoch conflict")

// ErrMovesSlots is a map refused because it gives slots to other pods than
// the map in force: the records of those slots would stay where they are,
// and what was accepted for them would be stranded. Moving slots is
// resharding, which a new map alone cannot do.
var ErrMovesSlots = errors.New("the slot map moves slots between pods")

// Install makes m this pod's slot map, stored durably first, so that a
// restarted pod knows its slots before anyone calls. The same map again
// changes nothing; an older epoch, or the same epoch with other content,
// is refused with ErrEpoch.
func (r *Router) Install(m slotmap.Map, persist func([]byte) error) (changed bool, err error) {
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
		if moves := slotmap.Diff(cur, m); len(moves) > 0 {
			return false, fmt.Errorf("%w (%d slots, first %s): moving slots needs resharding, which is not supported yet; a new map may only change the epoch and peer addresses", ErrMovesSlots, slotmap.MovedSlots(moves), moves[0])
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
