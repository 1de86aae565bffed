package builders

import (
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// Defaulted returns a copy of pn with every unset field at the default the
// CRD would give it, so that builders work the same on objects that did
// not go through the API server (unit tests, old objects).
func Defaulted(pn *ddpushv1.PushNode) *ddpushv1.PushNode {
	pn = pn.DeepCopy()
	s := &pn.Spec
	if s.Replicas == nil {
		s.Replicas = ptr.To[int32](1)
	}
	if s.Ports.Client == 0 {
		s.Ports.Client = 9966
	}
	if s.Ports.Push == 0 {
		s.Ports.Push = 9999
	}
	if s.Ports.HTTP == 0 {
		s.Ports.HTTP = 8080
	}
	if s.ClientService.Type == "" {
		s.ClientService.Type = "ClusterIP"
	}
	if s.ClientService.UDP == nil {
		s.ClientService.UDP = ptr.To(true)
	}
	if s.ClientService.TCP == nil {
		s.ClientService.TCP = ptr.To(true)
	}
	if s.Storage.Size == nil || s.Storage.Size.IsZero() {
		s.Storage.Size = ptr.To(resource.MustParse("1Gi"))
	}
	if s.Storage.WhenDeleted == "" {
		s.Storage.WhenDeleted = ddpushv1.PVCRetain
	}
	if s.Storage.WhenScaled == "" {
		s.Storage.WhenScaled = ddpushv1.PVCRetain
	}
	st := &s.Settings
	if st.HeartbeatPolicy == "" {
		st.HeartbeatPolicy = "never"
	}
	if st.MaxContentLength == 0 {
		st.MaxContentLength = 500
	}
	if st.OnlineWindowSeconds == nil {
		st.OnlineWindowSeconds = ptr.To[int32](60)
	}
	if st.ExpiryAgeSeconds == nil {
		st.ExpiryAgeSeconds = ptr.To[int64](50 * 3600)
	}
	if st.CreateByHeartbeat == nil {
		st.CreateByHeartbeat = ptr.To(true)
	}
	if st.MaxRecords == nil {
		st.MaxRecords = ptr.To[int64](2_000_000)
	}
	if st.RateLimit == nil {
		st.RateLimit = ptr.To[int32](1000)
	}
	return pn
}
