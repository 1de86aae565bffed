package builders

import (
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

func TestNodeEnvDefaults(t *testing.T) {
	env := NodeEnv(newPN())
	want := map[string]string{
		"PUSHNODE_DATA_DIR":            "/data",
		"PUSHNODE_API_TOKEN_FILE":      "/etc/pushnode/api/token",
		"PUSHNODE_CLIENT_ADDR":         ":9966",
		"PUSHNODE_PUSH_ADDR":           ":9999",
		"PUSHNODE_HTTP_ADDR":           ":8080",
		"PUSHNODE_UDP":                 "true",
		"PUSHNODE_TCP":                 "true",
		"PUSHNODE_HEARTBEAT_POLICY":    "never",
		"PUSHNODE_MAX_CONTENT_LENGTH":  "500",
		"PUSHNODE_ONLINE_WINDOW":       "1m0s",
		"PUSHNODE_EXPIRY_AGE":          "50h0m0s",
		"PUSHNODE_CREATE_BY_HEARTBEAT": "true",
		"PUSHNODE_MAX_RECORDS":         "2000000",
		"PUSHNODE_RATE_LIMIT":          "1000",
		"PUSHNODE_LOG_FORMAT":          "json",
	}
	if !maps.Equal(env, want) {
		t.Errorf("NodeEnv defaults:\n got %v\nwant %v", env, want)
	}
}

func customPN() *ddpushv1.PushNode {
	pn := newPN()
	pn.Spec.Ports = ddpushv1.PushNodePorts{Client: 19966, Push: 19999, HTTP: 18080}
	pn.Spec.ClientService.UDP = ptr.To(false)
	pn.Spec.ClientService.TCP = ptr.To(true)
	pn.Spec.Settings = ddpushv1.NodeSettings{
		HeartbeatPolicy:     "address-changed",
		MaxContentLength:    100,
		OnlineWindowSeconds: ptr.To[int32](30),
		ExpiryAgeSeconds:    ptr.To[int64](7200),
		CreateByHeartbeat:   ptr.To(false),
		MaxRecords:          ptr.To[int64](10),
		RateLimit:           ptr.To[int32](0),
	}
	return pn
}

func TestNodeEnvCustom(t *testing.T) {
	env := NodeEnv(customPN())
	want := map[string]string{
		"PUSHNODE_CLIENT_ADDR":         ":19966",
		"PUSHNODE_PUSH_ADDR":           ":19999",
		"PUSHNODE_HTTP_ADDR":           ":18080",
		"PUSHNODE_UDP":                 "false",
		"PUSHNODE_TCP":                 "true",
		"PUSHNODE_HEARTBEAT_POLICY":    "address-changed",
		"PUSHNODE_MAX_CONTENT_LENGTH":  "100",
		"PUSHNODE_ONLINE_WINDOW":       "30s",
		"PUSHNODE_EXPIRY_AGE":          "2h0m0s",
		"PUSHNODE_CREATE_BY_HEARTBEAT": "false",
		"PUSHNODE_MAX_RECORDS":         "10",
		"PUSHNODE_RATE_LIMIT":          "0",
	}
	for k, v := range want {
		if got, ok := env[k]; !ok || got != v {
			t.Errorf("%s = %q (present %v), want %q", k, got, ok, v)
		}
	}
	for k := range env {
		if !strings.HasPrefix(k, "PUSHNODE_") {
			t.Errorf("variable %q is not a PUSHNODE_* variable", k)
		}
	}
}

func TestNodeEnvExpiryZeroKeepsRecords(t *testing.T) {
	pn := newPN()
	pn.Spec.Settings.ExpiryAgeSeconds = ptr.To[int64](0)
	if got := NodeEnv(pn)["PUSHNODE_EXPIRY_AGE"]; got != "0s" {
		t.Errorf("expiryAgeSeconds 0 -> %q, want 0s (must not be defaulted to 50h)", got)
	}
}

func TestConfigMap(t *testing.T) {
	pn := customPN()
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile", LabelName: "not-pushnode"}
	pn.Spec.Annotations = map[string]string{"owner": "alice@example.com"}
	cm := buildConfigMap(t, pn)

	if !maps.Equal(cm.Data, NodeEnv(pn)) {
		t.Errorf("ConfigMap data = %v, want NodeEnv %v", cm.Data, NodeEnv(pn))
	}
	wantLabels := map[string]string{
		LabelName:      "pushnode",
		LabelInstance:  "edge",
		LabelManagedBy: "ddpush-operator",
		"team":         "mobile",
	}
	for k, v := range wantLabels {
		if cm.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, cm.Labels[k], v, cm.Labels)
		}
	}
	if cm.Annotations["owner"] != "alice@example.com" {
		t.Errorf("annotations = %v, want spec.annotations applied", cm.Annotations)
	}
}

func TestConfigMapKeepsForeignMetadata(t *testing.T) {
	pn := newPN()
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile"}
	pn.Spec.Annotations = map[string]string{"owner": "alice"}
	b := &ConfigMapBuilder{pn}
	cm := b.Object().(*corev1.ConfigMap)
	cm.CreationTimestamp = metav1.Now()
	cm.Labels = map[string]string{"argocd.argoproj.io/instance": "prod", "team": "old"}
	cm.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"}
	cm.Data = map[string]string{"STALE": "x"}
	if err := b.Update(cm); err != nil {
		t.Fatal(err)
	}
	if cm.Labels["argocd.argoproj.io/instance"] != "prod" {
		t.Errorf("foreign label dropped: %v", cm.Labels)
	}
	if cm.Labels["team"] != "mobile" || cm.Labels[LabelInstance] != "edge" {
		t.Errorf("owned labels not set: %v", cm.Labels)
	}
	if cm.Annotations["kubectl.kubernetes.io/last-applied-configuration"] != "{}" || cm.Annotations["owner"] != "alice" {
		t.Errorf("annotations = %v, want foreign kept and spec.annotations added", cm.Annotations)
	}
	if _, ok := cm.Data["STALE"]; ok {
		t.Errorf("ConfigMap data is owned by the operator: stale keys must go, got %v", cm.Data)
	}
}

// ---------------------------------------------------------------- Secret
