//go:build e2e

// Package e2e drives the product on a running local cluster the way
// users do: helm to install the operator, kubectl to apply PushNodes and
// create PushMessages, and a simulated phone talking DDPush to the node
// pod. Run it with `make e2e`, which brings the local cluster up first.
package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/wire"
)

var (
	repoRoot   string
	kubeconfig string
	helmBin    string
)

func TestMain(m *testing.M) {
	wd, _ := os.Getwd()
	repoRoot = filepath.Clean(filepath.Join(wd, "..", ".."))
	kubeconfig = os.Getenv("E2E_KUBECONFIG")
	if kubeconfig == "" {
		kubeconfig = filepath.Join(repoRoot, ".localcluster", "kubeconfig")
	}
	if _, err := os.Stat(kubeconfig); err != nil {
		fmt.Fprintf(os.Stderr, "no cluster: %v (run `make e2e`, which starts the local cluster)\n", err)
		os.Exit(1)
	}
	out, err := exec.Command(filepath.Join(repoRoot, "hack", "tools.sh"), "helm").Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "helm: %v\n", err)
		os.Exit(1)
	}
	helmBin = strings.TrimSpace(string(out))
	os.Exit(m.Run())
}

// run runs a command with the cluster's kubeconfig and returns stdout;
// on failure the error carries stderr.
func run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Dir = repoRoot
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := run(ctx, "", "kubectl", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// apply pipes YAML to kubectl; it returns kubectl's error for tests that
// expect a refusal.
func apply(t *testing.T, verb, yaml string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return run(ctx, yaml, "kubectl", append([]string{verb, "-f", "-"}, args...)...)
}

func mustApply(t *testing.T, verb, yaml string, args ...string) {
	t.Helper()
	if out, err := apply(t, verb, yaml, args...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// eventually retries check every half second until it passes or the
// timeout runs out.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, timeout, err)
}

func jsonpath(t *testing.T, ns, obj, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := run(ctx, "", "kubectl", "-n", ns, "get", obj, "-o", "jsonpath="+path)
	if err != nil {
		return ""
	}
	return out
}

func waitJSONPath(t *testing.T, timeout time.Duration, ns, obj, path, want string) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%s %s = %q", obj, path, want), func() error {
		if got := jsonpath(t, ns, obj, path); got != want {
			return fmt.Errorf("got %q", got)
		}
		return nil
	})
}

// namespace creates a namespace deleted at the end of the test.
func namespace(t *testing.T, name string) string {
	t.Helper()
	kubectl(t, "create", "namespace", name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, _ = run(ctx, "", "kubectl", "delete", "namespace", name, "--wait=false")
	})
	return name
}

func pushNodeYAML(ns, name, extraSpec string) string {
	return fmt.Sprintf(`apiVersion: ddpush.dev/v1alpha1
kind: PushNode
metadata:
  name: %s
  namespace: %s
spec:
  storage:
    size: 64Mi
%s`, name, ns, extraSpec)
}

func pushMessageYAML(ns, name, node, user, kind, extra string) string {
	return fmt.Sprintf(`apiVersion: ddpush.dev/v1alpha1
kind: PushMessage
metadata:
  name: %s
  namespace: %s
spec:
  pushNodeName: %s
  userId: %q
  kind: %s
%s`, name, ns, node, user, kind, extra)
}

// node is a PushNode running in the cluster.
type node struct {
	t        *testing.T
	ns, name string
}

func (n *node) podIP() string {
	return jsonpath(n.t, n.ns, "pod/"+n.name+"-0", "{.status.podIP}")
}

func (n *node) podUID() string {
	return jsonpath(n.t, n.ns, "pod/"+n.name+"-0", "{.metadata.uid}")
}

// api is a client of the node pod's HTTP API with the token the operator
// generated.
func (n *node) api() *api.Client {
	n.t.Helper()
	b64 := jsonpath(n.t, n.ns, "secret/"+n.name+"-api-token", "{.data.token}")
	tok, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(tok) == 0 {
		n.t.Fatalf("token secret: %q %v", b64, err)
	}
	return api.NewClient("http://"+n.podIP()+":8080", string(tok))
}

func createNode(t *testing.T, ns, name, extraSpec string) *node {
	t.Helper()
	mustApply(t, "apply", pushNodeYAML(ns, name, extraSpec))
	kubectl(t, "-n", ns, "wait", "--for=condition=Available", "--timeout=120s", "pushnode/"+name)
	return &node{t: t, ns: ns, name: name}
}

// phoneFor connects a simulated phone for user over UDP to the node pod.
func (n *node) phoneFor(user string) *phone.Phone {
	n.t.Helper()
	u, err := wire.ParseUUID(userUUID(user))
	if err != nil {
		n.t.Fatal(err)
	}
	p, err := phone.Dial("udp", n.podIP()+":9966", u)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { p.Close() })
	if err := p.Heartbeat(); err != nil {
		n.t.Fatal(err)
	}
	return p
}

// expectCustom waits for a 0x20 with payload.
func expectCustom(t *testing.T, p *phone.Phone, payload string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		m, err := p.Next(time.Until(deadline))
		if err != nil {
			break
		}
		if m.Cmd == wire.CmdCustom && string(m.Body) == payload {
			return
		}
	}
	t.Fatalf("the phone did not receive %q", payload)
}

func waitPhase(t *testing.T, ns, pm, phase string) {
	t.Helper()
	waitJSONPath(t, 90*time.Second, ns, "pushmessage/"+pm, "{.status.phase}", phase)
}

func userUUID(user string) string {
	out, err := exec.Command("sh", "-c", "printf %s \"$0\" | md5sum | cut -c1-32", user).Output()
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(out))
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
}
