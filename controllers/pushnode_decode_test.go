package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

// settingsProperties are the properties of spec.settings in the CRD.
func settingsProperties(t *testing.T, crd *unstructured.Unstructured) map[string]any {
	t.Helper()
	versions, _, err := unstructured.NestedSlice(crd.Object, "spec", "versions")
	must(t, err)
	v := versions[0].(map[string]any)
	props, found, err := unstructured.NestedMap(v, "schema", "openAPIV3Schema", "properties", "spec", "properties", "settings", "properties")
	if err != nil || !found {
		t.Fatalf("settings schema: found %v, %v", found, err)
	}
	return props
}

func setSettingsProperties(t *testing.T, crd *unstructured.Unstructured, props map[string]any) {
	t.Helper()
	versions, _, err := unstructured.NestedSlice(crd.Object, "spec", "versions")
	must(t, err)
	v := versions[0].(map[string]any)
	must(t, unstructured.SetNestedMap(v, props, "schema", "openAPIV3Schema", "properties", "spec", "properties", "settings", "properties"))
	versions[0] = v
	must(t, unstructured.SetNestedSlice(crd.Object, versions, "spec", "versions"))
}

// changeCRD rewrites the PushNode CRD's settings schema.
func changeCRD(t *testing.T, change func(props map[string]any)) {
	t.Helper()
	ctx := context.Background()
	must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		crd := &unstructured.Unstructured{}
		crd.SetGroupVersionKind(crdGVK)
		if err := k8s.Get(ctx, types.NamespacedName{Name: "pushnodes.ddpush.dev"}, crd); err != nil {
			return err
		}
		props := settingsProperties(t, crd)
		change(props)
		setSettingsProperties(t, crd, props)
		return k8s.Update(ctx, crd)
	}))
}

// A PushNode stored with a duration the operator cannot read ("2 days",
// accepted by the string fields of earlier versions) cannot stop the
// operator: the field is gone from the schema, so the API server prunes it
// when reading, the seconds field takes its default, and the informer
// decodes the list. Every other PushNode is still reconciled.
func TestStoredUnreadableDurationCannotBreakTheInformer(t *testing.T) {
	ctx := context.Background()
	oldField := map[string]any{"type": "string"}
	// An earlier schema: onlineWindow was free text.
	changeCRD(t, func(p map[string]any) { p["onlineWindow"] = oldField })
	restored := false
	restore := func() {
		if !restored {
			changeCRD(t, func(p map[string]any) { delete(p, "onlineWindow") })
			restored = true
		}
	}
	t.Cleanup(restore)

	badNS, goodNS := namespace(t), namespace(t)
	bad := object(pushNodeGVK, badNS, "old", settings("onlineWindow", "2 days"))
	eventually(t, 20*time.Second, "old schema in force", func() error {
		if err := k8s.Create(ctx, bad.DeepCopy()); err != nil {
			return err
		}
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(pushNodeGVK)
		must(t, k8s.Get(ctx, types.NamespacedName{Namespace: badNS, Name: "old"}, got))
		if v, _, _ := unstructured.NestedString(got.Object, "spec", "settings", "onlineWindow"); v != "2 days" {
			must(t, k8s.Delete(ctx, got))
			eventually(t, 10*time.Second, "deleted", func() error {
				if err := k8s.Get(ctx, types.NamespacedName{Namespace: badNS, Name: "old"}, got); err == nil {
					return fmt.Errorf("still there")
				}
				return nil
			})
			return fmt.Errorf("onlineWindow not stored (%q): the API server still serves the current schema", v)
		}
		return nil
	})

	// The operator is upgraded: the current schema is back.
	restore()
	eventually(t, 20*time.Second, "stored field pruned on read", func() error {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(pushNodeGVK)
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: badNS, Name: "old"}, got); err != nil {
			return err
		}
		if _, found, _ := unstructured.NestedFieldNoCopy(got.Object, "spec", "settings", "onlineWindow"); found {
			return fmt.Errorf("onlineWindow still served")
		}
		return nil
	})
	// The typed list decodes.
	var list ddpushv1.PushNodeList
	must(t, k8s.List(ctx, &list))
	for _, pn := range list.Items {
		if pn.Namespace == badNS && (pn.Spec.Settings.OnlineWindowSeconds == nil || *pn.Spec.Settings.OnlineWindowSeconds != 60) {
			t.Errorf("old PushNode onlineWindowSeconds = %v, want the default 60", pn.Spec.Settings.OnlineWindowSeconds)
		}
	}

	startManager(t, &testLocator{})
	must(t, k8s.Create(ctx, newPushNode(goodNS, "fresh")))
	for _, key := range []types.NamespacedName{{Namespace: goodNS, Name: "fresh"}, {Namespace: badNS, Name: "old"}} {
		eventually(t, 20*time.Second, "reconciled "+key.String(), func() error {
			if err := k8s.Get(ctx, key, &appsv1.StatefulSet{}); err != nil {
				return err
			}
			if pn := getPN(t, key.Namespace, key.Name); pn.Status.ObservedGeneration != pn.Generation {
				return fmt.Errorf("status of generation %d, want %d", pn.Status.ObservedGeneration, pn.Generation)
			}
			return nil
		})
	}
}
