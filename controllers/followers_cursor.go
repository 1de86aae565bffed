package controllers

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/api"
)

// cursor is a follower's place in a node's event log. The sequence number
// means something only in the log of the store it was read from, so it is
// kept together with that store's incarnation: when the follower reads
// again (after an error, a node restart, a dropped connection) and the
// node still runs on that store, it resumes where it was and no message
// has to look itself up. Only a gap makes every open message look itself
// up once (a resync): events trimmed before they were read, a cursor past
// the end of the log, another incarnation, or a store put back to an
// older copy of itself.
type cursor struct {
	set         bool
	seq         uint64
	incarnation string
	// recheck is set when reading failed: the node may have restarted,
	// and is looked at once before reading goes on.
	recheck bool
}

// baseline starts following a node from its current end of log, and has
// every open message look itself up once: what happened before that
// point is not in the follower's memory (it has just started, or the
// node's store was replaced).
func (f *Followers) baseline(ctx context.Context, c *api.Client, l *follower) error {
	st, err := c.Status(ctx)
	if err != nil {
		return fmt.Errorf("read node status: %w", err)
	}
	f.restartAt(ctx, l, st)
	return nil
}

// restartAt moves the cursor to the end of the log st describes, then has
// every open message look itself up once. The cursor moves first, so
// every event after their lookups is followed.
func (f *Followers) restartAt(ctx context.Context, l *follower, st api.Status) {
	l.pos = cursor{set: true, seq: st.EventSeq, incarnation: st.Incarnation}
	l.newEpoch()
	f.wakeAll(ctx, l.key)
}

// recheck looks at a node once after reading its events failed. On
// another store it starts over (baseline). On its own store put back to
// an older copy, the log may hold the cursor's place while a push the
// operator saw accepted is gone with its events: that shows as an open
// message holding a push id past the last one the node handed out, and
// is a gap. Otherwise the follower resumes from its cursor.
func (f *Followers) recheck(ctx context.Context, c *api.Client, l *follower) error {
	// The messages are listed before the node is asked, so that a push
	// accepted in between is not taken for one the node lost.
	held, err := f.highestOpenPushID(ctx, l, l.pos.incarnation)
	if err != nil {
		return err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return fmt.Errorf("read node status: %w", err)
	}
	log := f.Log.WithValues("pushnode", l.key.node.String(), "ordinal", l.key.ordinal)
	if st.Incarnation != l.pos.incarnation {
		log.Info("the node's store was replaced; resyncing open messages", "incarnation", st.Incarnation, "previous", l.pos.incarnation)
		f.restartAt(ctx, l, st)
		return nil
	}
	l.pos.recheck = false
	if held > st.LastPushID {
		log.Info("the node's store is older than pushes it accepted (put back to a copy?); resyncing open messages",
			"lastPushId", st.LastPushID, "openPushId", held)
		l.pos.seq = min(l.pos.seq, st.EventSeq)
		l.newEpoch()
		f.wakeAll(ctx, l.key)
	}
	return nil
}

// highestOpenPushID is the greatest push id an open message holds in the
// follower's pod, in store incarnation inc (or in an unrecorded one).
func (f *Followers) highestOpenPushID(ctx context.Context, l *follower, inc string) (uint64, error) {
	var list ddpushv1.PushMessageList
	if err := f.Client.List(ctx, &list, client.InNamespace(l.key.node.Namespace), client.MatchingFields{IndexPushNode: l.key.node.Name}); err != nil {
		return 0, fmt.Errorf("list the node's messages: %w", err)
	}
	pn := f.pushNode(ctx, l.key.node)
	var high uint64
	for i := range list.Items {
		st := &list.Items[i].Status
		moved, _ := movedAway(pn, &list.Items[i])
		if st.Phase.Finished() || (!moved && st.NodeIncarnation != "" && st.NodeIncarnation != inc) || PushOrdinal(pn, &list.Items[i]) != l.key.ordinal {
			continue
		}
		high = max(high, uint64(st.PushID))
	}
	return high, nil
}
