package controllers

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/api"
)

// ReasonDeadlineExceeded is the reason of a message not delivered within
// its activeDeadlineSeconds.
const ReasonDeadlineExceeded = "DeadlineExceeded"

// deadlineLookupTimeout bounds the look-up of a push at its deadline: an
// unreachable node must not hold the reconcile for long; without an answer
// the message asks again later.
const deadlineLookupTimeout = 10 * time.Second

func (r *PushMessageReconciler) deadline(pm *ddpushv1.PushMessage) time.Time {
	if pm.Spec.ActiveDeadlineSeconds == nil {
		return time.Time{}
	}
	// The CRD caps it at ten years; an object stored before the cap (or
	// written around it) must not overflow a Duration into the past.
	secs := min(*pm.Spec.ActiveDeadlineSeconds, maxDeadlineSeconds)
	return pm.CreationTimestamp.Add(time.Duration(secs) * time.Second)
}

// maxDeadlineSeconds is the CRD's bound on activeDeadlineSeconds.
const maxDeadlineSeconds = 315360000

func (r *PushMessageReconciler) pastDeadline(pm *ddpushv1.PushMessage) bool {
	d := r.deadline(pm)
	return !d.IsZero() && !r.now().Before(d)
}

// finishedLate reports whether a fate the node reached at `at` (nil: not
// known, taken as now) came after the message's deadline. The node's time
// counts, not the operator's: an ack the operator learns of late (it was
// restarting, the event was on its way) was still in time.
func (r *PushMessageReconciler) finishedLate(pm *ddpushv1.PushMessage, at *time.Time) bool {
	d := r.deadline(pm)
	if d.IsZero() {
		return false
	}
	when := r.now()
	if at != nil {
		when = *at
	}
	return when.After(d)
}

// failPastDeadline ends an open message whose deadline has passed. A
// submitted push is looked up on its node once first: the ack may have
// come in time while its event was still on its way, and the deadline
// must not overrule what already happened.
//
// When the node cannot be asked, the message stays open (reason
// DeadlineUnconfirmed) and asks again: failing it could contradict an ack
// the node already has, and a final phase is never taken back. It ends
// when the node answers, or Failed with PushNodeDeleted if its PushNode
// goes away.
func (r *PushMessageReconciler) failPastDeadline(ctx context.Context, pm *ddpushv1.PushMessage, pn *ddpushv1.PushNode) (ctrl.Result, bool) {
	if pm.Status.PushID != 0 && pn != nil {
		lctx, cancel := context.WithTimeout(ctx, deadlineLookupTimeout)
		p, err := r.lookupPush(lctx, pm, pn)
		cancel()
		if err != nil {
			logf.FromContext(ctx).V(1).Info("cannot look the push up at its deadline; asking again later", "err", err)
			if pm.Status.Reason != ReasonDeadlineUnconfirmed {
				pm.Status.Reason = ReasonDeadlineUnconfirmed
				pm.Status.Message = fmt.Sprintf("past activeDeadlineSeconds (%d), but the node cannot say yet whether the phone acknowledged in time: %v",
					*pm.Spec.ActiveDeadlineSeconds, err)
			}
			return ctrl.Result{RequeueAfter: backoff(3)}, false
		}
		r.applyPush(pm, pn, &p)
		if pm.Status.Phase.Finished() {
			return ctrl.Result{}, true
		}
	}
	r.finish(pm, ddpushv1.PhaseFailed, ReasonDeadlineExceeded,
		fmt.Sprintf("not delivered within activeDeadlineSeconds (%d); the phone may still receive it later", *pm.Spec.ActiveDeadlineSeconds))
	return ctrl.Result{}, true
}

// ReasonDeadlineUnconfirmed: past the deadline, and the node could not be
// asked whether the ack came in time.
const ReasonDeadlineUnconfirmed = "DeadlineUnconfirmed"

// nodeClient is a client of the node pod that holds the message's push
// (its home, which accepted it), with the PushNode's token: its store
// incarnation is the one the message recorded.
func (r *PushMessageReconciler) nodeClient(ctx context.Context, pm *ddpushv1.PushMessage, pn *ddpushv1.PushNode) (*api.Client, string, error) {
	ep, err := r.Locator.Pod(ctx, pn, PushOrdinal(pn, pm))
	if err != nil {
		return nil, "", fmt.Errorf("locate the node of push %d: %w", pm.Status.PushID, err)
	}
	token, err := ReadToken(ctx, r.Client, pn)
	if err != nil {
		return nil, "", err
	}
	c := newNodeClient(ep.URL, token, nodeCallTimeout)
	return c, ep.Pod, nil
}

// lookupPush asks the message's node what became of its push.
func (r *PushMessageReconciler) lookupPush(ctx context.Context, pm *ddpushv1.PushMessage, pn *ddpushv1.PushNode) (api.Push, error) {
	c, pod, err := r.nodeClient(ctx, pm, pn)
	if err != nil {
		return api.Push{}, err
	}
	node := types.NamespacedName{Namespace: pn.Namespace, Name: pod}
	if until, ok := r.gate().enter(node, r.now(), nodeCallTimeout); !ok {
		return api.Push{}, fmt.Errorf("pod %s of PushNode %q gave no answer to an earlier call; the next try is after %s",
			pod, pn.Name, until.UTC().Format(time.RFC3339))
	}
	p, err := c.GetPush(ctx, uint64(pm.Status.PushID))
	r.observe(node, err)
	if err != nil {
		return api.Push{}, fmt.Errorf("look up push %d on %s: %w", pm.Status.PushID, pod, err)
	}
	return p, nil
}

// preciseTime shows milliseconds: an ack just past a deadline would
// otherwise show the same second as the deadline.
const preciseTime = "2006-01-02T15:04:05.000Z07:00"

// finishLate fails a message whose push the node finished (as final
// phase next) only after the deadline. An ack still sets deliveredAt:
// the phone has the message, late.
func (r *PushMessageReconciler) finishLate(pm *ddpushv1.PushMessage, next ddpushv1.PushMessagePhase, finishedAt *time.Time) {
	when := r.now()
	if finishedAt != nil {
		when = *finishedAt
	}
	what := map[ddpushv1.PushMessagePhase]string{
		ddpushv1.PhaseDelivered:  "the client acknowledged it",
		ddpushv1.PhaseSuperseded: "a newer push replaced it",
		ddpushv1.PhaseExpired:    "the client's record expired",
	}[next]
	if next == ddpushv1.PhaseDelivered {
		t := metav1.NewTime(when)
		pm.Status.DeliveredAt = &t
	}
	r.finish(pm, ddpushv1.PhaseFailed, ReasonDeadlineExceeded, fmt.Sprintf(
		"not delivered within activeDeadlineSeconds (%d): %s at %s, after the deadline at %s",
		*pm.Spec.ActiveDeadlineSeconds, what, when.UTC().Format(preciseTime), r.deadline(pm).UTC().Format(preciseTime)))
}
