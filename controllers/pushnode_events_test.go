package controllers_test

import (
	"context"
	"fmt"
	"k8s.io/utils/ptr"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
)

// eventsOf lists the events `kubectl describe` shows for an object: core
// v1 Events selected by the involved object's name and kind.
func eventsOf(ns, kind, name string) ([]corev1.Event, error) {
	var evs corev1.EventList
	sel := fields.SelectorFromSet(fields.Set{"involvedObject.name": name, "involvedObject.kind": kind})
	if err := k8s.List(context.Background(), &evs, client.InNamespace(ns), client.MatchingFieldsSelector{Selector: sel}); err != nil {
		return nil, err
	}
	return evs.Items, nil
}

// waitEvent waits for an event of type typ and reason on the PushNode
// whose note contains text, and returns it.
func waitEvent(t *testing.T, ns, name, typ, reason, text string) corev1.Event {
	t.Helper()
	var found corev1.Event
	eventually(t, 30*time.Second, typ+" event "+reason, func() error {
		evs, err := eventsOf(ns, "PushNode", name)
		if err != nil {
			return err
		}
		var seen []string
		for _, e := range evs {
			if e.Type == typ && e.Reason == reason && strings.Contains(e.Message, text) {
				found = e
				return nil
			}
			seen = append(seen, e.Type+"/"+e.Reason+": "+e.Message)
		}
		return fmt.Errorf("not among %q", seen)
	})
	return found
}

func TestPushNodeEventsOnStorageShrink(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	class := storageClass(t, true)
	pn := newPushNode(ns, "shrink")
	pn.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi"))
	pn.Spec.Storage.StorageClassName = ptr.To(class)
	must(t, k8s.Create(ctx, pn))
	eventually(t, 20*time.Second, "statefulset", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "shrink"}, &appsv1.StatefulSet{})
	})
	// A shrink is judged against the real claims: envtest runs no
	// StatefulSet controller, so the test makes the claim.
	boundClaim(t, ns, "shrink", class, "2Gi")
	updatePN(t, ns, "shrink", func(pn *ddpushv1.PushNode) { pn.Spec.Storage.Size = ptr.To(resource.MustParse("1Gi")) })
	e := waitEvent(t, ns, "shrink", corev1.EventTypeWarning, "StorageShrinkRefused", "cannot shrink")
	if e.Action != "ResizeStorage" || e.ReportingController == "" {
		t.Errorf("event action %q, reporting controller %q", e.Action, e.ReportingController)
	}
	// Setting it back clears the problem, and says so.
	updatePN(t, ns, "shrink", func(pn *ddpushv1.PushNode) { pn.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi")) })
	waitEvent(t, ns, "shrink", corev1.EventTypeNormal, controllers.EventRecovered, "")
}

// A quota that allows no ConfigMaps makes the first object the operator
// applies fail, as a real admission refusal does.
func TestPushNodeEventsOnApplyFailure(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	q := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "no-configmaps"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourceConfigMaps: resource.MustParse("0")}},
	}
	must(t, k8s.Create(ctx, q))
	// No quota controller runs here: report its usage as it would.
	q.Status = corev1.ResourceQuotaStatus{Hard: q.Spec.Hard, Used: corev1.ResourceList{corev1.ResourceConfigMaps: resource.MustParse("0")}}
	must(t, k8s.Status().Update(ctx, q))

	must(t, k8s.Create(ctx, newPushNode(ns, "refused")))
	e := waitEvent(t, ns, "refused", corev1.EventTypeWarning, "ApplyFailed", "refused-config")
	if e.Action != "Apply" || !strings.Contains(e.Message, "exceeded quota") {
		t.Errorf("event %s/%s: %s", e.Action, e.Reason, e.Message)
	}

	must(t, k8s.Delete(ctx, q))
	// A spec change reconciles at once, whatever the retry back-off is.
	updatePN(t, ns, "refused", func(pn *ddpushv1.PushNode) { pn.Spec.Settings.HeartbeatPolicy = "always" })
	waitEvent(t, ns, "refused", corev1.EventTypeNormal, controllers.EventRecovered, "")
	eventually(t, 20*time.Second, "configmap", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "refused-config"}, &corev1.ConfigMap{})
	})
}

func TestPushNodeEventsOnAvailabilityAndUnreachableAPI(t *testing.T) {
	// The locator knows no node process: the node's API cannot be read.
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, newPushNode(ns, "lonely")))
	markReady(t, ns, "lonely")
	waitEvent(t, ns, "lonely", corev1.EventTypeNormal, controllers.EventNodeAvailable, "1/1 node pods ready")
	waitEvent(t, ns, "lonely", corev1.EventTypeWarning, "NodeAPIUnreachable", "cannot read the node's status")

	// The pod stops being ready.
	must(t, updateStatefulSetStatus(ctx, ns, "lonely", func(sts *appsv1.StatefulSet) { sts.Status.ReadyReplicas, sts.Status.AvailableReplicas = 0, 0 }))
	waitEvent(t, ns, "lonely", corev1.EventTypeWarning, controllers.EventNodeUnavailable, "0/1 node pods ready")

	// Normal events stay few: one per transition, not one per reconcile.
	evs, err := eventsOf(ns, "PushNode", "lonely")
	must(t, err)
	for _, e := range evs {
		if e.Type == corev1.EventTypeNormal && (e.Count > 1 || e.Series != nil) {
			t.Errorf("Normal event %s repeated: count %d, series %+v", e.Reason, e.Count, e.Series)
		}
	}
}

func updateStatefulSetStatus(ctx context.Context, ns, name string, mutate func(*appsv1.StatefulSet)) error {
	var sts appsv1.StatefulSet
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &sts); err != nil {
		return err
	}
	mutate(&sts)
	return k8s.Status().Update(ctx, &sts)
}
