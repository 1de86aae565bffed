package builders

import (
	"fmt"

	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// PodDisruptionBudgetName is the name of a PushNode's PodDisruptionBudget.
func PodDisruptionBudgetName(pn *ddpushv1.PushNode) string { return pn.Name }

// PodDisruptionBudgetBuilder builds the PodDisruptionBudget of a sharded
// PushNode. Each pod is the only home of its slots: while it is away, the
// pushes to its uuids are refused. Draining nodes one pod at a time keeps
// that to one share of the uuids at once.
type PodDisruptionBudgetBuilder struct{ PN *ddpushv1.PushNode }

func (b *PodDisruptionBudgetBuilder) Object() client.Object {
	return &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: PodDisruptionBudgetName(b.PN), Namespace: b.PN.Namespace}}
}

func (b *PodDisruptionBudgetBuilder) Update(obj client.Object) error {
	pdb, ok := obj.(*policyv1.PodDisruptionBudget)
	if !ok {
		return fmt.Errorf("PodDisruptionBudgetBuilder got %T", obj)
	}
	setMeta(pdb, b.PN)
	one := intstr.FromInt32(1)
	pdb.Spec.MaxUnavailable = &one
	pdb.Spec.MinAvailable = nil
	pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: SelectorLabels(b.PN)}
	// A pod that is down already serves nothing: evicting it must not
	// wait for it to come back (which would hang a drain of its node).
	pdb.Spec.UnhealthyPodEvictionPolicy = ptr.To(policyv1.AlwaysAllow)
	return nil
}
