package controllers

import (
	"context"
	"fmt"
	"k8s.io/apimachinery/pkg/types"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/api"
)

// ReasonDeadlineExceeded is the reason of a message not delivered within
// its activeDeadlineSeconds.
const ReasonDeadlineExceeded = "DeadlineExceeded"

// deadlineLookupTimeout bounds the one look-up of a push at its deadline:
// an unreachable node must not hold the reconcile for long, and without an
// answer the deadline stands.
const deadlineLookupTimeout = 10 * time.Second

func (r *PushMessageReconciler) deadline(pm *ddpushv1.PushMessage) time.Time {
	if pm.Spec.ActiveDeadlineSeconds == nil {
		return time.Time{}
	}
	return pm.CreationTimestamp.Add(time.Duration(*pm.Spec.ActiveDeadlineSeconds) * time.Second)
}

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
func (r *PushMessageReconciler) failPastDeadline(ctx context.Context, pm *ddpushv1.PushMessage, pn *ddpushv1.PushNode) {
	if pm.Status.PushID != 0 && pn != nil {
		lctx, cancel := context.WithTimeout(ctx, deadlineLookupTimeout)
		p, err := r.lookupPush(lctx, pm, pn)
		cancel()
		if err == nil {
			r.applyPush(pm, &p)
		} else {
			logf.FromContext(ctx).V(1).Info("cannot look the push up at its deadline; failing it", "err", err)
		}
		if pm.Status.Phase.Finished() {
			return
		}
	}
	r.finish(pm, ddpushv1.PhaseFailed, ReasonDeadlineExceeded,
		fmt.Sprintf("not delivered within activeDeadlineSeconds (%d); the phone may still receive it later", *pm.Spec.ActiveDeadlineSeconds))
}

// nodeClient is a client of the node pod that serves the message's
// target, with the PushNode's token.
func (r *PushMessageReconciler) nodeClient(ctx context.Context, pm *ddpushv1.PushMessage, pn *ddpushv1.PushNode) (*api.Client, string, error) {
	ep, err := r.Locator.ForUUID(ctx, pn, pm.Status.TargetUUID)
	if err != nil {
		return nil, "", fmt.Errorf("locate the node of push %d: %w", pm.Status.PushID, err)
	}
	token, err := ReadToken(ctx, r.Client, pn)
	if err != nil {
		return nil, "", err
	}
	c := api.NewClient(ep.URL, token)
	c.HTTP.Timeout = nodeCallTimeout
	return c, ep.Pod, nil
}

// lookupPush asks the message's node what became of its push.
func (r *PushMessageReconciler) lookupPush(ctx context.Context, pm *ddpushv1.PushMessage, pn *ddpushv1.PushNode) (api.Push, error) {
	c, pod, err := r.nodeClient(ctx, pm, pn)
	if err != nil {
		return api.Push{}, err
	}
	node := types.NamespacedName{Namespace: pn.Namespace, Name: pn.Name}
	if until, ok := r.gate().enter(node, r.now(), nodeCallTimeout); !ok {
		return api.Push{}, fmt.Errorf("PushNode %q gave no answer to an earlier call; the next try is after %s",
			pn.Name, until.UTC().Format(time.RFC3339))
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
