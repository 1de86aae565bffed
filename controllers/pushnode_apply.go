package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// ReasonResourceConflict is the reason of a Degraded condition and a
// Warning event when an object the PushNode needs exists and belongs to
// someone else.
const ReasonResourceConflict = "ResourceConflict"

// errBeingDeleted says the object is going away (a StatefulSet replaced
// for a new volume size): it is created again once it is gone.
var errBeingDeleted = errors.New("being deleted")

// conflictError says an object with the name the PushNode needs exists and
// is not controlled by it.
type conflictError struct {
	kind, namespace, name string
	owner                 string
}

func (e *conflictError) Error() string {
	return fmt.Sprintf("%s %s/%s already exists and is not controlled by this PushNode (%s); "+
		"the operator leaves it untouched: delete or rename it, or give the PushNode another name",
		e.kind, e.namespace, e.name, e.owner)
}

func describeController(obj client.Object) string {
	if ref := metav1.GetControllerOf(obj); ref != nil {
		return fmt.Sprintf("its controller is %s %s", ref.Kind, ref.Name)
	}
	return "it has no controller"
}

// apply creates or updates the object of b. Unlike
// controllerutil.CreateOrUpdate it never takes over an object it does not
// control: such an object is left as it is and a *conflictError returned.
// The cache holds only objects carrying the operator's label, so an object
// the cache does not have is looked up once on the API server before
// being created.
func (r *PushNodeReconciler) apply(ctx context.Context, pn *ddpushv1.PushNode, b builders.Builder) (controllerutil.OperationResult, error) {
	obj := b.Object()
	key := client.ObjectKeyFromObject(obj)
	err := r.Client.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) && r.APIReader != nil {
		err = r.APIReader.Get(ctx, key, obj)
	}
	if apierrors.IsNotFound(err) {
		if err := r.mutate(pn, b, obj); err != nil {
			return controllerutil.OperationResultNone, err
		}
		// AlreadyExists here is a race with another writer: the reconcile
		// starts over and looks at what is there.
		if err := r.Client.Create(ctx, obj); err != nil {
			return controllerutil.OperationResultNone, err
		}
		return controllerutil.OperationResultCreated, nil
	}
	if err != nil {
		return controllerutil.OperationResultNone, err
	}
	if !metav1.IsControlledBy(obj, pn) {
		return controllerutil.OperationResultNone, r.conflict(obj, describeController(obj))
	}
	if !obj.GetDeletionTimestamp().IsZero() {
		return controllerutil.OperationResultNone, errBeingDeleted
	}
	existing := obj.DeepCopyObject()
	if err := r.mutate(pn, b, obj); err != nil {
		return controllerutil.OperationResultNone, err
	}
	if equality.Semantic.DeepEqual(existing, obj) {
		return controllerutil.OperationResultNone, nil
	}
	if err := r.Client.Update(ctx, obj); err != nil {
		return controllerutil.OperationResultNone, err
	}
	return controllerutil.OperationResultUpdated, nil
}

func (r *PushNodeReconciler) mutate(pn *ddpushv1.PushNode, b builders.Builder, obj client.Object) error {
	if err := b.Update(obj); err != nil {
		return err
	}
	return controllerutil.SetControllerReference(pn, obj, r.Scheme)
}

func (r *PushNodeReconciler) conflict(obj client.Object, owner string) *conflictError {
	kind := ""
	if gvk, err := apiutil.GVKForObject(obj, r.Scheme); err == nil {
		kind = gvk.Kind
	} else {
		kind = strings.TrimPrefix(fmt.Sprintf("%T", obj), "*")
	}
	return &conflictError{kind: kind, namespace: obj.GetNamespace(), name: obj.GetName(), owner: owner}
}
