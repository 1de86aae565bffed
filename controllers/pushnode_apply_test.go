package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
)

// An object the PushNode needs that already exists and is not its own is
// left exactly as it is; the PushNode says so in its Degraded condition
// and a Warning event, and creates nothing that would use it.
func TestPushNodeRefusesObjectsItDoesNotControl(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		existing client.Object
	}{
		// Unlabelled, so not even in the operator's cache.
		{"unlabelled secret", &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "owned-api-token"},
			Data:       map[string][]byte{"token": []byte("someone else's")},
		}},
		// Carries the operator's label (so it is in the cache), but its
		// controller is someone else.
		{"configmap of another controller", &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "other-config",
				Labels: map[string]string{"app.kubernetes.io/managed-by": "ddpush-operator"},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: "boss",
					UID: "0b7d4c0e-0000-4000-8000-000000000001", Controller: ptrTo(true)}}},
			Data: map[string]string{"k": "v"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			must(t, k8s.Create(ctx, tc.existing))
			before := tc.existing.DeepCopyObject().(client.Object)
			must(t, k8s.Get(ctx, client.ObjectKeyFromObject(before), before))
			pnName := strings.TrimSuffix(strings.TrimSuffix(tc.existing.GetName(), "-api-token"), "-config")
			must(t, k8s.Create(ctx, newPushNode(ns, pnName)))

			eventually(t, 20*time.Second, "ResourceConflict", func() error {
				pn := getPN(t, ns, pnName)
				c := meta.FindStatusCondition(pn.Status.Conditions, controllers.ConditionDegraded)
				if c == nil || c.Status != metav1.ConditionTrue || c.Reason != controllers.ReasonResourceConflict {
					return fmt.Errorf("Degraded %+v", c)
				}
				if !strings.Contains(c.Message, tc.existing.GetName()) || !strings.Contains(c.Message, "not controlled by this PushNode") {
					return fmt.Errorf("message %q does not name the object", c.Message)
				}
				return nil
			})
			eventually(t, 20*time.Second, "Warning event", func() error {
				var evs eventsv1.EventList
				if err := k8s.List(ctx, &evs, client.InNamespace(ns)); err != nil {
					return err
				}
				for _, e := range evs.Items {
					if e.Regarding.Name == pnName && e.Type == corev1.EventTypeWarning && e.Reason == controllers.ReasonResourceConflict &&
						strings.Contains(e.Note, tc.existing.GetName()) {
						return nil
					}
				}
				return fmt.Errorf("no ResourceConflict event among %d", len(evs.Items))
			})
			// Give the operator time to do the wrong thing, then look.
			time.Sleep(time.Second)
			after := tc.existing.DeepCopyObject().(client.Object)
			must(t, k8s.Get(ctx, client.ObjectKeyFromObject(after), after))
			if after.GetResourceVersion() != before.GetResourceVersion() {
				t.Errorf("%s was written: resourceVersion %s -> %s, owners %+v, labels %v",
					after.GetName(), before.GetResourceVersion(), after.GetResourceVersion(), after.GetOwnerReferences(), after.GetLabels())
			}
			// Nothing that would mount it was created.
			err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: pnName}, &appsv1.StatefulSet{})
			if err == nil {
				t.Errorf("the StatefulSet was created although %s is not the PushNode's", tc.existing.GetName())
			}

			// Once the object is gone, the PushNode creates its own.
			must(t, k8s.Delete(ctx, after))
			eventually(t, 20*time.Second, "recovers", func() error {
				if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: pnName}, &appsv1.StatefulSet{}); err != nil {
					return err
				}
				own := tc.existing.DeepCopyObject().(client.Object)
				if err := k8s.Get(ctx, client.ObjectKeyFromObject(own), own); err != nil {
					return err
				}
				if ref := metav1.GetControllerOf(own); ref == nil || ref.Name != pnName || ref.Kind != "PushNode" {
					return fmt.Errorf("controller %+v", ref)
				}
				return nil
			})
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

// Keys removed from spec.labels and clientService.annotations leave the
// owned objects; keys others set stay.
func TestPushNodeRemovedLabelsLeaveOwnedObjects(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	pn := newPushNode(ns, "labelled")
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "push", "tier": "edge"}
	pn.Spec.ClientService.Annotations = map[string]string{"lb.example/kind": "udp", "lb.example/idle": "60"}
	must(t, k8s.Create(ctx, pn))
	key := types.NamespacedName{Namespace: ns, Name: "labelled-client"}
	var svc corev1.Service
	eventually(t, 20*time.Second, "client service", func() error { return k8s.Get(ctx, key, &svc) })
	// Someone else adds their own.
	svc.Labels["foreign"] = "kept"
	svc.Annotations["foreign.example/note"] = "kept"
	must(t, k8s.Update(ctx, &svc))

	updatePN(t, ns, "labelled", func(pn *ddpushv1.PushNode) {
		pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "push"}
		pn.Spec.ClientService.Annotations = map[string]string{"lb.example/kind": "udp"}
	})
	eventually(t, 20*time.Second, "removed keys leave", func() error {
		if err := k8s.Get(ctx, key, &svc); err != nil {
			return err
		}
		if _, ok := svc.Labels["tier"]; ok {
			return fmt.Errorf("label tier still there: %v", svc.Labels)
		}
		if _, ok := svc.Annotations["lb.example/idle"]; ok {
			return fmt.Errorf("annotation lb.example/idle still there: %v", svc.Annotations)
		}
		return nil
	})
	if svc.Labels["team"] != "push" || svc.Labels["foreign"] != "kept" || svc.Annotations["foreign.example/note"] != "kept" || svc.Annotations["lb.example/kind"] != "udp" {
		t.Errorf("labels %v annotations %v", svc.Labels, svc.Annotations)
	}
	// The StatefulSet is applied after the Services, possibly in a later
	// reconcile.
	eventually(t, 20*time.Second, "removed label leaves the StatefulSet", func() error {
		var sts appsv1.StatefulSet
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "labelled"}, &sts); err != nil {
			return err
		}
		if _, ok := sts.Labels["tier"]; ok {
			return fmt.Errorf("StatefulSet keeps label tier: %v", sts.Labels)
		}
		if _, ok := sts.Spec.Template.Labels["tier"]; ok {
			return fmt.Errorf("pod template keeps label tier: %v", sts.Spec.Template.Labels)
		}
		return nil
	})
}
