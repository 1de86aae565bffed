package controllers

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;delete

// reconcileNetworkPolicy keeps the node pods' NetworkPolicy when it is
// enabled and deletes the one it owns when it is not.
func (r *PushNodeReconciler) reconcileNetworkPolicy(ctx context.Context, pn *ddpushv1.PushNode) []problem {
	opts := r.Builders.NetworkPolicy
	b := &builders.NetworkPolicyBuilder{PN: pn, Opts: opts}
	if builders.NetworkPolicyEnabled(pn, opts) {
		// Through apply, like every other owned object: a NetworkPolicy of
		// that name that this PushNode does not control is left alone.
		_, err := r.apply(ctx, pn, b)
		if conflict := (*conflictError)(nil); errors.As(err, &conflict) {
			r.Recorder.Eventf(pn, nil, corev1.EventTypeWarning, ReasonResourceConflict, "Apply", "%s", conflict.Error())
			return []problem{{ReasonResourceConflict, conflict.Error()}}
		}
		if err != nil && !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) && !errors.Is(err, errBeingDeleted) {
			return []problem{{"NetworkPolicyFailed", fmt.Sprintf("apply NetworkPolicy %s: %v", b.Object().GetName(), err)}}
		}
		return nil
	}
	var np networkingv1.NetworkPolicy
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: pn.Namespace, Name: builders.NetworkPolicyName(pn)}, &np)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil && !metav1.IsControlledBy(&np, pn) {
		return nil // someone else's: not ours to delete
	}
	if err == nil {
		err = r.Client.Delete(ctx, &np)
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return []problem{{"NetworkPolicyFailed", fmt.Sprintf("delete NetworkPolicy %s (spec.networkPolicy.enabled is false): %v", builders.NetworkPolicyName(pn), err)}}
	}
	return nil
}
