package builders

import (
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

func buildNetworkPolicy(t *testing.T, pn *ddpushv1.PushNode, opt NetworkPolicyOptions) *networkingv1.NetworkPolicy {
	t.Helper()
	b := &NetworkPolicyBuilder{PN: pn, Opts: opt}
	obj := b.Object()
	if err := b.Update(obj); err != nil {
		t.Fatal(err)
	}
	return obj.(*networkingv1.NetworkPolicy)
}

// portList renders a rule's ports as "PROTO/port" strings.
func portList(ports []networkingv1.NetworkPolicyPort) []string {
	var out []string
	for _, p := range ports {
		out = append(out, string(*p.Protocol)+"/"+p.Port.String())
	}
	return out
}

func TestNetworkPolicyDefaults(t *testing.T) {
	pn := newPN()
	np := buildNetworkPolicy(t, pn, NetworkPolicyOptions{Enabled: true, OperatorNamespace: "ddpush-system"})
	if np.Name != "edge" || np.Namespace != "push" {
		t.Errorf("name %s/%s", np.Namespace, np.Name)
	}
	if !maps.Equal(np.Spec.PodSelector.MatchLabels, SelectorLabels(pn)) {
		t.Errorf("pod selector %v", np.Spec.PodSelector.MatchLabels)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policy types %v: egress must stay open (the node only answers)", np.Spec.PolicyTypes)
	}
	if len(np.Spec.Ingress) != 2 {
		t.Fatalf("%d ingress rules", len(np.Spec.Ingress))
	}
	phones, internal := np.Spec.Ingress[0], np.Spec.Ingress[1]
	if len(phones.From) != 0 || !slices.Equal(portList(phones.Ports), []string{"UDP/9966", "TCP/9966"}) {
		t.Errorf("phones rule: from %v ports %v; want 9966 UDP and TCP from anywhere", phones.From, portList(phones.Ports))
	}
	if !slices.Equal(portList(internal.Ports), []string{"TCP/9999", "TCP/8080"}) {
		t.Errorf("internal ports %v", portList(internal.Ports))
	}
	if len(internal.From) != 1 || internal.From[0].PodSelector != nil || internal.From[0].IPBlock != nil {
		t.Fatalf("internal peers %+v", internal.From)
	}
	sel := internal.From[0].NamespaceSelector
	if len(sel.MatchLabels) != 0 || len(sel.MatchExpressions) != 1 {
		t.Fatalf("namespace selector %+v", sel)
	}
	req := sel.MatchExpressions[0]
	if req.Key != "kubernetes.io/metadata.name" || req.Operator != "In" || !slices.Equal(req.Values, []string{"ddpush-system", "push"}) {
		t.Errorf("namespace selector %+v; want the node's and the operator's namespaces", req)
	}
	if np.Labels[LabelInstance] != "edge" || np.Labels[LabelManagedBy] != "ddpush-operator" {
		t.Errorf("labels %v", np.Labels)
	}
}

func TestNetworkPolicyFollowsTheSpec(t *testing.T) {
	pn := newPN()
	pn.Spec.Ports = ddpushv1.PushNodePorts{Client: 1000, Push: 2000, HTTP: 3000}
	pn.Spec.ClientService.UDP = ptr.To(false)
	pn.Spec.NetworkPolicy = &ddpushv1.NetworkPolicySpec{AllowedNamespaces: []string{"apps", "push", "monitoring"}}
	np := buildNetworkPolicy(t, pn, NetworkPolicyOptions{AllowedNamespaces: []string{"monitoring", "ops"}})
	if got := portList(np.Spec.Ingress[0].Ports); !slices.Equal(got, []string{"TCP/1000"}) {
		t.Errorf("phones ports %v: UDP is off", got)
	}
	if got := portList(np.Spec.Ingress[1].Ports); !slices.Equal(got, []string{"TCP/2000", "TCP/3000"}) {
		t.Errorf("internal ports %v", got)
	}
	// Sorted, each once; no operator namespace known.
	got := np.Spec.Ingress[1].From[0].NamespaceSelector.MatchExpressions[0].Values
	if !slices.Equal(got, []string{"apps", "monitoring", "ops", "push"}) {
		t.Errorf("allowed namespaces %v", got)
	}
}

func TestNetworkPolicyUpdateRepairsDrift(t *testing.T) {
	pn := newPN()
	b := &NetworkPolicyBuilder{PN: pn, Opts: NetworkPolicyOptions{OperatorNamespace: "ops"}}
	np := buildNetworkPolicy(t, pn, b.Opts)
	np.Labels["someone"] = "else"
	np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{})
	np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
	if err := b.Update(np); err != nil {
		t.Fatal(err)
	}
	if len(np.Spec.Ingress) != 2 || len(np.Spec.PolicyTypes) != 1 {
		t.Errorf("drift kept: %+v", np.Spec)
	}
	if np.Labels["someone"] != "else" {
		t.Errorf("a label others added was dropped: %v", np.Labels)
	}
	if err := b.Update(&corev1.ConfigMap{}); err == nil {
		t.Error("Update took a ConfigMap")
	}
}

func TestNetworkPolicyEnabled(t *testing.T) {
	for _, tc := range []struct {
		spec    *ddpushv1.NetworkPolicySpec
		deflt   bool
		enabled bool
	}{
		{nil, true, true},
		{nil, false, false},
		{&ddpushv1.NetworkPolicySpec{}, true, true},
		{&ddpushv1.NetworkPolicySpec{Enabled: ptr.To(false)}, true, false},
		{&ddpushv1.NetworkPolicySpec{Enabled: ptr.To(true)}, false, true},
	} {
		pn := newPN()
		pn.Spec.NetworkPolicy = tc.spec
		if got := NetworkPolicyEnabled(pn, NetworkPolicyOptions{Enabled: tc.deflt}); got != tc.enabled {
			t.Errorf("spec %+v, default %v: enabled %v", tc.spec, tc.deflt, got)
		}
	}
}
