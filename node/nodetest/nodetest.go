// Package nodetest starts real push nodes for tests: every listener on a
// free loopback port, the store in a temporary directory, stopped when the
// test ends. It also has the retry-until-deadline helper the tests use
// instead of sleeping.
package nodetest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
)

// Token is the API token of test nodes.
const Token = "test-token"

// Node is a running test node.
type Node struct {
	*node.Node
	Config node.Config
	API    *api.Client
}

// Config returns a node configuration for tests in dir.
func Config(t testing.TB, dir string) node.Config {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.ClientAddr = "127.0.0.1:0"
	cfg.PushAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RateLimit = 0
	cfg.APITokenFile = filepath.Join(dir, "token")
	if err := os.WriteFile(cfg.APITokenFile, []byte(Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Start runs a node; mutate adjusts its configuration first.
func Start(t testing.TB, mutate func(*node.Config)) *Node {
	t.Helper()
	cfg := Config(t, t.TempDir())
	if mutate != nil {
		mutate(&cfg)
	}
	return StartConfig(t, cfg)
}

// StartConfig runs a node with cfg, stopped when the test ends.
func StartConfig(t testing.TB, cfg node.Config) *Node {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return StartConfigLog(t, cfg, log)
}

// StartConfigLog runs a node with cfg writing its log to log, stopped when
// the test ends.
func StartConfigLog(t testing.TB, cfg node.Config, log *slog.Logger) *Node {
	t.Helper()
	n, err := node.Start(cfg, log)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	tn := &Node{Node: n, Config: cfg, API: api.NewClient("http://"+n.HTTPAddr().String(), Token)}
	t.Cleanup(func() { tn.Stop(t) })
	return tn
}

// Stop stops the node gracefully, failing the test past 10 s.
func (n *Node) Stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Node.Stop(ctx); err != nil {
		t.Errorf("stop node: %v", err)
	}
}

// Eventually retries check until it returns nil or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %v", timeout, err)
		}
		time.Sleep(delay)
		delay = min(delay*2, 200*time.Millisecond)
	}
}
