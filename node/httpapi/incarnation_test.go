package httpapi_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
)

// The store's incarnation is in /v1/status, in every push answer and in
// every events answer; it stays when the node restarts on its store and is
// new for a node on a new store.
func TestStoreIncarnationInStatusPushesAndEvents(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfg := nodetest.Config(t, dir)
	n := nodetest.StartConfig(t, cfg)
	st, err := n.API.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inc := st.Incarnation
	if len(inc) != 32 || strings.Trim(inc, "0123456789abcdef") != "" {
		t.Fatalf("status incarnation %q: want 32 lower-case hex characters", inc)
	}

	p, err := n.API.Push(ctx, api.PushRequest{UUID: strings.Repeat("ab", 16), Kind: api.KindGeneral, Key: "k-1"})
	if err != nil {
		t.Fatal(err)
	}
	if p.Incarnation != inc {
		t.Fatalf("push answer has incarnation %q, status %q", p.Incarnation, inc)
	}
	dup, err := n.API.Push(ctx, api.PushRequest{UUID: strings.Repeat("ab", 16), Kind: api.KindGeneral, Key: "k-1"})
	if err != nil || !dup.Duplicate || dup.Incarnation != inc {
		t.Fatalf("repeated push: %+v, %v", dup, err)
	}
	if st, err := n.API.Status(ctx); err != nil || st.LastPushID != p.ID {
		t.Fatalf("status after push %d: lastPushId %d, %v", p.ID, st.LastPushID, err)
	}
	got, err := n.API.GetPush(ctx, p.ID)
	if err != nil || got.Incarnation != inc {
		t.Fatalf("GET push: %+v, %v", got, err)
	}
	evs, err := n.API.Events(ctx, 0, 10, 0)
	if err != nil || evs.Incarnation != inc || len(evs.Events) == 0 {
		t.Fatalf("events: %+v, %v", evs, err)
	}
	// A cursor past the end of the log is answered with the incarnation
	// too: it is how a follower tells a replaced store from a restart.
	evs, err = n.API.Events(ctx, 1_000_000, 10, 0)
	if err != nil || !evs.Gap || evs.Incarnation != inc {
		t.Fatalf("events past the log: %+v, %v", evs, err)
	}

	// The same store after a restart: the same incarnation.
	n.Stop(t)
	n = nodetest.StartConfig(t, cfg)
	st, err = n.API.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Incarnation != inc {
		t.Fatalf("after a restart on the same store the incarnation is %q, was %q", st.Incarnation, inc)
	}

	// A new store in its place: a new incarnation, though push ids start
	// again and name other pushes.
	n.Stop(t)
	cfg.DataDir = filepath.Join(dir, "data-new")
	n = nodetest.StartConfig(t, cfg)
	st, err = n.API.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Incarnation == "" || st.Incarnation == inc {
		t.Fatalf("a new store has incarnation %q, the old one had %q", st.Incarnation, inc)
	}
	p2, err := n.API.Push(ctx, api.PushRequest{UUID: strings.Repeat("cd", 16), Kind: api.KindGeneral})
	if err != nil {
		t.Fatal(err)
	}
	if p2.ID != p.ID || p2.Incarnation != st.Incarnation {
		t.Fatalf("first push on the new store: id %d incarnation %q; want id %d (ids start again) and %q", p2.ID, p2.Incarnation, p.ID, st.Incarnation)
	}
}
