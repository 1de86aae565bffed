package controllers_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/node/nodetest"
)

// managerRules are the rules make manifests generates from the RBAC
// markers: what the chart and config/ grant the manager.
func managerRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "config", "rbac", "role.yaml"))
	must(t, err)
	defer f.Close()
	var role rbacv1.ClusterRole
	must(t, yaml.NewYAMLOrJSONDecoder(f, 4096).Decode(&role))
	if role.Kind != "ClusterRole" || len(role.Rules) == 0 {
		t.Fatalf("config/rbac/role.yaml: %s with %d rules", role.Kind, len(role.Rules))
	}
	return role.Rules
}

// serviceAccountConfig is a client config acting as a ServiceAccount
// (impersonation), with no rights until something is bound to it.
func serviceAccountConfig(t *testing.T, ns, name string) (*rest.Config, rbacv1.Subject) {
	t.Helper()
	must(t, k8s.Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}))
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{
		UserName: fmt.Sprintf("system:serviceaccount:%s:%s", ns, name),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	return c, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}
}

// runNodeAndPush creates a PushNode in ns, runs a real node process for
// its pod, and delivers a PushMessage with a zero TTL, which the operator
// then deletes: every verb of the manager's role is used.
func runNodeAndPush(t *testing.T, loc *testLocator, ns string) {
	t.Helper()
	ctx := context.Background()
	must(t, k8s.Create(ctx, newPushNode(ns, "node")))
	var sec corev1.Secret
	eventually(t, 20*time.Second, "token secret", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "node-api-token"}, &sec)
	})
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "operator-token")
	must(t, os.WriteFile(tokenFile, sec.Data["token"], 0o600))
	proc := nodetest.StartProcess(t, filepath.Join(dir, "data"), "--api-token-file", tokenFile)
	loc.set(types.NamespacedName{Namespace: ns, Name: "node"}, "http://"+proc.HTTP)
	markReady(t, ns, "node")
	eventually(t, 20*time.Second, "PushNode available and read", func() error {
		pn := getPN(t, ns, "node")
		if !meta.IsStatusConditionTrue(pn.Status.Conditions, controllers.ConditionAvailable) {
			return fmt.Errorf("Available %s", condition(pn.Status.Conditions, controllers.ConditionAvailable))
		}
		if meta.IsStatusConditionTrue(pn.Status.Conditions, controllers.ConditionDegraded) {
			return fmt.Errorf("Degraded %s", condition(pn.Status.Conditions, controllers.ConditionDegraded))
		}
		return nil
	})
	f := &nodeFixture{ns: ns, name: "node", proc: proc, loc: loc}
	p := f.phone(t, "rbac-user")
	pm := f.message("hello", "rbac-user", ddpushv1.KindCustom)
	pm.Spec.Data = "hello"
	pm.Spec.TTLSecondsAfterFinished = ptr.To[int32](0)
	must(t, k8s.Create(ctx, pm))
	expectCustom(t, p, "hello")
	eventually(t, 30*time.Second, "delivered message deleted after its TTL", func() error {
		err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hello"}, &ddpushv1.PushMessage{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
}

// The manager runs with nothing but the generated ClusterRole.
func TestManagerRunsUnderItsClusterRole(t *testing.T) {
	ctx := context.Background()
	home := namespace(t)
	saCfg, subject := serviceAccountConfig(t, home, "manager")
	// RBAC is enforced: unbound, the ServiceAccount may read nothing.
	sa, err := client.New(saCfg, client.Options{Scheme: scheme})
	must(t, err)
	if err := sa.List(ctx, &ddpushv1.PushNodeList{}); !apierrors.IsForbidden(err) {
		t.Fatalf("unbound ServiceAccount listing PushNodes: got %v, want Forbidden", err)
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "ddpush-manager-" + home}, Rules: managerRules(t)}
	must(t, k8s.Create(ctx, role))
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{subject},
	}
	must(t, k8s.Create(ctx, binding))
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), binding)
		_ = k8s.Delete(context.Background(), role)
	})
	loc := &testLocator{}
	startManagerWith(t, saCfg, loc, nil)
	runNodeAndPush(t, loc, namespace(t))

	// A sharded PushNode adds a PodDisruptionBudget and a status per pod.
	ns := namespace(t)
	must(t, k8s.Create(ctx, newShardedPushNode(ns, "trio", 3)))
	eventually(t, 20*time.Second, "budget and slot map", func() error {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "trio"}, &policyv1.PodDisruptionBudget{}); err != nil {
			return err
		}
		if pn := getPN(t, ns, "trio"); pn.Status.SlotMap == nil || len(pn.Status.Pods) != 3 {
			return fmt.Errorf("status %+v", pn.Status)
		}
		return nil
	})
}

// Namespace-scoped: the same rules as a Role in one namespace, and the
// manager watching only it, as the chart installs with watchNamespaces.
func TestManagerRunsUnderNamespaceRoles(t *testing.T) {
	ctx := context.Background()
	home, watched, unwatched := namespace(t), namespace(t), namespace(t)
	saCfg, subject := serviceAccountConfig(t, home, "manager")
	must(t, k8s.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: watched, Name: "ddpush-manager"}, Rules: managerRules(t)}))
	must(t, k8s.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: watched, Name: "ddpush-manager"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "ddpush-manager"},
		Subjects:   []rbacv1.Subject{subject},
	}))
	loc := &testLocator{}
	startManagerWith(t, saCfg, loc, []string{watched})
	must(t, k8s.Create(ctx, newPushNode(unwatched, "ignored")))
	runNodeAndPush(t, loc, watched)
	// The PushNode outside the watched namespaces was never touched.
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: unwatched, Name: "ignored-config"}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("PushNode in an unwatched namespace was reconciled: %v", err)
	}
	if pn := getPN(t, unwatched, "ignored"); len(pn.Status.Conditions) != 0 {
		t.Errorf("PushNode in an unwatched namespace has a status: %+v", pn.Status)
	}
}
