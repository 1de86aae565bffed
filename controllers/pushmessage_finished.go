package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// ConditionFinished is set on every message: False while it is open, True
// once it reached a final phase, whichever. Delivered alone cannot end a
// `kubectl wait`: a superseded, expired or failed message never becomes
// Delivered. Like a Job's Complete/Failed, its reason says how it ended
// (the phase), so one wait covers every outcome.
const ConditionFinished = "Finished"

// openMessages explain the Finished condition of a message still open.
var openMessages = map[ddpushv1.PushMessagePhase]string{
	ddpushv1.PhasePending: "not accepted by the node yet",
	ddpushv1.PhaseQueued:  "accepted; the client is offline and gets it on its next heartbeat",
	ddpushv1.PhaseSent:    "sent to the online client; waiting for its ack",
}

// setFinishedCondition derives the Finished condition from the phase. Its
// message does not follow the status message of an open one, which
// changes with every failed submission: the condition changes only when
// the phase does.
func setFinishedCondition(pm *ddpushv1.PushMessage) {
	st := &pm.Status
	c := metav1.Condition{Type: ConditionFinished, Reason: string(st.Phase), ObservedGeneration: pm.Generation}
	if st.Phase.Finished() {
		c.Status, c.Message = metav1.ConditionTrue, st.Message
	} else {
		c.Status, c.Message = metav1.ConditionFalse, openMessages[st.Phase]
	}
	if c.Message == "" {
		c.Message = "the message is " + string(st.Phase)
	}
	meta.SetStatusCondition(&st.Conditions, c)
}

// needsFinishedCondition reports whether a finished message lacks a True
// Finished condition: one that finished before the operator knew the
// condition. Adding it is no re-evaluation: it follows from the phase.
func needsFinishedCondition(pm *ddpushv1.PushMessage) bool {
	return pm.Status.Phase.Finished() && !meta.IsStatusConditionTrue(pm.Status.Conditions, ConditionFinished)
}
