package node

import (
	"strings"
	"testing"
)

func TestFDLimitWarning(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTCPClients, cfg.MaxPushConns, cfg.HTTPMaxConns = 1000, 100, 100
	need := uint64(1200 + descriptorsBesideConnections)
	if w := fdLimitWarning(cfg, need); w != "" {
		t.Fatalf("caps that fit warned: %s", w)
	}
	if w := fdLimitWarning(cfg, need-1); !strings.Contains(w, "open file limit") {
		t.Fatalf("caps one past the limit: %q", w)
	}
	// Without TCP clients their cap does not count.
	cfg.TCP = false
	if w := fdLimitWarning(cfg, 200+descriptorsBesideConnections); w != "" {
		t.Fatalf("TCP off: %s", w)
	}
	cfg.TCP = true
	cfg.HTTPMaxConns = 0
	if w := fdLimitWarning(cfg, 1<<20); !strings.Contains(w, "no cap") {
		t.Fatalf("no cap: %q", w)
	}
}
