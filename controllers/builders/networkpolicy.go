package builders

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// NetworkPolicyOptions are the operator-wide NetworkPolicy settings.
type NetworkPolicyOptions struct {
	// Enabled is the default for PushNodes that do not say.
	Enabled bool
	// OperatorNamespace is where the operator runs: it reads the node's
	// HTTP API, so it is always allowed in. Empty when unknown.
	OperatorNamespace string
	// AllowedNamespaces may reach the push port and HTTP API of every node.
	AllowedNamespaces []string
}

// LabelNamespaceName is the label Kubernetes puts on every namespace with
// its name, which a NetworkPolicy selects namespaces by.
const LabelNamespaceName = "kubernetes.io/metadata.name"

// NetworkPolicyName is the name of a PushNode's NetworkPolicy.
func NetworkPolicyName(pn *ddpushv1.PushNode) string { return pn.Name }

// NetworkPolicyEnabled says whether pn gets a NetworkPolicy: its own
// setting, else the operator's default.
func NetworkPolicyEnabled(pn *ddpushv1.PushNode, opt NetworkPolicyOptions) bool {
	if np := pn.Spec.NetworkPolicy; np != nil && np.Enabled != nil {
		return *np.Enabled
	}
	return opt.Enabled
}

// AllowedNamespaces are the namespaces whose pods may reach pn's push port
// and HTTP API: its own, the operator's, the operator-wide list and its
// own list, sorted, each once.
func AllowedNamespaces(pn *ddpushv1.PushNode, opt NetworkPolicyOptions) []string {
	ns := []string{pn.Namespace}
	if opt.OperatorNamespace != "" {
		ns = append(ns, opt.OperatorNamespace)
	}
	ns = append(ns, opt.AllowedNamespaces...)
	if np := pn.Spec.NetworkPolicy; np != nil {
		ns = append(ns, np.AllowedNamespaces...)
	}
	slices.Sort(ns)
	return slices.Compact(ns)
}

// NetworkPolicyBuilder builds the NetworkPolicy of the node pods.
type NetworkPolicyBuilder struct {
	PN   *ddpushv1.PushNode
	Opts NetworkPolicyOptions
}

func (b *NetworkPolicyBuilder) Object() client.Object {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: NetworkPolicyName(b.PN), Namespace: b.PN.Namespace}}
}

func (b *NetworkPolicyBuilder) Update(obj client.Object) error {
	np, ok := obj.(*networkingv1.NetworkPolicy)
	if !ok {
		return fmt.Errorf("NetworkPolicyBuilder got %T", obj)
	}
	pn := Defaulted(b.PN)
	s := &pn.Spec
	setMeta(np, b.PN)
	port := func(proto corev1.Protocol, p int32) networkingv1.NetworkPolicyPort {
		v := intstr.FromInt32(p)
		return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &v}
	}
	var client []networkingv1.NetworkPolicyPort
	if *s.ClientService.UDP {
		client = append(client, port(corev1.ProtocolUDP, s.Ports.Client))
	}
	if *s.ClientService.TCP {
		client = append(client, port(corev1.ProtocolTCP, s.Ports.Client))
	}
	np.Spec = networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: SelectorLabels(b.PN)},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{
			// Phones, from anywhere.
			{Ports: client},
			// App servers and the operator: the push port has no
			// authentication, the HTTP API serves /metrics without one.
			{
				From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{
						Key: LabelNamespaceName, Operator: metav1.LabelSelectorOpIn, Values: AllowedNamespaces(b.PN, b.Opts),
					}},
				}}},
				Ports: []networkingv1.NetworkPolicyPort{port(corev1.ProtocolTCP, s.Ports.Push), port(corev1.ProtocolTCP, s.Ports.HTTP)},
			},
		},
	}
	if Sharded(pn) {
		// The pods of this PushNode relay to each other's homes; nobody
		// else may open a peer link, even with the token.
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(b.PN)}}},
			Ports: []networkingv1.NetworkPolicyPort{port(corev1.ProtocolTCP, PeerPort)},
		})
	}
	return nil
}
