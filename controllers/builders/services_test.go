package builders

import (
	"maps"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

func portsByName(ports []corev1.ServicePort) map[string]corev1.ServicePort {
	m := map[string]corev1.ServicePort{}
	for _, p := range ports {
		m[p.Name] = p
	}
	return m
}

func TestHeadlessService(t *testing.T) {
	pn := newPN()
	pn.Spec.Ports = ddpushv1.PushNodePorts{Client: 1000, Push: 2000, HTTP: 3000}
	svc := buildService(t, &HeadlessServiceBuilder{pn}, nil)
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("clusterIP = %q, want None", svc.Spec.ClusterIP)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("publishNotReadyAddresses = false, want true")
	}
	if !maps.Equal(svc.Spec.Selector, SelectorLabels(pn)) {
		t.Errorf("selector = %v, want %v", svc.Spec.Selector, SelectorLabels(pn))
	}
	want := []corev1.ServicePort{
		{Name: PortClientUDP, Protocol: corev1.ProtocolUDP, Port: 1000, TargetPort: intstr.FromString(PortClientUDP)},
		{Name: PortClientTCP, Protocol: corev1.ProtocolTCP, Port: 1000, TargetPort: intstr.FromString(PortClientTCP)},
		{Name: PortPush, Protocol: corev1.ProtocolTCP, Port: 2000, TargetPort: intstr.FromString(PortPush)},
		{Name: PortHTTP, Protocol: corev1.ProtocolTCP, Port: 3000, TargetPort: intstr.FromString(PortHTTP)},
	}
	if !reflect.DeepEqual(svc.Spec.Ports, want) {
		t.Errorf("ports = %+v\nwant %+v", svc.Spec.Ports, want)
	}
	if svc.Labels[LabelInstance] != "edge" {
		t.Errorf("labels = %v", svc.Labels)
	}
}

func TestClientServiceTransports(t *testing.T) {
	for _, tc := range []struct {
		name     string
		udp, tcp *bool
		want     []corev1.Protocol
	}{
		{"default both", nil, nil, []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP}},
		{"both", ptr.To(true), ptr.To(true), []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP}},
		{"udp only", ptr.To(true), ptr.To(false), []corev1.Protocol{corev1.ProtocolUDP}},
		{"tcp only", ptr.To(false), ptr.To(true), []corev1.Protocol{corev1.ProtocolTCP}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pn := newPN()
			pn.Spec.ClientService.UDP, pn.Spec.ClientService.TCP = tc.udp, tc.tcp
			svc := buildService(t, &ClientServiceBuilder{pn}, nil)
			var got []corev1.Protocol
			for _, p := range svc.Spec.Ports {
				got = append(got, p.Protocol)
				if p.Port != 9966 {
					t.Errorf("port %s = %d, want 9966", p.Name, p.Port)
				}
				wantName := map[corev1.Protocol]string{corev1.ProtocolUDP: PortClientUDP, corev1.ProtocolTCP: PortClientTCP}[p.Protocol]
				if p.Name != wantName || p.TargetPort != intstr.FromString(wantName) {
					t.Errorf("port %+v: want name and targetPort %q", p, wantName)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("protocols = %v, want %v", got, tc.want)
			}
			// The pod exposes the same client transports.
			sts := buildSTS(t, pn)
			var cports []corev1.Protocol
			for _, p := range container(t, sts).Ports {
				if p.Name == PortClientUDP || p.Name == PortClientTCP {
					cports = append(cports, p.Protocol)
				}
			}
			if !reflect.DeepEqual(cports, tc.want) {
				t.Errorf("container client ports = %v, want %v", cports, tc.want)
			}
			// And so does the headless Service.
			hs := buildService(t, &HeadlessServiceBuilder{pn}, nil)
			if _, ok := portsByName(hs.Spec.Ports)[PortClientUDP]; ok != (tc.udp == nil || *tc.udp) {
				t.Errorf("headless has client-udp = %v", ok)
			}
			if _, ok := portsByName(hs.Spec.Ports)[PortClientTCP]; ok != (tc.tcp == nil || *tc.tcp) {
				t.Errorf("headless has client-tcp = %v", ok)
			}
		})
	}
}

func TestClientServiceTypeAndPolicy(t *testing.T) {
	for _, tc := range []struct {
		typ        corev1.ServiceType
		wantType   corev1.ServiceType
		wantPolicy corev1.ServiceExternalTrafficPolicy
	}{
		{"", corev1.ServiceTypeClusterIP, ""},
		{corev1.ServiceTypeClusterIP, corev1.ServiceTypeClusterIP, ""},
		{corev1.ServiceTypeNodePort, corev1.ServiceTypeNodePort, corev1.ServiceExternalTrafficPolicyLocal},
		{corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyLocal},
	} {
		t.Run(string(tc.wantType)+"/"+string(tc.typ), func(t *testing.T) {
			pn := newPN()
			pn.Spec.ClientService.Type = tc.typ
			pn.Spec.ClientService.Annotations = map[string]string{"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
			pn.Spec.Annotations = map[string]string{"owner": "alice"}
			svc := buildService(t, &ClientServiceBuilder{pn}, nil)
			if svc.Spec.Type != tc.wantType {
				t.Errorf("type = %q, want %q", svc.Spec.Type, tc.wantType)
			}
			if svc.Spec.ExternalTrafficPolicy != tc.wantPolicy {
				t.Errorf("externalTrafficPolicy = %q, want %q", svc.Spec.ExternalTrafficPolicy, tc.wantPolicy)
			}
			if svc.Annotations["service.beta.kubernetes.io/aws-load-balancer-type"] != "nlb" || svc.Annotations["owner"] != "alice" {
				t.Errorf("annotations = %v, want clientService and spec annotations", svc.Annotations)
			}
			if !maps.Equal(svc.Spec.Selector, SelectorLabels(pn)) {
				t.Errorf("selector = %v", svc.Spec.Selector)
			}
		})
	}
	// The clientService annotations are for the client Service only.
	pn := newPN()
	pn.Spec.ClientService.Annotations = map[string]string{"lb": "yes"}
	for _, b := range []Builder{&HeadlessServiceBuilder{pn}, &InternalServiceBuilder{pn}, &ConfigMapBuilder{pn}} {
		obj := b.Object()
		if err := b.Update(obj); err != nil {
			t.Fatal(err)
		}
		if _, ok := obj.GetAnnotations()["lb"]; ok {
			t.Errorf("%T got the clientService annotations", obj)
		}
	}
}

func TestClientServiceTypeSwitchBackToClusterIP(t *testing.T) {
	pn := newPN()
	pn.Spec.ClientService.Type = corev1.ServiceTypeLoadBalancer
	b := &ClientServiceBuilder{pn}
	svc := buildService(t, b, nil)
	pn.Spec.ClientService.Type = corev1.ServiceTypeClusterIP
	svc = buildService(t, b, svc)
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.ExternalTrafficPolicy != "" {
		t.Errorf("after switching to ClusterIP: type %q policy %q", svc.Spec.Type, svc.Spec.ExternalTrafficPolicy)
	}
}

func TestClientServiceKeepsNodePorts(t *testing.T) {
	pn := newPN()
	pn.Spec.ClientService.Type = corev1.ServiceTypeNodePort
	b := &ClientServiceBuilder{pn}
	existing := b.Object().(*corev1.Service)
	existing.CreationTimestamp = metav1.Now()
	existing.Labels = map[string]string{"foreign": "kept"}
	existing.Annotations = map[string]string{"foreign-annotation": "kept"}
	existing.Spec = corev1.ServiceSpec{
		Type:      corev1.ServiceTypeNodePort,
		ClusterIP: "10.0.0.12",
		Ports: []corev1.ServicePort{
			{Name: PortClientTCP, Protocol: corev1.ProtocolTCP, Port: 9966, TargetPort: intstr.FromString(PortClientTCP), NodePort: 31002},
			{Name: PortClientUDP, Protocol: corev1.ProtocolUDP, Port: 9966, TargetPort: intstr.FromString(PortClientUDP), NodePort: 31001},
		},
	}
	svc := buildService(t, b, existing)
	got := portsByName(svc.Spec.Ports)
	if got[PortClientUDP].NodePort != 31001 || got[PortClientTCP].NodePort != 31002 {
		t.Errorf("node ports moved: %+v", svc.Spec.Ports)
	}
	if svc.Spec.ClusterIP != "10.0.0.12" {
		t.Errorf("allocated clusterIP changed to %q", svc.Spec.ClusterIP)
	}
	if svc.Labels["foreign"] != "kept" || svc.Annotations["foreign-annotation"] != "kept" {
		t.Errorf("foreign metadata dropped: %v %v", svc.Labels, svc.Annotations)
	}

	// A port number change keeps the node port of the same name.
	pn.Spec.Ports.Client = 7000
	svc = buildService(t, b, svc)
	got = portsByName(svc.Spec.Ports)
	if got[PortClientUDP].Port != 7000 || got[PortClientUDP].NodePort != 31001 {
		t.Errorf("after port change: %+v", svc.Spec.Ports)
	}

	// Turning UDP off drops its port; TCP keeps its node port.
	pn.Spec.ClientService.UDP = ptr.To(false)
	svc = buildService(t, b, svc)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != PortClientTCP || svc.Spec.Ports[0].NodePort != 31002 {
		t.Errorf("after udp off: %+v", svc.Spec.Ports)
	}
	// Turning it back on gives a fresh port (0: the cluster allocates one).
	pn.Spec.ClientService.UDP = ptr.To(true)
	svc = buildService(t, b, svc)
	got = portsByName(svc.Spec.Ports)
	if got[PortClientUDP].NodePort != 0 || got[PortClientTCP].NodePort != 31002 {
		t.Errorf("after udp on again: %+v", svc.Spec.Ports)
	}
}

func TestMergePorts(t *testing.T) {
	existing := []corev1.ServicePort{
		{Name: "a", Protocol: corev1.ProtocolTCP, NodePort: 30001},
		{Name: "a", Protocol: corev1.ProtocolUDP, NodePort: 30002},
		{Name: "gone", Protocol: corev1.ProtocolTCP, NodePort: 30003},
	}
	desired := []corev1.ServicePort{
		{Name: "a", Protocol: corev1.ProtocolUDP},
		{Name: "b", Protocol: corev1.ProtocolTCP},
	}
	got := mergePorts(existing, desired)
	want := []corev1.ServicePort{
		{Name: "a", Protocol: corev1.ProtocolUDP, NodePort: 30002},
		{Name: "b", Protocol: corev1.ProtocolTCP},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mergePorts = %+v, want %+v", got, want)
	}
	if got := mergePorts(nil, nil); len(got) != 0 {
		t.Errorf("mergePorts(nil, nil) = %v", got)
	}
}

func TestInternalService(t *testing.T) {
	for _, typ := range []corev1.ServiceType{"", corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer} {
		pn := newPN()
		pn.Spec.ClientService.Type = typ
		pn.Spec.Ports = ddpushv1.PushNodePorts{Client: 1000, Push: 2000, HTTP: 3000}
		svc := buildService(t, &InternalServiceBuilder{pn}, nil)
		if svc.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("clientService.type %q: internal type = %q, want ClusterIP", typ, svc.Spec.Type)
		}
		want := []corev1.ServicePort{
			{Name: PortPush, Protocol: corev1.ProtocolTCP, Port: 2000, TargetPort: intstr.FromString(PortPush)},
			{Name: PortHTTP, Protocol: corev1.ProtocolTCP, Port: 3000, TargetPort: intstr.FromString(PortHTTP)},
		}
		if !reflect.DeepEqual(svc.Spec.Ports, want) {
			t.Errorf("internal ports = %+v, want push and http only", svc.Spec.Ports)
		}
		if svc.Spec.ExternalTrafficPolicy != "" {
			t.Errorf("internal externalTrafficPolicy = %q", svc.Spec.ExternalTrafficPolicy)
		}
		if !maps.Equal(svc.Spec.Selector, SelectorLabels(pn)) {
			t.Errorf("selector = %v", svc.Spec.Selector)
		}
	}
	// An existing internal Service someone made a LoadBalancer goes back.
	pn := newPN()
	b := &InternalServiceBuilder{pn}
	svc := b.Object().(*corev1.Service)
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc = buildService(t, b, svc)
	if svc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("internal Service left as %q", svc.Spec.Type)
	}
}

// ---------------------------------------------------------------- StatefulSet
