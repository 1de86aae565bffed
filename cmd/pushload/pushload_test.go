package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/nodetest"
)

// The ceiling answerer runs as a child process of pushload: in tests, the
// test binary itself is re-executed in that role.
func TestMain(m *testing.M) {
	if os.Getenv(ceilingEnv) != "" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// These smoke tests prove that every workload runs end to end against a
// real node; each measures for a fraction of a second and none asserts
// on speed.

func always(c *node.Config) { c.HeartbeatPolicy = "always" }

// pushload runs the tool and returns its saved result.
func pushload(t *testing.T, args ...string) *Result {
	t.Helper()
	out := filepath.Join(t.TempDir(), "result.json")
	var stdout, stderr bytes.Buffer
	args = append(args, "--out", out)
	if rc := run(args, &stdout, &stderr); rc != 0 {
		t.Fatalf("pushload %s: exit %d\n%s\n%s", strings.Join(args, " "), rc, stdout.String(), stderr.String())
	}
	t.Logf("%s", stdout.String())
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func positive(t *testing.T, r *Result, metrics ...string) {
	t.Helper()
	for _, m := range metrics {
		if v, ok := r.Metrics[m]; !ok || v <= 0 {
			t.Errorf("%s: %s = %v (present %v), want > 0", r.Workload, m, v, ok)
		}
	}
}

func zero(t *testing.T, r *Result, metrics ...string) {
	t.Helper()
	for _, m := range metrics {
		if v, ok := r.Metrics[m]; !ok || v != 0 {
			t.Errorf("%s: %s = %v (present %v), want 0", r.Workload, m, v, ok)
		}
	}
}

func TestHeartbeatWithCeiling(t *testing.T) {
	n := nodetest.Start(t, always)
	r := pushload(t, "heartbeat", "--client", n.ClientAddr().String(), "--uuids", "300", "--sockets", "3",
		"--warmup", "50ms", "--duration", "250ms", "--compare-ceiling")
	positive(t, r, "answers_per_s", "ceiling_answers_per_s", "share_of_ceiling")
}

func TestCeiling(t *testing.T) {
	r := pushload(t, "ceiling", "--uuids", "100", "--sockets", "2", "--warmup", "0s", "--duration", "200ms")
	positive(t, r, "answers_per_s")
}

func TestPushPort(t *testing.T) {
	n := nodetest.Start(t, always)
	r := pushload(t, "push", "--client", n.ClientAddr().String(), "--push", n.PushAddr().String(),
		"--phones", "200", "--sockets", "4", "--conns", "4", "--warmup", "50ms", "--duration", "250ms", "--settle", "2s")
	positive(t, r, "max_pushes_per_s", "max_delivered", "max_push_to_phone_samples", "half_pushes_per_s")
	zero(t, r, "max_rejected", "max_errors")
}

func TestPushHTTPBulk(t *testing.T) {
	n := nodetest.Start(t, always)
	r := pushload(t, "push", "--via", "http", "--client", n.ClientAddr().String(), "--http", n.HTTPAddr().String(),
		"--token", nodetest.Token, "--phones", "200", "--sockets", "4", "--bulk", "50", "--http-conns", "2",
		"--rates", "max", "--warmup", "50ms", "--duration", "250ms", "--settle", "2s")
	positive(t, r, "max_pushes_per_s", "max_delivered")
	if r.Workload != "push-http" {
		t.Errorf("workload %q", r.Workload)
	}
}

func TestBacklog(t *testing.T) {
	n := nodetest.Start(t, always)
	r := pushload(t, "backlog", "--client", n.ClientAddr().String(), "--push", n.PushAddr().String(),
		"--clients", "500", "--conns", "4", "--sockets", "4")
	positive(t, r, "deliveries_per_s", "acks_confirmed")
	if r.Metrics["deliveries"] != 500 {
		t.Errorf("%v deliveries, want 500", r.Metrics["deliveries"])
	}
	// Re-deliveries after an ack depend on timing (an ack still in
	// flight); a missing message would be a lost push.
	zero(t, r, "missing_messages")
}

func TestScale(t *testing.T) {
	r := pushload(t, "scale", "--node-binary", nodetest.Binary(t), "--records", "2000", "--restarts", "1",
		"--settle", "50ms", "--sockets", "4")
	positive(t, r, "rss_bytes", "rss_per_record", "start_to_ready_s", "store_bytes")
	if r.Metrics["records"] != 2000 {
		t.Errorf("%v records", r.Metrics["records"])
	}
}

func TestDurability(t *testing.T) {
	r := pushload(t, "durability", "--node-binary", nodetest.Binary(t), "--kill-after", "300ms",
		"--max-pushes", "200000", "--conns", "4", "--sockets", "4")
	positive(t, r, "accepted_before_kill", "found_after_restart")
	zero(t, r, "lost")
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	res := newResult("durability")
	res.Metrics["lost"] = 0
	res.Metrics["accepted_before_kill"] = 10
	res.Metrics["found_after_restart"] = 10
	if err := res.emit(&bytes.Buffer{}, filepath.Join(dir, "durability.json")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if rc := run([]string{"report", "--dir", dir}, &out, &out); rc != 0 {
		t.Fatalf("report: exit %d\n%s", rc, out.String())
	}
	if !strings.Contains(out.String(), "| answered pushes lost across SIGKILL | ≤ 0 | 0 | **met** |") {
		t.Errorf("report:\n%s", out.String())
	}
}

func TestRefusesRemoteTargets(t *testing.T) {
	var out bytes.Buffer
	if rc := run([]string{"heartbeat", "--client", "192.0.2.1:9966"}, &out, &out); rc != 2 {
		t.Fatalf("exit %d, want 2 (usage)\n%s", rc, out.String())
	}
	if !strings.Contains(out.String(), "--allow-remote") {
		t.Errorf("no hint at --allow-remote:\n%s", out.String())
	}
}

func TestNodeOnlyWorkloadsNeedABinary(t *testing.T) {
	for _, w := range []string{"scale", "durability"} {
		var out bytes.Buffer
		if rc := run([]string{w}, &out, &out); rc != 2 {
			t.Errorf("%s without --node-binary: exit %d, want 2\n%s", w, rc, out.String())
		}
	}
}
