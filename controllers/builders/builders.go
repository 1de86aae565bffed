// Package builders turns a PushNode into the objects that run it. Each
// builder makes one object: Object returns it empty (name and namespace
// only) and Update brings an existing one to the desired state, touching
// only the fields the operator owns, so that controllerutil.CreateOrUpdate
// can run them in order. They are pure and tested without a cluster.
package builders

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// Builder builds one owned object.
type Builder interface {
	// Object is the object with only its name and namespace set.
	Object() client.Object
	// Update sets the desired state on obj, which is either new or the
	// object as it exists in the cluster.
	Update(obj client.Object) error
}

// Options are the operator-wide inputs of the builders.
type Options struct {
	// DefaultImage runs the node when the PushNode names none.
	DefaultImage string
	// NewToken makes the API token of a new Secret.
	NewToken func() (string, error)
	// NetworkPolicy are the operator-wide NetworkPolicy settings.
	NetworkPolicy NetworkPolicyOptions
}

// Names of the objects of a PushNode.
func ConfigMapName(pn *ddpushv1.PushNode) string       { return pn.Name + "-config" }
func SecretName(pn *ddpushv1.PushNode) string          { return pn.Name + "-api-token" }
func HeadlessServiceName(pn *ddpushv1.PushNode) string { return pn.Name + "-headless" }
func ClientServiceName(pn *ddpushv1.PushNode) string   { return pn.Name + "-client" }
func InternalServiceName(pn *ddpushv1.PushNode) string { return pn.Name + "-internal" }
func StatefulSetName(pn *ddpushv1.PushNode) string     { return pn.Name }

// TokenKey is the key of the API token in the Secret.
const TokenKey = "token"

// PeerTokenKey is the key, in the same Secret, of the secret the pods of a
// sharded PushNode authenticate each other with. It is not the API token,
// so that nothing that holds the API token (the operator, app servers)
// can pose as a pod, and so that each can be replaced alone.
const PeerTokenKey = "peer-token"

// Label keys.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelComponent = "app.kubernetes.io/component"
	// AnnotationSettingsHash in the pod template rolls the pods when the
	// node settings change.
	AnnotationSettingsHash = "ddpush.dev/settings-hash"
	// AnnotationTokenHash in the pod template rolls the pods when the API
	// token in the Secret is replaced.
	AnnotationTokenHash = "ddpush.dev/token-hash"
)

// Values of the operator's own labels. Every object the operator creates
// carries LabelManagedBy=ManagedByValue; its cache holds only those.
const (
	ManagedByValue = "ddpush-operator"
	ComponentValue = "push-node"
)

// SelectorLabels select the pods of a PushNode. They never change.
func SelectorLabels(pn *ddpushv1.PushNode) map[string]string {
	return map[string]string{LabelName: "pushnode", LabelInstance: pn.Name}
}

// Labels are put on every object of a PushNode.
func Labels(pn *ddpushv1.PushNode) map[string]string {
	l := ddpushv1.StringMap(pn.Spec.Labels)
	if l == nil {
		l = map[string]string{}
	}
	maps.Copy(l, SelectorLabels(pn))
	l[LabelManagedBy] = ManagedByValue
	l[LabelComponent] = ComponentValue
	return l
}

// Annotations on every owned object that list, comma-separated and
// sorted, the label and annotation keys the operator set on it. A key the
// operator set before and no longer wants is removed; keys others set are
// left alone.
const (
	AnnotationManagedLabels      = "ddpush.dev/managed-labels"
	AnnotationManagedAnnotations = "ddpush.dev/managed-annotations"
)

// syncKeys sets every key of want on current and removes the keys of
// previous (what the operator set last time) that want no longer has.
func syncKeys(current, want map[string]string, previous string) map[string]string {
	if current == nil {
		current = map[string]string{}
	}
	for _, k := range strings.Split(previous, ",") {
		if _, keep := want[k]; k != "" && !keep {
			delete(current, k)
		}
	}
	maps.Copy(current, want)
	return current
}

func joinKeys(m map[string]string) string {
	return strings.Join(slices.Sorted(maps.Keys(m)), ",")
}

// setManagedMeta gives obj the labels and annotations the operator wants
// on it, removing those it set before and no longer wants.
func setManagedMeta(obj client.Object, labels, annotations map[string]string) {
	ann := obj.GetAnnotations()
	obj.SetLabels(syncKeys(obj.GetLabels(), labels, ann[AnnotationManagedLabels]))
	desired := maps.Clone(annotations)
	if desired == nil {
		desired = map[string]string{}
	}
	delete(desired, AnnotationManagedLabels)
	delete(desired, AnnotationManagedAnnotations)
	ann = syncKeys(ann, desired, ann[AnnotationManagedAnnotations])
	ann[AnnotationManagedLabels] = joinKeys(labels)
	ann[AnnotationManagedAnnotations] = joinKeys(desired)
	obj.SetAnnotations(ann)
}

func setMeta(obj client.Object, pn *ddpushv1.PushNode) {
	setManagedMeta(obj, Labels(pn), pn.Spec.Annotations)
}

// For returns the builders of pn in the order they must run: settings
// and token before the StatefulSet that mounts them.
func For(pn *ddpushv1.PushNode, opt Options) []Builder {
	token := &TokenHash{}
	bs := []Builder{
		&ConfigMapBuilder{pn},
		&SecretBuilder{PN: pn, NewToken: opt.NewToken, Token: token},
		&HeadlessServiceBuilder{pn},
		&ClientServiceBuilder{pn},
		&InternalServiceBuilder{pn},
		&StatefulSetBuilder{PN: pn, DefaultImage: opt.DefaultImage, Token: token},
	}
	if Sharded(pn) {
		// replicas cannot change on an existing PushNode, so a budget is
		// never left behind by a PushNode that stopped being sharded.
		bs = append(bs, &PodDisruptionBudgetBuilder{pn})
	}
	return bs
}

// SettingsHash is a stable hash of a ConfigMap's data.
func SettingsHash(data map[string]string) string {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(data)) {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(data[k]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }
