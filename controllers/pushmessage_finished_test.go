package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
)

// waitFinished waits for the Finished condition `kubectl wait
// --for=condition=Finished` waits for, and checks that its reason is the
// final phase.
func waitFinished(t *testing.T, ns, name string, phase ddpushv1.PushMessagePhase) *ddpushv1.PushMessage {
	t.Helper()
	var pm *ddpushv1.PushMessage
	eventually(t, 30*time.Second, name+" finished", func() error {
		pm = getPM(t, ns, name)
		if !meta.IsStatusConditionTrue(pm.Status.Conditions, controllers.ConditionFinished) {
			return fmt.Errorf("Finished %s, phase %s", condition(pm.Status.Conditions, controllers.ConditionFinished), pm.Status.Phase)
		}
		return nil
	})
	c := meta.FindStatusCondition(pm.Status.Conditions, controllers.ConditionFinished)
	if pm.Status.Phase != phase || c.Reason != string(phase) || c.Message != pm.Status.Message {
		t.Errorf("%s: phase %s, Finished %s: %s (status message %q)", name, pm.Status.Phase, c.Reason, c.Message, pm.Status.Message)
	}
	return pm
}

func TestEveryEndingSetsFinished(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f := startNode(t, loc, "--max-content-length", "8")
	ctx := context.Background()

	waiting := f.message("waiting", "83001", ddpushv1.KindGeneral)
	must(t, k8s.Create(ctx, waiting))
	eventually(t, 30*time.Second, "open message not finished", func() error {
		pm := getPM(t, f.ns, "waiting")
		if c := condition(pm.Status.Conditions, controllers.ConditionFinished); pm.Status.Phase != ddpushv1.PhaseQueued || c != "False/Queued" {
			return fmt.Errorf("phase %s, Finished %s", pm.Status.Phase, c)
		}
		return nil
	})

	_ = f.phone(t, "83000")
	delivered := f.message("delivered", "83000", ddpushv1.KindGeneral)
	must(t, k8s.Create(ctx, delivered))
	got := waitFinished(t, f.ns, "delivered", ddpushv1.PhaseDelivered)
	if c := condition(got.Status.Conditions, controllers.ConditionDelivered); c != "True/Acknowledged" {
		t.Errorf("delivered: Delivered %s", c)
	}

	older := f.message("older", "83002", ddpushv1.KindCustom)
	older.Spec.Data = "one"
	must(t, k8s.Create(ctx, older))
	waitPhase(t, f.ns, "older", ddpushv1.PhaseQueued)
	newer := f.message("newer", "83002", ddpushv1.KindCustom)
	newer.Spec.Data = "two"
	must(t, k8s.Create(ctx, newer))
	got = waitFinished(t, f.ns, "older", ddpushv1.PhaseSuperseded)
	// The Delivered condition stays as it was: False, with its reason.
	if c := condition(got.Status.Conditions, controllers.ConditionDelivered); c != "False/Superseded" {
		t.Errorf("superseded: Delivered %s", c)
	}

	big := f.message("too-big", "83003", ddpushv1.KindCustom)
	big.Spec.Data = "more than eight bytes"
	must(t, k8s.Create(ctx, big))
	got = waitFinished(t, f.ns, "too-big", ddpushv1.PhaseFailed)
	if got.Status.Reason != "Rejected" {
		t.Errorf("too big: %s", got.Status.Reason)
	}

	// Expire every record idle for any time: the offline clients' pending
	// pushes end Expired.
	waitPhase(t, f.ns, "newer", ddpushv1.PhaseQueued)
	if _, err := f.nodeAPI(t).Expire(ctx, 0); err != nil {
		t.Fatal(err)
	}
	waitFinished(t, f.ns, "waiting", ddpushv1.PhaseExpired)
	waitFinished(t, f.ns, "newer", ddpushv1.PhaseExpired)
}

// finishedByHand creates a message and gives it a final status, as an
// operator that knew no Finished condition left it.
func finishedByHand(t *testing.T, ns, name string, phase ddpushv1.PushMessagePhase, completed time.Time, tune func(*ddpushv1.PushMessage)) {
	t.Helper()
	ctx := context.Background()
	pm := &ddpushv1.PushMessage{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       ddpushv1.PushMessageSpec{PushNodeName: "gone", UUID: strings.Repeat("c", 32), Kind: ddpushv1.KindGeneral},
	}
	if tune != nil {
		tune(pm)
	}
	must(t, k8s.Create(ctx, pm))
	done := metav1.NewTime(completed)
	pm.Status = ddpushv1.PushMessageStatus{
		Phase: phase, Reason: "Acknowledged", Message: "the client acknowledged the message",
		PushID: 7, TargetUUID: pm.Spec.UUID, CompletionTime: &done, DeliveredAt: &done,
		Conditions: []metav1.Condition{{Type: controllers.ConditionDelivered, Status: metav1.ConditionTrue,
			Reason: "Acknowledged", Message: "the client acknowledged the message", LastTransitionTime: done}},
	}
	must(t, k8s.Status().Update(ctx, pm))
}

// A finished message is not looked at again, whatever happened since (its
// PushNode is gone, its deadline passed): it only gains the Finished
// condition it lacked, and its TTL still deletes it.
func TestFinishedMessageIsNeverEvaluatedAgain(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	finishedByHand(t, ns, "kept", ddpushv1.PhaseDelivered, time.Now(), func(pm *ddpushv1.PushMessage) {
		pm.Spec.ActiveDeadlineSeconds = ptr.To[int64](1)
	})
	finishedByHand(t, ns, "short-lived", ddpushv1.PhaseDelivered, time.Now().Add(-time.Hour), func(pm *ddpushv1.PushMessage) {
		pm.Spec.TTLSecondsAfterFinished = ptr.To[int32](60)
	})
	kept := getPM(t, ns, "kept")
	deadline := kept.CreationTimestamp.Add(time.Second)
	eventually(t, 10*time.Second, "deadline passed", func() error {
		if left := time.Until(deadline); left >= 0 {
			return fmt.Errorf("%v left", left)
		}
		return nil
	})

	startManager(t, &testLocator{})
	got := waitFinished(t, ns, "kept", ddpushv1.PhaseDelivered)
	if got.Status.Reason != "Acknowledged" || got.Status.PushNodeMissingSince != nil ||
		meta.FindStatusCondition(got.Status.Conditions, controllers.ConditionNodeAvailable) != nil {
		t.Errorf("finished message evaluated again: %+v", got.Status)
	}
	if c := condition(got.Status.Conditions, controllers.ConditionDelivered); c != "True/Acknowledged" {
		t.Errorf("Delivered %s", c)
	}
	eventually(t, 30*time.Second, "deleted after its TTL", func() error {
		err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "short-lived"}, &ddpushv1.PushMessage{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
}
