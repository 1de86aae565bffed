package builders

import (
	"maps"
	"reflect"
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
	pn.Spec.NodeSelector = map[string]ddpushv1.LabelValue{"kubernetes.io/arch": "arm64"}
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
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile"}
	pn.Spec.Annotations = map[string]string{"owner": "alice"}
	sts := buildSTS(t, pn)
	ps := sts.Spec.Template.Spec
	if !reflect.DeepEqual(ps.NodeSelector, ddpushv1.StringMap(pn.Spec.NodeSelector)) {
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
		Size:             ptr.To(resource.MustParse("20Gi")),
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
		"heartbeatPolicy":     func(p *ddpushv1.PushNode) { p.Spec.Settings.HeartbeatPolicy = "always" },
		"maxContentLength":    func(p *ddpushv1.PushNode) { p.Spec.Settings.MaxContentLength = 100 },
		"onlineWindowSeconds": func(p *ddpushv1.PushNode) { p.Spec.Settings.OnlineWindowSeconds = ptr.To[int32](30) },
		"expiryAgeSeconds":    func(p *ddpushv1.PushNode) { p.Spec.Settings.ExpiryAgeSeconds = ptr.To[int64](7200) },
		"createByHeartbeat":   func(p *ddpushv1.PushNode) { p.Spec.Settings.CreateByHeartbeat = ptr.To(false) },
		"maxRecords":          func(p *ddpushv1.PushNode) { p.Spec.Settings.MaxRecords = ptr.To[int64](10) },
		"rateLimit":           func(p *ddpushv1.PushNode) { p.Spec.Settings.RateLimit = ptr.To[int32](0) },
		"udp":                 func(p *ddpushv1.PushNode) { p.Spec.ClientService.UDP = ptr.To(false) },
		"tcp":                 func(p *ddpushv1.PushNode) { p.Spec.ClientService.TCP = ptr.To(false) },
		"client port":         func(p *ddpushv1.PushNode) { p.Spec.Ports.Client = 1 },
		"push port":           func(p *ddpushv1.PushNode) { p.Spec.Ports.Push = 1 },
		"http port":           func(p *ddpushv1.PushNode) { p.Spec.Ports.HTTP = 1 },
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
		"nodeSelector": func(p *ddpushv1.PushNode) { p.Spec.NodeSelector = map[string]ddpushv1.LabelValue{"a": "b"} },
		"storage size": func(p *ddpushv1.PushNode) { p.Spec.Storage.Size = ptr.To(resource.MustParse("9Gi")) },
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
	b := &StatefulSetBuilder{PN: pn, DefaultImage: testImage}
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
	pn.Spec.Storage.Size = ptr.To(resource.MustParse("10Gi"))
	pn.Spec.Storage.StorageClassName = ptr.To("fast")
	pn.Spec.Storage.WhenDeleted = ddpushv1.PVCDelete
	pn.Spec.Settings.MaxContentLength = 100
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile"}
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
	b := &StatefulSetBuilder{PN: pn, DefaultImage: testImage}
	sts := b.Object().(*appsv1.StatefulSet)
	if err := b.Update(sts); err != nil {
		t.Fatal(err)
	}
	pn.Spec.Storage.Size = ptr.To(resource.MustParse("3Gi"))
	if err := b.Update(sts); err != nil {
		t.Fatal(err)
	}
	if got := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse("3Gi")) != 0 {
		t.Errorf("size = %s, want 3Gi", got.String())
	}
}

func TestStatefulSetUpdateIdempotent(t *testing.T) {
	pn := customPN()
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile"}
	pn.Spec.Annotations = map[string]string{"owner": "alice"}
	b := &StatefulSetBuilder{PN: pn, DefaultImage: testImage}
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
