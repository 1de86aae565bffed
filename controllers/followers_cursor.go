package controllers

import (
	"context"
	"fmt"

	"github.com/ddpush/ddpush-operator/node/api"
)

// cursor is a follower's place in a node's event log. The sequence number
// means something only in the log of the store it was read from, so it is
// kept together with that store's incarnation: when the follower reads
// again (after an error, a node restart, a dropped connection) and the
// node answers with the same incarnation, it resumes where it was and no
// message has to look itself up; only a gap (events trimmed before they
// were read, a cursor past the end of the log) or another incarnation
// makes every open message look itself up once (a resync).
type cursor struct {
	set         bool
	seq         uint64
	incarnation string
}

// baseline starts following a node from its current end of log, and has
// every open message look itself up once: what happened before that
// point is not in the follower's memory (it has just started, or the
// node's store was replaced). The cursor is set before the messages are
// woken, so every event after their lookups is followed.
func (f *Followers) baseline(ctx context.Context, c *api.Client, l *follower) error {
	st, err := c.Status(ctx)
	if err != nil {
		return fmt.Errorf("read node status: %w", err)
	}
	l.pos = cursor{set: true, seq: st.EventSeq, incarnation: st.Incarnation}
	l.newEpoch()
	f.wakeAll(ctx, l.key)
	return nil
}
