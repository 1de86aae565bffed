package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// Reasons of storage problems and events.
const (
	ReasonStorageShrinkRefused   = "StorageShrinkRefused"
	ReasonStorageExpansionFailed = "StorageExpansionFailed"
	ReasonStatefulSetRecreated   = "StatefulSetRecreated"
)

// reconcileStorage applies a storage size change the only way Kubernetes
// allows. Volume claim templates are immutable, so:
//   - a size smaller than an existing claim is refused (volumes cannot
//     shrink), judged against the claims themselves, not the template;
//   - a larger size is set on each existing claim (expansion, if the
//     storage class allows it);
//   - once every claim has the size, a template that still says another
//     size is replaced by deleting the StatefulSet with orphan propagation
//     (its pods and claims stay and keep running); the next reconcile
//     creates it again with the current template and it adopts them.
//
// The claims are read from the API server: they are not in the cache.
func (r *PushNodeReconciler) reconcileStorage(ctx context.Context, pn *ddpushv1.PushNode, sts *appsv1.StatefulSet) []problem {
	if sts == nil || len(sts.Spec.VolumeClaimTemplates) == 0 || !sts.DeletionTimestamp.IsZero() {
		return nil
	}
	want := *builders.Defaulted(pn).Spec.Storage.Size
	claims, probs := r.dataClaims(ctx, pn, sts)
	if len(probs) > 0 {
		return probs
	}
	for _, pvc := range claims {
		if have := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; have.Cmp(want) > 0 {
			probs = append(probs, problem{ReasonStorageShrinkRefused, fmt.Sprintf(
				"spec.storage.size %s is smaller than volume claim %s (%s): volumes cannot shrink; set it back to %s or larger",
				want.String(), pvc.Name, have.String(), have.String())})
		}
	}
	if len(probs) > 0 {
		return probs
	}
	for i := range claims {
		pvc := &claims[i]
		if have := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; have.Cmp(want) == 0 {
			continue
		}
		pvc.Spec.Resources.Requests[corev1.ResourceStorage] = want
		if err := r.Client.Update(ctx, pvc); err != nil {
			probs = append(probs, problem{ReasonStorageExpansionFailed, fmt.Sprintf(
				"grow volume claim %s to %s: %v (does its storage class allow volume expansion?)", pvc.Name, want.String(), err)})
		}
	}
	if len(probs) > 0 {
		return probs
	}
	template := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]
	if template.Cmp(want) == 0 {
		return nil
	}
	return r.recreateStatefulSet(ctx, pn, sts, template, want)
}

// dataClaims reads the data claims of the StatefulSet's pods that exist.
func (r *PushNodeReconciler) dataClaims(ctx context.Context, pn *ddpushv1.PushNode, sts *appsv1.StatefulSet) ([]corev1.PersistentVolumeClaim, []problem) {
	reader := r.APIReader
	if reader == nil {
		reader = r.Client
	}
	replicas := int32(1)
	if sts.Spec.Replicas != nil {
		replicas = *sts.Spec.Replicas
	}
	var claims []corev1.PersistentVolumeClaim
	var probs []problem
	for i := range int(replicas) {
		name := sts.Spec.VolumeClaimTemplates[0].Name + "-" + PodName(pn, i)
		var pvc corev1.PersistentVolumeClaim
		if err := reader.Get(ctx, types.NamespacedName{Namespace: pn.Namespace, Name: name}, &pvc); err != nil {
			if !apierrors.IsNotFound(err) {
				probs = append(probs, problem{ReasonStorageExpansionFailed, fmt.Sprintf("read volume claim %s: %v", name, err)})
			}
			continue
		}
		if pvc.Spec.Resources.Requests == nil {
			pvc.Spec.Resources.Requests = corev1.ResourceList{}
		}
		claims = append(claims, pvc)
	}
	return claims, probs
}

func (r *PushNodeReconciler) recreateStatefulSet(ctx context.Context, pn *ddpushv1.PushNode, sts *appsv1.StatefulSet, from, to resource.Quantity) []problem {
	err := r.Client.Delete(ctx, sts,
		client.PropagationPolicy(metav1.DeletePropagationOrphan),
		client.Preconditions{UID: &sts.UID, ResourceVersion: &sts.ResourceVersion})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return []problem{{ReasonStorageExpansionFailed, fmt.Sprintf(
			"replace StatefulSet %s to change its volume claim template from %s to %s: %v", sts.Name, from.String(), to.String(), err)}}
	}
	if err == nil {
		logf.FromContext(ctx).Info("recreating the StatefulSet for a new volume size; its pods and claims stay", "statefulset", sts.Name, "from", from.String(), "to", to.String())
		r.Recorder.Eventf(pn, sts, corev1.EventTypeNormal, ReasonStatefulSetRecreated, "RecreateStatefulSet",
			"StatefulSet %s deleted with its pods and volumes kept, to be created again with volume size %s (was %s)", sts.Name, to.String(), from.String())
	}
	return nil
}
