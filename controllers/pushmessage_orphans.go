package controllers

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// DefaultPushNodeDeletedGrace is how long a submitted message outlives its
// PushNode before it fails. A PushNode deleted and recreated by hand or by
// a GitOps tool within it (its data volume retained) picks its messages up
// again; past it nothing will ever tell what became of them, and a message
// left open forever would never start its TTL.
const DefaultPushNodeDeletedGrace = 5 * time.Minute

// ReasonPushNodeDeleted is the reason of a message failed because its
// PushNode went away while its push was open.
const ReasonPushNodeDeleted = "PushNodeDeleted"

func (r *PushMessageReconciler) pushNodeDeletedGrace() time.Duration {
	if r.PushNodeDeletedGrace > 0 {
		return r.PushNodeDeletedGrace
	}
	return DefaultPushNodeDeletedGrace
}

// pushNodeMissing handles a message whose PushNode does not exist. One not
// submitted yet waits for it: nothing was pushed, and a message may well
// be created before its node. One the node had accepted fails once the
// grace period has passed since the operator first found the node gone;
// the time is kept in the status so that an operator restart does not
// restart the period.
func (r *PushMessageReconciler) pushNodeMissing(pm *ddpushv1.PushMessage, node types.NamespacedName) ctrl.Result {
	st := &pm.Status
	if st.PushID == 0 {
		r.nodeUnavailable(pm, "PushNodeNotFound", fmt.Sprintf("PushNode %q does not exist in namespace %s; the message waits for it", node.Name, node.Namespace))
		return ctrl.Result{} // the PushNode watch wakes us
	}
	now := r.now()
	if st.PushNodeMissingSince == nil {
		// Whole seconds: that is what the API server keeps, so the fail
		// time computed now and after a re-read agree.
		t := metav1.NewTime(now.Truncate(time.Second))
		st.PushNodeMissingSince = &t
	}
	grace := r.pushNodeDeletedGrace()
	failAt := st.PushNodeMissingSince.Add(grace)
	if !now.Before(failAt) {
		r.finish(pm, ddpushv1.PhaseFailed, ReasonPushNodeDeleted, fmt.Sprintf(
			"PushNode %q was deleted while push %d was open on it and was not recreated within %s; nothing follows the push any more (were the node to come back with its data, the phone could still receive it)",
			node.Name, st.PushID, grace))
		return ctrl.Result{}
	}
	r.nodeUnavailable(pm, "PushNodeNotFound", fmt.Sprintf(
		"PushNode %q no longer exists; the message fails at %s unless the PushNode is recreated by then",
		node.Name, failAt.UTC().Format(time.RFC3339)))
	// The PushNode watch wakes us earlier if it is recreated.
	return ctrl.Result{RequeueAfter: failAt.Sub(now)}
}
