package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// Options configure the controllers.
type Options struct {
	Builders builders.Options
	// Locator finds node pods; nil means by pod IP.
	Locator NodeLocator
	// PeerByPodIP: with the default locator, slot maps name pods by IP
	// rather than DNS name (clusters without cluster DNS).
	PeerByPodIP bool
	// ConflictRetry is how often a PushNode blocked by an object it does
	// not control looks again (0: DefaultConflictRetry).
	ConflictRetry time.Duration
	// StatusRefresh is how often a ready PushNode's pods are looked at
	// when nothing else happens (0: StatusRefresh).
	StatusRefresh time.Duration
	// PushMessageWorkers is how many PushMessages are reconciled at once
	// (0: DefaultPushMessageWorkers).
	PushMessageWorkers int
	// PushNodeDeletedGrace is how long a submitted PushMessage outlives
	// its PushNode before it fails (0: DefaultPushNodeDeletedGrace).
	PushNodeDeletedGrace time.Duration
}

// DefaultPushMessageWorkers lets several submissions to nodes be in flight
// at once: each waits on a node's commit, so one worker would serialise
// every tenant behind the slowest node. Submissions are idempotent by the
// message's UID, and no two workers ever hold the same message.
const DefaultPushMessageWorkers = 8

// Setup registers both controllers, their indexes and the event
// followers with mgr.
func Setup(mgr ctrl.Manager, opt Options) error {
	if opt.Locator == nil {
		opt.Locator = &PodIPLocator{Client: mgr.GetClient(), PeerByPodIP: opt.PeerByPodIP}
	}
	if err := SetupIndexes(context.Background(), mgr); err != nil {
		return err
	}
	f := NewFollowers(mgr.GetClient(), opt.Locator, ctrl.Log.WithName("followers"))
	if err := mgr.Add(f); err != nil {
		return err
	}
	if err := (&PushNodeReconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Scheme: mgr.GetScheme(), Recorder: mgr.GetEventRecorder("pushnode-controller"),
		Builders: opt.Builders, Locator: opt.Locator, Followers: f, ConflictRetry: opt.ConflictRetry, StatusRefresh: opt.StatusRefresh,
	}).SetupWithManager(mgr); err != nil {
		return err
	}
	return (&PushMessageReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("pushmessage-controller"),
		Locator: opt.Locator, Followers: f, Workers: opt.PushMessageWorkers, PushNodeDeletedGrace: opt.PushNodeDeletedGrace,
	}).SetupWithManager(mgr)
}

// CacheOptions keep the manager's cache to the operator's own objects.
// Owning Secrets, ConfigMaps, Services and StatefulSets, and reading node
// Pods, would otherwise keep every such object of the cluster in memory:
// the cache holds only those carrying the managed-by label, which the
// operator puts on everything it creates (the pods get it from their
// template). Data volume claims are not cached at all: they are read from
// the API server when a size changes. With namespaces, only those are
// watched (a namespace-scoped install).
func CacheOptions(namespaces []string) cache.Options {
	owned := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{builders.LabelManagedBy: builders.ManagedByValue})}
	opts := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Secret{}:                owned,
		&corev1.ConfigMap{}:             owned,
		&corev1.Service{}:               owned,
		&corev1.Pod{}:                   owned,
		&appsv1.StatefulSet{}:           owned,
		&networkingv1.NetworkPolicy{}:   owned,
		&policyv1.PodDisruptionBudget{}: owned,
	}}
	if len(namespaces) > 0 {
		opts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			opts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return opts
}

// ParseNamespaces reads a comma-separated list of namespaces; empty means
// every namespace.
func ParseNamespaces(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, ns := range strings.Split(s, ",") {
		ns = strings.TrimSpace(ns)
		if ns == "" || seen[ns] {
			continue
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("namespace %q: %s", ns, strings.Join(errs, "; "))
		}
		seen[ns] = true
		out = append(out, ns)
	}
	return out, nil
}
