package main

import (
	"context"
	"log"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// runProvisioner gives every pending claim a hostPath PersistentVolume,
// pre-bound to it through claimRef, of the requested size and the claim's
// storage class, at .localcluster/volumes/<namespace>/<claim>, with
// reclaim policy Retain. kube-controller-manager's
// persistentvolume-binder-controller does the binding. The directory
// stays when the claim is deleted, and a new claim of the same name finds
// the old data there.
func runProvisioner(ctx context.Context, r *runner) {
	factory := informers.NewSharedInformerFactory(r.cs, 30*time.Second) // the resync retries failures
	inf := factory.Core().V1().PersistentVolumeClaims().Informer()
	handle := func(obj any) {
		if pvc, ok := obj.(*corev1.PersistentVolumeClaim); ok {
			r.provision(ctx, pvc)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
	}); err != nil {
		log.Printf("provisioner: %v", err)
		return
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
}

func (r *runner) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim) {
	if pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending || pvc.DeletionTimestamp != nil {
		return
	}
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		r.rec.Event(pvc, corev1.EventTypeWarning, "ProvisioningFailed", "block volumes are not supported by the local cluster")
		return
	}
	name := "pvc-" + string(pvc.UID)
	if _, err := r.cs.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{}); err == nil {
		return // made already; the binder has not caught up
	}
	dir := r.l.volume(pvc.Namespace, pvc.Name)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		r.rec.Eventf(pvc, corev1.EventTypeWarning, "ProvisioningFailed", "create %s: %v", dir, err)
		return
	}
	class := ""
	if pvc.Spec.StorageClassName != nil {
		class = *pvc.Spec.StorageClassName
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	hostPathType := corev1.HostPathDirectoryOrCreate
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "localcluster"},
			Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": "localcluster"},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			VolumeMode:                    pvc.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{
				APIVersion: "v1", Kind: "PersistentVolumeClaim",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostPathType},
			},
		},
	}
	if _, err := r.cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		if !apierrors.IsAlreadyExists(err) && ctx.Err() == nil {
			r.rec.Eventf(pvc, corev1.EventTypeWarning, "ProvisioningFailed", "create PersistentVolume %s: %v", name, err)
		}
		return
	}
	log.Printf("provisioned %s for claim %s/%s at %s", name, pvc.Namespace, pvc.Name, dir)
	r.rec.Eventf(pvc, corev1.EventTypeNormal, "ProvisioningSucceeded", "hostPath volume %s at %s", name, dir)
}
