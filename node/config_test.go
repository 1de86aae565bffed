package node_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
)

func TestEveryFlagHasAnEnvironmentVariable(t *testing.T) {
	cfg := node.DefaultConfig()
	fs := cfg.FlagSet("pushnode", io.Discard)
	if err := fs.Parse([]string{"--heartbeat-policy=always"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PUSHNODE_HEARTBEAT_POLICY":    "address-changed", // the flag wins
		"PUSHNODE_MAX_CONTENT_LENGTH":  "64",
		"PUSHNODE_ONLINE_WINDOW":       "30s",
		"PUSHNODE_CREATE_BY_HEARTBEAT": "false",
		"PUSHNODE_DATA_DIR":            "/var/lib/pushnode",
		"PUSHNODE_UDP":                 "false",
	}
	if err := node.ApplyEnv(fs, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.HeartbeatPolicy != "always" || cfg.MaxContentLen != 64 || cfg.OnlineWindow != 30*time.Second ||
		cfg.CreateByHeartbeat || cfg.DataDir != "/var/lib/pushnode" || cfg.UDP {
		t.Fatalf("config from the environment: %+v", cfg)
	}
	if node.EnvName("max-content-length") != "PUSHNODE_MAX_CONTENT_LENGTH" {
		t.Fatal(node.EnvName("max-content-length"))
	}
}

func TestBadEnvironmentNamesTheVariable(t *testing.T) {
	cfg := node.DefaultConfig()
	fs := cfg.FlagSet("pushnode", io.Discard)
	_ = fs.Parse(nil)
	err := node.ApplyEnv(fs, func(k string) string {
		if k == "PUSHNODE_ONLINE_WINDOW" {
			return "soon"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "PUSHNODE_ONLINE_WINDOW") {
		t.Fatalf("error %v does not name the variable", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := node.DefaultConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	cfg.HeartbeatPolicy = "sometimes"
	cfg.MaxContentLen = 0
	cfg.UDP, cfg.TCP = false, false
	cfg.LogFormat = "xml"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid settings accepted")
	}
	for _, want := range []string{"heartbeat-policy", "max-content-length", "udp and tcp", "log-format"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not reported in: %v", want, err)
		}
	}
	if _, err := node.Start(cfg, nil); err == nil {
		t.Fatal("Start accepted invalid settings")
	}
}
