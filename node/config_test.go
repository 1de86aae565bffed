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

func TestConnectionLimitsFromFlagsAndEnvironment(t *testing.T) {
	cfg := node.DefaultConfig()
	fs := cfg.FlagSet("pushnode", io.Discard)
	if err := fs.Parse([]string{"--http-max-conns=10", "--http-read-timeout=3s"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PUSHNODE_HTTP_MAX_CONNS":             "99", // the flag wins
		"PUSHNODE_HTTP_MAX_CONNS_PER_SOURCE":  "5",
		"PUSHNODE_HTTP_WRITE_TIMEOUT":         "7s",
		"PUSHNODE_MAX_PUSH_CONNS_PER_SOURCE":  "6",
		"PUSHNODE_MAX_TCP_CLIENTS_PER_SOURCE": "0",
	}
	if err := node.ApplyEnv(fs, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPMaxConns != 10 || cfg.HTTPReadTimeout != 3*time.Second || cfg.HTTPMaxConnsPerSource != 5 ||
		cfg.HTTPWriteTimeout != 7*time.Second || cfg.MaxPushConnsPerSource != 6 || cfg.MaxTCPClientsPerSource != 0 {
		t.Fatalf("limits from flags and environment: %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid limits refused (0 means no cap): %v", err)
	}
}

func TestConnectionLimitsValidated(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.MaxTCPClients, cfg.MaxTCPClientsPerSource = -1, -1
	cfg.MaxPushConns, cfg.MaxPushConnsPerSource = -1, -1
	cfg.HTTPMaxConns, cfg.HTTPMaxConnsPerSource = -1, -1
	cfg.HTTPReadTimeout, cfg.HTTPWriteTimeout = 0, -time.Second
	err := cfg.Validate()
	if err == nil {
		t.Fatal("negative limits accepted")
	}
	for _, want := range []string{"max-tcp-clients must", "max-tcp-clients-per-source", "max-push-conns must", "max-push-conns-per-source",
		"http-max-conns must", "http-max-conns-per-source", "http-read-timeout", "http-write-timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not reported in: %v", want, err)
		}
	}
}

// max-content-length bounds custom payloads only; its range is what a
// custom message can be: at least 1 byte, and small enough that the
// message carrying it fits one UDP datagram.
func TestMaxContentLengthRange(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"-1", false}, {"0", false}, {"1", true}, {"7", true}, {"8", true}, {"500", true},
		{"65502", true}, {"65503", false}, {"65535", false}, {"65536", false}, {"4294967297", false},
	} {
		cfg := node.DefaultConfig()
		fs := cfg.FlagSet("pushnode", io.Discard)
		if err := fs.Parse([]string{"--max-content-length=" + tc.value}); err != nil {
			t.Fatal(err)
		}
		err := cfg.Validate()
		if (err == nil) != tc.ok {
			t.Fatalf("max-content-length %s: %v, want valid %v", tc.value, err, tc.ok)
		}
		if err != nil {
			for _, want := range []string{"max-content-length " + tc.value, "at least 1", "at most 65502", "UDP datagram"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("max-content-length %s: %q does not mention %q", tc.value, err, want)
				}
			}
		}
	}
	cfg := node.DefaultConfig()
	fs := cfg.FlagSet("pushnode", io.Discard)
	if err := fs.Parse([]string{"--max-content-length=lots"}); err == nil {
		t.Fatal("a non-number was taken")
	}
}

// A maximum the DDPush clients cannot receive with their default buffer
// is allowed (a client may raise it) but said in the log.
func TestWarningsAboutClientBuffers(t *testing.T) {
	cfg := node.DefaultConfig()
	for _, n := range []int{1, 500, node.JavaClientMaxContentLen} {
		cfg.MaxContentLen = n
		if w := cfg.Warnings(); len(w) != 0 {
			t.Fatalf("max-content-length %d warns: %q", n, w)
		}
	}
	cfg.MaxContentLen = node.JavaClientMaxContentLen + 1
	if w := cfg.Warnings(); len(w) != 1 || !strings.Contains(w[0], "1024-byte buffer") {
		t.Fatalf("max-content-length %d: warnings %q", cfg.MaxContentLen, w)
	}
}

// Numbers a setting cannot mean are refused rather than read as something
// else: a negative connection cap is not "no cap", and a rate past what
// the limiter counts is not clipped.
func TestValidateRefusesNumbersOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		flag string
		want string
	}{
		{"--max-tcp-clients=-1", "max-tcp-clients must not be negative"},
		{"--max-push-conns=-1", "max-push-conns must not be negative"},
		{"--rate-limit=-1", "rate-limit -1 is out of range"},
		{"--rate-limit=2147483648", "rate-limit 2147483648 is out of range"},
		{"--max-records=-1", "max-records must not be negative"},
	} {
		cfg := node.DefaultConfig()
		fs := cfg.FlagSet("pushnode", io.Discard)
		if err := fs.Parse([]string{tc.flag}); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.flag, err, tc.want)
		}
	}
	cfg := node.DefaultConfig()
	cfg.RateLimit, cfg.MaxTCPClients, cfg.MaxPushConns = 2147483647, 0, 0
	if err := cfg.Validate(); err != nil {
		t.Fatalf("the largest rate and no caps: %v", err)
	}
}
