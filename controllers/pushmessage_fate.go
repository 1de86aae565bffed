package controllers

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"strings"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// ReasonNodeStoreReplaced fails a message whose push the node no longer
// holds because its store was replaced (or restored from an older copy):
// push ids start again in a new store, so the id the message holds names
// another push there, or none.
const ReasonNodeStoreReplaced = "NodeStoreReplaced"

// Why such a message fails rather than being pushed again: the push was
// accepted by the store that is gone, and may have reached the phone
// before it went (sent, perhaps acknowledged, with the events that said so
// lost with the store). Nothing the operator can read proves that it did
// not, and pushing again could deliver the message twice, which a
// PushMessage promises never to do. The person who created it can decide
// to create it again.
const storeReplacedTail = "; it is not pushed again, since it may have reached the phone before the store was replaced"

// targetOf is the uuid a message is pushed to, as the node writes it.
func targetOf(pm *ddpushv1.PushMessage) string {
	if pm.Spec.UUID != "" {
		return strings.ToLower(pm.Spec.UUID)
	}
	sum := md5.Sum([]byte(pm.Spec.UserID))
	return hex.EncodeToString(sum[:])
}

// mismatch says why push p, as a node answered it, is not this message's
// push, or "" when it is: it must carry the message's idempotency key (its
// UID), go to its target, and come from the store that accepted it.
func mismatch(pm *ddpushv1.PushMessage, p *api.Push, moved bool) string {
	st := &pm.Status
	want := targetOf(pm)
	switch {
	case p.Key != string(pm.UID):
		return fmt.Sprintf("push %d on the node carries idempotency key %q, not this message's UID %s: it is another push", p.ID, p.Key, pm.UID)
	case !strings.EqualFold(p.UUID, want):
		return fmt.Sprintf("push %d on the node goes to uuid %s, not to %s: it is another push", p.ID, p.UUID, want)
	case moved && p.ID != uint64(st.PushID):
		return fmt.Sprintf("push %d at the uuid's home is not push %d, which %s accepted", p.ID, st.PushID, st.NodePod)
	case !moved && st.NodeIncarnation != "" && p.Incarnation != st.NodeIncarnation:
		return fmt.Sprintf("the node's store is now incarnation %q, not %q, which accepted push %d", p.Incarnation, st.NodeIncarnation, p.ID)
	}
	return ""
}

// applyPush applies what the node answered about the message's push (its
// submission, or a lookup by id) once the answer is proven to be about
// that push; otherwise the message fails with NodeStoreReplaced.
func (r *PushMessageReconciler) applyPush(pm *ddpushv1.PushMessage, pn *ddpushv1.PushNode, p *api.Push) {
	moved, home := movedAway(pn, pm)
	if why := mismatch(pm, p, moved); why != "" {
		r.finish(pm, ddpushv1.PhaseFailed, ReasonNodeStoreReplaced, why+storeReplacedTail)
		return
	}
	if moved {
		// The push went with its slot to another pod, keeping its id and
		// key: that pod's store holds it from now on.
		pm.Status.NodePod, pm.Status.NodeIncarnation = PodName(pn, home), p.Incarnation
	}
	if pm.Status.NodeIncarnation == "" {
		// Submitted before the operator recorded incarnations: the key
		// and target prove the push is this message's, so its store is
		// the one to hold to from now on.
		pm.Status.NodeIncarnation = p.Incarnation
	}
	r.apply(pm, p.Fate, p.SentAt, p.FinishedAt)
}

// applyFate applies what the event stream said about the message's push.
// Events are filed by idempotency key, so a fate whose store, push id or
// uuid is not the message's is about a push of the same key made in
// another store (a submission repeated after the first store was
// replaced); it is skipped, not failed on: the message's own lookup, which
// every store replacement triggers, decides.
func (r *PushMessageReconciler) applyFate(pm *ddpushv1.PushMessage, pn *ddpushv1.PushNode, f Fate) {
	st := &pm.Status
	moved, home := movedAway(pn, pm)
	if f.PushID != uint64(st.PushID) || !strings.EqualFold(f.UUID, targetOf(pm)) ||
		(!moved && st.NodeIncarnation != "" && f.Incarnation != st.NodeIncarnation) {
		return
	}
	if moved && f.Incarnation != "" {
		// Events come from the home's log: the push moved there.
		st.NodePod, st.NodeIncarnation = PodName(pn, home), f.Incarnation
	}
	r.apply(pm, f.Fate, optTime(f.SentAt), optTime(f.FinishedAt))
}

// pushNotFound finishes a message whose push the node does not know: with
// NodeStoreReplaced when the node now runs on another store, PushLost
// when it is the same store (the push was trimmed, or the data was lost
// and restored from a copy).
func (r *PushMessageReconciler) pushNotFound(ctx context.Context, c *api.Client, pm *ddpushv1.PushMessage) {
	id := pm.Status.PushID
	if inc := pm.Status.NodeIncarnation; inc != "" {
		if st, err := c.Status(ctx); err == nil && st.Incarnation != inc {
			r.finish(pm, ddpushv1.PhaseFailed, ReasonNodeStoreReplaced, fmt.Sprintf(
				"the node's store is now incarnation %q, not %q, which accepted push %d, and it does not know the push%s",
				st.Incarnation, inc, id, storeReplacedTail))
			return
		}
	}
	r.finish(pm, ddpushv1.PhaseFailed, "PushLost", fmt.Sprintf(
		"the node no longer knows push %d (its data was lost or the push was trimmed)", id))
}

// movedAway reports whether pm's push now lives at another pod than the
// one its status names (a slot move took it to home), in which case that
// pod's store, not the recorded incarnation, holds it.
func movedAway(pn *ddpushv1.PushNode, pm *ddpushv1.PushMessage) (bool, int) {
	if pn == nil || pm.Status.PushID == 0 || pm.Status.NodePod == "" {
		return false, 0
	}
	home := PushOrdinal(pn, pm)
	was, ok := slotmap.OrdinalFromPodName(pm.Status.NodePod)
	if !ok {
		was = acceptedOrdinal(pm)
	}
	return home != was, home
}
