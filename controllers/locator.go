package controllers

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers/builders"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// Endpoint is one node pod's HTTP API.
type Endpoint struct {
	URL     string // e.g. http://10.0.0.7:8080
	Pod     string // the pod's name, for status and events
	Ordinal int    // the pod's ordinal in the StatefulSet
}

// NodeLocator is the one place that knows how to reach the pods of a
// PushNode.
type NodeLocator interface {
	// ForUUID returns the home pod of uuid: the pod owning its slot in
	// the PushNode's slot map (pod 0 without a map). Pushes go straight
	// there rather than through a pod that would relay them.
	ForUUID(ctx context.Context, pn *ddpushv1.PushNode, uuid string) (Endpoint, error)
	// Pod returns the pod with this ordinal.
	Pod(ctx context.Context, pn *ddpushv1.PushNode, ordinal int) (Endpoint, error)
	// PeerAddr is the host:port where the pod with this ordinal takes
	// peer links from the other pods; it goes into the slot map.
	PeerAddr(pn *ddpushv1.PushNode, ordinal int) string
}

// ErrNodeNotReachable says a pod has no address yet.
type ErrNodeNotReachable struct{ Reason string }

func (e *ErrNodeNotReachable) Error() string { return e.Reason }

// PodName is the pod of ordinal i.
func PodName(pn *ddpushv1.PushNode, i int) string {
	return builders.StatefulSetName(pn) + "-" + strconv.Itoa(i)
}

// replicasOf is the number of pods pn asks for.
func replicasOf(pn *ddpushv1.PushNode) int {
	if pn.Spec.Replicas == nil || *pn.Spec.Replicas < 1 {
		return 1
	}
	return int(*pn.Spec.Replicas)
}

// HomeOrdinal is the ordinal of the pod owning uuid (hex) in the slot
// map recorded in pn's status. A PushNode of one pod has no map: its pod
// owns every slot. A sharded one whose map is not recorded yet has no
// home for anything: the caller waits rather than guess.
func HomeOrdinal(pn *ddpushv1.PushNode, uuid string) (int, error) {
	if !builders.Sharded(pn) {
		return 0, nil
	}
	u, err := wire.ParseUUID(uuid)
	if err != nil {
		return 0, fmt.Errorf("uuid %q: %w", uuid, err)
	}
	sm := pn.Status.SlotMap
	if sm == nil {
		return 0, &ErrNodeNotReachable{fmt.Sprintf("PushNode %s has no slot map yet: the operator has not computed it", pn.Name)}
	}
	slot := int32(slotmap.Slot(u))
	for _, r := range sm.Ranges {
		if r.From <= slot && slot <= r.To {
			return int(r.Ordinal), nil
		}
	}
	return 0, fmt.Errorf("the slot map of PushNode %s (epoch %d) has no owner for slot %d", pn.Name, sm.Epoch, slot)
}

// homeEndpoint is ForUUID for any locator.
func homeEndpoint(ctx context.Context, l NodeLocator, pn *ddpushv1.PushNode, uuid string) (Endpoint, error) {
	o, err := HomeOrdinal(pn, uuid)
	if err != nil {
		return Endpoint{}, err
	}
	return l.Pod(ctx, pn, o)
}

// PodIPLocator reaches pods at their pod IP on the HTTP port, which works
// from inside the cluster and from a development machine whose pods run
// locally.
type PodIPLocator struct {
	Client client.Reader
	// PeerByPodIP puts pod IPs in slot maps instead of the pods' DNS
	// names, for clusters without cluster DNS (the local cluster). A pod
	// that comes back with another IP then gets a map of a new epoch.
	PeerByPodIP bool
}

func (l *PodIPLocator) ForUUID(ctx context.Context, pn *ddpushv1.PushNode, uuid string) (Endpoint, error) {
	return homeEndpoint(ctx, l, pn, uuid)
}

func (l *PodIPLocator) PeerAddr(pn *ddpushv1.PushNode, ordinal int) string {
	if l.PeerByPodIP {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var pod corev1.Pod
		if err := l.Client.Get(ctx, types.NamespacedName{Namespace: pn.Namespace, Name: PodName(pn, ordinal)}, &pod); err == nil && pod.Status.PodIP != "" {
			return net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(builders.PeerPort))
		}
		// No IP yet: the DNS name keeps the map valid until it has one.
	}
	return builders.PeerAddr(pn, ordinal)
}

func (l *PodIPLocator) Pod(ctx context.Context, pn *ddpushv1.PushNode, i int) (Endpoint, error) {
	var pod corev1.Pod
	name := PodName(pn, i)
	if err := l.Client.Get(ctx, types.NamespacedName{Namespace: pn.Namespace, Name: name}, &pod); err != nil {
		return Endpoint{}, &ErrNodeNotReachable{fmt.Sprintf("pod %s: %v", name, err)}
	}
	if pod.Status.PodIP == "" {
		return Endpoint{}, &ErrNodeNotReachable{fmt.Sprintf("pod %s has no IP yet", name)}
	}
	port := builders.Defaulted(pn).Spec.Ports.HTTP
	return Endpoint{URL: "http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))), Pod: name, Ordinal: i}, nil
}

// StaticLocator maps the pods of PushNodes to fixed endpoints: for
// running the manager against nodes it cannot reach by pod IP. Each
// PushNode has its pods' endpoints in ordinal order; an Endpoint's Pod
// and Ordinal are filled in when left empty.
type StaticLocator map[types.NamespacedName][]StaticPod

// StaticPod is one pod of a StaticLocator: its HTTP API and peer address.
type StaticPod struct {
	URL  string
	Peer string
}

func (l StaticLocator) ForUUID(ctx context.Context, pn *ddpushv1.PushNode, uuid string) (Endpoint, error) {
	return homeEndpoint(ctx, l, pn, uuid)
}

func (l StaticLocator) Pod(_ context.Context, pn *ddpushv1.PushNode, i int) (Endpoint, error) {
	pods := l[types.NamespacedName{Namespace: pn.Namespace, Name: pn.Name}]
	if i < 0 || i >= len(pods) {
		return Endpoint{}, &ErrNodeNotReachable{fmt.Sprintf("no endpoint configured for pod %d of %s/%s", i, pn.Namespace, pn.Name)}
	}
	return Endpoint{URL: pods[i].URL, Pod: PodName(pn, i), Ordinal: i}, nil
}

func (l StaticLocator) PeerAddr(pn *ddpushv1.PushNode, i int) string {
	pods := l[types.NamespacedName{Namespace: pn.Namespace, Name: pn.Name}]
	if i >= 0 && i < len(pods) && pods[i].Peer != "" {
		return pods[i].Peer
	}
	return builders.PeerAddr(pn, i)
}
