package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/node/api"
)

// nodeAPI is the node's HTTP API with the operator's token.
func (f *nodeFixture) nodeAPI(t *testing.T) *api.Client {
	t.Helper()
	var sec corev1.Secret
	must(t, k8s.Get(context.Background(), types.NamespacedName{Namespace: f.ns, Name: f.name + "-api-token"}, &sec))
	return api.NewClient("http://"+f.proc.HTTP, string(sec.Data["token"]))
}

// waitAcked waits until the node reports the message's push acknowledged
// and returns when that happened, by the node's clock.
func (f *nodeFixture) waitAcked(t *testing.T, pm *ddpushv1.PushMessage) time.Time {
	t.Helper()
	c := f.nodeAPI(t)
	var at time.Time
	eventually(t, 20*time.Second, pm.Name+" acknowledged on the node", func() error {
		p, err := c.GetPush(context.Background(), uint64(pm.Status.PushID))
		if err != nil {
			return err
		}
		if p.Fate != api.FateAcknowledged || p.FinishedAt == nil {
			return fmt.Errorf("fate %s", p.Fate)
		}
		at = *p.FinishedAt
		return nil
	})
	return at
}

func deadlineOf(pm *ddpushv1.PushMessage) time.Time {
	return pm.CreationTimestamp.Add(time.Duration(*pm.Spec.ActiveDeadlineSeconds) * time.Second)
}

// The operator is down while one phone acks before the deadline and
// another after it; it learns both only past the deadline. The node's
// time decides: the first message is Delivered, the second Failed.
func TestDeadlineIsJudgedByWhenTheNodeFinished(t *testing.T) {
	loc := &testLocator{}
	m := startManager(t, loc)
	f := startNode(t, loc)
	ctx := context.Background()

	// Long enough for both messages to be queued and the first ack to
	// happen before it even on a busy machine.
	const deadline = 30
	inTime := f.message("in-time", "82001", ddpushv1.KindCustom)
	inTime.Spec.Data = "ack me early"
	inTime.Spec.ActiveDeadlineSeconds = ptr.To[int64](deadline)
	late := f.message("too-late", "82002", ddpushv1.KindCustom)
	late.Spec.Data = "ack me late"
	late.Spec.ActiveDeadlineSeconds = ptr.To[int64](deadline)
	must(t, k8s.Create(ctx, inTime))
	must(t, k8s.Create(ctx, late))
	inTime = waitPhase(t, f.ns, "in-time", ddpushv1.PhaseQueued)
	late = waitPhase(t, f.ns, "too-late", ddpushv1.PhaseQueued)
	m.stop()

	expectCustom(t, f.phone(t, "82001"), "ack me early")
	ackedAt := f.waitAcked(t, inTime)
	if !ackedAt.Before(deadlineOf(inTime)) {
		t.Fatalf("the node saw the ack at %v, not before the deadline %v: the test needs a longer deadline on this machine", ackedAt, deadlineOf(inTime))
	}

	// Both deadlines pass while no operator runs.
	last := deadlineOf(late)
	eventually(t, time.Duration(deadline+30)*time.Second, "deadlines passed", func() error {
		if left := time.Until(last); left >= 0 {
			return fmt.Errorf("%v left", left)
		}
		return nil
	})
	expectCustom(t, f.phone(t, "82002"), "ack me late")
	lateAt := f.waitAcked(t, late)

	startManager(t, loc)
	got := waitPhase(t, f.ns, "in-time", ddpushv1.PhaseDelivered)
	if got.Status.DeliveredAt == nil || got.Status.DeliveredAt.After(deadlineOf(got)) {
		t.Errorf("deliveredAt %v, deadline %v", got.Status.DeliveredAt, deadlineOf(got))
	}
	if c := condition(got.Status.Conditions, controllers.ConditionFinished); c != "True/Delivered" {
		t.Errorf("in time: Finished %s", c)
	}

	got = waitPhase(t, f.ns, "too-late", ddpushv1.PhaseFailed)
	st := got.Status
	if st.Reason != controllers.ReasonDeadlineExceeded || !strings.Contains(st.Message, "acknowledged") {
		t.Errorf("too late: %s: %s", st.Reason, st.Message)
	}
	// The phone has it, late: that is recorded too.
	if st.DeliveredAt == nil || st.DeliveredAt.Time.Unix() != lateAt.Unix() {
		t.Errorf("too late: deliveredAt %v, the node says %v", st.DeliveredAt, lateAt)
	}
	if c := condition(st.Conditions, controllers.ConditionDelivered); c != "False/"+controllers.ReasonDeadlineExceeded {
		t.Errorf("too late: Delivered %s", c)
	}
	if c := condition(st.Conditions, controllers.ConditionFinished); c != "True/Failed" {
		t.Errorf("too late: Finished %s", c)
	}
}

// Past the deadline with the node unreachable, an acknowledged message is
// not failed for want of an answer: it waits (DeadlineUnconfirmed) and ends
// Delivered when the node can be asked.
func TestDeadlineWithTheNodeUnreachableWaitsForTheNode(t *testing.T) {
	loc := &testLocator{}
	m := startManager(t, loc)
	f := startNode(t, loc)
	ctx := context.Background()

	const deadline = 20
	pm := f.message("unconfirmed", "83001", ddpushv1.KindCustom)
	pm.Spec.Data = "acked while nobody watched"
	pm.Spec.ActiveDeadlineSeconds = ptr.To[int64](deadline)
	must(t, k8s.Create(ctx, pm))
	pm = waitPhase(t, f.ns, "unconfirmed", ddpushv1.PhaseQueued)
	m.stop()
	expectCustom(t, f.phone(t, "83001"), "acked while nobody watched")
	if at := f.waitAcked(t, pm); !at.Before(deadlineOf(pm)) {
		t.Fatalf("ack at %v, not before the deadline %v: the test needs a longer deadline on this machine", at, deadlineOf(pm))
	}
	pid := f.proc.Cmd.Process.Pid
	must(t, syscall.Kill(pid, syscall.SIGSTOP))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	eventually(t, time.Duration(deadline+30)*time.Second, "deadline passed", func() error {
		if left := time.Until(deadlineOf(pm)); left >= 0 {
			return fmt.Errorf("%v left", left)
		}
		return nil
	})

	startManager(t, loc)
	eventually(t, 60*time.Second, "DeadlineUnconfirmed", func() error {
		got := getPM(t, f.ns, "unconfirmed")
		if got.Status.Phase.Finished() {
			t.Fatalf("ended %s (%s: %s) while the node could not be asked", got.Status.Phase, got.Status.Reason, got.Status.Message)
		}
		if got.Status.Reason != controllers.ReasonDeadlineUnconfirmed {
			return fmt.Errorf("reason %q", got.Status.Reason)
		}
		return nil
	})
	must(t, syscall.Kill(pid, syscall.SIGCONT))
	got := waitPhase(t, f.ns, "unconfirmed", ddpushv1.PhaseDelivered)
	if got.Status.DeliveredAt == nil || got.Status.DeliveredAt.After(deadlineOf(got)) {
		t.Errorf("deliveredAt %v, deadline %v", got.Status.DeliveredAt, deadlineOf(got))
	}
}
