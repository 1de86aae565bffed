package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/controllers/builders"
)

func newPushNode(ns, name string) *ddpushv1.PushNode {
	return &ddpushv1.PushNode{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func getPN(t testing.TB, ns, name string) *ddpushv1.PushNode {
	t.Helper()
	var pn ddpushv1.PushNode
	if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &pn); err != nil {
		t.Fatal(err)
	}
	return &pn
}

func condition(conds []metav1.Condition, typ string) string {
	c := meta.FindStatusCondition(conds, typ)
	if c == nil {
		return "<none>"
	}
	return string(c.Status) + "/" + c.Reason
}

func TestPushNodeCreatesItsObjects(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	pn := newPushNode(ns, "alpha")
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "push"}
	pn.Spec.ClientService.Type = corev1.ServiceTypeLoadBalancer
	pn.Spec.ClientService.Annotations = map[string]string{"lb.example/kind": "udp"}
	if err := k8s.Create(ctx, pn); err != nil {
		t.Fatal(err)
	}
	owned := func(obj client.Object, name string) {
		t.Helper()
		eventually(t, 20*time.Second, "create "+name, func() error {
			return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, obj)
		})
		refs := obj.GetOwnerReferences()
		if len(refs) != 1 || refs[0].Name != "alpha" || refs[0].Kind != "PushNode" || !ptr.Deref(refs[0].Controller, false) {
			t.Errorf("%s owner references: %+v", name, refs)
		}
		if obj.GetLabels()["team"] != "push" || obj.GetLabels()[builders.LabelInstance] != "alpha" {
			t.Errorf("%s labels: %v", name, obj.GetLabels())
		}
	}
	var cm corev1.ConfigMap
	owned(&cm, "alpha-config")
	if cm.Data["PUSHNODE_HEARTBEAT_POLICY"] != "never" || cm.Data["PUSHNODE_MAX_CONTENT_LENGTH"] != "500" {
		t.Errorf("config: %v", cm.Data)
	}
	var sec corev1.Secret
	owned(&sec, "alpha-api-token")
	if len(sec.Data["token"]) != 64 {
		t.Errorf("token of %d bytes", len(sec.Data["token"]))
	}
	var headless, clientSvc, internal corev1.Service
	owned(&headless, "alpha-headless")
	owned(&clientSvc, "alpha-client")
	owned(&internal, "alpha-internal")
	if headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("headless service has cluster IP %q", headless.Spec.ClusterIP)
	}
	if clientSvc.Spec.Type != corev1.ServiceTypeLoadBalancer || clientSvc.Annotations["lb.example/kind"] != "udp" || len(clientSvc.Spec.Ports) != 2 {
		t.Errorf("client service: %+v %v", clientSvc.Spec, clientSvc.Annotations)
	}
	if internal.Spec.Type != corev1.ServiceTypeClusterIP || len(internal.Spec.Ports) != 2 {
		t.Errorf("internal service: %+v", internal.Spec)
	}
	var sts appsv1.StatefulSet
	owned(&sts, "alpha")
	pod := sts.Spec.Template.Spec
	if !ptr.Deref(pod.SecurityContext.RunAsNonRoot, false) || ptr.Deref(pod.AutomountServiceAccountToken, true) ||
		!ptr.Deref(pod.Containers[0].SecurityContext.ReadOnlyRootFilesystem, false) {
		t.Errorf("pod is not locked down: %+v", pod)
	}
	if pod.Containers[0].Image != "example.test/pushnode:test" || pod.Containers[0].ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("container: %+v", pod.Containers[0])
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String() != "1Gi" {
		t.Errorf("claims: %+v", sts.Spec.VolumeClaimTemplates)
	}

	// No pod is ready yet: not available, progressing, and it says why.
	eventually(t, 20*time.Second, "status", func() error {
		pn := getPN(t, ns, "alpha")
		if got := condition(pn.Status.Conditions, controllers.ConditionAvailable); got != "False/ReplicasNotReady" {
			return fmt.Errorf("Available %s", got)
		}
		if got := condition(pn.Status.Conditions, controllers.ConditionProgressing); !strings.HasPrefix(got, "True/") {
			return fmt.Errorf("Progressing %s", got)
		}
		if pn.Status.Ready != "0/1" || pn.Status.ObservedGeneration != pn.Generation || pn.Status.PushEndpoint == "" || pn.Status.TokenSecretName != "alpha-api-token" {
			return fmt.Errorf("status %+v", pn.Status)
		}
		return nil
	})
}

func TestPushNodeSettingsChangeRollsPodsButKeepsToken(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, newPushNode(ns, "beta")); err != nil {
		t.Fatal(err)
	}
	var sts appsv1.StatefulSet
	var sec corev1.Secret
	eventually(t, 20*time.Second, "objects", func() error {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "beta"}, &sts); err != nil {
			return err
		}
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "beta-api-token"}, &sec)
	})
	hash := sts.Spec.Template.Annotations[builders.AnnotationSettingsHash]
	token := string(sec.Data["token"])

	updatePN(t, ns, "beta", func(pn *ddpushv1.PushNode) { pn.Spec.Settings.HeartbeatPolicy = "always" })
	eventually(t, 20*time.Second, "pod template rolls", func() error {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "beta"}, &sts); err != nil {
			return err
		}
		if h := sts.Spec.Template.Annotations[builders.AnnotationSettingsHash]; h == hash {
			return errors.New("settings hash unchanged")
		}
		var cm corev1.ConfigMap
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "beta-config"}, &cm); err != nil {
			return err
		}
		if cm.Data["PUSHNODE_HEARTBEAT_POLICY"] != "always" {
			return fmt.Errorf("config %v", cm.Data)
		}
		return nil
	})
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "beta-api-token"}, &sec); err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["token"]) != token {
		t.Fatal("API token rotated by a settings change")
	}
	// Someone edits an owned object: the operator puts it back.
	var cm corev1.ConfigMap
	must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "beta-config"}, &cm); err != nil {
			return err
		}
		cm.Data["PUSHNODE_HEARTBEAT_POLICY"] = "never"
		return k8s.Update(ctx, &cm)
	}))
	eventually(t, 20*time.Second, "drift repaired", func() error {
		must(t, k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "beta-config"}, &cm))
		if cm.Data["PUSHNODE_HEARTBEAT_POLICY"] != "always" {
			return errors.New("still drifted")
		}
		return nil
	})
}

func TestPushNodeValidation(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		mutate func(*ddpushv1.PushNode)
		want   string
	}{
		{"513 replicas", func(p *ddpushv1.PushNode) { p.Spec.Replicas = ptr.To[int32](513) }, "at most 512"},
		{"no transport", func(p *ddpushv1.PushNode) {
			p.Spec.ClientService.UDP, p.Spec.ClientService.TCP = ptr.To(false), ptr.To(false)
		}, "at least one of udp and tcp"},
		{"bad policy", func(p *ddpushv1.PushNode) { p.Spec.Settings.HeartbeatPolicy = "sometimes" }, "Unsupported value"},
		{"content too long", func(p *ddpushv1.PushNode) { p.Spec.Settings.MaxContentLength = 70000 }, "65502"},
		{"bad service type", func(p *ddpushv1.PushNode) { p.Spec.ClientService.Type = "ExternalName" }, "Unsupported value"},
	} {
		pn := newPushNode(ns, "invalid")
		tc.mutate(pn)
		err := k8s.Create(ctx, pn)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// updatePN changes a PushNode, retrying when the operator's status write
// got there first.
func updatePN(t *testing.T, ns, name string, mutate func(*ddpushv1.PushNode)) {
	t.Helper()
	must(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pn := getPN(t, ns, name)
		mutate(pn)
		return k8s.Update(context.Background(), pn)
	}))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// The node reads its token once, at start: a token Secret deleted and made
// again (with a new token) must roll the pods, or the node answers the
// operator 401 for ever. The settings hash stays: only the token moved.
func TestPushNodeNewTokenRollsPods(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	ctx := context.Background()
	must(t, k8s.Create(ctx, newPushNode(ns, "gamma")))
	var sts appsv1.StatefulSet
	var sec corev1.Secret
	eventually(t, 20*time.Second, "objects", func() error {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gamma"}, &sts); err != nil {
			return err
		}
		if sts.Spec.Template.Annotations[builders.AnnotationTokenHash] == "" {
			return errors.New("no token hash in the pod template")
		}
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gamma-api-token"}, &sec)
	})
	tokenHash := sts.Spec.Template.Annotations[builders.AnnotationTokenHash]
	settingsHash := sts.Spec.Template.Annotations[builders.AnnotationSettingsHash]
	token := string(sec.Data["token"])

	must(t, k8s.Delete(ctx, &sec))
	eventually(t, 20*time.Second, "a new token rolls the pods", func() error {
		var again corev1.Secret
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gamma-api-token"}, &again); err != nil {
			return err
		}
		if string(again.Data["token"]) == token {
			return errors.New("Secret not made again yet")
		}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "gamma"}, &sts); err != nil {
			return err
		}
		if sts.Spec.Template.Annotations[builders.AnnotationTokenHash] == tokenHash {
			return errors.New("token hash unchanged")
		}
		return nil
	})
	if h := sts.Spec.Template.Annotations[builders.AnnotationSettingsHash]; h != settingsHash {
		t.Errorf("settings hash moved from %s to %s, though no setting changed", settingsHash, h)
	}
}
