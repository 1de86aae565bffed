package controllers

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

func TestShare(t *testing.T) {
	for slots, want := range map[int]string{0: "0%", 1: "0.1%", 2: "0.2%", 5: "0.5%", 6: "0.6%", 101: "9.9%", 102: "10%", 103: "10%", 341: "33%", 342: "33%", 512: "50%", 1024: "100%"} {
		if got := share(slots); got != want {
			t.Errorf("share(%d) = %s, want %s", slots, got, want)
		}
	}
}

// The condition names the pods that are down with their slots and share,
// the total share, and does not grow without bound with 500 pods down.
func TestShardsCondition(t *testing.T) {
	pn := &ddpushv1.PushNode{ObjectMeta: metav1.ObjectMeta{Name: "edge", Generation: 3}, Spec: ddpushv1.PushNodeSpec{Replicas: ptr.To[int32](8)}}
	peers := map[int]string{}
	for i := range 8 {
		peers[i] = fmt.Sprintf("edge-%d:9977", i)
	}
	m, err := slotmap.EvenSplit(8, 4, peers)
	if err != nil {
		t.Fatal(err)
	}
	down := func(ords ...int) []podShard {
		var out []podShard
		for _, o := range ords {
			out = append(out, podShard{st: ddpushv1.PushNodePodStatus{Name: PodName(pn, o), Ordinal: int32(o),
				Slots: m.Ranges(o), SlotCount: int32(m.SlotCount(o)), Share: share(m.SlotCount(o)), Problem: "its API does not answer"}})
		}
		return out
	}
	c := shardsCondition(pn, m, nil)
	if c.Status != metav1.ConditionTrue || c.Reason != "AllShardsServed" || !strings.Contains(c.Message, "all 8 pods hold slot map epoch 4") || c.ObservedGeneration != 3 {
		t.Errorf("all up: %+v", c)
	}
	c = shardsCondition(pn, m, down(1))
	if c.Status != metav1.ConditionFalse || c.Reason != "PodsNotReady" ||
		c.Message != "1/8 pods not ready, 13% of uuids cannot take pushes until they are back: pod edge-1 (slots 128-255, 13% of uuids) is not ready: its API does not answer" {
		t.Errorf("one down: %+v", c)
	}
	c = shardsCondition(pn, m, down(0, 1, 2, 3, 4, 5))
	if !strings.HasPrefix(c.Message, "6/8 pods not ready, 75% of uuids") || !strings.Contains(c.Message, "pod edge-3 (") ||
		strings.Contains(c.Message, "pod edge-4 (") || !strings.HasSuffix(c.Message, "and 2 more pods") {
		t.Errorf("six down: %s", c.Message)
	}
}

func TestPodsBack(t *testing.T) {
	before := []ddpushv1.PushNodePodStatus{{Ordinal: 0, Ready: true}, {Ordinal: 1}, {Ordinal: 2}}
	now := []ddpushv1.PushNodePodStatus{{Ordinal: 0, Ready: true}, {Ordinal: 1, Ready: true}, {Ordinal: 2}}
	if got := podsBack(before, now); len(got) != 1 || got[0] != 1 {
		t.Errorf("podsBack = %v, want [1]", got)
	}
	if got := podsBack(nil, now); len(got) != 2 {
		t.Errorf("podsBack from nothing = %v, want the two ready pods", got)
	}
}

func TestPodRestarted(t *testing.T) {
	pod := func(ip string, ready bool, restarts int32) *corev1.Pod {
		p := &corev1.Pod{Status: corev1.PodStatus{PodIP: ip, ContainerStatuses: []corev1.ContainerStatus{{RestartCount: restarts}}}}
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}
		return p
	}
	base := pod("10.0.0.1", true, 0)
	for _, tc := range []struct {
		name string
		new  *corev1.Pod
		want bool
	}{
		{"nothing", pod("10.0.0.1", true, 0), false},
		{"new IP", pod("10.0.0.2", true, 0), true},
		{"not ready", pod("10.0.0.1", false, 0), true},
		{"container restarted", pod("10.0.0.1", true, 1), true},
	} {
		if got := podRestarted(base, tc.new); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
