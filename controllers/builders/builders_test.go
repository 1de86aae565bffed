package builders

import (
	"maps"
	"reflect"
	"regexp"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	b := &StatefulSetBuilder{PN: pn, DefaultImage: testImage}
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
	if st.OnlineWindowSeconds == nil || *st.OnlineWindowSeconds != 60 {
		t.Errorf("onlineWindowSeconds = %v, want 60", st.OnlineWindowSeconds)
	}
	if st.ExpiryAgeSeconds == nil || *st.ExpiryAgeSeconds != 180000 {
		t.Errorf("expiryAgeSeconds = %v, want 180000 (50h)", st.ExpiryAgeSeconds)
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
	pn.Spec.Storage = ddpushv1.StorageSpec{Size: ptr.To(resource.MustParse("5Gi")), WhenDeleted: ddpushv1.PVCDelete, WhenScaled: ddpushv1.PVCDelete}
	pn.Spec.Settings = ddpushv1.NodeSettings{
		HeartbeatPolicy:     "always",
		MaxContentLength:    7,
		OnlineWindowSeconds: ptr.To[int32](1),
		ExpiryAgeSeconds:    ptr.To[int64](0), // 0 keeps records
		CreateByHeartbeat:   ptr.To(false),
		MaxRecords:          ptr.To[int64](0),
		RateLimit:           ptr.To[int32](0),
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
	*d.Spec.Settings.ExpiryAgeSeconds = 3600
	if !reflect.DeepEqual(pn, before) {
		t.Errorf("Defaulted's result shares memory with its input")
	}
}

// ---------------------------------------------------------------- NodeEnv / ConfigMap

func TestBuildersDoNotMutatePushNode(t *testing.T) {
	pn := customPN()
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile"}
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
