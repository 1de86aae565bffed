//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

const release = "ddpush"
const operatorNS = "ddpush-system"

// TestE2E runs the scenarios in order on one operator installed by helm.
func TestE2E(t *testing.T) {
	installOperator(t)
	t.Run("PushNodeBecomesReady", testPushNodeReady)
	t.Run("Delivery", testDelivery)
	t.Run("Validation", testValidation)
	t.Run("Operability", testOperability)
	t.Run("HelmTest", testHelmTest)
	t.Run("SecureMetrics", testSecureMetrics)
	t.Run("NodePodKilled", testNodePodKilled)
	t.Run("ShardedDelivery", testSharded)
	t.Run("Resharding", testResharding)
	t.Run("SettingsChangeRolls", testSettingsChange)
	t.Run("OperatorRestartMidDelivery", testOperatorRestart)
	t.Run("BurstWithRestarts", testBurst)
	t.Run("DeletionGarbageCollects", testDeletion)
}

func installOperator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, _ = run(ctx, "", helmBin, "uninstall", release, "-n", operatorNS, "--wait")
	// A short grace for PushMessages of a deleted PushNode, so that the
	// deletion test sees them end.
	out, err := run(ctx, "", helmBin, "install", release, "charts/ddpush-operator",
		"--namespace", operatorNS, "--create-namespace", "--wait", "--timeout", "3m",
		"--set", "extraArgs[0]=--pushnode-deleted-grace=10s",
		// The local cluster has no cluster DNS: slot maps name pods by IP.
		"--set", "extraArgs[1]=--peer-addresses=pod-ip")
	if err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, _ = run(ctx, "", helmBin, "uninstall", release, "-n", operatorNS, "--wait")
	})
	kubectl(t, "-n", operatorNS, "rollout", "status", "deployment", "--timeout=120s")
}

func testPushNodeReady(t *testing.T) {
	ns := namespace(t, "e2e-ready")
	n := createNode(t, ns, "ready", "")
	for _, obj := range []string{"statefulset/ready", "service/ready-client", "service/ready-internal", "service/ready-headless",
		"configmap/ready-config", "secret/ready-api-token", "persistentvolumeclaim/data-ready-0"} {
		kubectl(t, "-n", ns, "get", obj)
	}
	waitJSONPath(t, 60*time.Second, ns, "pvc/data-ready-0", "{.status.phase}", "Bound")
	waitJSONPath(t, 60*time.Second, ns, "pushnode/ready", "{.status.ready}", "1/1")
	// kubectl's printer columns, as a person sees them.
	out := kubectl(t, "-n", ns, "get", "pn")
	if !strings.Contains(out, "READY") || !strings.Contains(out, "1/1") {
		t.Fatalf("kubectl get pn:\n%s", out)
	}
	if _, err := n.api().Status(context.Background()); err != nil {
		t.Fatalf("node API with the operator's token: %v", err)
	}
}

func testDelivery(t *testing.T) {
	ns := namespace(t, "e2e-delivery")
	n := createNode(t, ns, "push", "")
	// Online phone: delivered, and the phone has it.
	online := n.phoneFor("1001")
	mustApply(t, "create", pushMessageYAML(ns, "to-online", "push", "1001", "Custom", "  data: hello online"))
	expectCustom(t, online, "hello online")
	waitPhase(t, ns, "to-online", "Delivered")
	if got := jsonpath(t, ns, "pm/to-online", "{.status.deliveredAt}"); got == "" {
		t.Error("no deliveredAt")
	}

	// Offline phone: queued, then delivered when it comes online.
	mustApply(t, "create", pushMessageYAML(ns, "to-offline", "push", "1002", "Custom", "  data: hello later"))
	waitPhase(t, ns, "to-offline", "Queued")
	later := n.phoneFor("1002")
	expectCustom(t, later, "hello later")
	waitPhase(t, ns, "to-offline", "Delivered")

	// A second Custom before the ack supersedes the first.
	mustApply(t, "create", pushMessageYAML(ns, "first", "push", "1003", "Custom", "  data: one"))
	waitPhase(t, ns, "first", "Queued")
	mustApply(t, "create", pushMessageYAML(ns, "second", "push", "1003", "Custom", "  data: two"))
	waitPhase(t, ns, "first", "Superseded")
	p := n.phoneFor("1003")
	expectCustom(t, p, "two")
	waitPhase(t, ns, "second", "Delivered")

	// A message the node refuses (the default maxContentLength is 500).
	mustApply(t, "create", pushMessageYAML(ns, "too-big", "push", "1004", "Custom", "  data: "+strings.Repeat("x", 501)))

	// `kubectl wait` ends on every terminal phase: Finished is set on each,
	// and the phase tells which.
	kubectl(t, "-n", ns, "wait", "--for=condition=Finished", "--timeout=60s", "pm/to-online", "pm/to-offline", "pm/first", "pm/second", "pm/too-big")
	for name, phase := range map[string]string{"to-online": "Delivered", "first": "Superseded", "too-big": "Failed"} {
		if got := jsonpath(t, ns, "pm/"+name, "{.status.phase}"); got != phase {
			t.Errorf("pm/%s: phase %q after kubectl wait, want %s", name, got, phase)
		}
	}

	out := kubectl(t, "-n", ns, "get", "pm")
	for _, col := range []string{"NODE", "TARGET", "KIND", "PHASE", "Delivered", "Superseded"} {
		if !strings.Contains(out, col) {
			t.Errorf("kubectl get pm lacks %q:\n%s", col, out)
		}
	}
}

func testValidation(t *testing.T) {
	ns := namespace(t, "e2e-validation")
	for _, tc := range []struct{ yaml, want string }{
		{pushMessageYAML(ns, "no-bits", "x", "1", "Classified", ""), "bits is required for kind Classified"},
		{pushMessageYAML(ns, "data-on-general", "x", "1", "General", "  data: nope"), "General and Classified carry no data"},
		{strings.Replace(pushMessageYAML(ns, "bad-uuid", "x", "1", "General", "  uuid: xyz"), "  userId: \"1\"\n", "", 1), "should match"},
		{pushNodeYAML(ns, "many", "  replicas: 513\n"), "at most 512"},
		{pushNodeYAML(ns, "bad-policy", "  settings:\n    heartbeatPolicy: sometimes\n"), "Unsupported value"},
	} {
		out, err := apply(t, "create", tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("created or wrong message (want %q): %v\n%s", tc.want, err, out)
		}
	}
}

func testNodePodKilled(t *testing.T) {
	ns := namespace(t, "e2e-kill")
	n := createNode(t, ns, "sturdy", "")
	mustApply(t, "create", pushMessageYAML(ns, "survivor", "sturdy", "2001", "Custom", "  data: still here"))
	waitPhase(t, ns, "survivor", "Queued")
	uid := n.podUID()
	// Not --wait: the StatefulSet recreates the pod under the same name at
	// once, and kubectl's wait can miss the old one going.
	kubectl(t, "-n", ns, "delete", "pod", "sturdy-0", "--wait=false")
	eventually(t, 90*time.Second, "pod recreated", func() error {
		if u := n.podUID(); u == "" || u == uid {
			return fmt.Errorf("pod uid %q", u)
		}
		return nil
	})
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "--timeout=90s", "pod/sturdy-0")
	p := n.phoneFor("2001")
	expectCustom(t, p, "still here")
	waitPhase(t, ns, "survivor", "Delivered")
}

func testSettingsChange(t *testing.T) {
	ns := namespace(t, "e2e-settings")
	n := createNode(t, ns, "tuned", "")
	mustApply(t, "create", pushMessageYAML(ns, "across-roll", "tuned", "3001", "Custom", "  data: across the roll"))
	waitPhase(t, ns, "across-roll", "Queued")
	hash := jsonpath(t, ns, "statefulset/tuned", "{.spec.template.metadata.annotations.ddpush\\.dev/settings-hash}")
	uid := n.podUID()
	kubectl(t, "-n", ns, "patch", "pushnode", "tuned", "--type=merge", "-p", `{"spec":{"settings":{"heartbeatPolicy":"always"}}}`)
	eventually(t, 120*time.Second, "pod rolled", func() error {
		if h := jsonpath(t, ns, "statefulset/tuned", "{.spec.template.metadata.annotations.ddpush\\.dev/settings-hash}"); h == hash {
			return fmt.Errorf("hash unchanged")
		}
		if u := n.podUID(); u == "" || u == uid {
			return fmt.Errorf("pod not replaced")
		}
		return nil
	})
	kubectl(t, "-n", ns, "wait", "--for=condition=Available", "--timeout=120s", "pushnode/tuned")
	kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "--timeout=90s", "pod/tuned-0")
	st, err := n.api().Status(context.Background())
	if err != nil || st.HeartbeatRule != "always" {
		t.Fatalf("node after roll: %+v %v", st, err)
	}
	p := n.phoneFor("3001")
	expectCustom(t, p, "across the roll")
	waitPhase(t, ns, "across-roll", "Delivered")
}

func testOperatorRestart(t *testing.T) {
	ns := namespace(t, "e2e-restart")
	n := createNode(t, ns, "steady", "")
	mustApply(t, "create", pushMessageYAML(ns, "once", "steady", "4001", "Custom", "  data: exactly once"))
	waitPhase(t, ns, "once", "Queued")
	before, err := n.api().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Kill the operator while the message is in flight.
	kubectl(t, "-n", operatorNS, "delete", "pod", "-l", "app.kubernetes.io/name=ddpush-operator", "--wait=true", "--timeout=60s")
	p := n.phoneFor("4001")
	expectCustom(t, p, "exactly once")
	kubectl(t, "-n", operatorNS, "rollout", "status", "deployment", "--timeout=120s")
	waitPhase(t, ns, "once", "Delivered")
	after, err := n.api().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := after.Pushes["accepted"] - before.Pushes["accepted"]; d != 0 {
		t.Fatalf("the restarted operator pushed %d more times", d)
	}
}

func testDeletion(t *testing.T) {
	ns := namespace(t, "e2e-delete")
	createNode(t, ns, "keep", "")
	createNode(t, ns, "drop", "    whenDeleted: Delete\n")
	waitJSONPath(t, 60*time.Second, ns, "pvc/data-keep-0", "{.status.phase}", "Bound")
	waitJSONPath(t, 60*time.Second, ns, "pvc/data-drop-0", "{.status.phase}", "Bound")
	// An open message (its phone is offline) on the PushNode to be deleted.
	waitJSONPath(t, 120*time.Second, ns, "pushnode/drop", "{.status.ready}", "1/1")
	mustApply(t, "create", pushMessageYAML(ns, "stranded", "drop", "2001", "General", ""))
	waitPhase(t, ns, "stranded", "Queued")
	kubectl(t, "-n", ns, "delete", "pushnode", "keep", "drop", "--wait=true", "--timeout=60s")
	// It is not stranded: after the grace (10 s here) it ends Failed.
	kubectl(t, "-n", ns, "wait", "--for=condition=Finished", "--timeout=90s", "pm/stranded")
	if got := jsonpath(t, ns, "pm/stranded", "{.status.phase}/{.status.reason}"); got != "Failed/PushNodeDeleted" {
		t.Errorf("message of a deleted PushNode: %s, want Failed/PushNodeDeleted", got)
	}
	for _, name := range []string{"keep", "drop"} {
		for _, obj := range []string{"statefulset/" + name, "service/" + name + "-client", "service/" + name + "-internal",
			"service/" + name + "-headless", "configmap/" + name + "-config", "secret/" + name + "-api-token", "pod/" + name + "-0"} {
			eventually(t, 120*time.Second, obj+" garbage-collected", func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				out, err := run(ctx, "", "kubectl", "-n", ns, "get", obj, "--ignore-not-found", "-o", "name")
				if err != nil {
					return err
				}
				if strings.TrimSpace(out) != "" {
					return fmt.Errorf("still there")
				}
				return nil
			})
		}
	}
	if jsonpath(t, ns, "pvc/data-keep-0", "{.metadata.name}") != "data-keep-0" {
		t.Error("the PVC of a PushNode with whenDeleted: Retain was deleted")
	}
	eventually(t, 120*time.Second, "PVC deleted with whenDeleted: Delete", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := run(ctx, "", "kubectl", "-n", ns, "get", "pvc/data-drop-0", "--ignore-not-found", "-o", "name")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("still there")
		}
		return nil
	})
}
