package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PushNodeSpec is the desired state of a push node.
// +kubebuilder:validation:XValidation:rule="!has(self.replicas) || self.replicas <= 1 || !has(self.ports) || ((!has(self.ports.client) || self.ports.client != 9977) && (!has(self.ports.push) || self.ports.push != 9977) && (!has(self.ports.http) || self.ports.http != 9977))",message="with replicas above 1 the pods link to each other on port 9977: ports.client, ports.push and ports.http must not be 9977"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.storage) || !has(self.storage) || (has(oldSelf.storage.storageClassName) == has(self.storage.storageClassName) && (!has(self.storage.storageClassName) || self.storage.storageClassName == oldSelf.storage.storageClassName))",message="storage.storageClassName cannot be set, changed or removed after creation: the data volumes already exist with their class; create a new PushNode for another class"
type PushNodeSpec struct {
	// Replicas is the number of node pods, 1 to 512. With more than one,
	// the uuids are split between the pods by slot (see the slot map in
	// the status). Changing it moves slots between the pods one batch at
	// a time (resharding); status.resharding shows the progress.
	// +kubebuilder:default=1
	// +kubebuilder:validation:XValidation:rule="self >= 1",message="replicas must be at least 1: a PushNode cannot run zero pods (delete it instead)"
	// +kubebuilder:validation:XValidation:rule="self <= 512",message="replicas must be at most 512: the uuid slots are split between at most 512 pods"
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Image of the push node. Defaults to the operator's --pushnode-image.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.matches('^[^\\\\s]+$')",message="image must not contain white space"
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the node container.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// Ports the node listens on.
	// +kubebuilder:default={}
	// +optional
	Ports PushNodePorts `json:"ports,omitempty"`

	// ClientService is the Service phones reach (UDP and/or TCP).
	// +kubebuilder:default={}
	// +optional
	ClientService ClientServiceSpec `json:"clientService,omitempty"`

	// Storage is the persistent volume per pod holding the bbolt store.
	// +kubebuilder:default={}
	// +optional
	Storage StorageSpec `json:"storage,omitempty"`

	// Settings of the node's protocol behaviour.
	// +kubebuilder:default={}
	// +optional
	Settings NodeSettings `json:"settings,omitempty"`

	// Resources of the node container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// NodeSelector of the node pods.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && (!k.contains('/') || k.indexOf('/') <= 253) && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="every key of nodeSelector must be a qualified name: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
	// +optional
	NodeSelector map[string]LabelValue `json:"nodeSelector,omitempty"`

	// Tolerations of the node pods.
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity of the node pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// Labels added to every object the operator creates for this node.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && (!k.contains('/') || k.indexOf('/') <= 253) && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="every key of labels must be a qualified name: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
	// +optional
	Labels map[string]LabelValue `json:"labels,omitempty"`

	// Annotations added to every object the operator creates for this node.
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && (!k.contains('/') || k.indexOf('/') <= 253) && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="every key of annotations must be a qualified name: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// NetworkPolicy is the operator's NetworkPolicy for the node pods.
	// +optional
	NetworkPolicy *NetworkPolicySpec `json:"networkPolicy,omitempty"`
}

// NetworkPolicySpec shapes the NetworkPolicy the operator keeps for the
// node pods: phones reach the client port from anywhere; the push port
// (which has no authentication) and the HTTP API only from the PushNode's
// own namespace, the operator's, and AllowedNamespaces. It takes effect
// where the cluster's network plugin enforces NetworkPolicy.
type NetworkPolicySpec struct {
	// Enabled keeps the NetworkPolicy (false deletes it). Unset follows the
	// operator's --network-policy flag (the chart's networkPolicy.enabled).
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// AllowedNamespaces may also reach the push port and the HTTP API (app
	// servers, Prometheus), in addition to those the operator allows for
	// every PushNode (--network-policy-allowed-namespaces).
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	AllowedNamespaces []string `json:"allowedNamespaces,omitempty"`
}

// PushNodePorts are the node's ports.
// +kubebuilder:validation:XValidation:rule="!has(self.client) || !has(self.push) || !has(self.http) || (self.client != self.push && self.client != self.http && self.push != self.http)",message="ports.client, ports.push and ports.http must be three different ports"
type PushNodePorts struct {
	// Client is the UDP and TCP port phones use.
	// +kubebuilder:default=9966
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Client int32 `json:"client,omitempty"`
	// Push is the TCP port app servers push to (cluster-internal).
	// +kubebuilder:default=9999
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Push int32 `json:"push,omitempty"`
	// HTTP is the port of the node's HTTP API (cluster-internal).
	// +kubebuilder:default=8080
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	HTTP int32 `json:"http,omitempty"`
}

// ClientServiceSpec shapes the Service phones connect to.
// +kubebuilder:validation:XValidation:rule="(!has(self.udp) || self.udp) || (!has(self.tcp) || self.tcp)",message="at least one of udp and tcp must be enabled, or phones cannot reach the node"
type ClientServiceSpec struct {
	// Type of the client Service.
	// +kubebuilder:default=ClusterIP
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	// +optional
	Type corev1.ServiceType `json:"type,omitempty"`
	// Annotations of the client Service (e.g. for a cloud load balancer).
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && (!k.contains('/') || k.indexOf('/') <= 253) && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="every key of clientService.annotations must be a qualified name: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
	// UDP enables clients over UDP.
	// +kubebuilder:default=true
	// +optional
	UDP *bool `json:"udp,omitempty"`
	// TCP enables clients over TCP.
	// +kubebuilder:default=true
	// +optional
	TCP *bool `json:"tcp,omitempty"`
}

// PVCRetention says what happens to data volumes.
// +kubebuilder:validation:Enum=Retain;Delete
type PVCRetention string

const (
	PVCRetain PVCRetention = "Retain"
	PVCDelete PVCRetention = "Delete"
)

// StorageSpec is the data volume of each pod.
type StorageSpec struct {
	// Size of each pod's volume. It may grow (if the storage class allows
	// expansion) but never shrink.
	// +kubebuilder:default="1Gi"
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="storage.size must be greater than zero"
	// +optional
	Size *resource.Quantity `json:"size,omitempty"`
	// StorageClassName of the volumes; empty uses the cluster default.
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
	// WhenDeleted is what happens to the volumes when the PushNode is deleted.
	// +kubebuilder:default=Retain
	// +optional
	WhenDeleted PVCRetention `json:"whenDeleted,omitempty"`
	// WhenScaled is what happens to a volume when its pod is scaled away.
	// +kubebuilder:default=Retain
	// +optional
	WhenScaled PVCRetention `json:"whenScaled,omitempty"`
}

// HeartbeatPolicy decides whether a UDP heartbeat with nothing pending is
// answered.
// +kubebuilder:validation:Enum=never;always;address-changed
type HeartbeatPolicy string

// NodeSettings are the node's protocol settings.
type NodeSettings struct {
	// HeartbeatPolicy: answer a UDP heartbeat with nothing pending never,
	// always, or when the client's address changed.
	// +kubebuilder:default=never
	// +optional
	HeartbeatPolicy HeartbeatPolicy `json:"heartbeatPolicy,omitempty"`
	// MaxContentLength is the largest Custom payload in bytes: at most
	// 65502, so that the message carrying it fits one UDP datagram.
	// DDPush clients with their default buffer take at most 1019.
	// +kubebuilder:default=500
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65502
	// +optional
	MaxContentLength int32 `json:"maxContentLength,omitempty"`
	// OnlineWindowSeconds is how long after a UDP heartbeat pushes go out
	// at once: 1 second to 1 day.
	// +kubebuilder:default=60
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	// +optional
	OnlineWindowSeconds *int32 `json:"onlineWindowSeconds,omitempty"`
	// ExpiryAgeSeconds removes records inactive for longer; 0 keeps them
	// forever. At most ten years.
	// +kubebuilder:default=180000
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=315360000
	// +optional
	ExpiryAgeSeconds *int64 `json:"expiryAgeSeconds,omitempty"`
	// CreateByHeartbeat lets a heartbeat from an unknown uuid create a record.
	// +kubebuilder:default=true
	// +optional
	CreateByHeartbeat *bool `json:"createByHeartbeat,omitempty"`
	// MaxRecords caps the records heartbeats may create (pushes still
	// create records); 0 means no cap.
	// +kubebuilder:default=2000000
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxRecords *int64 `json:"maxRecords,omitempty"`
	// RateLimit is the client packets per second allowed from one source
	// address; 0 disables it.
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=0
	// +optional
	RateLimit *int32 `json:"rateLimit,omitempty"`
}

// PushNodeStatus is the observed state of a push node.
type PushNodeStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replicas is the number of node pods.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// ReadyReplicas is the number of node pods ready to serve.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// Ready is ReadyReplicas/Replicas, for display.
	// +optional
	Ready string `json:"ready,omitempty"`
	// Conditions: Available, Progressing, Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ClientEndpoint is where phones connect.
	// +optional
	ClientEndpoint string `json:"clientEndpoint,omitempty"`
	// PushEndpoint is where app servers push (cluster-internal).
	// +optional
	PushEndpoint string `json:"pushEndpoint,omitempty"`
	// HTTPEndpoint is the node's HTTP API (cluster-internal).
	// +optional
	HTTPEndpoint string `json:"httpEndpoint,omitempty"`
	// TokenSecretName holds the HTTP API token under the key "token".
	// +optional
	TokenSecretName string `json:"tokenSecretName,omitempty"`
	// Records is the number of client records, read from the nodes.
	// +optional
	Records int64 `json:"records,omitempty"`
	// Online is the number of clients online, read from the nodes.
	// +optional
	Online int64 `json:"online,omitempty"`
	// SettingsHash is the hash of the node settings the pods run with.
	// +optional
	SettingsHash string `json:"settingsHash,omitempty"`
	// Selector is the label selector of the node pods, for the scale
	// subresource.
	// +optional
	Selector string `json:"selector,omitempty"`
	// SlotMap says which pod is the home of each uuid slot (a uuid's slot
	// is its first two bytes, big-endian, mod 1024). Only with more than
	// one replica: a single pod owns every slot.
	// +optional
	SlotMap *SlotMapStatus `json:"slotMap,omitempty"`
	// Pods is what each node pod reports, with more than one replica.
	// +listType=map
	// +listMapKey=ordinal
	// +kubebuilder:validation:MaxItems=512
	// +optional
	Pods []PushNodePodStatus `json:"pods,omitempty"`
	// Resharding is the move of slots between pods after replicas
	// changed, while it lasts. The operator resumes it from here after a
	// restart.
	// +optional
	Resharding *ReshardingStatus `json:"resharding,omitempty"`
}

// ReshardingStatus is the progress of a change of replicas.
type ReshardingStatus struct {
	// FromReplicas is the number of pods that held the slots when the
	// change began.
	FromReplicas int32 `json:"fromReplicas"`
	// ToReplicas is the number of pods the slots go to.
	ToReplicas int32 `json:"toReplicas"`
	// SlotsTotal is the number of slots that change owner.
	SlotsTotal int32 `json:"slotsTotal"`
	// SlotsMoved is the number of them already at their new owner.
	SlotsMoved int32 `json:"slotsMoved"`
	// Move is the batch of slots being moved, if any.
	// +optional
	Move *SlotMoveStatus `json:"move,omitempty"`
	// StartedAt is when the change began.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
}

// SlotMoveStatus is one batch of slots going from one pod to another.
type SlotMoveStatus struct {
	// ID names the move at the source pod; asking again with the same ID
	// resumes it.
	ID string `json:"id"`
	// Epoch is the epoch of the slot map that holds once the move is done.
	Epoch int64 `json:"epoch"`
	// Source is the ordinal of the pod giving the slots.
	Source int32 `json:"source"`
	// Target is the ordinal of the pod taking them.
	Target int32 `json:"target"`
	// Slots moved, e.g. "342-405".
	Slots string `json:"slots"`
	// Phase as the source reports it: empty until the source was asked,
	// then streaming, handoff, committed, done or failed.
	// +optional
	Phase string `json:"phase,omitempty"`
	// Error is what the source said when the move failed.
	// +optional
	Error string `json:"error,omitempty"`
	// Attempts counts the times the source was asked to start the move.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`
	// StartedAt is when the move was recorded.
	StartedAt metav1.Time `json:"startedAt"`
}

// SlotMapStatus is the slot map the operator hands to every pod.
type SlotMapStatus struct {
	// Epoch grows with every new map; pods refuse older ones.
	Epoch int64 `json:"epoch"`
	// Ranges give the slots From..To (inclusive) to the pod with Ordinal.
	// +kubebuilder:validation:MaxItems=1024
	Ranges []SlotRange `json:"ranges"`
	// Pods is the number of pods the map gives a peer address (ordinals
	// 0 to Pods-1). While replicas shrink, the leaving pods stay in the
	// map, with no slots, until the last batch has moved.
	// +optional
	Pods int32 `json:"pods,omitempty"`
}

// SlotRange is a contiguous run of slots owned by one pod.
type SlotRange struct {
	From    int32 `json:"from"`
	To      int32 `json:"to"`
	Ordinal int32 `json:"ordinal"`
}

// PushNodePodStatus is one node pod as the operator last saw it.
type PushNodePodStatus struct {
	// Name of the pod.
	Name string `json:"name"`
	// Ordinal of the pod in the StatefulSet.
	Ordinal int32 `json:"ordinal"`
	// Slots the pod is the home of, e.g. "0-341".
	// +optional
	Slots string `json:"slots,omitempty"`
	// SlotCount is the number of slots the pod is the home of.
	// +optional
	SlotCount int32 `json:"slotCount,omitempty"`
	// Share is the part of all uuids homed on the pod, e.g. "33%".
	// +optional
	Share string `json:"share,omitempty"`
	// MapEpoch is the epoch of the slot map the pod holds; 0 for none.
	// +optional
	MapEpoch int64 `json:"mapEpoch,omitempty"`
	// Records is the number of client records the pod holds.
	// +optional
	Records int64 `json:"records,omitempty"`
	// Online is the number of clients online on the pod.
	// +optional
	Online int64 `json:"online,omitempty"`
	// Ready: the pod answers, serves, and holds the current slot map.
	Ready bool `json:"ready"`
	// Problem says why the pod is not ready.
	// +optional
	Problem string `json:"problem,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=pn,categories=ddpush
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.ready`
// +kubebuilder:printcolumn:name="Available",type=string,JSONPath=`.status.conditions[?(@.type=="Available")].status`
// +kubebuilder:printcolumn:name="Shards",type=string,JSONPath=`.status.conditions[?(@.type=="ShardsAvailable")].status`,priority=1
// +kubebuilder:printcolumn:name="Degraded",type=string,JSONPath=`.status.conditions[?(@.type=="Degraded")].status`
// +kubebuilder:printcolumn:name="Records",type=integer,JSONPath=`.status.records`
// +kubebuilder:printcolumn:name="Online",type=integer,JSONPath=`.status.online`
// +kubebuilder:printcolumn:name="Problem",type=string,JSONPath=`.status.conditions[?(@.type=="Degraded")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// PushNode is a DDPush-compatible push node: a StatefulSet running the
// node binary, its Services and a data volume per pod.
// The name becomes the StatefulSet's and its Services' names: the
// StatefulSet's revision label (name, '-' and a 10-character hash) must fit
// 63 characters, and "<name>-headless" must be a DNS-1035 label.
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 52",message="metadata.name must be at most 52 characters: the StatefulSet's controller-revision-hash label adds 11 to it and must fit 63"
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must start with a lower-case letter and hold only lower-case letters, digits and '-' (a DNS-1035 label): it names the node's Services"
type PushNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +kubebuilder:default={}
	Spec   PushNodeSpec   `json:"spec,omitempty"`
	Status PushNodeStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// PushNodeList is a list of PushNodes.
type PushNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PushNode `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PushNode{}, &PushNodeList{})
}

// A pattern with a length bound, not a CEL rule, checks label values: the
// apiserver estimates a CEL rule's cost from the longest string it could
// meet, and a regular expression over an unbounded map value costs more than
// a CRD may spend, so the CRD is refused.

// LabelValue is a label value: at most 63 letters, digits, '-', '_' or '.',
// starting and ending with a letter or digit.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$`
type LabelValue string

// StringMap returns the map as plain strings, as object metadata and pod
// specs take it.
func StringMap(m map[string]LabelValue) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}
