package builders

import (
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// Keys removed from spec.labels, spec.annotations or
// clientService.annotations leave every owned object; keys others set stay.
func TestRemovedKeysLeaveOwnedObjects(t *testing.T) {
	pn := newPN()
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile", "tier": "edge"}
	pn.Spec.Annotations = map[string]string{"owner": "alice", "cost": "7"}
	pn.Spec.ClientService.Annotations = map[string]string{"lb.example/kind": "udp", "lb.example/idle": "60"}
	for _, b := range For(pn, Options{NewToken: func() (string, error) { return "t", nil }}) {
		obj := b.Object()
		if err := b.Update(obj); err != nil {
			t.Fatal(err)
		}
		// Someone else labels and annotates it too, with a key the
		// operator also manages on other objects.
		l, a := obj.GetLabels(), obj.GetAnnotations()
		l["foreign"], a["foreign"] = "kept", "kept"
		obj.SetLabels(l)
		obj.SetAnnotations(a)

		pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile"}
		pn.Spec.Annotations = map[string]string{"owner": "bob"}
		pn.Spec.ClientService.Annotations = map[string]string{"lb.example/kind": "udp"}
		if err := b.Update(obj); err != nil {
			t.Fatal(err)
		}
		name := obj.GetName()
		l, a = obj.GetLabels(), obj.GetAnnotations()
		if _, ok := l["tier"]; ok {
			t.Errorf("%s: removed label tier is still there: %v", name, l)
		}
		if l["team"] != "mobile" || l["foreign"] != "kept" || l[LabelInstance] != "edge" || l[LabelManagedBy] != ManagedByValue {
			t.Errorf("%s: labels %v", name, l)
		}
		if _, ok := a["cost"]; ok {
			t.Errorf("%s: removed annotation cost is still there: %v", name, a)
		}
		if a["owner"] != "bob" || a["foreign"] != "kept" {
			t.Errorf("%s: annotations %v", name, a)
		}
		if name == "edge-client" {
			if _, ok := a["lb.example/idle"]; ok {
				t.Errorf("%s: removed clientService annotation is still there: %v", name, a)
			}
			if a["lb.example/kind"] != "udp" {
				t.Errorf("%s: annotations %v", name, a)
			}
		}
		// Back to the first spec for the next object.
		pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile", "tier": "edge"}
		pn.Spec.Annotations = map[string]string{"owner": "alice", "cost": "7"}
		pn.Spec.ClientService.Annotations = map[string]string{"lb.example/kind": "udp", "lb.example/idle": "60"}
	}
}

// An object the operator labelled before it tracked its keys loses
// nothing: only keys it recorded are ever removed.
func TestUntrackedKeysAreKept(t *testing.T) {
	svc := &corev1.Service{}
	svc.Labels = map[string]string{"team": "old"}
	svc.Annotations = map[string]string{"owner": "old"}
	setManagedMeta(svc, map[string]string{"a": "1"}, nil)
	if svc.Labels["team"] != "old" || svc.Annotations["owner"] != "old" || svc.Labels["a"] != "1" {
		t.Errorf("labels %v annotations %v", svc.Labels, svc.Annotations)
	}
	if svc.Annotations[AnnotationManagedLabels] != "a" || svc.Annotations[AnnotationManagedAnnotations] != "" {
		t.Errorf("bookkeeping %v", svc.Annotations)
	}
	// A user annotation cannot overwrite the bookkeeping.
	setManagedMeta(svc, map[string]string{"b": "2"}, map[string]string{AnnotationManagedLabels: "team", "x": "y"})
	if _, ok := svc.Labels["a"]; ok || svc.Labels["team"] != "old" || svc.Labels["b"] != "2" {
		t.Errorf("labels %v", svc.Labels)
	}
	if svc.Annotations[AnnotationManagedLabels] != "b" || svc.Annotations[AnnotationManagedAnnotations] != "x" {
		t.Errorf("bookkeeping %v", svc.Annotations)
	}
	before := maps.Clone(svc.Annotations)
	setManagedMeta(svc, map[string]string{"b": "2"}, map[string]string{"x": "y"})
	if !maps.Equal(before, svc.Annotations) {
		t.Errorf("repeated apply changed annotations: %v -> %v", before, svc.Annotations)
	}
}
