package controllers

import (
	"fmt"
	"strings"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a PushNode.
const (
	ConditionAvailable   = "Available"
	ConditionProgressing = "Progressing"
	ConditionDegraded    = "Degraded"
)

// problem is something the user has to act on.
type problem struct {
	Reason  string
	Message string
}

// availableCondition: every wanted pod is ready to take pushes.
func availableCondition(sts *appsv1.StatefulSet, desired int32) metav1.Condition {
	c := metav1.Condition{Type: ConditionAvailable}
	switch {
	case sts == nil:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "StatefulSetMissing", "the StatefulSet has not been created yet"
	case sts.Status.ReadyReplicas >= desired && desired > 0:
		c.Status, c.Reason = metav1.ConditionTrue, "AllReplicasReady"
		c.Message = fmt.Sprintf("%d/%d node pods ready", sts.Status.ReadyReplicas, desired)
	default:
		c.Status, c.Reason = metav1.ConditionFalse, "ReplicasNotReady"
		c.Message = fmt.Sprintf("%d/%d node pods ready; see the pods' events and logs (kubectl describe pod %s-0)", sts.Status.ReadyReplicas, desired, sts.Name)
	}
	return c
}

// progressingCondition: pods are starting or rolling to new settings.
func progressingCondition(sts *appsv1.StatefulSet, desired int32) metav1.Condition {
	c := metav1.Condition{Type: ConditionProgressing}
	switch {
	case sts == nil:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "Creating", "creating the node's objects"
	case sts.Status.ObservedGeneration < sts.Generation:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "Updating", "the StatefulSet controller has not seen the latest change yet"
	case sts.Status.UpdateRevision != "" && sts.Status.CurrentRevision != sts.Status.UpdateRevision,
		sts.Status.UpdatedReplicas < desired:
		c.Status, c.Reason = metav1.ConditionTrue, "RollingUpdate"
		c.Message = fmt.Sprintf("%d/%d pods run the current settings", sts.Status.UpdatedReplicas, desired)
	case sts.Status.ReadyReplicas < desired:
		c.Status, c.Reason = metav1.ConditionTrue, "Starting"
		c.Message = fmt.Sprintf("%d/%d pods ready", sts.Status.ReadyReplicas, desired)
	default:
		c.Status, c.Reason = metav1.ConditionFalse, "Stable"
		c.Message = "every pod runs the current settings"
	}
	return c
}

// degradedCondition: something needs a person.
func degradedCondition(problems []problem) metav1.Condition {
	c := metav1.Condition{Type: ConditionDegraded}
	if len(problems) == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "AsExpected", "nothing needs attention"
		return c
	}
	msgs := make([]string, len(problems))
	for i, p := range problems {
		msgs[i] = p.Message
	}
	c.Status, c.Reason, c.Message = metav1.ConditionTrue, problems[0].Reason, clipMessage(strings.Join(msgs, "; "))
	return c
}

// maxConditionMessage keeps a condition message well inside the 32 KiB the
// apiserver takes: one it refuses would freeze the whole status.
const maxConditionMessage = 8 << 10

func clipMessage(s string) string {
	if len(s) <= maxConditionMessage {
		return s
	}
	cut := maxConditionMessage - len(" ... (cut)")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + " ... (cut)"
}
