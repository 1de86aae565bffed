package controllers_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
	"github.com/ddpush/ddpush-operator/controllers"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// nodeFixture is a PushNode whose pod is a real node process.
type nodeFixture struct {
	ns, name string
	proc     *nodetest.Process
	loc      *testLocator
	dataDir  string // the node's store: its volume
}

// startNode creates a PushNode, starts a real pushnode process with the
// token the operator generated, points the locator at it and reports the
// pod ready, as the StatefulSet controller would.
func startNode(t testing.TB, loc *testLocator, extra ...string) *nodeFixture {
	t.Helper()
	ctx := context.Background()
	f := &nodeFixture{ns: namespace(t), name: "node", loc: loc}
	must(t, k8s.Create(ctx, newPushNode(f.ns, f.name)))
	var sec corev1.Secret
	eventually(t, 20*time.Second, "token secret", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: f.name + "-api-token"}, &sec)
	})
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "operator-token")
	must(t, os.WriteFile(tokenFile, sec.Data["token"], 0o600))
	f.dataDir = filepath.Join(dir, "data")
	f.proc = nodetest.StartProcess(t, f.dataDir, append([]string{"--api-token-file", tokenFile}, extra...)...)
	loc.set(types.NamespacedName{Namespace: f.ns, Name: f.name}, "http://"+f.proc.HTTP)
	markReady(t, f.ns, f.name)
	eventually(t, 20*time.Second, "PushNode available", func() error {
		pn := getPN(t, f.ns, f.name)
		if !meta.IsStatusConditionTrue(pn.Status.Conditions, controllers.ConditionAvailable) {
			return fmt.Errorf("Available %s", condition(pn.Status.Conditions, controllers.ConditionAvailable))
		}
		return nil
	})
	return f
}

func userUUID(user string) string {
	s := md5.Sum([]byte(user))
	return hex.EncodeToString(s[:])
}

func (f *nodeFixture) message(name, user string, kind ddpushv1.MessageKind) *ddpushv1.PushMessage {
	return &ddpushv1.PushMessage{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name},
		Spec:       ddpushv1.PushMessageSpec{PushNodeName: f.name, UserID: user, Kind: kind},
	}
}

func (f *nodeFixture) phone(t testing.TB, user string) *phone.Phone {
	t.Helper()
	u, err := wire.ParseUUID(userUUID(user))
	must(t, err)
	p, err := phone.Dial("udp", f.proc.Client, u)
	must(t, err)
	t.Cleanup(func() { p.Close() })
	must(t, p.Heartbeat())
	return p
}

func getPM(t *testing.T, ns, name string) *ddpushv1.PushMessage {
	t.Helper()
	var pm ddpushv1.PushMessage
	must(t, k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, &pm))
	return &pm
}

func waitPhase(t *testing.T, ns, name string, want ddpushv1.PushMessagePhase) *ddpushv1.PushMessage {
	t.Helper()
	var pm *ddpushv1.PushMessage
	eventually(t, 30*time.Second, name+" "+string(want), func() error {
		pm = getPM(t, ns, name)
		if pm.Status.Phase != want {
			return fmt.Errorf("phase %q (%s: %s)", pm.Status.Phase, pm.Status.Reason, pm.Status.Message)
		}
		return nil
	})
	return pm
}

// expectCustom waits for a 0x20 with payload on the phone.
func expectCustom(t *testing.T, p *phone.Phone, payload string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		m, err := p.Next(time.Until(deadline))
		if err != nil {
			break
		}
		if m.Cmd == wire.CmdCustom {
			if string(m.Body) != payload {
				t.Fatalf("phone got %q, want %q", m.Body, payload)
			}
			return
		}
	}
	t.Fatalf("phone did not receive %q", payload)
}

func TestPushMessageToOnlinePhoneIsDelivered(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f := startNode(t, loc)
	p := f.phone(t, "10001")
	pm := f.message("hello", "10001", ddpushv1.KindCustom)
	pm.Spec.Data = "hello phone"
	must(t, k8s.Create(context.Background(), pm))
	expectCustom(t, p, "hello phone")
	got := waitPhase(t, f.ns, "hello", ddpushv1.PhaseDelivered)
	st := got.Status
	if st.PushID == 0 || st.TargetUUID != userUUID("10001") || st.NodePod != "node-0" ||
		st.SubmittedAt == nil || st.SentAt == nil || st.DeliveredAt == nil || st.CompletionTime == nil {
		t.Fatalf("status %+v", st)
	}
	// Only the conditions a person waits on: each one costs the
	// apiserver work on every status write.
	var types []string
	for _, c := range st.Conditions {
		types = append(types, c.Type+"="+string(c.Status))
	}
	if got := strings.Join(types, ","); got != "Delivered=True,Finished=True" {
		t.Fatalf("conditions %s, want Delivered=True,Finished=True", got)
	}
}

func TestPushMessageToOfflinePhoneQueuesThenDelivers(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f := startNode(t, loc)
	pm := f.message("later", "20002", ddpushv1.KindCustom)
	pm.Spec.Data = "wait for me"
	must(t, k8s.Create(context.Background(), pm))
	waitPhase(t, f.ns, "later", ddpushv1.PhaseQueued)
	p := f.phone(t, "20002")
	expectCustom(t, p, "wait for me")
	waitPhase(t, f.ns, "later", ddpushv1.PhaseDelivered)
}

func TestSecondCustomSupersedesTheFirst(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f := startNode(t, loc)
	ctx := context.Background()
	first := f.message("first", "30003", ddpushv1.KindCustom)
	first.Spec.Data = "one"
	must(t, k8s.Create(ctx, first))
	waitPhase(t, f.ns, "first", ddpushv1.PhaseQueued)
	second := f.message("second", "30003", ddpushv1.KindCustom)
	second.Spec.Data = "two"
	must(t, k8s.Create(ctx, second))
	waitPhase(t, f.ns, "first", ddpushv1.PhaseSuperseded)
	p := f.phone(t, "30003")
	expectCustom(t, p, "two")
	waitPhase(t, f.ns, "second", ddpushv1.PhaseDelivered)
}

func TestGeneralAndClassifiedAreDelivered(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f := startNode(t, loc)
	ctx := context.Background()
	p := f.phone(t, "40004")
	g := f.message("general", "40004", ddpushv1.KindGeneral)
	c := f.message("classified", "40004", ddpushv1.KindClassified)
	c.Spec.Bits = "0x8000000000000001"
	must(t, k8s.Create(ctx, g))
	must(t, k8s.Create(ctx, c))
	waitPhase(t, f.ns, "general", ddpushv1.PhaseDelivered)
	waitPhase(t, f.ns, "classified", ddpushv1.PhaseDelivered)
	got := map[byte][]byte{}
	for len(got) < 2 {
		m, err := p.Next(10 * time.Second)
		must(t, err)
		got[m.Cmd] = m.Body
	}
	if _, ok := got[wire.CmdGeneral]; !ok || hex.EncodeToString(got[wire.CmdClassified]) != "8000000000000001" {
		t.Fatalf("phone got %x", got)
	}
}

func TestOperatorRestartDoesNotPushTwice(t *testing.T) {
	loc := &testLocator{}
	m := startManager(t, loc)
	f := startNode(t, loc)
	ctx := context.Background()
	pm := f.message("once", "50005", ddpushv1.KindCustom)
	pm.Spec.Data = "exactly once"
	must(t, k8s.Create(ctx, pm))
	waitPhase(t, f.ns, "once", ddpushv1.PhaseQueued)
	m.stop()

	// While no operator runs, the phone comes online and acks.
	p := f.phone(t, "50005")
	expectCustom(t, p, "exactly once")

	// A new operator resyncs from the node, without pushing again.
	startManager(t, loc)
	waitPhase(t, f.ns, "once", ddpushv1.PhaseDelivered)
	var sec corev1.Secret
	must(t, k8s.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: f.name + "-api-token"}, &sec))
	st, err := api.NewClient("http://"+f.proc.HTTP, string(sec.Data["token"])).Status(ctx)
	must(t, err)
	if st.Pushes["accepted"] != 1 {
		t.Fatalf("node accepted %d pushes for one PushMessage", st.Pushes["accepted"])
	}
}

func TestPushMessageWaitsForItsNode(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	ns := namespace(t)
	ctx := context.Background()
	pm := &ddpushv1.PushMessage{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "early"},
		Spec:       ddpushv1.PushMessageSpec{PushNodeName: "node", UserID: "60006", Kind: ddpushv1.KindGeneral},
	}
	must(t, k8s.Create(ctx, pm))
	eventually(t, 20*time.Second, "pending without node", func() error {
		pm := getPM(t, ns, "early")
		if pm.Status.Phase != ddpushv1.PhasePending || condition(pm.Status.Conditions, controllers.ConditionNodeAvailable) != "False/PushNodeNotFound" {
			return fmt.Errorf("status %+v", pm.Status)
		}
		return nil
	})
	// The node appears (not ready yet, then ready): the message goes out.
	f := &nodeFixture{ns: ns, name: "node", loc: loc}
	must(t, k8s.Create(ctx, newPushNode(ns, "node")))
	eventually(t, 20*time.Second, "pending while not ready", func() error {
		pm := getPM(t, ns, "early")
		if c := condition(pm.Status.Conditions, controllers.ConditionNodeAvailable); c != "False/NodeNotReady" {
			return fmt.Errorf("NodeAvailable %s", c)
		}
		return nil
	})
	var sec corev1.Secret
	eventually(t, 20*time.Second, "token", func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "node-api-token"}, &sec)
	})
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "tok"), sec.Data["token"], 0o600))
	f.proc = nodetest.StartProcess(t, filepath.Join(dir, "data"), "--api-token-file", filepath.Join(dir, "tok"))
	loc.set(types.NamespacedName{Namespace: ns, Name: "node"}, "http://"+f.proc.HTTP)
	markReady(t, ns, "node")
	waitPhase(t, ns, "early", ddpushv1.PhaseQueued)
}

func TestPushMessageFailures(t *testing.T) {
	loc := &testLocator{}
	startManager(t, loc)
	f := startNode(t, loc, "--max-content-length", "8")
	ctx := context.Background()

	big := f.message("too-big", "70007", ddpushv1.KindCustom)
	big.Spec.Data = "more than eight bytes"
	must(t, k8s.Create(ctx, big))
	got := waitPhase(t, f.ns, "too-big", ddpushv1.PhaseFailed)
	if got.Status.Reason != "Rejected" || !strings.Contains(got.Status.Message, "maximum of 8") {
		t.Errorf("too big: %s: %s", got.Status.Reason, got.Status.Message)
	}

	late := f.message("late", "70008", ddpushv1.KindGeneral)
	late.Spec.ActiveDeadlineSeconds = ptr.To[int64](2)
	must(t, k8s.Create(ctx, late))
	waitPhase(t, f.ns, "late", ddpushv1.PhaseQueued)
	got = waitPhase(t, f.ns, "late", ddpushv1.PhaseFailed)
	if got.Status.Reason != "DeadlineExceeded" {
		t.Errorf("deadline: %s", got.Status.Reason)
	}

	// A finished message deletes itself after its TTL.
	short := f.message("short-lived", "70009", ddpushv1.KindCustom)
	short.Spec.Data = "x"
	short.Spec.TTLSecondsAfterFinished = ptr.To[int32](1)
	must(t, k8s.Create(ctx, short))
	_ = f.phone(t, "70009")
	waitPhase(t, f.ns, "short-lived", ddpushv1.PhaseDelivered)
	eventually(t, 30*time.Second, "deleted after TTL", func() error {
		err := k8s.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: "short-lived"}, &ddpushv1.PushMessage{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})

	// Events are for what a person must look at: each failure has a
	// Warning; a delivery has none (its status says it, and an Event per
	// message would double the apiserver's writes).
	eventually(t, 10*time.Second, "Warning events for the failures", func() error {
		var evs corev1.EventList
		if err := k8s.List(ctx, &evs, clientInNamespace(f.ns)); err != nil {
			return err
		}
		warned := map[string]bool{}
		for _, e := range evs.Items {
			if e.InvolvedObject.Kind != "PushMessage" {
				continue
			}
			if e.InvolvedObject.Name == "short-lived" {
				return fmt.Errorf("a delivered message got an Event: %s %s", e.Type, e.Reason)
			}
			if e.Type == corev1.EventTypeWarning && e.Reason == string(ddpushv1.PhaseFailed) {
				warned[e.InvolvedObject.Name] = true
			}
		}
		if !warned["too-big"] || !warned["late"] {
			return fmt.Errorf("Warning Failed events for %v, want too-big and late", warned)
		}
		return nil
	})
}

func TestPushMessageValidation(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	base := func() *ddpushv1.PushMessage {
		return &ddpushv1.PushMessage{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "bad-"},
			Spec:       ddpushv1.PushMessageSpec{PushNodeName: "node", UUID: strings.Repeat("a", 32), Kind: ddpushv1.KindGeneral},
		}
	}
	for _, tc := range []struct {
		name   string
		mutate func(*ddpushv1.PushMessage)
		want   string
	}{
		{"no target", func(p *ddpushv1.PushMessage) { p.Spec.UUID = "" }, "set exactly one target"},
		{"two targets", func(p *ddpushv1.PushMessage) { p.Spec.UserID = "1" }, "set exactly one target"},
		{"short uuid", func(p *ddpushv1.PushMessage) { p.Spec.UUID = "abc" }, "should match"},
		{"non-hex uuid", func(p *ddpushv1.PushMessage) { p.Spec.UUID = strings.Repeat("z", 32) }, "should match"},
		{"unknown kind", func(p *ddpushv1.PushMessage) { p.Spec.Kind = "Loud" }, "Unsupported value"},
		{"data on general", func(p *ddpushv1.PushMessage) { p.Spec.Data = "x" }, "General and Classified carry no data"},
		{"bits on general", func(p *ddpushv1.PushMessage) { p.Spec.Bits = "1" }, "bits is required for kind Classified and not allowed"},
		{"classified without bits", func(p *ddpushv1.PushMessage) { p.Spec.Kind = ddpushv1.KindClassified }, "bits is required for kind Classified"},
		{"bad bits", func(p *ddpushv1.PushMessage) { p.Spec.Kind, p.Spec.Bits = ddpushv1.KindClassified, "0xZZ" }, "should match"},
		{"zero bits", func(p *ddpushv1.PushMessage) { p.Spec.Kind, p.Spec.Bits = ddpushv1.KindClassified, "0" }, "at least one bit set"},
		{"zero bits in hex", func(p *ddpushv1.PushMessage) { p.Spec.Kind, p.Spec.Bits = ddpushv1.KindClassified, "0X0000" }, "at least one bit set"},
		{"bits of 21 digits", func(p *ddpushv1.PushMessage) {
			p.Spec.Kind, p.Spec.Bits = ddpushv1.KindClassified, "000000000000000000001"
		}, "bits"},
		{"custom without data", func(p *ddpushv1.PushMessage) { p.Spec.Kind = ddpushv1.KindCustom }, "kind Custom needs exactly one of data and binaryData"},
		{"custom with both", func(p *ddpushv1.PushMessage) {
			p.Spec.Kind, p.Spec.Data, p.Spec.BinaryData = ddpushv1.KindCustom, "x", []byte("y")
		}, "kind Custom needs exactly one of data and binaryData"},
		{"no node", func(p *ddpushv1.PushMessage) { p.Spec.PushNodeName = "" }, "pushNodeName"},
		{"zero deadline", func(p *ddpushv1.PushMessage) { p.Spec.ActiveDeadlineSeconds = ptr.To[int64](0) }, "activeDeadlineSeconds"},
		{"deadline past ten years", func(p *ddpushv1.PushMessage) { p.Spec.ActiveDeadlineSeconds = ptr.To[int64](315360001) }, "activeDeadlineSeconds"},
		{"deadline that overflows a duration", func(p *ddpushv1.PushMessage) { p.Spec.ActiveDeadlineSeconds = ptr.To[int64](9223372037) }, "activeDeadlineSeconds"},
	} {
		pm := base()
		tc.mutate(pm)
		err := k8s.Create(ctx, pm)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// The spec cannot change after creation.
	pm := base()
	must(t, k8s.Create(ctx, pm))
	pm.Spec.UUID = strings.Repeat("b", 32)
	if err := k8s.Update(ctx, pm); err == nil || !strings.Contains(err.Error(), "spec is immutable") {
		t.Errorf("changed spec: %v", err)
	}
}
