package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// Reasons of the Normal and Warning events of a PushNode that are not
// problem reasons.
const (
	EventNodeAvailable   = "NodeAvailable"
	EventNodeUnavailable = "NodeUnavailable"
	EventRecovered       = "Recovered"
	// A pod of a sharded PushNode stops or starts serving its slots.
	EventShardsUnavailable = "ShardsUnavailable"
	EventShardsAvailable   = "ShardsAvailable"
)

// problemActions names, for a problem reason, what the operator was doing
// when it failed: the "action" of an events.k8s.io Event.
var problemActions = map[string]string{
	"ApplyFailed":            "Apply",
	"StorageShrinkRefused":   "ResizeStorage",
	"StorageExpansionFailed": "ResizeStorage",
	"NodeAPIUnreachable":     "ReadNodeStatus",
	"NetworkPolicyFailed":    "Apply",
	"ShardProblem":           "HandOutSlotMap",
}

// recordEvents tells `kubectl describe pn` what happened in one reconcile:
// a Warning for every problem found (the event recorder folds repeats of
// the same one into a series), and, sparingly, a Normal event when the
// node becomes available or its problems clear. before and after are the
// conditions ahead of and after this reconcile.
func (r *PushNodeReconciler) recordEvents(pn *ddpushv1.PushNode, before, after []metav1.Condition, problems []problem) {
	if r.Recorder == nil {
		return
	}
	for _, p := range problems {
		action := problemActions[p.Reason]
		if action == "" {
			action = "Reconcile"
		}
		r.Recorder.Eventf(pn, nil, corev1.EventTypeWarning, p.Reason, action, "%s", p.Message)
	}
	wasAvailable := meta.IsStatusConditionTrue(before, ConditionAvailable)
	if avail := meta.FindStatusCondition(after, ConditionAvailable); avail != nil {
		switch {
		case avail.Status == metav1.ConditionTrue && !wasAvailable:
			r.Recorder.Eventf(pn, nil, corev1.EventTypeNormal, EventNodeAvailable, "Reconcile", "%s", avail.Message)
		case avail.Status != metav1.ConditionTrue && wasAvailable:
			r.Recorder.Eventf(pn, nil, corev1.EventTypeWarning, EventNodeUnavailable, "Reconcile", "%s", avail.Message)
		}
	}
	// Only changes, like Available: a pod down for an hour is one
	// Warning, not one per look.
	if shards := meta.FindStatusCondition(after, ConditionShardsAvailable); shards != nil {
		was := meta.FindStatusCondition(before, ConditionShardsAvailable)
		switch {
		case shards.Status == metav1.ConditionFalse && was != nil && was.Status == metav1.ConditionTrue:
			r.Recorder.Eventf(pn, nil, corev1.EventTypeWarning, EventShardsUnavailable, "Reconcile", "%s", shards.Message)
		case shards.Status == metav1.ConditionTrue && was != nil && was.Status == metav1.ConditionFalse:
			r.Recorder.Eventf(pn, nil, corev1.EventTypeNormal, EventShardsAvailable, "Reconcile", "%s", shards.Message)
		}
	}
	if meta.IsStatusConditionTrue(before, ConditionDegraded) && meta.IsStatusConditionFalse(after, ConditionDegraded) {
		r.Recorder.Eventf(pn, nil, corev1.EventTypeNormal, EventRecovered, "Reconcile", "nothing needs attention any more")
	}
}
