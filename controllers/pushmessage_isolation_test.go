package controllers_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// A node that stops answering (here a real node process stopped with
// SIGSTOP: its sockets stay open, nothing answers) delays only its own
// PushMessages. Without isolation its 60 open messages would each hold one
// of the eight workers for a full call timeout, and a message to a healthy
// node in the same namespace would wait behind them for most of a minute.
func TestSilentNodeDelaysOnlyItsOwnMessages(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	stuck := startNode(t, loc)
	live := startNode(t, loc)
	p := live.phone(t, "30001")

	pid := stuck.proc.Cmd.Process.Pid
	must(t, syscall.Kill(pid, syscall.SIGSTOP))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	ctx := context.Background()
	for i := range 60 {
		must(t, k8s.Create(ctx, stuck.message(fmt.Sprintf("stuck-%02d", i), fmt.Sprint(40000+i), ddpushv1.KindGeneral)))
	}
	// Let the stuck messages fill the queue first.
	eventually(t, 30*time.Second, "stuck messages tried", func() error {
		pm := getPM(t, stuck.ns, "stuck-59")
		if pm.Status.Phase == "" {
			return fmt.Errorf("stuck-59 not reconciled yet")
		}
		return nil
	})

	pm := live.message("live", "30001", ddpushv1.KindCustom)
	pm.Spec.Data = "still here"
	must(t, k8s.Create(ctx, pm))
	expectCustom(t, p, "still here")
	waitPhase(t, live.ns, "live", ddpushv1.PhaseDelivered)

	// The stopped node's messages are still open, not failed for it.
	for _, name := range []string{"stuck-00", "stuck-59"} {
		got := getPM(t, stuck.ns, name)
		if got.Status.Phase.Finished() {
			t.Errorf("%s ended %s (%s) while its node was only stopped", name, got.Status.Phase, got.Status.Message)
		}
	}
	// Back: they are delivered (the node answers; no phone is online, so
	// they wait Queued).
	must(t, syscall.Kill(pid, syscall.SIGCONT))
	eventually(t, 90*time.Second, "stuck messages accepted once the node answers", func() error {
		got := getPM(t, stuck.ns, "stuck-59")
		if got.Status.Phase != ddpushv1.PhaseQueued {
			return fmt.Errorf("phase %q (%s)", got.Status.Phase, got.Status.Message)
		}
		return nil
	})
}
