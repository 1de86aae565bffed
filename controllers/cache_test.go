package controllers_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// startCache starts a cache with the manager's options.
func startCache(t *testing.T, namespaces []string) cache.Cache {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache: controllers.CacheOptions(namespaces),
	})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	})
	syncCtx, syncCancel := context.WithTimeout(ctx, 20*time.Second)
	defer syncCancel()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		t.Fatal("cache did not sync")
	}
	return mgr.GetCache()
}

func secret(ns, name string, labels map[string]string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}, StringData: map[string]string{"k": "v"}}
}

// The manager's cache holds the operator's own objects only: an unlabelled
// Secret elsewhere in the cluster is not in its memory.
func TestCacheHoldsOnlyTheOperatorsObjects(t *testing.T) {
	ctx := context.Background()
	ours, other := namespace(t), namespace(t)
	owned := map[string]string{builders.LabelManagedBy: builders.ManagedByValue}
	must(t, k8s.Create(ctx, secret(ours, "mine", owned)))
	must(t, k8s.Create(ctx, secret(other, "foreign", nil)))
	must(t, k8s.Create(ctx, secret(other, "foreign-but-labelled", owned)))

	c := startCache(t, nil)
	// Reading a Secret starts its informer; it lists with the selector.
	eventually(t, 20*time.Second, "labelled secret cached", func() error {
		return c.Get(ctx, types.NamespacedName{Namespace: ours, Name: "mine"}, &corev1.Secret{})
	})
	if err := c.Get(ctx, types.NamespacedName{Namespace: other, Name: "foreign"}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("unlabelled Secret in another namespace: got %v, want NotFound from the cache", err)
	}
	var all corev1.SecretList
	must(t, c.List(ctx, &all))
	for _, s := range all.Items {
		if s.Labels[builders.LabelManagedBy] != builders.ManagedByValue {
			t.Errorf("cache holds %s/%s, which is not the operator's", s.Namespace, s.Name)
		}
	}
	var cms corev1.ConfigMapList
	must(t, c.List(ctx, &cms))
	for _, cm := range cms.Items {
		// Every namespace has kube-root-ca.crt: none may be cached.
		if cm.Labels[builders.LabelManagedBy] != builders.ManagedByValue {
			t.Errorf("cache holds ConfigMap %s/%s", cm.Namespace, cm.Name)
		}
	}

	// PodDisruptionBudgets, owned by sharded PushNodes, are filtered too.
	pdb := func(ns, name string, labels map[string]string) *policyv1.PodDisruptionBudget {
		one := intstr.FromInt32(1)
		return &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}}
	}
	must(t, k8s.Create(ctx, pdb(ours, "mine", owned)))
	must(t, k8s.Create(ctx, pdb(other, "foreign", nil)))
	eventually(t, 20*time.Second, "labelled budget cached", func() error {
		return c.Get(ctx, types.NamespacedName{Namespace: ours, Name: "mine"}, &policyv1.PodDisruptionBudget{})
	})
	var pdbs policyv1.PodDisruptionBudgetList
	must(t, c.List(ctx, &pdbs))
	for _, p := range pdbs.Items {
		if p.Labels[builders.LabelManagedBy] != builders.ManagedByValue {
			t.Errorf("cache holds PodDisruptionBudget %s/%s", p.Namespace, p.Name)
		}
	}

	// Namespace-scoped: a labelled Secret of another namespace is not
	// cached either.
	scoped := startCache(t, []string{ours})
	eventually(t, 20*time.Second, "scoped cache has ours", func() error {
		return scoped.Get(ctx, types.NamespacedName{Namespace: ours, Name: "mine"}, &corev1.Secret{})
	})
	var inScope corev1.SecretList
	must(t, scoped.List(ctx, &inScope))
	for _, s := range inScope.Items {
		if s.Namespace != ours {
			t.Errorf("namespace-scoped cache holds %s/%s", s.Namespace, s.Name)
		}
	}
	if len(inScope.Items) != 1 {
		t.Errorf("namespace-scoped cache holds %d Secrets, want 1", len(inScope.Items))
	}
}
