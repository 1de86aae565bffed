package controllers_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// startManagerWithBuilders runs the controllers with the given builder options.
func startManagerWithBuilders(t *testing.T, opts builders.Options) {
	t.Helper()
	startManagerOpts(t, cfg, &testLocator{}, nil, func(o *controllers.Options) { o.Builders = opts })
}

func TestPushNodeNetworkPolicy(t *testing.T) {
	startManagerWithBuilders(t, builders.Options{
		DefaultImage:  "example.test/pushnode:test",
		NetworkPolicy: builders.NetworkPolicyOptions{Enabled: true, OperatorNamespace: "ddpush-system", AllowedNamespaces: []string{"monitoring"}},
	})
	ns := namespace(t)
	ctx := context.Background()
	pn := newPushNode(ns, "guarded")
	pn.Spec.NetworkPolicy = &ddpushv1.NetworkPolicySpec{AllowedNamespaces: []string{"apps"}}
	must(t, k8s.Create(ctx, pn))

	key := types.NamespacedName{Namespace: ns, Name: "guarded"}
	var np networkingv1.NetworkPolicy
	eventually(t, 20*time.Second, "NetworkPolicy", func() error { return k8s.Get(ctx, key, &np) })
	refs := np.OwnerReferences
	if len(refs) != 1 || refs[0].Kind != "PushNode" || refs[0].Name != "guarded" || !ptr.Deref(refs[0].Controller, false) {
		t.Errorf("owner references %+v", refs)
	}
	got := np.Spec.Ingress[1].From[0].NamespaceSelector.MatchExpressions[0].Values
	if want := []string{"apps", "ddpush-system", "monitoring", ns}; !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("allowed namespaces %v, want %v", got, want)
	}

	// Someone loosens it: the operator puts it back.
	np.Spec.Ingress = nil
	must(t, k8s.Update(ctx, &np))
	eventually(t, 20*time.Second, "repaired", func() error {
		if err := k8s.Get(ctx, key, &np); err != nil {
			return err
		}
		if len(np.Spec.Ingress) != 2 {
			return errors.New("still loosened")
		}
		return nil
	})

	// Turned off for this node: the operator deletes its policy.
	updatePN(t, ns, "guarded", func(pn *ddpushv1.PushNode) { pn.Spec.NetworkPolicy.Enabled = ptr.To(false) })
	eventually(t, 20*time.Second, "deleted", func() error {
		err := k8s.Get(ctx, key, &networkingv1.NetworkPolicy{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return errors.New("NetworkPolicy still there")
	})
}

// With the operator's default off and no say in the spec, there is none.
func TestPushNodeWithoutNetworkPolicy(t *testing.T) {
	startManagerWithBuilders(t, builders.Options{DefaultImage: "example.test/pushnode:test"})
	ns := namespace(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, newPushNode(ns, "open")))
	// The status is written after the policy step of a reconcile.
	eventually(t, 20*time.Second, "status", func() error {
		if pn := getPN(t, ns, "open"); pn.Status.ObservedGeneration != pn.Generation {
			return errors.New("not reconciled yet")
		}
		return nil
	})
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "open"}, &networkingv1.NetworkPolicy{}); !apierrors.IsNotFound(err) {
		t.Fatalf("NetworkPolicy: %v, want none", err)
	}
}
