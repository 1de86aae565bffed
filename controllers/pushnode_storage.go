package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// reconcileStorage applies a storage size change the only way Kubernetes
// allows: volume claim templates are immutable, so a larger size is set
// on each existing claim (expansion), and a smaller one is refused.
func (r *PushNodeReconciler) reconcileStorage(ctx context.Context, pn *ddpushv1.PushNode, sts *appsv1.StatefulSet) []problem {
	if sts == nil || len(sts.Spec.VolumeClaimTemplates) == 0 {
		return nil
	}
	want := builders.Defaulted(pn).Spec.Storage.Size
	have := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]
	switch want.Cmp(have) {
	case 0:
		return nil
	case -1:
		return []problem{{"StorageShrinkRefused", fmt.Sprintf(
			"spec.storage.size %s is smaller than the existing volumes (%s): volumes cannot shrink; set it back to %s or larger",
			want.String(), have.String(), have.String())}}
	}
	var probs []problem
	replicas := int32(1)
	if sts.Spec.Replicas != nil {
		replicas = *sts.Spec.Replicas
	}
	for i := range int(replicas) {
		name := builders.VolumeData + "-" + PodName(pn, i)
		var pvc corev1.PersistentVolumeClaim
		if err := r.Client.Get(ctx, types.NamespacedName{Namespace: pn.Namespace, Name: name}, &pvc); err != nil {
			if !apierrors.IsNotFound(err) {
				probs = append(probs, problem{"StorageExpansionFailed", fmt.Sprintf("read claim %s: %v", name, err)})
			}
			continue
		}
		cur := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		if cur.Cmp(want) >= 0 {
			continue
		}
		pvc.Spec.Resources.Requests[corev1.ResourceStorage] = want
		if err := r.Client.Update(ctx, &pvc); err != nil {
			probs = append(probs, problem{"StorageExpansionFailed", fmt.Sprintf(
				"grow claim %s to %s: %v (does its storage class allow volume expansion?)", name, want.String(), err)})
		}
	}
	return probs
}
