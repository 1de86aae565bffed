package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// storageClass creates a storage class for one test.
func storageClass(t *testing.T, expandable bool) string {
	t.Helper()
	sc := &storagev1.StorageClass{Provisioner: "example.test/disk", AllowVolumeExpansion: ptr.To(expandable)}
	sc.GenerateName = "test-"
	must(t, k8s.Create(context.Background(), sc))
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), sc) })
	return sc.Name
}

// boundClaim plays the StatefulSet controller and the provisioner, which
// envtest does not run: the data claim of pod 0, bound.
func boundClaim(t *testing.T, ns, pn, class, size string) {
	t.Helper()
	ctx := context.Background()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: builders.VolumeData + "-" + pn + "-0"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To(class),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
	must(t, k8s.Create(ctx, pvc))
	pvc.Status.Phase = corev1.ClaimBound
	pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}
	must(t, k8s.Status().Update(ctx, pvc))
}

func claimSize(t *testing.T, ns, pn string) resource.Quantity {
	t.Helper()
	var pvc corev1.PersistentVolumeClaim
	must(t, k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: builders.VolumeData + "-" + pn + "-0"}, &pvc))
	return pvc.Spec.Resources.Requests[corev1.ResourceStorage]
}

func templateSize(sts *appsv1.StatefulSet) resource.Quantity {
	return sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]
}

func degraded(t *testing.T, ns, name string) *metav1.Condition {
	t.Helper()
	return meta.FindStatusCondition(getPN(t, ns, name).Status.Conditions, controllers.ConditionDegraded)
}

// finishOrphanDeletion plays the garbage collector, which envtest does not
// run: a StatefulSet deleted with orphan propagation goes once its
// dependents are orphaned.
func finishOrphanDeletion(t *testing.T, ns, name string, uid types.UID) {
	t.Helper()
	ctx := context.Background()
	eventually(t, 20*time.Second, "StatefulSet deleted with orphan propagation", func() error {
		var sts appsv1.StatefulSet
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &sts); err != nil {
			return err
		}
		if sts.UID != uid {
			return fmt.Errorf("another StatefulSet")
		}
		if sts.DeletionTimestamp.IsZero() || !slices.Contains(sts.Finalizers, metav1.FinalizerOrphanDependents) {
			return fmt.Errorf("not being deleted with orphan propagation: deletion %v finalizers %v", sts.DeletionTimestamp, sts.Finalizers)
		}
		sts.Finalizers = nil
		return k8s.Update(ctx, &sts)
	})
}

// A larger size grows the claims, then the StatefulSet is replaced so that
// its claim template (immutable) has the new size too; the pods and claims
// are orphaned, not deleted.
func TestPushNodeStorageGrowthReachesClaimsAndTemplate(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	class := storageClass(t, true)
	pn := newPushNode(ns, "grow")
	pn.Spec.Storage.StorageClassName = ptr.To(class)
	must(t, k8s.Create(ctx, pn))
	var sts appsv1.StatefulSet
	eventually(t, 20*time.Second, "statefulset", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "grow"}, &sts)
	})
	boundClaim(t, ns, "grow", class, "1Gi")

	updatePN(t, ns, "grow", func(pn *ddpushv1.PushNode) { pn.Spec.Storage.Size = ptr.To(resource.MustParse("3Gi")) })
	eventually(t, 20*time.Second, "claim grown", func() error {
		if got := claimSize(t, ns, "grow"); got.Cmp(resource.MustParse("3Gi")) != 0 {
			return fmt.Errorf("claim %s", got.String())
		}
		return nil
	})
	finishOrphanDeletion(t, ns, "grow", sts.UID)
	eventually(t, 20*time.Second, "StatefulSet created again with the new template", func() error {
		var again appsv1.StatefulSet
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "grow"}, &again); err != nil {
			return err
		}
		if again.UID == sts.UID {
			return fmt.Errorf("still the old StatefulSet")
		}
		if got := templateSize(&again); got.Cmp(resource.MustParse("3Gi")) != 0 {
			return fmt.Errorf("template %s", got.String())
		}
		return nil
	})
	eventually(t, 20*time.Second, "not degraded", func() error {
		if c := degraded(t, ns, "grow"); c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("Degraded %+v", c)
		}
		return nil
	})
	// Settled: no further replacement.
	var settled appsv1.StatefulSet
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "grow"}, &settled))
	time.Sleep(2 * time.Second)
	var later appsv1.StatefulSet
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "grow"}, &later))
	if later.UID != settled.UID || !later.DeletionTimestamp.IsZero() {
		t.Errorf("StatefulSet replaced again once settled")
	}
}

// A shrink is judged against the claims themselves: a claim grown beyond
// the template (by hand, or by an earlier change) is not shrunk, and the
// message names it.
func TestPushNodeStorageShrinkIsJudgedAgainstClaims(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	class := storageClass(t, true)
	pn := newPushNode(ns, "shrink")
	pn.Spec.Storage.StorageClassName = ptr.To(class)
	must(t, k8s.Create(ctx, pn))
	var sts appsv1.StatefulSet
	eventually(t, 20*time.Second, "statefulset", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "shrink"}, &sts)
	})
	// The template says 1Gi; the claim is 5Gi.
	boundClaim(t, ns, "shrink", class, "5Gi")
	updatePN(t, ns, "shrink", func(pn *ddpushv1.PushNode) { pn.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi")) })
	eventually(t, 20*time.Second, "shrink refused", func() error {
		c := degraded(t, ns, "shrink")
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != controllers.ReasonStorageShrinkRefused ||
			!strings.Contains(c.Message, "data-shrink-0") || !strings.Contains(c.Message, "5Gi") || !strings.Contains(c.Message, "cannot shrink") {
			return fmt.Errorf("Degraded %+v", c)
		}
		return nil
	})
	if got := claimSize(t, ns, "shrink"); got.Cmp(resource.MustParse("5Gi")) != 0 {
		t.Errorf("claim changed to %s", got.String())
	}
	var still appsv1.StatefulSet
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "shrink"}, &still))
	if still.UID != sts.UID || !still.DeletionTimestamp.IsZero() {
		t.Errorf("StatefulSet replaced although the size was refused")
	}
	// Back to the claim's size: accepted, and the template follows.
	updatePN(t, ns, "shrink", func(pn *ddpushv1.PushNode) { pn.Spec.Storage.Size = ptr.To(resource.MustParse("5Gi")) })
	finishOrphanDeletion(t, ns, "shrink", sts.UID)
	eventually(t, 20*time.Second, "template follows", func() error {
		var again appsv1.StatefulSet
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "shrink"}, &again); err != nil {
			return err
		}
		if got := templateSize(&again); got.Cmp(resource.MustParse("5Gi")) != 0 {
			return fmt.Errorf("template %s", got.String())
		}
		if c := degraded(t, ns, "shrink"); c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("Degraded %+v", c)
		}
		return nil
	})
}

// A storage class that cannot expand: the claim stays, the reason is
// given, and the StatefulSet is not replaced.
func TestPushNodeStorageExpansionRefusedByClass(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	class := storageClass(t, false)
	pn := newPushNode(ns, "fixed")
	pn.Spec.Storage.StorageClassName = ptr.To(class)
	must(t, k8s.Create(ctx, pn))
	var sts appsv1.StatefulSet
	eventually(t, 20*time.Second, "statefulset", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "fixed"}, &sts)
	})
	boundClaim(t, ns, "fixed", class, "1Gi")
	must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pn := getPN(t, ns, "fixed")
		pn.Spec.Storage.Size = ptr.To(resource.MustParse("2Gi"))
		return k8s.Update(ctx, pn)
	}))
	eventually(t, 20*time.Second, "expansion failed", func() error {
		c := degraded(t, ns, "fixed")
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != controllers.ReasonStorageExpansionFailed ||
			!strings.Contains(c.Message, "data-fixed-0") {
			return fmt.Errorf("Degraded %+v", c)
		}
		return nil
	})
	if got := claimSize(t, ns, "fixed"); got.Cmp(resource.MustParse("1Gi")) != 0 {
		t.Errorf("claim changed to %s", got.String())
	}
	var still appsv1.StatefulSet
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "fixed"}, &still))
	if still.UID != sts.UID || !still.DeletionTimestamp.IsZero() {
		t.Errorf("StatefulSet replaced although its claims could not grow")
	}
}
