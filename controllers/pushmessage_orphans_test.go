package controllers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/controllers/builders"
	"github.com/ddpush/ddpush-operator/node/nodetest"
)

func withDeletedGrace(d time.Duration) func(*controllers.Options) {
	return func(o *controllers.Options) { o.PushNodeDeletedGrace = d }
}

// deletePushNode deletes the fixture's PushNode and then what it owned,
// playing the garbage collector, which envtest does not run: a PushNode
// recreated under the same name must not find its predecessor's objects.
func (f *nodeFixture) deletePushNode(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	pn := getPN(t, f.ns, f.name)
	must(t, k8s.Delete(ctx, pn))
	eventually(t, 20*time.Second, "PushNode gone", func() error {
		err := k8s.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: f.name}, &ddpushv1.PushNode{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	om := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: f.ns, Name: name} }
	for _, o := range []client.Object{
		&corev1.ConfigMap{ObjectMeta: om(builders.ConfigMapName(pn))},
		&corev1.Secret{ObjectMeta: om(builders.SecretName(pn))},
		&corev1.Service{ObjectMeta: om(builders.HeadlessServiceName(pn))},
		&corev1.Service{ObjectMeta: om(builders.ClientServiceName(pn))},
		&corev1.Service{ObjectMeta: om(builders.InternalServiceName(pn))},
		&appsv1.StatefulSet{ObjectMeta: om(builders.StatefulSetName(pn))},
		&networkingv1.NetworkPolicy{ObjectMeta: om(builders.NetworkPolicyName(pn))},
	} {
		if err := k8s.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("delete %T %s: %v", o, o.GetName(), err)
		}
	}
}

// recreatePushNode creates the PushNode again and restarts its node on
// the same store with the new PushNode's token, as its pod would come
// back on the retained data volume.
func (f *nodeFixture) recreatePushNode(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	must(t, k8s.Create(ctx, newPushNode(f.ns, f.name)))
	pn := getPN(t, f.ns, f.name)
	var sec corev1.Secret
	eventually(t, 20*time.Second, "new token secret", func() error {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: builders.SecretName(pn)}, &sec); err != nil {
			return err
		}
		if !metav1.IsControlledBy(&sec, pn) {
			return fmt.Errorf("secret not controlled by the new PushNode yet")
		}
		return nil
	})
	if err := f.proc.Signal(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Logf("old node exited: %v", err)
	}
	tokenFile := filepath.Join(t.TempDir(), "operator-token")
	must(t, os.WriteFile(tokenFile, sec.Data["token"], 0o600))
	f.proc = nodetest.StartProcess(t, f.dataDir, "--api-token-file", tokenFile)
	f.loc.set(types.NamespacedName{Namespace: f.ns, Name: f.name}, "http://"+f.proc.HTTP)
	markReady(t, f.ns, f.name)
}

func TestDeletedPushNodeFailsItsOpenMessagesAfterGrace(t *testing.T) {
	loc := &testLocator{}
	startManagerOpts(t, cfg, loc, nil, withDeletedGrace(time.Second))
	f := startNode(t, loc)
	ctx := context.Background()

	open := f.message("open", "80001", ddpushv1.KindCustom)
	open.Spec.Data = "nobody is online"
	must(t, k8s.Create(ctx, open))
	waitPhase(t, f.ns, "open", ddpushv1.PhaseQueued)

	_ = f.phone(t, "80002")
	done := f.message("done", "80002", ddpushv1.KindGeneral)
	must(t, k8s.Create(ctx, done))
	doneBefore := waitPhase(t, f.ns, "done", ddpushv1.PhaseDelivered)

	// A message created before its PushNode is not orphaned: nothing was
	// pushed, it waits for the node to appear.
	early := f.message("early", "80003", ddpushv1.KindGeneral)
	early.Spec.PushNodeName = "not-yet"
	must(t, k8s.Create(ctx, early))

	f.deletePushNode(t)
	got := waitPhase(t, f.ns, "open", ddpushv1.PhaseFailed)
	st := got.Status
	if st.Reason != controllers.ReasonPushNodeDeleted || !strings.Contains(st.Message, `PushNode "node" was deleted`) {
		t.Errorf("failed as %s: %s", st.Reason, st.Message)
	}
	if st.CompletionTime == nil {
		t.Error("no completionTime: the TTL would never start")
	}
	if c := condition(st.Conditions, controllers.ConditionFinished); c != "True/Failed" {
		t.Errorf("Finished %s", c)
	}
	if c := condition(st.Conditions, controllers.ConditionDelivered); c != "False/"+controllers.ReasonPushNodeDeleted {
		t.Errorf("Delivered %s", c)
	}
	if st.PushID == 0 || st.SubmittedAt == nil {
		t.Errorf("the accepted push is not recorded: push id %d, submitted at %v", st.PushID, st.SubmittedAt)
	}

	// The delivered message was not evaluated again: not a single write.
	doneAfter := getPM(t, f.ns, "done")
	if doneAfter.ResourceVersion != doneBefore.ResourceVersion || doneAfter.Status.Phase != ddpushv1.PhaseDelivered {
		t.Errorf("finished message changed: %s -> %s, phase %s", doneBefore.ResourceVersion, doneAfter.ResourceVersion, doneAfter.Status.Phase)
	}
	eventually(t, 20*time.Second, "early message waits", func() error {
		pm := getPM(t, f.ns, "early")
		if pm.Status.Phase != ddpushv1.PhasePending || condition(pm.Status.Conditions, controllers.ConditionNodeAvailable) != "False/PushNodeNotFound" ||
			pm.Status.PushNodeMissingSince != nil {
			return fmt.Errorf("status %+v", pm.Status)
		}
		return nil
	})
}

func TestPushNodeRecreatedWithinGraceKeepsItsMessages(t *testing.T) {
	loc := &testLocator{}
	// Long enough that nothing but a bug fails the message meanwhile.
	startManagerOpts(t, cfg, loc, nil, withDeletedGrace(10*time.Minute))
	f := startNode(t, loc)
	ctx := context.Background()

	pm := f.message("survivor", "81001", ddpushv1.KindCustom)
	pm.Spec.Data = "still here"
	must(t, k8s.Create(ctx, pm))
	waitPhase(t, f.ns, "survivor", ddpushv1.PhaseQueued)

	f.deletePushNode(t)
	eventually(t, 20*time.Second, "message sees its node gone", func() error {
		pm := getPM(t, f.ns, "survivor")
		if pm.Status.PushNodeMissingSince == nil || condition(pm.Status.Conditions, controllers.ConditionNodeAvailable) != "False/PushNodeNotFound" {
			return fmt.Errorf("status %+v", pm.Status)
		}
		if pm.Status.Phase != ddpushv1.PhaseQueued {
			return fmt.Errorf("phase %s within the grace period", pm.Status.Phase)
		}
		return nil
	})

	f.recreatePushNode(t)
	eventually(t, 30*time.Second, "message back with its node", func() error {
		pm := getPM(t, f.ns, "survivor")
		if pm.Status.PushNodeMissingSince != nil || condition(pm.Status.Conditions, controllers.ConditionNodeAvailable) != "True/NodeAvailable" {
			return fmt.Errorf("status %+v", pm.Status)
		}
		return nil
	})
	// The node kept the push on its volume: the phone gets it and the
	// operator, following the new PushNode, sees the ack.
	p := f.phone(t, "81001")
	expectCustom(t, p, "still here")
	got := waitPhase(t, f.ns, "survivor", ddpushv1.PhaseDelivered)
	if got.Status.Reason != "Acknowledged" {
		t.Errorf("delivered as %s: %s", got.Status.Reason, got.Status.Message)
	}
}
