package builders

import (
	"errors"
	"maps"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

const testImage = "registry.example/ddpush/pushnode:test"

// newPN is a PushNode with an empty spec, as a user might write it before
// the API server defaults it.
func newPN() *ddpushv1.PushNode {
	return &ddpushv1.PushNode{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "push", Generation: 1}}
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func findBuilder[T Builder](t *testing.T, pn *ddpushv1.PushNode, opt Options) T {
	t.Helper()
	for _, b := range For(pn, opt) {
		if tb, ok := b.(T); ok {
			return tb
		}
	}
	var zero T
	t.Fatalf("For() has no %T", zero)
	return zero
}

func buildConfigMap(t *testing.T, pn *ddpushv1.PushNode) *corev1.ConfigMap {
	t.Helper()
	b := &ConfigMapBuilder{pn}
	cm := b.Object().(*corev1.ConfigMap)
	if err := b.Update(cm); err != nil {
		t.Fatalf("ConfigMap Update: %v", err)
	}
	return cm
}

func buildService(t *testing.T, b Builder, existing *corev1.Service) *corev1.Service {
	t.Helper()
	svc := existing
	if svc == nil {
		svc = b.Object().(*corev1.Service)
	}
	if err := b.Update(svc); err != nil {
		t.Fatalf("Service Update: %v", err)
	}
	return svc
}

func buildSTS(t *testing.T, pn *ddpushv1.PushNode) *appsv1.StatefulSet {
	t.Helper()
	b := &StatefulSetBuilder{pn, testImage}
	sts := b.Object().(*appsv1.StatefulSet)
	if err := b.Update(sts); err != nil {
		t.Fatalf("StatefulSet Update: %v", err)
	}
	return sts
}

func container(t *testing.T, sts *appsv1.StatefulSet) corev1.Container {
	t.Helper()
	cs := sts.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("want 1 container, got %d", len(cs))
	}
	return cs[0]
}

// ---------------------------------------------------------------- For

func TestForOrderAndNames(t *testing.T) {
	pn := newPN()
	bs := For(pn, Options{DefaultImage: testImage})
	want := []struct {
		builder any
		kind    any
		name    string
	}{
		{&ConfigMapBuilder{}, &corev1.ConfigMap{}, "edge-config"},
		{&SecretBuilder{}, &corev1.Secret{}, "edge-api-token"},
		{&HeadlessServiceBuilder{}, &corev1.Service{}, "edge-headless"},
		{&ClientServiceBuilder{}, &corev1.Service{}, "edge-client"},
		{&InternalServiceBuilder{}, &corev1.Service{}, "edge-internal"},
		{&StatefulSetBuilder{}, &appsv1.StatefulSet{}, "edge"},
	}
	if len(bs) != len(want) {
		t.Fatalf("For returned %d builders, want %d", len(bs), len(want))
	}
	for i, w := range want {
		if reflect.TypeOf(bs[i]) != reflect.TypeOf(w.builder) {
			t.Errorf("builder %d is %T, want %T", i, bs[i], w.builder)
		}
		obj := bs[i].Object()
		if reflect.TypeOf(obj) != reflect.TypeOf(w.kind) {
			t.Errorf("builder %d Object() is %T, want %T", i, obj, w.kind)
		}
		if obj.GetName() != w.name || obj.GetNamespace() != "push" {
			t.Errorf("builder %d Object() is %s/%s, want push/%s", i, obj.GetNamespace(), obj.GetName(), w.name)
		}
		// Object is empty apart from its name.
		if len(obj.GetLabels()) != 0 || len(obj.GetAnnotations()) != 0 {
			t.Errorf("builder %d Object() is not empty: labels %v annotations %v", i, obj.GetLabels(), obj.GetAnnotations())
		}
	}
	names := map[string]string{
		"ConfigMapName":       ConfigMapName(pn),
		"SecretName":          SecretName(pn),
		"HeadlessServiceName": HeadlessServiceName(pn),
		"ClientServiceName":   ClientServiceName(pn),
		"InternalServiceName": InternalServiceName(pn),
		"StatefulSetName":     StatefulSetName(pn),
	}
	wantNames := map[string]string{
		"ConfigMapName":       "edge-config",
		"SecretName":          "edge-api-token",
		"HeadlessServiceName": "edge-headless",
		"ClientServiceName":   "edge-client",
		"InternalServiceName": "edge-internal",
		"StatefulSetName":     "edge",
	}
	if !maps.Equal(names, wantNames) {
		t.Errorf("names = %v, want %v", names, wantNames)
	}
}

func TestForPassesOptions(t *testing.T) {
	called := false
	opt := Options{DefaultImage: testImage, NewToken: func() (string, error) { called = true; return "injected", nil }}
	pn := newPN()
	sb := findBuilder[*SecretBuilder](t, pn, opt)
	s := sb.Object()
	if err := sb.Update(s); err != nil {
		t.Fatal(err)
	}
	if !called || string(s.(*corev1.Secret).Data[TokenKey]) != "injected" {
		t.Errorf("For did not pass NewToken to the SecretBuilder")
	}
	stsb := findBuilder[*StatefulSetBuilder](t, pn, opt)
	sts := stsb.Object()
	if err := stsb.Update(sts); err != nil {
		t.Fatal(err)
	}
	if got := container(t, sts.(*appsv1.StatefulSet)).Image; got != testImage {
		t.Errorf("For did not pass DefaultImage: image %q", got)
	}
}

// ---------------------------------------------------------------- Defaulted

func TestDefaultedEmptySpec(t *testing.T) {
	pn := newPN()
	before := pn.DeepCopy()
	d := Defaulted(pn)
	s := d.Spec

	if s.Replicas == nil || *s.Replicas != 1 {
		t.Errorf("replicas = %v, want 1", s.Replicas)
	}
	if s.Ports.Client != 9966 || s.Ports.Push != 9999 || s.Ports.HTTP != 8080 {
		t.Errorf("ports = %+v, want 9966/9999/8080", s.Ports)
	}
	if s.ClientService.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("clientService.type = %q, want ClusterIP", s.ClientService.Type)
	}
	if s.ClientService.UDP == nil || !*s.ClientService.UDP {
		t.Errorf("clientService.udp = %v, want true", s.ClientService.UDP)
	}
	if s.ClientService.TCP == nil || !*s.ClientService.TCP {
		t.Errorf("clientService.tcp = %v, want true", s.ClientService.TCP)
	}
	if s.Storage.Size.Cmp(resource.MustParse("1Gi")) != 0 {
		t.Errorf("storage.size = %s, want 1Gi", s.Storage.Size.String())
	}
	if s.Storage.WhenDeleted != ddpushv1.PVCRetain || s.Storage.WhenScaled != ddpushv1.PVCRetain {
		t.Errorf("storage retention = %q/%q, want Retain/Retain", s.Storage.WhenDeleted, s.Storage.WhenScaled)
	}
	if s.Storage.StorageClassName != nil {
		t.Errorf("storage.storageClassName = %q, want unset (cluster default)", *s.Storage.StorageClassName)
	}
	st := s.Settings
	if st.HeartbeatPolicy != "never" {
		t.Errorf("heartbeatPolicy = %q, want never", st.HeartbeatPolicy)
	}
	if st.MaxContentLength != 500 {
		t.Errorf("maxContentLength = %d, want 500", st.MaxContentLength)
	}
	if st.OnlineWindow == nil || st.OnlineWindow.Duration != 60*time.Second {
		t.Errorf("onlineWindow = %v, want 60s", st.OnlineWindow)
	}
	if st.ExpiryAge == nil || st.ExpiryAge.Duration != 50*time.Hour {
		t.Errorf("expiryAge = %v, want 50h", st.ExpiryAge)
	}
	if st.CreateByHeartbeat == nil || !*st.CreateByHeartbeat {
		t.Errorf("createByHeartbeat = %v, want true", st.CreateByHeartbeat)
	}
	if st.MaxRecords == nil || *st.MaxRecords != 2_000_000 {
		t.Errorf("maxRecords = %v, want 2000000", st.MaxRecords)
	}
	if st.RateLimit == nil || *st.RateLimit != 1000 {
		t.Errorf("rateLimit = %v, want 1000", st.RateLimit)
	}

	if !reflect.DeepEqual(pn, before) {
		t.Errorf("Defaulted mutated its input:\n got %+v\nwant %+v", pn.Spec, before.Spec)
	}
	if d == pn {
		t.Errorf("Defaulted returned its input, not a copy")
	}
}

func TestDefaultedKeepsSetValues(t *testing.T) {
	pn := newPN()
	pn.Spec.Replicas = ptr.To[int32](1)
	pn.Spec.Ports = ddpushv1.PushNodePorts{Client: 1, Push: 2, HTTP: 3}
	pn.Spec.ClientService = ddpushv1.ClientServiceSpec{Type: corev1.ServiceTypeLoadBalancer, UDP: ptr.To(false), TCP: ptr.To(true)}
	pn.Spec.Storage = ddpushv1.StorageSpec{Size: resource.MustParse("5Gi"), WhenDeleted: ddpushv1.PVCDelete, WhenScaled: ddpushv1.PVCDelete}
	pn.Spec.Settings = ddpushv1.NodeSettings{
		HeartbeatPolicy:   "always",
		MaxContentLength:  7,
		OnlineWindow:      &metav1.Duration{Duration: 0},
		ExpiryAge:         &metav1.Duration{Duration: 0}, // "0s" keeps records
		CreateByHeartbeat: ptr.To(false),
		MaxRecords:        ptr.To[int64](0),
		RateLimit:         ptr.To[int32](0),
	}
	before := pn.DeepCopy()
	d := Defaulted(pn)
	// Every field was set, so nothing may change.
	if !reflect.DeepEqual(d.Spec, before.Spec) {
		t.Errorf("Defaulted changed set values:\n got %+v\nwant %+v", d.Spec, before.Spec)
	}
	// The copy must not share pointers with the input.
	*d.Spec.Settings.RateLimit = 99
	*d.Spec.ClientService.UDP = true
	d.Spec.Settings.ExpiryAge.Duration = time.Hour
	if !reflect.DeepEqual(pn, before) {
		t.Errorf("Defaulted's result shares memory with its input")
	}
}

// ---------------------------------------------------------------- NodeEnv / ConfigMap

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
		HeartbeatPolicy:   "address-changed",
		MaxContentLength:  100,
		OnlineWindow:      &metav1.Duration{Duration: 30 * time.Second},
		ExpiryAge:         &metav1.Duration{Duration: 2 * time.Hour},
		CreateByHeartbeat: ptr.To(false),
		MaxRecords:        ptr.To[int64](10),
		RateLimit:         ptr.To[int32](0),
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
	pn.Spec.Settings.ExpiryAge = &metav1.Duration{}
	if got := NodeEnv(pn)["PUSHNODE_EXPIRY_AGE"]; got != "0s" {
		t.Errorf("expiryAge 0s -> %q, want 0s (must not be defaulted to 50h)", got)
	}
}

func TestConfigMap(t *testing.T) {
	pn := customPN()
	pn.Spec.Labels = map[string]string{"team": "mobile", LabelName: "not-pushnode"}
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
	pn.Spec.Labels = map[string]string{"team": "mobile"}
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

func TestSecretNewGetsRandomToken(t *testing.T) {
	b := &SecretBuilder{PN: newPN()} // NewToken nil: RandomToken
	s := b.Object().(*corev1.Secret)
	if err := b.Update(s); err != nil {
		t.Fatal(err)
	}
	tok := string(s.Data[TokenKey])
	if !hex64.MatchString(tok) {
		t.Errorf("token %q is not 64 lowercase hex characters", tok)
	}
	if s.Type != corev1.SecretTypeOpaque {
		t.Errorf("type = %q, want Opaque", s.Type)
	}
	if s.Labels[LabelInstance] != "edge" {
		t.Errorf("labels = %v", s.Labels)
	}
	// Another Secret gets another token.
	s2 := b.Object().(*corev1.Secret)
	if err := b.Update(s2); err != nil {
		t.Fatal(err)
	}
	if string(s2.Data[TokenKey]) == tok {
		t.Errorf("two new Secrets got the same token %q", tok)
	}
}

func TestRandomToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, err := RandomToken()
		if err != nil {
			t.Fatal(err)
		}
		if !hex64.MatchString(tok) {
			t.Fatalf("RandomToken() = %q, want 64 hex characters", tok)
		}
		if seen[tok] {
			t.Fatalf("RandomToken repeated %q", tok)
		}
		seen[tok] = true
	}
}

func TestSecretInjectedToken(t *testing.T) {
	const injected = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	calls := 0
	b := &SecretBuilder{PN: newPN(), NewToken: func() (string, error) { calls++; return injected, nil }}
	s := b.Object().(*corev1.Secret)
	if err := b.Update(s); err != nil {
		t.Fatal(err)
	}
	if got := string(s.Data[TokenKey]); got != injected || calls != 1 {
		t.Errorf("token = %q after %d calls, want the injected token after 1", got, calls)
	}
	// Update runs on every reconcile; the token must never rotate.
	for range 50 {
		if err := b.Update(s); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(s.Data[TokenKey]); got != injected || calls != 1 {
		t.Errorf("token rotated: %q after %d calls", got, calls)
	}
}

func TestSecretExistingTokenKept(t *testing.T) {
	const existing = "users-own-token\n" // exactly, not trimmed or re-encoded
	b := &SecretBuilder{PN: newPN(), NewToken: func() (string, error) {
		t.Errorf("NewToken called although the Secret has a token")
		return "new", nil
	}}
	s := b.Object().(*corev1.Secret)
	s.CreationTimestamp = metav1.Now()
	s.Data = map[string][]byte{TokenKey: []byte(existing), "other": []byte("x")}
	s.Labels = map[string]string{"foreign": "yes"}
	for range 20 {
		if err := b.Update(s); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(s.Data[TokenKey]); got != existing {
		t.Errorf("token = %q, want %q kept exactly", got, existing)
	}
	if string(s.Data["other"]) != "x" {
		t.Errorf("other keys of the Secret were dropped: %v", s.Data)
	}
	if s.Labels["foreign"] != "yes" || s.Labels[LabelInstance] != "edge" {
		t.Errorf("labels = %v", s.Labels)
	}

	// The same with RandomToken as generator.
	b2 := &SecretBuilder{PN: newPN()}
	s2 := b2.Object().(*corev1.Secret)
	s2.Data = map[string][]byte{TokenKey: []byte(existing)}
	for range 20 {
		if err := b2.Update(s2); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(s2.Data[TokenKey]); got != existing {
		t.Errorf("token = %q, want %q kept exactly", got, existing)
	}
}

func TestSecretEmptyTokenFilled(t *testing.T) {
	for name, data := range map[string]map[string][]byte{
		"nil data":    nil,
		"empty token": {TokenKey: {}},
		"no token":    {"other": []byte("x")},
	} {
		t.Run(name, func(t *testing.T) {
			b := &SecretBuilder{PN: newPN()}
			s := b.Object().(*corev1.Secret)
			s.CreationTimestamp = metav1.Now()
			s.Data = data
			if err := b.Update(s); err != nil {
				t.Fatal(err)
			}
			if tok := string(s.Data[TokenKey]); !hex64.MatchString(tok) {
				t.Errorf("token = %q, want a new 64-hex token", tok)
			}
		})
	}
}

func TestSecretNewTokenError(t *testing.T) {
	boom := errors.New("entropy exhausted")
	b := &SecretBuilder{PN: newPN(), NewToken: func() (string, error) { return "", boom }}
	s := b.Object().(*corev1.Secret)
	err := b.Update(s)
	if err == nil {
		t.Fatalf("Update succeeded although NewToken failed; token %q", s.Data[TokenKey])
	}
	if !errors.Is(err, boom) {
		t.Errorf("error %v does not wrap the NewToken error", err)
	}
	if len(s.Data[TokenKey]) != 0 {
		t.Errorf("a token was stored although NewToken failed: %q", s.Data[TokenKey])
	}
}

// ---------------------------------------------------------------- Services

func portsByName(ports []corev1.ServicePort) map[string]corev1.ServicePort {
	m := map[string]corev1.ServicePort{}
	for _, p := range ports {
		m[p.Name] = p
	}
	return m
}

func TestHeadlessService(t *testing.T) {
	pn := newPN()
	pn.Spec.Ports = ddpushv1.PushNodePorts{Client: 1000, Push: 2000, HTTP: 3000}
	svc := buildService(t, &HeadlessServiceBuilder{pn}, nil)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("clusterIP = %q, want None", svc.Spec.ClusterIP)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("publishNotReadyAddresses = false, want true")
	}
	if !maps.Equal(svc.Spec.Selector, SelectorLabels(pn)) {
		t.Errorf("selector = %v, want %v", svc.Spec.Selector, SelectorLabels(pn))
	}
	want := []corev1.ServicePort{
		{Name: PortClientUDP, Protocol: corev1.ProtocolUDP, Port: 1000, TargetPort: intstr.FromString(PortClientUDP)},
		{Name: PortClientTCP, Protocol: corev1.ProtocolTCP, Port: 1000, TargetPort: intstr.FromString(PortClientTCP)},
		{Name: PortPush, Protocol: corev1.ProtocolTCP, Port: 2000, TargetPort: intstr.FromString(PortPush)},
		{Name: PortHTTP, Protocol: corev1.ProtocolTCP, Port: 3000, TargetPort: intstr.FromString(PortHTTP)},
	}
	if !reflect.DeepEqual(svc.Spec.Ports, want) {
		t.Errorf("ports = %+v\nwant %+v", svc.Spec.Ports, want)
	}
	if svc.Labels[LabelInstance] != "edge" {
		t.Errorf("labels = %v", svc.Labels)
	}
}

func TestClientServiceTransports(t *testing.T) {
	for _, tc := range []struct {
		name     string
		udp, tcp *bool
		want     []corev1.Protocol
	}{
		{"default both", nil, nil, []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP}},
		{"both", ptr.To(true), ptr.To(true), []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP}},
		{"udp only", ptr.To(true), ptr.To(false), []corev1.Protocol{corev1.ProtocolUDP}},
		{"tcp only", ptr.To(false), ptr.To(true), []corev1.Protocol{corev1.ProtocolTCP}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pn := newPN()
			pn.Spec.ClientService.UDP, pn.Spec.ClientService.TCP = tc.udp, tc.tcp
			svc := buildService(t, &ClientServiceBuilder{pn}, nil)
			var got []corev1.Protocol
			for _, p := range svc.Spec.Ports {
				got = append(got, p.Protocol)
				if p.Port != 9966 {
					t.Errorf("port %s = %d, want 9966", p.Name, p.Port)
				}
				wantName := map[corev1.Protocol]string{corev1.ProtocolUDP: PortClientUDP, corev1.ProtocolTCP: PortClientTCP}[p.Protocol]
				if p.Name != wantName || p.TargetPort != intstr.FromString(wantName) {
					t.Errorf("port %+v: want name and targetPort %q", p, wantName)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("protocols = %v, want %v", got, tc.want)
			}
			// The pod exposes the same client transports.
			sts := buildSTS(t, pn)
			var cports []corev1.Protocol
			for _, p := range container(t, sts).Ports {
				if p.Name == PortClientUDP || p.Name == PortClientTCP {
					cports = append(cports, p.Protocol)
				}
			}
			if !reflect.DeepEqual(cports, tc.want) {
				t.Errorf("container client ports = %v, want %v", cports, tc.want)
			}
			// And so does the headless Service.
			hs := buildService(t, &HeadlessServiceBuilder{pn}, nil)
			if _, ok := portsByName(hs.Spec.Ports)[PortClientUDP]; ok != (tc.udp == nil || *tc.udp) {
				t.Errorf("headless has client-udp = %v", ok)
			}
			if _, ok := portsByName(hs.Spec.Ports)[PortClientTCP]; ok != (tc.tcp == nil || *tc.tcp) {
				t.Errorf("headless has client-tcp = %v", ok)
			}
		})
	}
}

func TestClientServiceTypeAndPolicy(t *testing.T) {
	for _, tc := range []struct {
		typ        corev1.ServiceType
		wantType   corev1.ServiceType
		wantPolicy corev1.ServiceExternalTrafficPolicy
	}{
		{"", corev1.ServiceTypeClusterIP, ""},
		{corev1.ServiceTypeClusterIP, corev1.ServiceTypeClusterIP, ""},
		{corev1.ServiceTypeNodePort, corev1.ServiceTypeNodePort, corev1.ServiceExternalTrafficPolicyLocal},
		{corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyLocal},
	} {
		t.Run(string(tc.wantType)+"/"+string(tc.typ), func(t *testing.T) {
			pn := newPN()
			pn.Spec.ClientService.Type = tc.typ
			pn.Spec.ClientService.Annotations = map[string]string{"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
			pn.Spec.Annotations = map[string]string{"owner": "alice"}
			svc := buildService(t, &ClientServiceBuilder{pn}, nil)
			if svc.Spec.Type != tc.wantType {
				t.Errorf("type = %q, want %q", svc.Spec.Type, tc.wantType)
			}
			if svc.Spec.ExternalTrafficPolicy != tc.wantPolicy {
				t.Errorf("externalTrafficPolicy = %q, want %q", svc.Spec.ExternalTrafficPolicy, tc.wantPolicy)
			}
			if svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-type"] != "nlb" || svc.Annotations["owner"] != "alice" {
				t.Errorf("annotations = %v, want clientService and spec annotations", svc.Annotations)
			}
			if !maps.Equal(svc.Spec.Selector, SelectorLabels(pn)) {
				t.Errorf("selector = %v", svc.Spec.Selector)
			}
		})
	}
	// The clientService annotations are for the client Service only.
	pn := newPN()
	pn.Spec.ClientService.Annotations = map[string]string{"lb": "yes"}
	for _, b := range []Builder{&HeadlessServiceBuilder{pn}, &InternalServiceBuilder{pn}, &ConfigMapBuilder{pn}} {
		obj := b.Object()
		if err := b.Update(obj); err != nil {
			t.Fatal(err)
		}
		if _, ok := obj.GetAnnotations()["lb"]; ok {
			t.Errorf("%T got the clientService annotations", obj)
		}
	}
}

func TestClientServiceTypeSwitchBackToClusterIP(t *testing.T) {
	pn := newPN()
	pn.Spec.ClientService.Type = corev1.ServiceTypeLoadBalancer
	b := &ClientServiceBuilder{pn}
	svc := buildService(t, b, nil)
	pn.Spec.ClientService.Type = corev1.ServiceTypeClusterIP
	svc = buildService(t, b, svc)
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.ExternalTrafficPolicy != "" {
		t.Errorf("after switching to ClusterIP: type %q policy %q", svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
	}
}

func TestClientServiceKeepsNodePorts(t *testing.T) {
	pn := newPN()
	pn.Spec.ClientService.Type = corev1.ServiceTypeNodePort
	b := &ClientServiceBuilder{pn}
	existing := b.Object().(*corev1.Service)
	existing.CreationTimestamp = metav1.Now()
	existing.Labels = map[string]string{"foreign": "kept"}
	existing.Annotations = map[string]string{"foreign-annotation": "kept"}
	existing.Spec = corev1.ServiceSpec{
		Type:      corev1.ServiceTypeNodePort,
		ClusterIP: "10.0.0.12",
		Ports: []corev1.ServicePort{
			{Name: PortClientTCP, Protocol: corev1.ProtocolTCP, Port: 9966, TargetPort: intstr.FromString(PortClientTCP), NodePort: 31002},
			{Name: PortClientUDP, Protocol: corev1.ProtocolUDP, Port: 9966, TargetPort: intstr.FromString(PortClientUDP), NodePort: 31001},
		},
	}
	svc := buildService(t, b, existing)
	got := portsByName(svc.Spec.Ports)
	if got[PortClientUDP].NodePort != 31001 || got[PortClientTCP].NodePort != 31002 {
		t.Errorf("node ports moved: %+v", svc.Spec.Ports)
	}
	if svc.Spec.ClusterIP != "10.0.0.12" {
		t.Errorf("allocated clusterIP changed to %q", svc.Spec.ClusterIP)
	}
	if svc.Labels["foreign"] != "kept" || svc.Annotations["foreign-annotation"] != "kept" {
		t.Errorf("foreign metadata dropped: %v %v", svc.Labels, svc.Annotations)
	}

	// A port number change keeps the node port of the same name.
	pn.Spec.Ports.Client = 7000
	svc = buildService(t, b, svc)
	got = portsByName(svc.Spec.Ports)
	if got[PortClientUDP].Port != 7000 || got[PortClientUDP].NodePort != 31001 {
		t.Errorf("after port change: %+v", svc.Spec.Ports)
	}

	// Turning UDP off drops its port; TCP keeps its node port.
	pn.Spec.ClientService.UDP = ptr.To(false)
	svc = buildService(t, b, svc)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != PortClientTCP || svc.Spec.Ports[0].NodePort != 31002 {
		t.Errorf("after udp off: %+v", svc.Spec.Ports)
	}
	// Turning it back on gives a fresh port (0: the cluster allocates one).
	pn.Spec.ClientService.UDP = ptr.To(true)
	svc = buildService(t, b, svc)
	got = portsByName(svc.Spec.Ports)
	if got[PortClientUDP].NodePort != 0 || got[PortClientTCP].NodePort != 31002 {
		t.Errorf("after udp on again: %+v", svc.Spec.Ports)
	}
}

func TestMergePorts(t *testing.T) {
	existing := []corev1.ServicePort{
		{Name: "a", Protocol: corev1.ProtocolTCP, NodePort: 30001},
		{Name: "a", Protocol: corev1.ProtocolUDP, NodePort: 30002},
		{Name: "gone", Protocol: corev1.ProtocolTCP, NodePort: 30003},
	}
	desired := []corev1.ServicePort{
		{Name: "a", Protocol: corev1.ProtocolUDP},
		{Name: "b", Protocol: corev1.ProtocolTCP},
	}
	got := mergePorts(existing, desired)
	want := []corev1.ServicePort{
		{Name: "a", Protocol: corev1.ProtocolUDP, NodePort: 30002},
		{Name: "b", Protocol: corev1.ProtocolTCP},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mergePorts = %+v, want %+v", got, want)
	}
	if got := mergePorts(nil, nil); len(got) != 0 {
		t.Errorf("mergePorts(nil, nil) = %v", got)
	}
}

func TestInternalService(t *testing.T) {
	for _, typ := range []corev1.ServiceType{"", corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer} {
		pn := newPN()
		pn.Spec.ClientService.Type = typ
		pn.Spec.Ports = ddpushv1.PushNodePorts{Client: 1000, Push: 2000, HTTP: 3000}
		svc := buildService(t, &InternalServiceBuilder{pn}, nil)
		if svc.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("clientService.type %q: internal type = %q, want ClusterIP", typ, svc.Spec.Type)
		}
		want := []corev1.ServicePort{
			{Name: PortPush, Protocol: corev1.ProtocolTCP, Port: 2000, TargetPort: intstr.FromString(PortPush)},
			{Name: PortHTTP, Protocol: corev1.ProtocolTCP, Port: 3000, TargetPort: intstr.FromString(PortHTTP)},
		}
		if !reflect.DeepEqual(svc.Spec.Ports, want) {
			t.Errorf("internal ports = %+v, want push and http only", svc.Spec.Ports)
		}
		if svc.Spec.ExternalTrafficPolicy != "" {
			t.Errorf("internal externalTrafficPolicy = %q", svc.Spec.ExternalTrafficPolicy)
		}
		if !maps.Equal(svc.Spec.Selector, SelectorLabels(pn)) {
			t.Errorf("selector = %v", svc.Spec.Selector)
		}
	}
	// An existing internal Service someone made a LoadBalancer goes back.
	pn := newPN()
	b := &InternalServiceBuilder{pn}
	svc := b.Object().(*corev1.Service)
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc = buildService(t, b, svc)
	if svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("internal Service left as %q", svc.Spec.Type)
	}
}

// ---------------------------------------------------------------- StatefulSet

func TestStatefulSetPodSecurity(t *testing.T) {
	sts := buildSTS(t, newPN())
	ps := sts.Spec.Template.Spec
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Errorf("automountServiceAccountToken = %v, want false", ps.AutomountServiceAccountToken)
	}
	if ps.EnableServiceLinks == nil || *ps.EnableServiceLinks {
		t.Errorf("enableServiceLinks = %v, want false", ps.EnableServiceLinks)
	}
	sc := ps.SecurityContext
	if sc == nil {
		t.Fatal("no pod security context")
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("pod runAsNonRoot = %v", sc.RunAsNonRoot)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
		t.Errorf("pod runAsUser = %v, want 65532", sc.RunAsUser)
	}
	if sc.FSGroup == nil || *sc.FSGroup != 65532 {
		t.Errorf("pod fsGroup = %v, want 65532", sc.FSGroup)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile = %v, want RuntimeDefault", sc.SeccompProfile)
	}
	c := container(t, sts)
	csc := c.SecurityContext
	if csc == nil {
		t.Fatal("no container security context")
	}
	if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		t.Errorf("readOnlyRootFilesystem = %v", csc.ReadOnlyRootFilesystem)
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation = %v", csc.AllowPrivilegeEscalation)
	}
	if csc.Privileged != nil && *csc.Privileged {
		t.Errorf("privileged container")
	}
	if csc.Capabilities == nil || !reflect.DeepEqual(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) != 0 {
		t.Errorf("capabilities = %+v, want drop ALL", csc.Capabilities)
	}
	if csc.RunAsNonRoot != nil && !*csc.RunAsNonRoot {
		t.Errorf("container runAsNonRoot false")
	}
}

func TestStatefulSetContainer(t *testing.T) {
	pn := newPN()
	sts := buildSTS(t, pn)
	c := container(t, sts)
	if !reflect.DeepEqual(c.Command, []string{"/pushnode"}) {
		t.Errorf("command = %v, want [/pushnode]", c.Command)
	}
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != "edge-config" {
		t.Errorf("envFrom = %+v, want the ConfigMap edge-config", c.EnvFrom)
	}
	if c.Image != testImage {
		t.Errorf("image = %q, want default %q", c.Image, testImage)
	}
	if c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("imagePullPolicy = %q, want IfNotPresent", c.ImagePullPolicy)
	}

	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	tm, ok := mounts["/etc/pushnode/api"]
	if !ok || !tm.ReadOnly {
		t.Errorf("token mount = %+v (present %v), want read-only at /etc/pushnode/api", tm, ok)
	}
	dm, ok := mounts["/data"]
	if !ok || dm.ReadOnly {
		t.Errorf("data mount = %+v (present %v), want writable at /data", dm, ok)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	tv, ok := vols[tm.Name]
	if !ok || tv.Secret == nil || tv.Secret.SecretName != "edge-api-token" {
		t.Errorf("token volume %q = %+v, want the Secret edge-api-token", tm.Name, tv)
	}
	// The data mount is the volume claim template, not a pod volume.
	if _, ok := vols[dm.Name]; ok {
		t.Errorf("data volume %q is a pod volume; want it from the claim template", dm.Name)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != dm.Name {
		t.Errorf("volumeClaimTemplates = %+v, want one named %q", sts.Spec.VolumeClaimTemplates, dm.Name)
	}
	// The env tells the node where its token and data are.
	env := NodeEnv(pn)
	if env["PUSHNODE_API_TOKEN_FILE"] != tm.MountPath+"/"+TokenKey || env["PUSHNODE_DATA_DIR"] != dm.MountPath {
		t.Errorf("env points at %q/%q, mounts are %q/%q", env["PUSHNODE_API_TOKEN_FILE"], env["PUSHNODE_DATA_DIR"], tm.MountPath, dm.MountPath)
	}

	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe = %+v, want HTTP", name, p)
			continue
		}
		if p.HTTPGet.Port != intstr.FromString(PortHTTP) {
			t.Errorf("%s probe port = %v, want the named port %q", name, p.HTTPGet.Port, PortHTTP)
		}
	}
	if c.ReadinessProbe != nil && c.ReadinessProbe.HTTPGet != nil && c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("readiness path = %q, want /readyz", c.ReadinessProbe.HTTPGet.Path)
	}
	if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("liveness path = %q, want /healthz", c.LivenessProbe.HTTPGet.Path)
	}
	if c.StartupProbe != nil && c.StartupProbe.HTTPGet != nil && c.StartupProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("startup path = %q, want /readyz", c.StartupProbe.HTTPGet.Path)
	}

	wantPorts := []corev1.ContainerPort{
		{Name: PortClientUDP, ContainerPort: 9966, Protocol: corev1.ProtocolUDP},
		{Name: PortClientTCP, ContainerPort: 9966, Protocol: corev1.ProtocolTCP},
		{Name: PortPush, ContainerPort: 9999, Protocol: corev1.ProtocolTCP},
		{Name: PortHTTP, ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
	}
	if !reflect.DeepEqual(c.Ports, wantPorts) {
		t.Errorf("container ports = %+v\nwant %+v", c.Ports, wantPorts)
	}
	// Every Service targets a named port the container has.
	cp := map[string]bool{}
	for _, p := range c.Ports {
		cp[p.Name] = true
	}
	for _, b := range []Builder{&HeadlessServiceBuilder{pn}, &ClientServiceBuilder{pn}, &InternalServiceBuilder{pn}} {
		svc := buildService(t, b, nil)
		for _, p := range svc.Spec.Ports {
			if !cp[p.TargetPort.StrVal] {
				t.Errorf("%s port %s targets %v, which the container lacks", svc.Name, p.Name, p.TargetPort)
			}
		}
	}

	// Pods are selected by the selector and carry the labels.
	if sts.Spec.Selector == nil || !maps.Equal(sts.Spec.Selector.MatchLabels, SelectorLabels(pn)) {
		t.Errorf("selector = %+v", sts.Spec.Selector)
	}
	for k, v := range SelectorLabels(pn) {
		if sts.Spec.Template.Labels[k] != v {
			t.Errorf("pod template lacks selector label %s=%s: %v", k, v, sts.Spec.Template.Labels)
		}
	}
	if sts.Spec.ServiceName != "edge-headless" {
		t.Errorf("serviceName = %q, want edge-headless", sts.Spec.ServiceName)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("replicas = %v, want 1", sts.Spec.Replicas)
	}
}

func TestStatefulSetImage(t *testing.T) {
	pn := newPN()
	pn.Spec.Image = "mine/pushnode:v2"
	pn.Spec.ImagePullPolicy = corev1.PullAlways
	c := container(t, buildSTS(t, pn))
	if c.Image != "mine/pushnode:v2" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image = %q policy %q, want the spec's", c.Image, c.ImagePullPolicy)
	}
	if Image(newPN(), "def") != "def" || Image(pn, "def") != "mine/pushnode:v2" {
		t.Errorf("Image() does not prefer spec.image over the default")
	}
}

func TestStatefulSetContainerPortsPerTransport(t *testing.T) {
	pn := newPN()
	pn.Spec.ClientService.UDP = ptr.To(false)
	c := container(t, buildSTS(t, pn))
	var names []string
	for _, p := range c.Ports {
		names = append(names, p.Name)
	}
	if !reflect.DeepEqual(names, []string{PortClientTCP, PortPush, PortHTTP}) {
		t.Errorf("tcp only: container ports %v", names)
	}
	pn.Spec.ClientService.UDP, pn.Spec.ClientService.TCP = ptr.To(true), ptr.To(false)
	c = container(t, buildSTS(t, pn))
	names = nil
	for _, p := range c.Ports {
		names = append(names, p.Name)
	}
	if !reflect.DeepEqual(names, []string{PortClientUDP, PortPush, PortHTTP}) {
		t.Errorf("udp only: container ports %v", names)
	}
}

func TestStatefulSetPassThrough(t *testing.T) {
	pn := newPN()
	pn.Spec.NodeSelector = map[string]string{"kubernetes.io/arch": "arm64"}
	pn.Spec.Tolerations = []corev1.Toleration{{Key: "edge", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	pn.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}},
		}}},
	}}
	pn.Spec.Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
	}
	pn.Spec.Labels = map[string]string{"team": "mobile"}
	pn.Spec.Annotations = map[string]string{"owner": "alice"}
	sts := buildSTS(t, pn)
	ps := sts.Spec.Template.Spec
	if !reflect.DeepEqual(ps.NodeSelector, pn.Spec.NodeSelector) {
		t.Errorf("nodeSelector = %v", ps.NodeSelector)
	}
	if !reflect.DeepEqual(ps.Tolerations, pn.Spec.Tolerations) {
		t.Errorf("tolerations = %v", ps.Tolerations)
	}
	if !reflect.DeepEqual(ps.Affinity, pn.Spec.Affinity) {
		t.Errorf("affinity = %v", ps.Affinity)
	}
	if !reflect.DeepEqual(container(t, sts).Resources, pn.Spec.Resources) {
		t.Errorf("resources = %v", container(t, sts).Resources)
	}
	if sts.Spec.Template.Labels["team"] != "mobile" || sts.Labels["team"] != "mobile" {
		t.Errorf("spec.labels not on StatefulSet and pods: %v / %v", sts.Labels, sts.Spec.Template.Labels)
	}
	if sts.Spec.Template.Annotations["owner"] != "alice" || sts.Annotations["owner"] != "alice" {
		t.Errorf("spec.annotations not on StatefulSet and pods: %v / %v", sts.Annotations, sts.Spec.Template.Annotations)
	}
}

func TestStatefulSetStorage(t *testing.T) {
	pn := newPN()
	sts := buildSTS(t, pn)
	vct := sts.Spec.VolumeClaimTemplates[0]
	if got := vct.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse("1Gi")) != 0 {
		t.Errorf("default size = %s, want 1Gi", got.String())
	}
	if vct.Spec.StorageClassName != nil {
		t.Errorf("storageClassName = %q, want unset", *vct.Spec.StorageClassName)
	}
	if !reflect.DeepEqual(vct.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("accessModes = %v", vct.Spec.AccessModes)
	}
	rp := sts.Spec.PersistentVolumeClaimRetentionPolicy
	if rp == nil || rp.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType || rp.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("default retention = %+v, want Retain/Retain", rp)
	}

	pn.Spec.Storage = ddpushv1.StorageSpec{
		Size:             resource.MustParse("20Gi"),
		StorageClassName: ptr.To("fast-ssd"),
		WhenDeleted:      ddpushv1.PVCDelete,
		WhenScaled:       ddpushv1.PVCRetain,
	}
	sts = buildSTS(t, pn)
	vct = sts.Spec.VolumeClaimTemplates[0]
	if got := vct.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse("20Gi")) != 0 {
		t.Errorf("size = %s, want 20Gi", got.String())
	}
	if vct.Spec.StorageClassName == nil || *vct.Spec.StorageClassName != "fast-ssd" {
		t.Errorf("storageClassName = %v, want fast-ssd", vct.Spec.StorageClassName)
	}
	rp = sts.Spec.PersistentVolumeClaimRetentionPolicy
	if rp == nil || rp.WhenDeleted != appsv1.DeletePersistentVolumeClaimRetentionPolicyType || rp.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("retention = %+v, want Delete/Retain", rp)
	}
}

func settingsHash(t *testing.T, pn *ddpushv1.PushNode) string {
	t.Helper()
	h := buildSTS(t, pn).Spec.Template.Annotations[AnnotationSettingsHash]
	if h == "" {
		t.Fatalf("pod template has no %s annotation", AnnotationSettingsHash)
	}
	return h
}

func TestSettingsHashAnnotation(t *testing.T) {
	base := settingsHash(t, newPN())
	if again := settingsHash(t, newPN()); again != base {
		t.Errorf("hash changed without a change: %s -> %s", base, again)
	}
	// The hash matches the ConfigMap the pods read.
	if got := SettingsHash(buildConfigMap(t, newPN()).Data); got != base {
		t.Errorf("annotation %s != hash of the ConfigMap %s", base, got)
	}
	// An explicitly defaulted spec is the same as an empty one.
	if got := settingsHash(t, Defaulted(newPN())); got != base {
		t.Errorf("defaulted spec hashes %s, empty spec %s", got, base)
	}

	changes := map[string]func(*ddpushv1.PushNode){
		"heartbeatPolicy":  func(p *ddpushv1.PushNode) { p.Spec.Settings.HeartbeatPolicy = "always" },
		"maxContentLength": func(p *ddpushv1.PushNode) { p.Spec.Settings.MaxContentLength = 100 },
		"onlineWindow": func(p *ddpushv1.PushNode) {
			p.Spec.Settings.OnlineWindow = &metav1.Duration{Duration: 30 * time.Second}
		},
		"expiryAge":         func(p *ddpushv1.PushNode) { p.Spec.Settings.ExpiryAge = &metav1.Duration{Duration: 2 * time.Hour} },
		"createByHeartbeat": func(p *ddpushv1.PushNode) { p.Spec.Settings.CreateByHeartbeat = ptr.To(false) },
		"maxRecords":        func(p *ddpushv1.PushNode) { p.Spec.Settings.MaxRecords = ptr.To[int64](10) },
		"rateLimit":         func(p *ddpushv1.PushNode) { p.Spec.Settings.RateLimit = ptr.To[int32](0) },
		"udp":               func(p *ddpushv1.PushNode) { p.Spec.ClientService.UDP = ptr.To(false) },
		"tcp":               func(p *ddpushv1.PushNode) { p.Spec.ClientService.TCP = ptr.To(false) },
		"client port":       func(p *ddpushv1.PushNode) { p.Spec.Ports.Client = 1 },
		"push port":         func(p *ddpushv1.PushNode) { p.Spec.Ports.Push = 1 },
		"http port":         func(p *ddpushv1.PushNode) { p.Spec.Ports.HTTP = 1 },
	}
	seen := map[string]string{base: "base"}
	for name, change := range changes {
		pn := newPN()
		change(pn)
		h := settingsHash(t, pn)
		if h == base {
			t.Errorf("changing %s did not change the settings hash", name)
		}
		if other, dup := seen[h]; dup {
			t.Errorf("changing %s gives the same hash as %s", name, other)
		}
		seen[h] = name
	}

	same := map[string]func(*ddpushv1.PushNode){
		"resources": func(p *ddpushv1.PushNode) {
			p.Spec.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("2Gi")}}
		},
		"image":        func(p *ddpushv1.PushNode) { p.Spec.Image = "other:v9" },
		"nodeSelector": func(p *ddpushv1.PushNode) { p.Spec.NodeSelector = map[string]string{"a": "b"} },
		"storage size": func(p *ddpushv1.PushNode) { p.Spec.Storage.Size = resource.MustParse("9Gi") },
		"generation":   func(p *ddpushv1.PushNode) { p.Generation = 42 },
	}
	for name, change := range same {
		pn := newPN()
		change(pn)
		if h := settingsHash(t, pn); h != base {
			t.Errorf("changing only %s changed the settings hash %s -> %s", name, base, h)
		}
	}
}

func TestSettingsHashMapOrder(t *testing.T) {
	ref := SettingsHash(NodeEnv(customPN()))
	for i := range 200 {
		// Build the same map anew each time, inserting in a varying order,
		// so that Go's randomized iteration order varies too.
		src := NodeEnv(customPN())
		keys := make([]string, 0, len(src))
		for k := range src {
			keys = append(keys, k)
		}
		m := make(map[string]string)
		for j := range keys {
			k := keys[(j+i)%len(keys)]
			m[k] = src[k]
		}
		if h := SettingsHash(m); h != ref {
			t.Fatalf("iteration %d: hash %s != %s", i, h, ref)
		}
	}
	// Keys and values are delimited: moving a character across the
	// boundary changes the hash.
	if SettingsHash(map[string]string{"ab": "c"}) == SettingsHash(map[string]string{"a": "bc"}) {
		t.Errorf("SettingsHash does not separate keys from values")
	}
	if SettingsHash(nil) != SettingsHash(map[string]string{}) {
		t.Errorf("nil and empty maps hash differently")
	}
}

func TestStatefulSetExistingKeepsImmutableFields(t *testing.T) {
	pn := newPN()
	b := &StatefulSetBuilder{pn, testImage}
	sts := b.Object().(*appsv1.StatefulSet)
	if err := b.Update(sts); err != nil {
		t.Fatal(err)
	}
	// The cluster created it.
	sts.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Hour))
	sts.Labels["foreign"] = "kept"
	before := sts.DeepCopy()
	oldHash := sts.Spec.Template.Annotations[AnnotationSettingsHash]

	// The user changes the storage (size, class), the settings, the labels
	// and the image.
	pn.Spec.Storage.Size = resource.MustParse("10Gi")
	pn.Spec.Storage.StorageClassName = ptr.To("fast")
	pn.Spec.Storage.WhenDeleted = ddpushv1.PVCDelete
	pn.Spec.Settings.MaxContentLength = 100
	pn.Spec.Labels = map[string]string{"team": "mobile"}
	pn.Spec.Image = "mine:v2"
	if err := b.Update(sts); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sts.Spec.Selector, before.Spec.Selector) {
		t.Errorf("selector changed on an existing StatefulSet: %+v -> %+v", before.Spec.Selector, sts.Spec.Selector)
	}
	if sts.Spec.ServiceName != before.Spec.ServiceName {
		t.Errorf("serviceName changed on an existing StatefulSet: %q -> %q", before.Spec.ServiceName, sts.Spec.ServiceName)
	}
	if !reflect.DeepEqual(sts.Spec.VolumeClaimTemplates, before.Spec.VolumeClaimTemplates) {
		t.Errorf("volumeClaimTemplates changed on an existing StatefulSet:\n%+v\n->\n%+v", before.Spec.VolumeClaimTemplates, sts.Spec.VolumeClaimTemplates)
	}
	// The template and the rest of the spec follow.
	if h := sts.Spec.Template.Annotations[AnnotationSettingsHash]; h == oldHash {
		t.Errorf("settings hash did not change on the existing StatefulSet")
	}
	if c := container(t, sts); c.Image != "mine:v2" {
		t.Errorf("image = %q, want mine:v2", c.Image)
	}
	if sts.Spec.Template.Labels["team"] != "mobile" || sts.Labels["team"] != "mobile" || sts.Labels["foreign"] != "kept" {
		t.Errorf("labels: sts %v, template %v", sts.Labels, sts.Spec.Template.Labels)
	}
	if rp := sts.Spec.PersistentVolumeClaimRetentionPolicy; rp == nil || rp.WhenDeleted != appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
		t.Errorf("retention policy not updated: %+v", rp)
	}

	// Replicas follow the spec (someone scaled the StatefulSet by hand).
	sts.Spec.Replicas = ptr.To[int32](0)
	if err := b.Update(sts); err != nil {
		t.Fatal(err)
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("replicas = %v, want 1", sts.Spec.Replicas)
	}
	// Changing Replicas in the result must not write through to the spec.
	*sts.Spec.Replicas = 5
	if pn.Spec.Replicas != nil && *pn.Spec.Replicas != 1 {
		t.Errorf("StatefulSet replicas alias the PushNode's")
	}
	pn.Spec.Replicas = ptr.To[int32](1)
	if err := b.Update(sts); err != nil {
		t.Fatal(err)
	}
	*sts.Spec.Replicas = 7
	if *pn.Spec.Replicas != 1 {
		t.Errorf("StatefulSet replicas alias the PushNode's: spec now %d", *pn.Spec.Replicas)
	}
}

func TestStatefulSetNewGetsStorageChange(t *testing.T) {
	// A StatefulSet not created yet (CreationTimestamp zero) takes the
	// current storage, even if Update ran before with another.
	pn := newPN()
	b := &StatefulSetBuilder{pn, testImage}
	sts := b.Object().(*appsv1.StatefulSet)
	if err := b.Update(sts); err != nil {
		t.Fatal(err)
	}
	pn.Spec.Storage.Size = resource.MustParse("3Gi")
	if err := b.Update(sts); err != nil {
		t.Fatal(err)
	}
	if got := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse("3Gi")) != 0 {
		t.Errorf("size = %s, want 3Gi", got.String())
	}
}

func TestStatefulSetUpdateIdempotent(t *testing.T) {
	pn := customPN()
	pn.Spec.Labels = map[string]string{"team": "mobile"}
	pn.Spec.Annotations = map[string]string{"owner": "alice"}
	b := &StatefulSetBuilder{pn, testImage}
	sts := b.Object().(*appsv1.StatefulSet)
	if err := b.Update(sts); err != nil {
		t.Fatal(err)
	}
	sts.CreationTimestamp = metav1.Now()
	first := sts.DeepCopy()
	for range 5 {
		if err := b.Update(sts); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(first, sts) {
		t.Errorf("repeated Update changed the StatefulSet")
	}
}

func TestBuildersDoNotMutatePushNode(t *testing.T) {
	pn := customPN()
	pn.Spec.Labels = map[string]string{"team": "mobile"}
	pn.Spec.Annotations = map[string]string{"owner": "alice"}
	pn.Spec.ClientService.Annotations = map[string]string{"lb": "x"}
	before := pn.DeepCopy()
	for _, b := range For(pn, Options{DefaultImage: testImage}) {
		obj := b.Object()
		if err := b.Update(obj); err != nil {
			t.Fatal(err)
		}
		// Writing to the built object's maps must not reach the PushNode.
		l := obj.GetLabels()
		l["written"] = "x"
		a := obj.GetAnnotations()
		if a != nil {
			a["written"] = "x"
		}
		if sts, ok := obj.(*appsv1.StatefulSet); ok {
			sts.Spec.Template.Labels["written"] = "x"
			sts.Spec.Template.Annotations["written"] = "x"
			sts.Spec.Selector.MatchLabels["written"] = "x"
		}
		if svc, ok := obj.(*corev1.Service); ok {
			svc.Spec.Selector["written"] = "x"
		}
	}
	if !reflect.DeepEqual(pn, before) {
		t.Errorf("building mutated the PushNode:\n got %+v\nwant %+v", pn.Spec, before.Spec)
	}
	// Nor each other: a fresh build still has clean selector labels.
	if _, ok := SelectorLabels(pn)["written"]; ok {
		t.Errorf("SelectorLabels shares a map")
	}
}

// The pod template spells out what the API server would default, so that
// an unchanged StatefulSet read back from the cluster compares equal to
// the desired one and controllerutil.CreateOrUpdate leaves it alone
// instead of sending an update (and logging "updated") every reconcile.
func TestStatefulSetSetsServerDefaults(t *testing.T) {
	sts := buildSTS(t, newPN())
	ps := sts.Spec.Template.Spec
	if ps.RestartPolicy != corev1.RestartPolicyAlways || ps.DNSPolicy != corev1.DNSClusterFirst || ps.SchedulerName != corev1.DefaultSchedulerName {
		t.Errorf("restartPolicy %q dnsPolicy %q schedulerName %q: want the API server's defaults", ps.RestartPolicy, ps.DNSPolicy, ps.SchedulerName)
	}
	c := container(t, sts)
	if c.TerminationMessagePath != corev1.TerminationMessagePathDefault || c.TerminationMessagePolicy != corev1.TerminationMessageReadFile {
		t.Errorf("terminationMessagePath %q policy %q: want the API server's defaults", c.TerminationMessagePath, c.TerminationMessagePolicy)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
		if p == nil || p.HTTPGet == nil {
			continue // reported by TestStatefulSetContainer
		}
		if p.HTTPGet.Scheme != corev1.URISchemeHTTP || p.SuccessThreshold != 1 {
			t.Errorf("%s probe scheme %q successThreshold %d: want HTTP and 1", name, p.HTTPGet.Scheme, p.SuccessThreshold)
		}
	}
	for _, v := range ps.Volumes {
		if v.Secret != nil && v.Secret.DefaultMode == nil {
			t.Errorf("secret volume %s has no defaultMode (the API server would set 0644)", v.Name)
		}
	}
}
