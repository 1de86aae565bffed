package builders

import (
	"maps"
	"reflect"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

func shardedPN(n int32) *ddpushv1.PushNode {
	pn := newPN()
	pn.Spec.Replicas = ptr.To(n)
	return pn
}

func TestForAddsPodDisruptionBudgetOnlyWhenSharded(t *testing.T) {
	for _, n := range []int32{0, 1} {
		pn := newPN()
		if n > 0 {
			pn.Spec.Replicas = ptr.To(n)
		}
		for _, b := range For(pn, Options{}) {
			if _, ok := b.(*PodDisruptionBudgetBuilder); ok {
				t.Errorf("replicas %d: a PodDisruptionBudget for a single pod would block every node drain", n)
			}
		}
	}
	bs := For(shardedPN(3), Options{})
	last := bs[len(bs)-1]
	if _, ok := last.(*PodDisruptionBudgetBuilder); !ok {
		t.Fatalf("replicas 3: last builder is %T, want the PodDisruptionBudget", last)
	}
	if reflect.TypeOf(bs[len(bs)-2]) != reflect.TypeOf(&StatefulSetBuilder{}) {
		t.Errorf("the budget must come after the StatefulSet (a conflict on it must not hold the pods back)")
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	pn := shardedPN(3)
	pn.Spec.Labels = map[string]ddpushv1.LabelValue{"team": "mobile"}
	pn.Spec.Annotations = map[string]string{"owner": "alice"}
	b := &PodDisruptionBudgetBuilder{pn}
	obj := b.Object()
	if obj.GetName() != "edge" || obj.GetNamespace() != "push" {
		t.Fatalf("object %s/%s", obj.GetNamespace(), obj.GetName())
	}
	// An existing budget someone edited is brought back.
	pdb := obj.(*policyv1.PodDisruptionBudget)
	pdb.Spec.MinAvailable = ptr.To(intOrString(2))
	if err := b.Update(pdb); err != nil {
		t.Fatal(err)
	}
	if p := pdb.Spec.UnhealthyPodEvictionPolicy; p == nil || *p != policyv1.AlwaysAllow {
		t.Errorf("budget unhealthyPodEvictionPolicy %v; want AlwaysAllow", p)
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("budget maxUnavailable %v minAvailable %v; want maxUnavailable 1 only", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
	}
	if pdb.Spec.Selector == nil || !maps.Equal(pdb.Spec.Selector.MatchLabels, SelectorLabels(pn)) {
		t.Errorf("selector %v", pdb.Spec.Selector)
	}
	l := pdb.Labels
	if l[LabelManagedBy] != ManagedByValue || l[LabelInstance] != "edge" || l["team"] != "mobile" || pdb.Annotations["owner"] != "alice" {
		t.Errorf("metadata labels %v annotations %v", l, pdb.Annotations)
	}
	if err := b.Update(&corev1.ConfigMap{}); err == nil {
		t.Errorf("Update took a ConfigMap")
	}
}

func TestStatefulSetOfOnePodHasNoPeerLink(t *testing.T) {
	c := container(t, buildSTS(t, newPN()))
	if len(c.Args) != 0 || len(c.Env) != 0 {
		t.Errorf("args %v env %v: a single pod has no peers", c.Args, c.Env)
	}
	for _, p := range c.Ports {
		if p.Name == PortPeer || p.ContainerPort == PeerPort {
			t.Errorf("port %+v on a single pod", p)
		}
	}
	np := buildNetworkPolicy(t, newPN(), NetworkPolicyOptions{Enabled: true})
	if len(np.Spec.Ingress) != 2 {
		t.Errorf("%d ingress rules for a single pod; want the two it always had", len(np.Spec.Ingress))
	}
}

func TestStatefulSetShardedPods(t *testing.T) {
	pn := shardedPN(3)
	sts := buildSTS(t, pn)
	if *sts.Spec.Replicas != 3 || sts.Spec.ServiceName != "edge-headless" {
		t.Errorf("replicas %d serviceName %q", *sts.Spec.Replicas, sts.Spec.ServiceName)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q", sts.Spec.PodManagementPolicy)
	}
	if one := buildSTS(t, newPN()); one.Spec.PodManagementPolicy != "" {
		t.Errorf("single pod: podManagementPolicy %q; want the server's default as before", one.Spec.PodManagementPolicy)
	}
	c := container(t, sts)
	if !slices.Equal(c.Args, []string{"--peer-addr=:9977", "--peer-token-file=/etc/pushnode/api/peer-token"}) {
		t.Errorf("args %v", c.Args)
	}
	if len(c.Env) != 1 || c.Env[0].Name != "POD_NAME" || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.FieldRef == nil ||
		c.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.name" || c.Env[0].ValueFrom.FieldRef.APIVersion != "v1" {
		t.Errorf("env %+v: want POD_NAME from the pod's name, with the apiVersion the server would default", c.Env)
	}
	var peer *corev1.ContainerPort
	for i := range c.Ports {
		if c.Ports[i].Name == PortPeer {
			peer = &c.Ports[i]
		}
	}
	if peer == nil || peer.ContainerPort != 9977 || peer.Protocol != corev1.ProtocolTCP {
		t.Errorf("peer port %+v in %+v", peer, c.Ports)
	}
	if got := PeerAddr(pn, 2); got != "edge-2.edge-headless.push.svc:9977" {
		t.Errorf("PeerAddr = %q", got)
	}
	// Every pod of the set, ready or not, has its DNS name: a pod that
	// starts must reach its peers before it reports ready.
	hs := buildService(t, &HeadlessServiceBuilder{pn}, nil)
	if hs.Spec.ClusterIP != corev1.ClusterIPNone || !hs.Spec.PublishNotReadyAddresses {
		t.Errorf("headless service %+v", hs.Spec)
	}
}

func TestNetworkPolicyLetsShardedPodsReachEachOther(t *testing.T) {
	pn := shardedPN(3)
	np := buildNetworkPolicy(t, pn, NetworkPolicyOptions{Enabled: true, OperatorNamespace: "ddpush-system"})
	if len(np.Spec.Ingress) != 3 {
		t.Fatalf("%d ingress rules", len(np.Spec.Ingress))
	}
	peers := np.Spec.Ingress[2]
	if !slices.Equal(portList(peers.Ports), []string{"TCP/9977"}) {
		t.Errorf("peer ports %v", portList(peers.Ports))
	}
	if len(peers.From) != 1 || peers.From[0].NamespaceSelector != nil || peers.From[0].PodSelector == nil ||
		!maps.Equal(peers.From[0].PodSelector.MatchLabels, SelectorLabels(pn)) {
		t.Errorf("peer rule from %+v; want the pods of this PushNode only", peers.From)
	}
	// The push port and the HTTP API stay as they were.
	if !slices.Equal(portList(np.Spec.Ingress[1].Ports), []string{"TCP/9999", "TCP/8080"}) {
		t.Errorf("internal ports %v", portList(np.Spec.Ingress[1].Ports))
	}
}

func intOrString(i int32) intstr.IntOrString { return intstr.FromInt32(i) }

// While replicas shrink, the StatefulSet keeps every pod that owns slots
// or that the recorded map still names, with its peer link, and shrinks
// once the map no longer does; the claims of removed pods follow
// storage.whenScaled.
func TestStatefulSetReplicasWhileDraining(t *testing.T) {
	ranges := func(owners ...int32) []ddpushv1.SlotRange {
		out := make([]ddpushv1.SlotRange, len(owners))
		per := int32(1024 / len(owners))
		for i, o := range owners {
			out[i] = ddpushv1.SlotRange{From: int32(i) * per, To: int32(i+1)*per - 1, Ordinal: o}
		}
		out[len(out)-1].To = 1023
		return out
	}
	for _, tc := range []struct {
		name    string
		spec    int32
		slotMap *ddpushv1.SlotMapStatus
		rs      *ddpushv1.ReshardingStatus
		want    int32
		sharded bool
	}{
		{"new, no map", 3, nil, nil, 3, true},
		{"one pod, no map", 1, nil, nil, 1, false},
		{"growing: spec first", 5, &ddpushv1.SlotMapStatus{Epoch: 1, Ranges: ranges(0, 1, 2), Pods: 3}, nil, 5, true},
		{"shrinking: pods 3 and 4 still own slots", 2, &ddpushv1.SlotMapStatus{Epoch: 4, Ranges: ranges(0, 1, 2, 3, 4), Pods: 5}, nil, 5, true},
		{"shrinking: drained, the map still names them", 2, &ddpushv1.SlotMapStatus{Epoch: 9, Ranges: ranges(0, 1), Pods: 5}, nil, 5, true},
		{"shrinking: final map recorded, not yet seen on the pods", 2, &ddpushv1.SlotMapStatus{Epoch: 10, Ranges: ranges(0, 1), Pods: 2},
			&ddpushv1.ReshardingStatus{FromReplicas: 5, ToReplicas: 2}, 5, true},
		{"shrinking: done", 2, &ddpushv1.SlotMapStatus{Epoch: 10, Ranges: ranges(0, 1), Pods: 2}, nil, 2, true},
		{"map of an older operator, without pods", 2, &ddpushv1.SlotMapStatus{Epoch: 1, Ranges: ranges(0, 1, 2)}, nil, 3, true},
		{"to one pod: draining", 1, &ddpushv1.SlotMapStatus{Epoch: 3, Ranges: ranges(0), Pods: 2}, nil, 2, true},
		{"to one pod: final map", 1, &ddpushv1.SlotMapStatus{Epoch: 4, Ranges: ranges(0), Pods: 1},
			&ddpushv1.ReshardingStatus{FromReplicas: 2, ToReplicas: 1}, 2, true},
		{"to one pod: done", 1, &ddpushv1.SlotMapStatus{Epoch: 4, Ranges: ranges(0), Pods: 1}, nil, 1, false},
	} {
		pn := shardedPN(tc.spec)
		pn.Spec.Storage.WhenScaled = ddpushv1.PVCDelete
		pn.Status.SlotMap = tc.slotMap
		pn.Status.Resharding = tc.rs
		sts := buildSTS(t, pn)
		if *sts.Spec.Replicas != tc.want || Pods(pn) != tc.want {
			t.Errorf("%s: statefulset replicas %d, Pods %d, want %d", tc.name, *sts.Spec.Replicas, Pods(pn), tc.want)
		}
		if Sharded(pn) != tc.sharded {
			t.Errorf("%s: Sharded = %v", tc.name, Sharded(pn))
		}
		if hasPeer := slices.Contains(container(t, sts).Args, "--peer-addr=:9977"); hasPeer != tc.sharded {
			t.Errorf("%s: peer link on the template %v, want %v", tc.name, hasPeer, tc.sharded)
		}
		if p := sts.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenScaled != appsv1.DeletePersistentVolumeClaimRetentionPolicyType {
			t.Errorf("%s: claim retention %+v", tc.name, p)
		}
	}
}
