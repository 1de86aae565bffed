package builders

import (
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// Names inside the pod.
const (
	ContainerName = "pushnode"
	VolumeData    = "data"
	VolumeToken   = "api-token"
	// NodeCommand is the node binary in the image, which also holds the
	// manager.
	NodeCommand = "/pushnode"
	nonRootUID  = 65532
)

// StatefulSetBuilder builds the StatefulSet running the node.
type StatefulSetBuilder struct {
	PN           *ddpushv1.PushNode
	DefaultImage string
	// Token is filled by the Secret builder that runs before this one; when
	// it holds a hash, the pod template carries it (AnnotationTokenHash).
	Token *TokenHash
}

func (b *StatefulSetBuilder) Object() client.Object {
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: StatefulSetName(b.PN), Namespace: b.PN.Namespace}}
}

// Update sets the desired state. Fields the API server refuses to change
// (selector, service name, volume claim templates) are only set on a new
// object; storage changes are the reconciler's business.
func (b *StatefulSetBuilder) Update(obj client.Object) error {
	sts := obj.(*appsv1.StatefulSet)
	pn := Defaulted(b.PN)
	s := &pn.Spec
	setMeta(sts, b.PN)
	if sts.CreationTimestamp.IsZero() {
		sts.Spec.Selector = &metav1.LabelSelector{MatchLabels: SelectorLabels(pn)}
		sts.Spec.ServiceName = HeadlessServiceName(pn)
		sts.Spec.VolumeClaimTemplates = []corev1.PersistentVolumeClaim{VolumeClaimTemplate(pn)}
		if Sharded(pn) {
			// Every pod is the only home of its slots: after a full
			// restart, none should wait for the pods before it.
			sts.Spec.PodManagementPolicy = appsv1.ParallelPodManagement
		}
	}
	sts.Spec.Replicas = ptr.To(Pods(b.PN))
	sts.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType}
	sts.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenDeleted: appsv1.PersistentVolumeClaimRetentionPolicyType(s.Storage.WhenDeleted),
		WhenScaled:  appsv1.PersistentVolumeClaimRetentionPolicyType(s.Storage.WhenScaled),
	}
	sts.Spec.Template = PodTemplate(pn, b.DefaultImage)
	if b.Token != nil && b.Token.Value != "" {
		sts.Spec.Template.Annotations[AnnotationTokenHash] = b.Token.Value
	}
	return nil
}

// Sharded says whether pn's uuids are split between several pods. A
// PushNode draining to one pod stays sharded until the last slots moved:
// its pods keep their peer links until then.
func Sharded(pn *ddpushv1.PushNode) bool {
	return Pods(pn) > 1
}

// Pods is the number of pods pn runs: spec.replicas, except while
// replicas shrink. Pods that own slots in the recorded slot map, or that
// the map still names, or that a resharding started from, stay until the
// map no longer names them and the resharding is over: removing them
// sooner would lose the slots' records, and leave the other pods
// relaying to pods that are gone.
func Pods(pn *ddpushv1.PushNode) int32 {
	n := int32(1)
	if pn.Spec.Replicas != nil && *pn.Spec.Replicas > 1 {
		n = *pn.Spec.Replicas
	}
	if rs := pn.Status.Resharding; rs != nil {
		// Until the pods that stay are seen holding the map without the
		// others, which ends the resharding.
		n = max(n, rs.FromReplicas, rs.ToReplicas)
	}
	sm := pn.Status.SlotMap
	if sm == nil {
		return n
	}
	n = max(n, sm.Pods)
	for _, r := range sm.Ranges {
		n = max(n, r.Ordinal+1)
	}
	return n
}

// PeerAddr is the peer link address of the pod with this ordinal: its
// stable name under the headless Service.
func PeerAddr(pn *ddpushv1.PushNode, ordinal int) string {
	return fmt.Sprintf("%s-%d.%s.%s.svc:%d", StatefulSetName(pn), ordinal, HeadlessServiceName(pn), pn.Namespace, PeerPort)
}

// VolumeClaimTemplate is the data volume of each pod.
func VolumeClaimTemplate(pn *ddpushv1.PushNode) corev1.PersistentVolumeClaim {
	s := Defaulted(pn).Spec.Storage
	return corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: VolumeData, Labels: ClaimLabels(pn)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: s.StorageClassName,
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: *s.Size},
			},
		},
	}
}

// ClaimLabels are the labels of the data volume claims: the selector
// labels and the operator's own, so that the operator's label-filtered
// cache sees them. (Claims of a StatefulSet created before carry the
// selector labels only.)
func ClaimLabels(pn *ddpushv1.PushNode) map[string]string {
	l := SelectorLabels(pn)
	l[LabelManagedBy] = ManagedByValue
	l[LabelComponent] = ComponentValue
	return l
}

// Image is the node image pn runs.
func Image(pn *ddpushv1.PushNode, def string) string {
	if pn.Spec.Image != "" {
		return pn.Spec.Image
	}
	return def
}

// PodTemplate is the node pod: non-root, read-only root filesystem, no
// Kubernetes credentials (the node faces the internet and never talks to
// the API server).
func PodTemplate(pn *ddpushv1.PushNode, defaultImage string) corev1.PodTemplateSpec {
	pn = Defaulted(pn)
	s := &pn.Spec
	ann := maps.Clone(s.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	ann[AnnotationSettingsHash] = SettingsHash(NodeEnv(pn))
	pullPolicy := s.ImagePullPolicy
	if pullPolicy == "" {
		pullPolicy = corev1.PullIfNotPresent
	}
	var ports []corev1.ContainerPort
	if *s.ClientService.UDP {
		ports = append(ports, corev1.ContainerPort{Name: PortClientUDP, ContainerPort: s.Ports.Client, Protocol: corev1.ProtocolUDP})
	}
	if *s.ClientService.TCP {
		ports = append(ports, corev1.ContainerPort{Name: PortClientTCP, ContainerPort: s.Ports.Client, Protocol: corev1.ProtocolTCP})
	}
	ports = append(ports,
		corev1.ContainerPort{Name: PortPush, ContainerPort: s.Ports.Push, Protocol: corev1.ProtocolTCP},
		corev1.ContainerPort{Name: PortHTTP, ContainerPort: s.Ports.HTTP, Protocol: corev1.ProtocolTCP})
	var args []string
	var env []corev1.EnvVar
	if Sharded(pn) {
		// Only pods that share the uuids get the peer link: a one-pod
		// PushNode keeps the pod template it always had, so upgrading
		// the operator does not roll its pod. The node takes its ordinal
		// from its pod name ($HOSTNAME ends in -N).
		ports = append(ports, corev1.ContainerPort{Name: PortPeer, ContainerPort: PeerPort, Protocol: corev1.ProtocolTCP})
		args = []string{"--peer-addr=:" + itoa(PeerPort), "--peer-token-file=" + PeerTokenFilePath}
		// The node reads its ordinal from $POD_NAME before $HOSTNAME,
		// which a pod spec can set to something else.
		env = []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}}}
	}
	probe := func(path string, period, failures int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(PortHTTP), Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds:    period,
			TimeoutSeconds:   2,
			SuccessThreshold: 1,
			FailureThreshold: failures,
		}
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: Labels(pn), Annotations: ann},
		Spec: corev1.PodSpec{
			// The fields the API server would default are set to those
			// defaults (here, in the probes and in the container), so that
			// an unchanged StatefulSet compares equal and is not updated on
			// every reconcile.
			RestartPolicy:                 corev1.RestartPolicyAlways,
			DNSPolicy:                     corev1.DNSClusterFirst,
			SchedulerName:                 corev1.DefaultSchedulerName,
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			NodeSelector:                  ddpushv1.StringMap(s.NodeSelector),
			Tolerations:                   s.Tolerations,
			Affinity:                      s.Affinity,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](nonRootUID),
				RunAsGroup:     ptr.To[int64](nonRootUID),
				FSGroup:        ptr.To[int64](nonRootUID),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:                     ContainerName,
				TerminationMessagePath:   corev1.TerminationMessagePathDefault,
				TerminationMessagePolicy: corev1.TerminationMessageReadFile,
				Image:                    Image(pn, defaultImage),
				ImagePullPolicy:          pullPolicy,
				Command:                  []string{NodeCommand},
				Args:                     args,
				Env:                      env,
				EnvFrom:                  []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(pn)}}}},
				Ports:                    ports,
				Resources:                s.Resources,
				// Loading a million records takes seconds; give it a minute.
				StartupProbe:   probe(startupPath(pn), 2, 30),
				ReadinessProbe: probe("/readyz", 5, 2),
				LivenessProbe:  probe("/healthz", 10, 3),
				SecurityContext: &corev1.SecurityContext{
					ReadOnlyRootFilesystem:   ptr.To(true),
					AllowPrivilegeEscalation: ptr.To(false),
					RunAsNonRoot:             ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: VolumeData, MountPath: DataDir},
					{Name: VolumeToken, MountPath: TokenDir, ReadOnly: true},
				},
			}},
			Volumes: []corev1.Volume{{
				Name: VolumeToken,
				VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName:  SecretName(pn),
					DefaultMode: ptr.To[int32](0o440),
				}},
			}},
		},
	}
}

// startupPath is what the startup probe asks. A sharded pod is not ready
// until the operator hands it the slot map, which may take longer than
// the probe waits (the operator restarting, say): it must not be killed
// for that, so it is asked only whether it runs.
func startupPath(pn *ddpushv1.PushNode) string {
	if Sharded(pn) {
		return "/healthz"
	}
	return "/readyz"
}
