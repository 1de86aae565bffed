// Package v1alpha1 contains the API of the ddpush.dev group: PushNode, a
// DDPush-compatible push node run as a StatefulSet, and PushMessage, one
// push delivered through such a node and tracked to its end.
// +kubebuilder:object:generate=true
// +groupName=ddpush.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of these objects.
	GroupVersion = schema.GroupVersion{Group: "ddpush.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
