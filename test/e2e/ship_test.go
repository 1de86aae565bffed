//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// testOperability: what a person sees of a running node: health columns,
// events, the NetworkPolicy the operator keeps for it.
func testOperability(t *testing.T) {
	ns := namespace(t, "e2e-ops")
	createNode(t, ns, "seen", "")
	eventually(t, 60*time.Second, "printer columns", func() error {
		out := kubectl(t, "-n", ns, "get", "pn", "seen")
		if !strings.Contains(out, "AVAILABLE") || !strings.Contains(out, "DEGRADED") || !strings.Contains(out, "True") {
			return fmt.Errorf("kubectl get pn:\n%s", out)
		}
		return nil
	})
	eventually(t, 60*time.Second, "events", func() error {
		out := kubectl(t, "-n", ns, "describe", "pn", "seen")
		if !strings.Contains(out, "NodeAvailable") {
			return fmt.Errorf("kubectl describe pn shows no NodeAvailable event:\n%s", out)
		}
		return nil
	})
	// The chart turns the NetworkPolicies on: this node's lets the
	// operator's namespace and its own reach 9999 and 8080.
	kubectl(t, "-n", ns, "get", "networkpolicy", "seen")
	got := jsonpath(t, ns, "networkpolicy/seen", "{.spec.ingress[1].from[0].namespaceSelector.matchExpressions[0].values}")
	if !strings.Contains(got, operatorNS) || !strings.Contains(got, ns) {
		t.Errorf("NetworkPolicy allows %s", got)
	}
	if owner := jsonpath(t, ns, "networkpolicy/seen", "{.metadata.ownerReferences[0].name}"); owner != "seen" {
		t.Errorf("NetworkPolicy owned by %q", owner)
	}

	mustApply(t, "create", pushMessageYAML(ns, "shown", "seen", "4001", "General", ""))
	if out := kubectl(t, "-n", ns, "get", "pm", "shown"); !strings.Contains(out, "4001") {
		t.Errorf("kubectl get pm does not show the target user:\n%s", out)
	}
}

// testHelmTest: `helm test` pushes to a node through its push port from a
// pod running pushctl, and the node has the message.
func testHelmTest(t *testing.T) {
	ns := namespace(t, "e2e-helmtest")
	n := createNode(t, ns, "sample", "")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// No cluster DNS here: the test reaches the node by its pod IP.
	out, err := run(ctx, "", helmBin, "upgrade", release, "charts/ddpush-operator", "-n", operatorNS, "--reuse-values", "--wait",
		"--set", "tests.pushNode.name=sample", "--set", "tests.pushNode.namespace="+ns,
		"--set", "tests.server="+n.podIP()+":9999", "--set", "tests.userId=helm-e2e")
	if err != nil {
		t.Fatalf("helm upgrade: %v\n%s", err, out)
	}
	if out, err := run(ctx, "", helmBin, "test", release, "-n", operatorNS, "--timeout", "2m"); err != nil {
		t.Fatalf("helm test: %v\n%s\n%s", err, out, kubectl(t, "-n", operatorNS, "describe", "pod", "-l", "app.kubernetes.io/component=test"))
	}
	info, err := n.api().ClientByUserID(ctx, "helm-e2e")
	if err != nil {
		t.Fatalf("lookup of the test's user: %v", err)
	}
	if len(info.Pending) != 1 {
		t.Fatalf("the node holds %d messages for the test's user, want 1: %+v", len(info.Pending), info)
	}
}

// testSecureMetrics: the manager's metrics answer only an authorized
// ServiceAccount token, over HTTPS.
func testSecureMetrics(t *testing.T) {
	ip := jsonpath(t, operatorNS, "pods", "{.items[0].status.podIP}")
	url := "https://" + ip + ":8443/metrics"
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	ns := namespace(t, "e2e-metrics")
	kubectl(t, "-n", ns, "create", "serviceaccount", "prometheus")
	kubectl(t, "-n", ns, "create", "serviceaccount", "stranger")
	kubectl(t, "create", "clusterrolebinding", ns+"-metrics", "--clusterrole="+release+"-ddpush-operator-metrics-reader",
		"--serviceaccount="+ns+":prometheus")
	t.Cleanup(func() { _, _ = run(context.Background(), "", "kubectl", "delete", "clusterrolebinding", ns+"-metrics") })
	if code, _ := get(strings.TrimSpace(kubectl(t, "-n", ns, "create", "token", "stranger"))); code != http.StatusForbidden {
		t.Errorf("a ServiceAccount without the role: %d, want 403", code)
	}
	token := strings.TrimSpace(kubectl(t, "-n", ns, "create", "token", "prometheus"))
	eventually(t, 30*time.Second, "metrics for the reader", func() error {
		if code, body := get(token); code != http.StatusOK || !strings.Contains(body, "controller_runtime_") {
			return fmt.Errorf("%d\n%.200s", code, body)
		}
		return nil
	})
}
