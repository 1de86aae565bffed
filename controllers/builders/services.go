package builders

import (
	"maps"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// Port names.
const (
	PortClientUDP = "client-udp"
	PortClientTCP = "client-tcp"
	PortPush      = "push"
	PortHTTP      = "http"
	PortPeer      = "peer"
)

// PeerPort is where the pods of a sharded PushNode link to each other. It
// is fixed (the CRD refuses it for the other ports) so that the peer
// addresses in a slot map never change.
const PeerPort = 9977

func clientPorts(s *ddpushv1.PushNodeSpec) []corev1.ServicePort {
	var ports []corev1.ServicePort
	if *s.ClientService.UDP {
		ports = append(ports, corev1.ServicePort{Name: PortClientUDP, Protocol: corev1.ProtocolUDP, Port: s.Ports.Client, TargetPort: intstr.FromString(PortClientUDP)})
	}
	if *s.ClientService.TCP {
		ports = append(ports, corev1.ServicePort{Name: PortClientTCP, Protocol: corev1.ProtocolTCP, Port: s.Ports.Client, TargetPort: intstr.FromString(PortClientTCP)})
	}
	return ports
}

func internalPorts(s *ddpushv1.PushNodeSpec) []corev1.ServicePort {
	return []corev1.ServicePort{
		{Name: PortPush, Protocol: corev1.ProtocolTCP, Port: s.Ports.Push, TargetPort: intstr.FromString(PortPush)},
		{Name: PortHTTP, Protocol: corev1.ProtocolTCP, Port: s.Ports.HTTP, TargetPort: intstr.FromString(PortHTTP)},
	}
}

// mergePorts keeps the node ports the cluster allocated for ports that
// stay, so that updating a NodePort Service does not move its ports.
func mergePorts(existing, desired []corev1.ServicePort) []corev1.ServicePort {
	for i := range desired {
		for _, e := range existing {
			if e.Name == desired[i].Name && e.Protocol == desired[i].Protocol {
				desired[i].NodePort = e.NodePort
			}
		}
	}
	return desired
}

// HeadlessServiceBuilder gives each node pod a stable DNS name.
type HeadlessServiceBuilder struct{ PN *ddpushv1.PushNode }

func (b *HeadlessServiceBuilder) Object() client.Object {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: HeadlessServiceName(b.PN), Namespace: b.PN.Namespace}}
}

func (b *HeadlessServiceBuilder) Update(obj client.Object) error {
	svc := obj.(*corev1.Service)
	s := Defaulted(b.PN).Spec
	setMeta(svc, b.PN)
	svc.Spec.ClusterIP = corev1.ClusterIPNone
	svc.Spec.Selector = SelectorLabels(b.PN)
	// The operator reaches each pod while it starts, to read its state.
	svc.Spec.PublishNotReadyAddresses = true
	svc.Spec.Ports = append(clientPorts(&s), internalPorts(&s)...)
	return nil
}

// ClientServiceBuilder is what phones reach: UDP and/or TCP on the client
// port, of the type the user asked for.
type ClientServiceBuilder struct{ PN *ddpushv1.PushNode }

func (b *ClientServiceBuilder) Object() client.Object {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: ClientServiceName(b.PN), Namespace: b.PN.Namespace}}
}

func (b *ClientServiceBuilder) Update(obj client.Object) error {
	svc := obj.(*corev1.Service)
	s := Defaulted(b.PN).Spec
	ann := maps.Clone(s.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	maps.Copy(ann, s.ClientService.Annotations)
	setManagedMeta(svc, Labels(b.PN), ann)
	svc.Spec.Type = s.ClientService.Type
	svc.Spec.Selector = SelectorLabels(b.PN)
	svc.Spec.Ports = mergePorts(svc.Spec.Ports, clientPorts(&s))
	if s.ClientService.Type != corev1.ServiceTypeClusterIP {
		// A phone's UDP source address is how the node answers it: keep it.
		svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	} else {
		svc.Spec.ExternalTrafficPolicy = ""
	}
	return nil
}

// InternalServiceBuilder carries the push port and the HTTP API, which
// must not face the internet.
type InternalServiceBuilder struct{ PN *ddpushv1.PushNode }

func (b *InternalServiceBuilder) Object() client.Object {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: InternalServiceName(b.PN), Namespace: b.PN.Namespace}}
}

func (b *InternalServiceBuilder) Update(obj client.Object) error {
	svc := obj.(*corev1.Service)
	s := Defaulted(b.PN).Spec
	setMeta(svc, b.PN)
	svc.Spec.Type = corev1.ServiceTypeClusterIP
	svc.Spec.Selector = SelectorLabels(b.PN)
	svc.Spec.Ports = internalPorts(&s)
	return nil
}
