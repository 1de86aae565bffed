package controllers

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

func reshardPN(replicas int32) *ddpushv1.PushNode {
	pn := &ddpushv1.PushNode{ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "push", Generation: 4}}
	pn.Spec.Replicas = ptr.To(replicas)
	return pn
}

func TestReshardingCondition(t *testing.T) {
	pn := reshardPN(5)
	rs := &ddpushv1.ReshardingStatus{FromReplicas: 3, ToReplicas: 5, SlotsTotal: 410, SlotsMoved: 128,
		Move: &ddpushv1.SlotMoveStatus{ID: "e7-0-3", Epoch: 7, Source: 0, Target: 3, Slots: "205-268", Phase: api.MoveStreaming}}
	c := reshardingCondition(pn, rs, "", false)
	if c.Type != ConditionResharding || c.Status != metav1.ConditionTrue || c.Reason != ReasonReshardMoving {
		t.Errorf("moving: %+v", c)
	}
	if want := "moved 128 of 410 slots from 3 to 5 pods; moving slots 205-268 from pod edge-0 to pod edge-3 (streaming)"; c.Message != want {
		t.Errorf("message %q, want %q", c.Message, want)
	}

	rs.Move.Phase = api.MoveFailed
	c = reshardingCondition(pn, rs, "move e7-0-3 failed at pod edge-0 (attempt 2, asked again): target unreachable", true)
	if c.Status != metav1.ConditionTrue || c.Reason != ReasonReshardPaused ||
		!strings.HasSuffix(c.Message, "from pod edge-0 to pod edge-3; paused: move e7-0-3 failed at pod edge-0 (attempt 2, asked again): target unreachable") {
		t.Errorf("failed: %+v", c)
	}

	rs.Move = nil
	c = reshardingCondition(pn, rs, "pod edge-4 is not ready: its API does not answer", true)
	if c.Reason != ReasonReshardPaused || c.Message != "moved 128 of 410 slots from 3 to 5 pods; paused: pod edge-4 is not ready: its API does not answer" {
		t.Errorf("paused: %+v", c)
	}

	long := strings.Repeat("x", 40000)
	if c := reshardingCondition(pn, rs, long, true); len(c.Message) > 32*1024 {
		t.Errorf("message of %d bytes", len(c.Message))
	}

	// Complete stays until the next resharding; NotResharding otherwise.
	st := &ddpushv1.PushNodeStatus{}
	setReshardingCondition(pn, st, notResharding(3))
	if c := st.Conditions[0]; c.Status != metav1.ConditionFalse || c.Reason != ReasonNotResharding || c.ObservedGeneration != 4 {
		t.Errorf("not resharding: %+v", c)
	}
	setReshardingCondition(pn, st, metav1.Condition{Type: ConditionResharding, Status: metav1.ConditionFalse, Reason: ReasonReshardComplete, Message: "moved 410 slots from 3 to 5 pods in 2m"})
	setReshardingCondition(pn, st, notResharding(5))
	if c := st.Conditions[0]; c.Reason != ReasonReshardComplete {
		t.Errorf("complete was replaced: %+v", c)
	}
	setReshardingCondition(pn, st, reshardingCondition(pn, rs, "", false))
	if c := st.Conditions[0]; c.Status != metav1.ConditionTrue {
		t.Errorf("a new resharding: %+v", c)
	}
}

func TestMoveBackoff(t *testing.T) {
	for attempts, want := range map[int32]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 10: time.Minute, 1000: time.Minute} {
		if got := moveBackoff(attempts); got != want {
			t.Errorf("moveBackoff(%d) = %v, want %v", attempts, got, want)
		}
	}
}

func TestRecordedMap(t *testing.T) {
	peer := func(i int) string { return testPeer(i) }
	if m, pods, err := recordedMap(&ddpushv1.PushNodeStatus{}, peer); err != nil || !m.IsZero() || pods != 1 {
		t.Errorf("no map: %v %d %v", m, pods, err)
	}
	even, _ := slotmap.EvenSplit(3, 2, peersOf(5, testPeer))
	st := &ddpushv1.PushNodeStatus{}
	recordMap(st, even)
	if st.SlotMap.Pods != 5 || st.SlotMap.Epoch != 2 {
		t.Errorf("recorded %+v", st.SlotMap)
	}
	m, pods, err := recordedMap(st, peer)
	if err != nil || pods != 5 || !m.Equal(even) {
		t.Errorf("read back %v, %d pods, %v", m, pods, err)
	}
	// A map an older operator recorded names the pods that own slots.
	st.SlotMap.Pods = 0
	if _, pods, err := recordedMap(st, peer); err != nil || pods != 3 {
		t.Errorf("without pods: %d %v", pods, err)
	}
	if got := api.FromMap(even); got.Epoch != 2 || len(got.Ranges) != 3 || got.Peers["4"] != testPeer(4) {
		t.Errorf("api form %+v", got)
	}
}

// A push lives at its uuid's home once slots moved: the pod that accepted
// it, which its id names, holds it no longer.
func TestPushOrdinalFollowsTheSlotMap(t *testing.T) {
	pm := &ddpushv1.PushMessage{}
	pm.Spec.UUID = "0064" + strings.Repeat("0", 28) // slot 100
	pm.Status.PushID = int64(slotmap.IDBase(0) + 17)
	pm.Status.NodePod = "edge-0"

	pn := reshardPN(3)
	if got := PushOrdinal(nil, pm); got != 0 {
		t.Errorf("without the PushNode: %d", got)
	}
	if got := PushOrdinal(pn, pm); got != 0 {
		t.Errorf("sharded, no map yet: %d", got)
	}
	even, _ := slotmap.EvenSplit(3, 1, peersOf(3, testPeer))
	recordMap(&pn.Status, even)
	if got := PushOrdinal(pn, pm); got != 0 {
		t.Errorf("home unchanged: %d", got)
	}
	moved, err := withMove(even, slotmap.Move{From: 64, To: 127, Old: 0, New: 2}, 2)
	if err != nil {
		t.Fatal(err)
	}
	recordMap(&pn.Status, moved)
	if got := PushOrdinal(pn, pm); got != 2 {
		t.Errorf("after its slot moved to pod 2: %d", got)
	}
	if got := acceptedOrdinal(pm); got != 0 {
		t.Errorf("accepted by %d", got)
	}

	// An id of pod 1 whose slot is back at pod 0 after a shrink to one pod.
	pm.Status.PushID = int64(slotmap.IDBase(1) + 3)
	pm.Status.NodePod = "edge-1"
	one := reshardPN(1)
	all, _ := slotmap.New(9, []slotmap.Range{{From: 0, To: slotmap.NumSlots - 1, Ordinal: 0}}, peersOf(1, testPeer))
	recordMap(&one.Status, all)
	if got := PushOrdinal(one, pm); got != 0 {
		t.Errorf("one pod: %d", got)
	}

	// Not submitted yet: the pod that will take it is decided elsewhere.
	pm.Status.PushID = 0
	pm.Status.NodePod = ""
	if got := PushOrdinal(pn, pm); got != 0 {
		t.Errorf("not submitted: %d", got)
	}
}

func TestReshardBlocked(t *testing.T) {
	pn := reshardPN(5)
	m, _ := slotmap.EvenSplit(3, 6, peersOf(3, testPeer))
	sts := &appsv1.StatefulSet{}
	ready := func(i int, epoch int64) ddpushv1.PushNodePodStatus {
		return ddpushv1.PushNodePodStatus{Name: PodName(pn, i), Ordinal: int32(i), Ready: true, MapEpoch: epoch}
	}
	pn.Status.Pods = []ddpushv1.PushNodePodStatus{ready(0, 6), ready(1, 6), ready(2, 6)}
	if why := reshardBlocked(pn, sts, m, 3); why != "" {
		t.Errorf("all ready: %q", why)
	}
	if why := reshardBlocked(pn, nil, m, 3); why == "" {
		t.Error("no StatefulSet")
	}
	if why := reshardBlocked(pn, sts, m, 4); why != "pod edge-3 has not reported yet" {
		t.Errorf("missing pod: %q", why)
	}
	pn.Status.Pods[1].Ready, pn.Status.Pods[1].Problem = false, "its API does not answer: connection refused"
	if why := reshardBlocked(pn, sts, m, 3); why != "pod edge-1 is not ready: its API does not answer: connection refused" {
		t.Errorf("not ready: %q", why)
	}
	pn.Status.Pods[1] = ready(1, 5)
	if why := reshardBlocked(pn, sts, m, 3); why != "pod edge-1 holds slot map epoch 5, not 6 yet" {
		t.Errorf("old map: %q", why)
	}
	if why := reshardBlocked(pn, sts, slotmap.Map{}, 3); why != "" {
		t.Errorf("the first map waits for nothing: %q", why)
	}
}
