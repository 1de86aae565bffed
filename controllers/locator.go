package controllers

import (
	"context"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

// Endpoint is one node pod's HTTP API.
type Endpoint struct {
	URL string // e.g. http://10.0.0.7:8080
	Pod string // the pod's name, for status and events
}

// NodeLocator is the one place that knows which pod of a PushNode serves
// a uuid and how to reach it. Today there is one pod; when uuids are
// sharded across pods, only this changes.
type NodeLocator interface {
	// ForUUID returns the pod that owns uuid.
	ForUUID(ctx context.Context, pn *ddpushv1.PushNode, uuid string) (Endpoint, error)
	// All returns every pod of pn.
	All(ctx context.Context, pn *ddpushv1.PushNode) ([]Endpoint, error)
}

// ErrNodeNotReachable says a pod has no address yet.
type ErrNodeNotReachable struct{ Reason string }

func (e *ErrNodeNotReachable) Error() string { return e.Reason }

// PodIPLocator reaches pods at their pod IP on the HTTP port, which works
// from inside the cluster and from a development machine whose pods run
// locally.
type PodIPLocator struct{ Client client.Reader }

// PodName is the pod of ordinal i.
func PodName(pn *ddpushv1.PushNode, i int) string {
	return builders.StatefulSetName(pn) + "-" + strconv.Itoa(i)
}

func (l *PodIPLocator) ForUUID(ctx context.Context, pn *ddpushv1.PushNode, _ string) (Endpoint, error) {
	return l.pod(ctx, pn, 0)
}

func (l *PodIPLocator) All(ctx context.Context, pn *ddpushv1.PushNode) ([]Endpoint, error) {
	ep, err := l.pod(ctx, pn, 0)
	if err != nil {
		return nil, err
	}
	return []Endpoint{ep}, nil
}

func (l *PodIPLocator) pod(ctx context.Context, pn *ddpushv1.PushNode, i int) (Endpoint, error) {
	var pod corev1.Pod
	name := PodName(pn, i)
	if err := l.Client.Get(ctx, types.NamespacedName{Namespace: pn.Namespace, Name: name}, &pod); err != nil {
		return Endpoint{}, &ErrNodeNotReachable{fmt.Sprintf("pod %s: %v", name, err)}
	}
	if pod.Status.PodIP == "" {
		return Endpoint{}, &ErrNodeNotReachable{fmt.Sprintf("pod %s has no IP yet", name)}
	}
	port := builders.Defaulted(pn).Spec.Ports.HTTP
	return Endpoint{URL: "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))), Pod: name}, nil
}

// StaticLocator maps PushNodes to fixed endpoints: for tests, where a
// real node process stands in for the pod, and for running the manager
// against nodes it cannot reach by pod IP.
type StaticLocator map[types.NamespacedName]Endpoint

func (l StaticLocator) ForUUID(_ context.Context, pn *ddpushv1.PushNode, _ string) (Endpoint, error) {
	ep, ok := l[types.NamespacedName{Namespace: pn.Namespace, Name: pn.Name}]
	if !ok {
		return Endpoint{}, &ErrNodeNotReachable{fmt.Sprintf("no endpoint configured for %s/%s", pn.Namespace, pn.Name)}
	}
	return ep, nil
}

func (l StaticLocator) All(ctx context.Context, pn *ddpushv1.PushNode) ([]Endpoint, error) {
	ep, err := l.ForUUID(ctx, pn, "")
	if err != nil {
		return nil, err
	}
	return []Endpoint{ep}, nil
}
