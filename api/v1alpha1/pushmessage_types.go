package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MessageKind is the kind of a DDPush message.
// +kubebuilder:validation:Enum=General;Classified;Custom
type MessageKind string

const (
	KindGeneral    MessageKind = "General"    // 0x10: "you have a notice"
	KindClassified MessageKind = "Classified" // 0x11: a 64-bit mask of bits
	KindCustom     MessageKind = "Custom"     // 0x20: a payload
)

// PushMessageSpec is one push. It is immutable: a push cannot be changed
// once it may have reached a phone.
// +kubebuilder:validation:XValidation:rule="has(self.uuid) != has(self.userId)",message="set exactly one target: uuid or userId"
// +kubebuilder:validation:XValidation:rule="self.kind == 'Classified' ? has(self.bits) : !has(self.bits)",message="bits is required for kind Classified and not allowed for other kinds"
// +kubebuilder:validation:XValidation:rule="self.kind == 'Custom' ? (has(self.data) != has(self.binaryData)) : (!has(self.data) && !has(self.binaryData))",message="kind Custom needs exactly one of data and binaryData; General and Classified carry no data"
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec is immutable: create a new PushMessage instead"
type PushMessageSpec struct {
	// PushNodeName is the PushNode (same namespace) that delivers it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	PushNodeName string `json:"pushNodeName"`

	// UUID of the target client: 32 hex characters.
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]{32}$`
	// +optional
	UUID string `json:"uuid,omitempty"`

	// UserID of the target: the node pushes to md5(userId), the uuid a
	// DDPush client derives from it.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	// +optional
	UserID string `json:"userId,omitempty"`

	// Kind of message.
	Kind MessageKind `json:"kind"`

	// Bits of a Classified message: a 64-bit mask, decimal or 0x hex.
	// +kubebuilder:validation:Pattern=`^(0[xX][0-9a-fA-F]{1,16}|[0-9]{1,20})$`
	// +kubebuilder:validation:XValidation:rule="size(self) < 20 || self.startsWith('0x') || self.startsWith('0X') || self <= '18446744073709551615'",message="bits must fit 64 bits: at most 18446744073709551615 (0xFFFFFFFFFFFFFFFF)"
	// +kubebuilder:validation:MaxLength=20
	// +kubebuilder:validation:XValidation:rule="!self.matches('^(0[xX])?0+$')",message="bits must have at least one bit set: a mask of 0 has nothing to send to the phone"
	// +optional
	Bits string `json:"bits,omitempty"`

	// Data is a Custom payload as text (its UTF-8 bytes are sent). It must
	// fit the node's maxContentLength.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=65535
	// +optional
	Data string `json:"data,omitempty"`

	// BinaryData is a Custom payload as base64.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=87384
	// +optional
	BinaryData []byte `json:"binaryData,omitempty"`

	// ActiveDeadlineSeconds bounds the time from creation to delivery;
	// past it the message is Failed (it may still reach the phone later:
	// the protocol cannot take a push back). What counts is when the node
	// saw the ack, not when the operator learned of it. At most ten years.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=315360000
	// +optional
	ActiveDeadlineSeconds *int64 `json:"activeDeadlineSeconds,omitempty"`

	// TTLSecondsAfterFinished deletes the PushMessage this long after it
	// reaches Delivered, Superseded, Expired or Failed (default five
	// minutes: every kept message costs etcd and the operator's memory).
	// +kubebuilder:default=300
	// +kubebuilder:validation:Minimum=0
	// +optional
	TTLSecondsAfterFinished *int32 `json:"ttlSecondsAfterFinished,omitempty"`
}

// PushMessagePhase is where a push is in its life.
// +kubebuilder:validation:Enum=Pending;Queued;Sent;Delivered;Superseded;Expired;Failed
type PushMessagePhase string

const (
	// PhasePending: not accepted by the node yet (node not ready, retried).
	PhasePending PushMessagePhase = "Pending"
	// PhaseQueued: accepted; the client is offline.
	PhaseQueued PushMessagePhase = "Queued"
	// PhaseSent: handed to the online client, not acknowledged yet.
	PhaseSent PushMessagePhase = "Sent"
	// PhaseDelivered: the client acknowledged it.
	PhaseDelivered PushMessagePhase = "Delivered"
	// PhaseSuperseded: a newer push of the same kind replaced it first.
	PhaseSuperseded PushMessagePhase = "Superseded"
	// PhaseExpired: the client's record expired before it acked.
	PhaseExpired PushMessagePhase = "Expired"
	// PhaseFailed: refused by the node, past its deadline, lost with the
	// node's data, or left behind by a deleted PushNode.
	PhaseFailed PushMessagePhase = "Failed"
)

// Finished reports whether nothing more can happen to the message.
func (p PushMessagePhase) Finished() bool {
	switch p {
	case PhaseDelivered, PhaseSuperseded, PhaseExpired, PhaseFailed:
		return true
	}
	return false
}

// PushMessageStatus is what became of a push.
type PushMessageStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase of the delivery.
	// +optional
	Phase PushMessagePhase `json:"phase,omitempty"`
	// Reason is a one-word reason for the phase (e.g. NodeNotReady).
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message explains the phase to a person.
	// +optional
	Message string `json:"message,omitempty"`
	// PushID is the node's id of the push.
	// +optional
	PushID int64 `json:"pushId,omitempty"`
	// TargetUUID is the uuid pushed to (derived from userId if given).
	// +optional
	TargetUUID string `json:"targetUUID,omitempty"`
	// NodePod is the pod of the node that accepted it.
	// +optional
	NodePod string `json:"nodePod,omitempty"`
	// NodeIncarnation is the id of the node store that accepted the push.
	// PushID names this push only in that store: a fate read from a store
	// of another incarnation (one that replaced it, starting ids again) is
	// never applied.
	// +optional
	NodeIncarnation string `json:"nodeIncarnation,omitempty"`
	// SubmittedAt is when the node accepted it.
	// +optional
	SubmittedAt *metav1.Time `json:"submittedAt,omitempty"`
	// SentAt is when it was handed to the online client.
	// +optional
	SentAt *metav1.Time `json:"sentAt,omitempty"`
	// DeliveredAt is when the client acknowledged it.
	// +optional
	DeliveredAt *metav1.Time `json:"deliveredAt,omitempty"`
	// CompletionTime is when it reached its final phase.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Attempts counts submissions that failed and were retried.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`
	// PushNodeMissingSince is when the operator first found the PushNode
	// of a submitted message gone; it is cleared when the PushNode exists
	// again. It is kept in the status so that the grace period before the
	// message fails (reason PushNodeDeleted) survives an operator restart.
	// +optional
	PushNodeMissingSince *metav1.Time `json:"pushNodeMissingSince,omitempty"`
	// Conditions: Finished, which every message has: False while it is
	// open, True (reason: the final phase) once nothing more can happen to
	// it; Delivered, once it is final; NodeAvailable, only once its node
	// was found unavailable (False, then True when it is back).
	//
	// The list is atomic, not a map keyed by type as is usual for
	// conditions: the operator is its only writer, and the apiserver's
	// tracking of each keyed entry's fields made every status write cost
	// about 40% more apiserver CPU (BENCHMARKS.md, "PushMessages").
	// +listType=atomic
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=pm,categories=ddpush
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.pushNodeName`
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.spec['uuid','userId']`,description="The spec's uuid or userId"
// +kubebuilder:printcolumn:name="UUID",type=string,JSONPath=`.status.targetUUID`,priority=1
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.kind`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// PushMessage is one push delivered through a PushNode and tracked to its
// end. Deleting it does not take the push back: a phone that has it keeps it.
type PushMessage struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   PushMessageSpec   `json:"spec,omitempty"`
	Status PushMessageStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// PushMessageList is a list of PushMessages.
type PushMessageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PushMessage `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PushMessage{}, &PushMessageList{})
}
