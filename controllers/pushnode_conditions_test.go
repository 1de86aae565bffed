package controllers

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// reasonRE is what a person expects of a Reason: CamelCase, no spaces.
// (The API server accepts a little more; we hold ourselves to this.)
var reasonRE = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)

// stsState builds a StatefulSet in a given state.
type stsState struct {
	generation, observed              int64
	replicas, ready, updated, current int32
	currentRev, updateRev             string
}

func (s stsState) sts() *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "push", Generation: s.generation},
		Spec:       appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1)},
		Status: appsv1.StatefulSetStatus{
			ObservedGeneration: s.observed,
			Replicas:           s.replicas,
			ReadyReplicas:      s.ready,
			AvailableReplicas:  s.ready,
			UpdatedReplicas:    s.updated,
			CurrentReplicas:    s.current,
			CurrentRevision:    s.currentRev,
			UpdateRevision:     s.updateRev,
		},
	}
}

// The states a StatefulSet with one wanted pod goes through.
var (
	stsStable = stsState{generation: 2, observed: 2, replicas: 1, ready: 1, updated: 1, current: 1, currentRev: "edge-a", updateRev: "edge-a"}
	// Just created: the StatefulSet controller has seen it, no pod yet.
	stsNew = stsState{generation: 1, observed: 1, replicas: 0, ready: 0, updated: 0, current: 0, currentRev: "edge-a", updateRev: "edge-a"}
	// The pod exists and runs the current revision but is not ready yet
	// (loading its records, crash-looping, ...).
	stsNotReady = stsState{generation: 1, observed: 1, replicas: 1, ready: 0, updated: 1, current: 1, currentRev: "edge-a", updateRev: "edge-a"}
	// The settings changed; the StatefulSet controller has not seen it.
	stsLag = stsState{generation: 3, observed: 2, replicas: 1, ready: 1, updated: 1, current: 1, currentRev: "edge-a", updateRev: "edge-a"}
	// The StatefulSet controller has a new revision; the old pod still runs.
	stsRollingOldReady = stsState{generation: 3, observed: 3, replicas: 1, ready: 1, updated: 0, current: 1, currentRev: "edge-a", updateRev: "edge-b"}
	// The old pod is gone, the new one is not ready yet.
	stsRollingNewStarting = stsState{generation: 3, observed: 3, replicas: 1, ready: 0, updated: 1, current: 0, currentRev: "edge-a", updateRev: "edge-b"}
	// The new pod is ready; the controller has not yet moved currentRevision.
	stsRollingNewReady = stsState{generation: 3, observed: 3, replicas: 1, ready: 1, updated: 1, current: 0, currentRev: "edge-a", updateRev: "edge-b"}
	// Revisions equal but fewer updated pods than wanted (e.g. scaling up).
	stsUpdatedBehind = stsState{generation: 3, observed: 3, replicas: 1, ready: 1, updated: 0, current: 1, currentRev: "edge-b", updateRev: "edge-b"}
	// No revisions reported at all (an old or a hand-made status).
	stsNoRevisions = stsState{generation: 1, observed: 1, replicas: 1, ready: 1, updated: 1, current: 1}
)

func checkCondition(t *testing.T, c metav1.Condition, wantType string, wantStatus metav1.ConditionStatus, wantReason string, msgHas ...string) {
	t.Helper()
	if c.Type != wantType {
		t.Errorf("type = %q, want %q", c.Type, wantType)
	}
	if c.Status != wantStatus {
		t.Errorf("status = %q, want %q (reason %q, message %q)", c.Status, wantStatus, c.Reason, c.Message)
	}
	if c.Reason != wantReason {
		t.Errorf("reason = %q, want %q (message %q)", c.Reason, wantReason, c.Message)
	}
	checkReadable(t, c)
	for _, s := range msgHas {
		if !strings.Contains(c.Message, s) {
			t.Errorf("message %q does not mention %q", c.Message, s)
		}
	}
}

// checkReadable: a Reason a machine can match and a Message a person can read.
func checkReadable(t *testing.T, c metav1.Condition) {
	t.Helper()
	if !reasonRE.MatchString(c.Reason) {
		t.Errorf("reason %q is not CamelCase without spaces", c.Reason)
	}
	m := strings.TrimSpace(c.Message)
	if m == "" {
		t.Errorf("condition %s/%s has no message", c.Type, c.Reason)
	}
	if len(strings.Fields(m)) < 3 {
		t.Errorf("message %q is too terse for a person", m)
	}
	if reasonRE.MatchString(m) || strings.Contains(m, "%!") || strings.Contains(m, "<nil>") {
		t.Errorf("message %q is not a sentence a person understands", m)
	}
	if c.Status != metav1.ConditionTrue && c.Status != metav1.ConditionFalse {
		t.Errorf("status %q is neither True nor False", c.Status)
	}
}

func TestAvailableCondition(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sts    *appsv1.StatefulSet
		status metav1.ConditionStatus
		reason string
		msgHas []string
	}{
		{"nil StatefulSet", nil, metav1.ConditionFalse, "StatefulSetMissing", []string{"StatefulSet"}},
		{"new, no pod", stsNew.sts(), metav1.ConditionFalse, "ReplicasNotReady", []string{"0/1", "edge-0"}},
		{"not ready", stsNotReady.sts(), metav1.ConditionFalse, "ReplicasNotReady", []string{"0/1", "edge-0"}},
		{"ready", stsStable.sts(), metav1.ConditionTrue, "AllReplicasReady", []string{"1/1"}},
		{"observedGeneration lag, pod ready", stsLag.sts(), metav1.ConditionTrue, "AllReplicasReady", nil},
		{"rolling, old pod ready", stsRollingOldReady.sts(), metav1.ConditionTrue, "AllReplicasReady", nil},
		{"rolling, new pod starting", stsRollingNewStarting.sts(), metav1.ConditionFalse, "ReplicasNotReady", []string{"0/1"}},
		{"rolling, new pod ready", stsRollingNewReady.sts(), metav1.ConditionTrue, "AllReplicasReady", nil},
		{"no revisions", stsNoRevisions.sts(), metav1.ConditionTrue, "AllReplicasReady", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := availableCondition(tc.sts, 1)
			checkCondition(t, c, ConditionAvailable, tc.status, tc.reason, tc.msgHas...)
		})
	}
}

func TestProgressingCondition(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sts    *appsv1.StatefulSet
		status metav1.ConditionStatus
		reason string
		msgHas []string
	}{
		{"nil StatefulSet", nil, metav1.ConditionTrue, "Creating", nil},
		{"new, no pod", stsNew.sts(), metav1.ConditionTrue, "RollingUpdate", []string{"0/1"}},
		{"not ready", stsNotReady.sts(), metav1.ConditionTrue, "Starting", []string{"0/1"}},
		{"observedGeneration lag", stsLag.sts(), metav1.ConditionTrue, "Updating", nil},
		{"rolling, old pod ready", stsRollingOldReady.sts(), metav1.ConditionTrue, "RollingUpdate", []string{"0/1"}},
		{"rolling, new pod starting", stsRollingNewStarting.sts(), metav1.ConditionTrue, "RollingUpdate", []string{"1/1"}},
		{"rolling, new pod ready, revision not moved", stsRollingNewReady.sts(), metav1.ConditionTrue, "RollingUpdate", nil},
		{"updatedReplicas behind", stsUpdatedBehind.sts(), metav1.ConditionTrue, "RollingUpdate", []string{"0/1"}},
		{"stable", stsStable.sts(), metav1.ConditionFalse, "Stable", nil},
		{"stable without revisions", stsNoRevisions.sts(), metav1.ConditionFalse, "Stable", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := progressingCondition(tc.sts, 1)
			checkCondition(t, c, ConditionProgressing, tc.status, tc.reason, tc.msgHas...)
		})
	}
}

// The generation lag wins over everything the stale status says: until
// the StatefulSet controller has seen the change, its status describes the
// previous spec.
func TestProgressingConditionLagWins(t *testing.T) {
	for _, s := range []stsState{stsStable, stsRollingOldReady, stsNotReady} {
		s.generation, s.observed = 5, 4
		c := progressingCondition(s.sts(), 1)
		checkCondition(t, c, ConditionProgressing, metav1.ConditionTrue, "Updating")
	}
}

// Progressing is False exactly when Available is True and nothing rolls.
func TestConditionStableImpliesAvailable(t *testing.T) {
	for _, s := range []stsState{stsStable, stsNew, stsNotReady, stsLag, stsRollingOldReady, stsRollingNewStarting, stsRollingNewReady, stsUpdatedBehind, stsNoRevisions} {
		sts := s.sts()
		p := progressingCondition(sts, 1)
		a := availableCondition(sts, 1)
		if p.Status == metav1.ConditionFalse && a.Status != metav1.ConditionTrue {
			t.Errorf("%+v: Progressing False (%s) but Available %s (%s)", s, p.Reason, a.Status, a.Reason)
		}
	}
}

func TestDegradedCondition(t *testing.T) {
	for _, tc := range []struct {
		name     string
		problems []problem
		status   metav1.ConditionStatus
		reason   string
		msgHas   []string
	}{
		{"nil", nil, metav1.ConditionFalse, "AsExpected", nil},
		{"empty", []problem{}, metav1.ConditionFalse, "AsExpected", nil},
		{"one", []problem{{"StorageShrinkRefused", "spec.storage.size 1Gi is smaller than the existing volumes (5Gi): volumes cannot shrink"}},
			metav1.ConditionTrue, "StorageShrinkRefused", []string{"cannot shrink"}},
		{"several: first reason, every message", []problem{
			{"ApplyFailed", "apply *v1.Service edge-client: forbidden"},
			{"StorageExpansionFailed", "grow claim data-edge-0 to 2Gi: not allowed"},
		}, metav1.ConditionTrue, "ApplyFailed", []string{"edge-client: forbidden", "data-edge-0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := degradedCondition(tc.problems)
			checkCondition(t, c, ConditionDegraded, tc.status, tc.reason, tc.msgHas...)
		})
	}
}

// The condition types are the ones the API documents (Available,
// Progressing, Degraded) and the printer column reads.
func TestConditionTypes(t *testing.T) {
	if ConditionAvailable != "Available" || ConditionProgressing != "Progressing" || ConditionDegraded != "Degraded" {
		t.Errorf("condition types = %q %q %q", ConditionAvailable, ConditionProgressing, ConditionDegraded)
	}
}

// A cause shared by many pods makes one problem per reason and a message
// the apiserver takes, however many pods there are.
func TestProblemsOfManyPodsStayOneShortMessage(t *testing.T) {
	var msgs []string
	for i := range 512 {
		msgs = append(msgs, fmt.Sprintf("pod edge-%d refused slot map epoch 3: %s", i, strings.Repeat("x", 150)))
	}
	ps := appendGrouped(nil, "ShardProblem", msgs)
	if len(ps) != 1 || !strings.HasPrefix(ps[0].Message, "512 pods: pod edge-0 ") || !strings.HasSuffix(ps[0].Message, "; and 509 more") {
		t.Fatalf("grouped: %d problems, %q", len(ps), ps)
	}
	if ps := appendGrouped(nil, "ShardProblem", msgs[:2]); len(ps) != 1 || strings.Contains(ps[0].Message, "more") {
		t.Fatalf("two pods: %q", ps)
	}
	if ps := appendGrouped(nil, "ShardProblem", nil); len(ps) != 0 {
		t.Fatalf("no pods: %q", ps)
	}
	var many []problem
	for i := range 400 {
		many = append(many, problem{"R" + strconv.Itoa(i), strings.Repeat("é", 60)})
	}
	c := degradedCondition(many)
	if len(c.Message) > maxConditionMessage || !utf8.ValidString(c.Message) || !strings.HasSuffix(c.Message, "(cut)") {
		t.Fatalf("message of %d bytes, valid UTF-8 %v", len(c.Message), utf8.ValidString(c.Message))
	}
}
