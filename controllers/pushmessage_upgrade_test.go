package controllers_test

import (
	"context"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// PushMessages written by an operator whose CRD kept conditions as a list
// keyed by type (and a Submitted condition) take status writes once the
// CRD makes the list atomic: the apiserver turns their field ownership
// over to the whole list on the next write. This is the upgrade every
// existing open message goes through.
func TestPushMessageConditionsUpgradeFromKeyedList(t *testing.T) {
	ctx := context.Background()
	// A scheme of its own: adding to the shared one would race with the
	// decoders of managers still stopping from earlier tests.
	s := runtime.NewScheme()
	must(t, ddpushv1.AddToScheme(s))
	must(t, apiextensionsv1.AddToScheme(s))
	c, err := client.New(cfg, client.Options{Scheme: s})
	must(t, err)
	setType := func(lt string) {
		var crd apiextensionsv1.CustomResourceDefinition
		must(t, c.Get(ctx, types.NamespacedName{Name: "pushmessages.ddpush.dev"}, &crd))
		st := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["status"]
		cond := st.Properties["conditions"]
		cond.XListType = &lt
		if lt == "map" {
			cond.XListMapKeys = []string{"type"}
		} else {
			cond.XListMapKeys = nil
		}
		st.Properties["conditions"] = cond
		crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["status"] = st
		must(t, c.Update(ctx, &crd))
		// The apiserver serves the new schema once the CRD is
		// established again; there is no condition that says a
		// schema change has reached the handler, so wait a moment.
		time.Sleep(3 * time.Second)
	}
	setType("map")
	t.Cleanup(func() { setType("atomic") })
	ns := namespace(t)
	pm := &ddpushv1.PushMessage{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "old"},
		Spec: ddpushv1.PushMessageSpec{PushNodeName: "x", UserID: "1", Kind: ddpushv1.KindGeneral}}
	must(t, c.Create(ctx, pm))
	meta.SetStatusCondition(&pm.Status.Conditions, metav1.Condition{Type: "Submitted", Status: "True", Reason: "Accepted", Message: "m"})
	meta.SetStatusCondition(&pm.Status.Conditions, metav1.Condition{Type: "Finished", Status: "False", Reason: "Sent", Message: "m"})
	pm.Status.Phase = ddpushv1.PhaseSent
	must(t, c.Status().Update(ctx, pm))
	setType("atomic")
	must(t, c.Get(ctx, client.ObjectKeyFromObject(pm), pm))
	meta.SetStatusCondition(&pm.Status.Conditions, metav1.Condition{Type: "Finished", Status: "True", Reason: "Delivered", Message: "done"})
	meta.SetStatusCondition(&pm.Status.Conditions, metav1.Condition{Type: "Delivered", Status: "True", Reason: "Acknowledged", Message: "done"})
	pm.Status.Phase = ddpushv1.PhaseDelivered
	if err := c.Status().Update(ctx, pm); err != nil {
		t.Fatalf("status update after the switch to atomic: %v", err)
	}
	must(t, c.Get(ctx, client.ObjectKeyFromObject(pm), pm))
	if pm.Status.Phase != ddpushv1.PhaseDelivered || !meta.IsStatusConditionTrue(pm.Status.Conditions, "Finished") ||
		!meta.IsStatusConditionTrue(pm.Status.Conditions, "Delivered") || !meta.IsStatusConditionTrue(pm.Status.Conditions, "Submitted") {
		t.Errorf("after the upgrade: phase %s, conditions %+v", pm.Status.Phase, pm.Status.Conditions)
	}
	for _, m := range pm.ManagedFields {
		if m.Subresource == "status" && strings.Contains(string(m.FieldsV1.Raw), `k:{`) {
			t.Errorf("status field ownership still keyed by condition type: %s", m.FieldsV1.Raw)
		}
	}
}
