package controllers

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// writeStatus writes pm's status; requeue is true when someone else wrote
// the message meanwhile and it must be read again.
func (r *PushMessageReconciler) writeStatus(ctx context.Context, pm *ddpushv1.PushMessage) (requeue bool, err error) {
	pm.Status.ObservedGeneration = pm.Generation
	from := pm.ResourceVersion
	if err := r.Client.Status().Update(ctx, pm); err != nil {
		if apierrors.IsConflict(err) {
			return true, nil
		}
		return false, fmt.Errorf("update status of PushMessage %s: %w", pm.Name, err)
	}
	if pm.ResourceVersion != from {
		// A write that changed nothing keeps the version (and sends no
		// watch event): waiting for the cache to move would be waiting
		// for ever.
		r.writtenFrom.Store(types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}, writtenFrom{uid: pm.UID, rv: from})
	}
	return false, nil
}

// writtenFrom is the version of a message that a status write replaced.
type writtenFrom struct {
	uid types.UID
	rv  string
}

// cacheBehind says whether the cache still holds the version of pm that
// this process's last status write replaced. A follower event or a timer
// can wake a message moments after its write, before the watch brings the
// write back: at half the operator's top rate that happened to about every
// message, and each such wake wrote again and was refused. Versions are
// compared for equality only, as the API asks.
func (r *PushMessageReconciler) cacheBehind(pm *ddpushv1.PushMessage) bool {
	key := types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}
	v, ok := r.writtenFrom.Load(key)
	if !ok {
		return false
	}
	if w := v.(writtenFrom); w.uid == pm.UID && w.rv == pm.ResourceVersion {
		return true
	}
	r.writtenFrom.Delete(key)
	return false
}

// afterWrite is the result of a status write that did not go through. A
// write that lost a race with the cache (a follower event came before our
// own last write reached it) looks again shortly: a plain Requeue would go
// through the queue's shared 10/s bucket, which at volume made every
// message wait seconds.
func afterWrite(requeue bool, err error) (ctrl.Result, error) {
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: conflictRetry}, nil
}

// firstWriteGrace is how long a message handed to an online phone may go
// without a status write, waiting for the phone's ack.
const firstWriteGrace = time.Second

// deferFirstWrite says whether to skip the status write of a message just
// submitted and handed to an online phone. Its ack usually follows within
// milliseconds, and a follower event wakes the message when it does: the
// message then resumes from the status its submission gave it (kept in
// memory, see resumeHandOver), takes the ack from the follower, and is
// written once, Delivered, instead of Sent and then Delivered. A message
// still unacknowledged a grace after it was first handed over is written
// Sent as before. An operator restart in between costs nothing: nothing
// was recorded, so the message is submitted again with the same
// idempotency key and the node answers with the push as it now stands.
// The grace counts from the first hand-over seen by this process, not from
// the message's creation: at volume a message can wait in the queue longer
// than the grace.
func (r *PushMessageReconciler) deferFirstWrite(pm *ddpushv1.PushMessage, orig *ddpushv1.PushMessageStatus) bool {
	key := types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name}
	if orig.PushID != 0 || pm.Status.PushID == 0 || pm.Status.Phase != ddpushv1.PhaseSent {
		r.handedOver.Delete(key)
		return false
	}
	v, _ := r.handedOver.LoadOrStore(key, handOver{uid: pm.UID, at: r.now(), status: pm.Status.DeepCopy()})
	if h := v.(handOver); h.uid == pm.UID && r.now().Sub(h.at) < firstWriteGrace {
		return true
	}
	r.handedOver.Delete(key)
	return false
}

// handOver is a message handed to an online phone whose status is not
// written yet: when, and the status the submission gave it.
type handOver struct {
	uid    types.UID
	at     time.Time
	status *ddpushv1.PushMessageStatus
}

// resumeHandOver gives a message whose first write was deferred the
// status its submission gave it, so that it follows its push (usually to
// the ack that woke it) instead of submitting again: one call to the node
// per message, not two.
func (r *PushMessageReconciler) resumeHandOver(pm *ddpushv1.PushMessage) {
	if pm.Status.PushID != 0 {
		return
	}
	v, ok := r.handedOver.Load(types.NamespacedName{Namespace: pm.Namespace, Name: pm.Name})
	if !ok || v.(handOver).uid != pm.UID {
		return
	}
	pm.Status = *v.(handOver).status.DeepCopy()
}

// conflictRetry is how soon a message whose status write lost a race with
// the cache is looked at again.
const conflictRetry = 50 * time.Millisecond
