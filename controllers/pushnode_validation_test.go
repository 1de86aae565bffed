package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ddpush/ddpush-operator/controllers/builders"
)

var (
	pushNodeGVK    = schema.GroupVersionKind{Group: "ddpush.dev", Version: "v1alpha1", Kind: "PushNode"}
	pushMessageGVK = schema.GroupVersionKind{Group: "ddpush.dev", Version: "v1alpha1", Kind: "PushMessage"}
)

// object is a custom resource written as the user would in YAML, so that
// values the Go types cannot hold (a string where a number goes) reach
// the API server.
func object(gvk schema.GroupVersionKind, ns, name string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(gvk)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

func settings(kv ...any) map[string]any {
	return map[string]any{"settings": pairs(kv...)}
}

func pairs(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// Every value the API server would store but the operator, the API server
// (on the owned objects) or the node would refuse later is refused when the
// PushNode is written, with a message that names the field.
func TestPushNodeAdmissionRefusesWhatWouldFailLater(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	long := func(n int) string { return strings.Repeat("a", n) }
	for _, tc := range []struct {
		name string
		obj  *unstructured.Unstructured
		want []string // all in the error; empty: accepted
	}{
		// The name is the StatefulSet's and the Services' prefix.
		{"name 52", object(pushNodeGVK, ns, long(52), nil), nil},
		{"name 53", object(pushNodeGVK, ns, long(53), nil), []string{"metadata.name", "at most 52 characters"}},
		{"name digit first", object(pushNodeGVK, ns, "1node", nil), []string{"metadata.name", "DNS-1035"}},
		{"name with dot", object(pushNodeGVK, ns, "a.b", nil), []string{"metadata.name", "DNS-1035"}},
		{"name one letter", object(pushNodeGVK, ns, "a", nil), nil},

		// Durations are whole seconds: a string is refused, not stored.
		{"onlineWindow as text", object(pushNodeGVK, ns, "x", settings("onlineWindowSeconds", "2 days")), []string{"spec.settings.onlineWindowSeconds", "integer"}},
		{"onlineWindow 0", object(pushNodeGVK, ns, "x", settings("onlineWindowSeconds", 0)), []string{"spec.settings.onlineWindowSeconds", "greater than or equal to 1"}},
		{"onlineWindow 1", object(pushNodeGVK, ns, "ow1", settings("onlineWindowSeconds", 1)), nil},
		{"onlineWindow 86400", object(pushNodeGVK, ns, "owmax", settings("onlineWindowSeconds", 86400)), nil},
		{"onlineWindow 86401", object(pushNodeGVK, ns, "x", settings("onlineWindowSeconds", 86401)), []string{"spec.settings.onlineWindowSeconds", "less than or equal to 86400"}},
		{"expiryAge -1", object(pushNodeGVK, ns, "x", settings("expiryAgeSeconds", -1)), []string{"spec.settings.expiryAgeSeconds", "greater than or equal to 0"}},
		{"expiryAge 0 keeps records", object(pushNodeGVK, ns, "ea0", settings("expiryAgeSeconds", 0)), nil},
		{"expiryAge above ten years", object(pushNodeGVK, ns, "x", settings("expiryAgeSeconds", 315360001)), []string{"spec.settings.expiryAgeSeconds", "less than or equal to 315360000"}},
		{"expiryAge as text", object(pushNodeGVK, ns, "x", settings("expiryAgeSeconds", "50h")), []string{"spec.settings.expiryAgeSeconds", "integer"}},

		// What node/config.go validates.
		{"maxContentLength 0", object(pushNodeGVK, ns, "x", settings("maxContentLength", 0)), []string{"spec.settings.maxContentLength", "greater than or equal to 1"}},
		{"maxContentLength 65503", object(pushNodeGVK, ns, "x", settings("maxContentLength", 65503)), []string{"spec.settings.maxContentLength", "65502"}},
		{"maxRecords -1", object(pushNodeGVK, ns, "x", settings("maxRecords", -1)), []string{"spec.settings.maxRecords"}},
		{"rateLimit -1", object(pushNodeGVK, ns, "x", settings("rateLimit", -1)), []string{"spec.settings.rateLimit"}},
		{"heartbeat policy", object(pushNodeGVK, ns, "x", settings("heartbeatPolicy", "sometimes")), []string{"spec.settings.heartbeatPolicy", "Unsupported value"}},
		{"no transport", object(pushNodeGVK, ns, "x", map[string]any{"clientService": pairs("udp", false, "tcp", false)}), []string{"spec.clientService", "at least one of udp and tcp"}},

		// Ports: in range and all different (the node binds them all).
		{"port 0", object(pushNodeGVK, ns, "x", map[string]any{"ports": pairs("http", 0)}), []string{"spec.ports.http"}},
		{"port 65536", object(pushNodeGVK, ns, "x", map[string]any{"ports": pairs("push", 65536)}), []string{"spec.ports.push"}},
		{"client = push", object(pushNodeGVK, ns, "x", map[string]any{"ports": pairs("client", 9999)}), []string{"spec.ports", "three different ports"}},
		{"push = http", object(pushNodeGVK, ns, "x", map[string]any{"ports": pairs("push", 8080)}), []string{"spec.ports", "three different ports"}},
		{"client = http", object(pushNodeGVK, ns, "x", map[string]any{"ports": pairs("client", 8080, "push", 9000)}), []string{"spec.ports", "three different ports"}},

		// Storage.
		{"size 0", object(pushNodeGVK, ns, "x", map[string]any{"storage": pairs("size", "0")}), []string{"spec.storage.size", "greater than zero"}},
		{"size negative", object(pushNodeGVK, ns, "x", map[string]any{"storage": pairs("size", "-1Gi")}), []string{"spec.storage.size", "greater than zero"}},
		{"size 1", object(pushNodeGVK, ns, "size1", map[string]any{"storage": pairs("size", "1")}), nil},
		{"size not a quantity", object(pushNodeGVK, ns, "x", map[string]any{"storage": pairs("size", "lots")}), []string{"spec.storage.size"}},

		// Replicas, with the reason.
		{"replicas 0", object(pushNodeGVK, ns, "x", pairs("replicas", 0)), []string{"spec.replicas", "at least 1", "zero pods"}},
		{"replicas 513", object(pushNodeGVK, ns, "x", pairs("replicas", 513)), []string{"spec.replicas", "at most 512"}},
		{"replicas 512", object(pushNodeGVK, ns, "r512", pairs("replicas", 512)), nil},
		{"replicas 3", object(pushNodeGVK, ns, "r3", pairs("replicas", 3)), nil},
		// The peer port is taken when the pods are sharded, free otherwise.
		{"replicas 3, client port 9977", object(pushNodeGVK, ns, "x", map[string]any{"replicas": 3, "ports": pairs("client", 9977)}), []string{"spec", "must not be 9977"}},
		{"replicas 3, http port 9977", object(pushNodeGVK, ns, "x", map[string]any{"replicas": 3, "ports": pairs("http", 9977)}), []string{"spec", "must not be 9977"}},
		{"replicas 1, client port 9977", object(pushNodeGVK, ns, "p9977", map[string]any{"replicas": 1, "ports": pairs("client", 9977)}), nil},

		// Labels and annotations end up on the owned objects, where the API
		// server checks them.
		{"label key with space", object(pushNodeGVK, ns, "x", pairs("labels", pairs("bad key", "v"))), []string{"spec.labels", "every key of labels"}},
		{"label key name 64", object(pushNodeGVK, ns, "x", pairs("labels", pairs("example.com/"+long(64), "v"))), []string{"spec.labels", "every key of labels"}},
		{"label key name 63", object(pushNodeGVK, ns, "lk63", pairs("labels", pairs("example.com/"+long(63), "v"))), nil},
		{"label key two slashes", object(pushNodeGVK, ns, "x", pairs("labels", pairs("a/b/c", "v"))), []string{"spec.labels", "every key of labels"}},
		{"label value 64", object(pushNodeGVK, ns, "x", pairs("labels", pairs("team", long(64)))), []string{"spec.labels.team", "63"}},
		{"label value 63", object(pushNodeGVK, ns, "lv63", pairs("labels", pairs("team", long(63)))), nil},
		{"label value empty", object(pushNodeGVK, ns, "lv0", pairs("labels", pairs("team", ""))), nil},
		{"label value with slash", object(pushNodeGVK, ns, "x", pairs("labels", pairs("team", "a/b"))), []string{"spec.labels.team", "should match"}},
		{"annotation key", object(pushNodeGVK, ns, "x", pairs("annotations", pairs("-owner", "v"))), []string{"spec.annotations", "every key of annotations"}},
		{"annotation value is free text", object(pushNodeGVK, ns, "annv", pairs("annotations", pairs("owner", "Alice <alice@example.com>"))), nil},
		{"client service annotation key", object(pushNodeGVK, ns, "x", map[string]any{"clientService": pairs("annotations", pairs("a b", "v"))}), []string{"spec.clientService.annotations", "every key of clientService.annotations"}},
		{"node selector value", object(pushNodeGVK, ns, "x", pairs("nodeSelector", pairs("zone", "eu west"))), []string{"spec.nodeSelector.zone", "should match"}},
		{"image with space", object(pushNodeGVK, ns, "x", pairs("image", "registry.example/push node:1")), []string{"spec.image", "white space"}},

		// PushMessage bits: 64 bits at most.
		{"bits 2^64", object(pushMessageGVK, ns, "x", pairs("pushNodeName", "n", "uuid", strings.Repeat("0", 32), "kind", "Classified", "bits", "18446744073709551616")), []string{"spec.bits", "fit 64 bits"}},
		{"bits 99..9 (20 digits)", object(pushMessageGVK, ns, "x", pairs("pushNodeName", "n", "uuid", strings.Repeat("0", 32), "kind", "Classified", "bits", strings.Repeat("9", 20))), []string{"spec.bits", "fit 64 bits"}},
		{"bits 2^64-1", object(pushMessageGVK, ns, "bitsmax", pairs("pushNodeName", "n", "uuid", strings.Repeat("0", 32), "kind", "Classified", "bits", "18446744073709551615")), nil},
		{"bits hex max", object(pushMessageGVK, ns, "bitshex", pairs("pushNodeName", "n", "uuid", strings.Repeat("0", 32), "kind", "Classified", "bits", "0xFFFFFFFFFFFFFFFF")), nil},
		{"bits hex 17 digits", object(pushMessageGVK, ns, "x", pairs("pushNodeName", "n", "uuid", strings.Repeat("0", 32), "kind", "Classified", "bits", "0x1FFFFFFFFFFFFFFFF")), []string{"spec.bits"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := k8s.Create(ctx, tc.obj)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, want an error containing %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// storageClassName cannot be set, changed or removed once the volumes
// exist: the claim template and the claims would keep the old class.
func TestPushNodeStorageClassIsImmutable(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	withClass := object(pushNodeGVK, ns, "classy", map[string]any{"storage": pairs("storageClassName", "fast")})
	must(t, k8s.Create(ctx, withClass))
	without := object(pushNodeGVK, ns, "plain", nil)
	must(t, k8s.Create(ctx, without))
	for _, tc := range []struct {
		name   string
		obj    *unstructured.Unstructured
		change func(u *unstructured.Unstructured)
	}{
		{"change", withClass, func(u *unstructured.Unstructured) {
			must(t, unstructured.SetNestedField(u.Object, "slow", "spec", "storage", "storageClassName"))
		}},
		{"remove", withClass, func(u *unstructured.Unstructured) {
			unstructured.RemoveNestedField(u.Object, "spec", "storage", "storageClassName")
		}},
		{"set later", without, func(u *unstructured.Unstructured) {
			must(t, unstructured.SetNestedField(u.Object, "fast", "spec", "storage", "storageClassName"))
		}},
	} {
		u := tc.obj.DeepCopy()
		must(t, k8s.Get(ctx, client.ObjectKeyFromObject(u), u))
		tc.change(u)
		err := k8s.Update(ctx, u)
		if err == nil || !strings.Contains(err.Error(), "storageClassName cannot be set, changed or removed") {
			t.Errorf("%s: got %v", tc.name, err)
		}
	}
	// The same class again, and other changes, pass.
	u := withClass.DeepCopy()
	must(t, k8s.Get(ctx, client.ObjectKeyFromObject(u), u))
	must(t, unstructured.SetNestedField(u.Object, "2Gi", "spec", "storage", "size"))
	must(t, k8s.Update(ctx, u))
}

// kubectl scale reaches the PushNode through the scale subresource: it
// changes replicas within 1..512 and gets the bounds' messages outside.
func TestPushNodeScaleSubresource(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	pn := newPushNode(ns, "scaled")
	must(t, k8s.Create(ctx, pn))
	scale := &autoscalingv1.Scale{}
	must(t, k8s.SubResource("scale").Get(ctx, pn, scale))
	if scale.Spec.Replicas != 1 {
		t.Errorf("scale spec.replicas = %d, want 1", scale.Spec.Replicas)
	}
	for n, want := range map[int32]string{0: "at least 1", 600: "at most 512"} {
		scale.Spec.Replicas = n
		err := k8s.SubResource("scale").Update(ctx, pn, client.WithSubResourceBody(scale))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("scale to %d: got %v, want the replicas validation message %q", n, err, want)
		}
	}
	scale.Spec.Replicas = 1
	must(t, k8s.SubResource("scale").Update(ctx, pn, client.WithSubResourceBody(scale)))

	// The operator fills the selector the scale subresource reports.
	startManager(t, &testLocator{})
	eventually(t, 20*time.Second, "scale selector", func() error {
		s := &autoscalingv1.Scale{}
		if err := k8s.SubResource("scale").Get(ctx, pn, s); err != nil {
			return err
		}
		want := labels.SelectorFromSet(builders.SelectorLabels(pn)).String()
		if s.Status.Selector != want {
			return fmt.Errorf("selector %q, want %q", s.Status.Selector, want)
		}
		return nil
	})
}

// replicas changes up and down, through the object and the scale
// subresource, and stays within 1..512.
func TestPushNodeReplicasChangeable(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	pn := newPushNode(ns, "sharded")
	pn.Spec.Replicas = ptr.To[int32](3)
	must(t, k8s.Create(ctx, pn))
	for _, n := range []int32{4, 2, 1, 512} {
		u := pn.DeepCopy()
		must(t, k8s.Get(ctx, client.ObjectKeyFromObject(u), u))
		u.Spec.Replicas = ptr.To(n)
		must(t, k8s.Update(ctx, u))
	}
	for n, want := range map[int32]string{0: "at least 1", 513: "at most 512"} {
		u := pn.DeepCopy()
		must(t, k8s.Get(ctx, client.ObjectKeyFromObject(u), u))
		u.Spec.Replicas = ptr.To(n)
		if err := k8s.Update(ctx, u); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("replicas -> %d: got %v, want %q", n, err, want)
		}
	}
	scale := &autoscalingv1.Scale{}
	must(t, k8s.SubResource("scale").Get(ctx, pn, scale))
	if scale.Spec.Replicas != 512 {
		t.Fatalf("scale spec.replicas = %d", scale.Spec.Replicas)
	}
	scale.Spec.Replicas = 5
	must(t, k8s.SubResource("scale").Update(ctx, pn, client.WithSubResourceBody(scale)))
	got := pn.DeepCopy()
	must(t, k8s.Get(ctx, client.ObjectKeyFromObject(got), got))
	if *got.Spec.Replicas != 5 {
		t.Errorf("replicas after scale = %d, want 5", *got.Spec.Replicas)
	}
}
