package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/nodetest/smallfs"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// TestFullDiskAnswersAgreeWithWhatHappened runs a node whose store is on
// a real, small filesystem, fills the filesystem, and checks every answer
// the node gives while its commits fail against what it actually did:
// every refused push (push port, HTTP single, bulk, compatibility
// endpoint, with an idempotency key) is refused everywhere: the phone
// never receives it, it replaces nothing, it is not pending, no event
// and no counter has it, its key is free, a restart does not bring it
// back. Expiry that cannot be committed removes nothing. The node says it
// is not ready while its commits fail, and once space is freed, it takes
// pushes again and becomes ready by itself.
func TestFullDiskAnswersAgreeWithWhatHappened(t *testing.T) {
	fs := smallfs.Mount(t, 24<<20)
	t.Logf("store on %s (%s)", fs.Dir, fs.Kind)
	dir := t.TempDir()
	cfg := nodetest.Config(t, dir)
	cfg.DataDir = filepath.Join(fs.Dir, "data")
	cfg.CompatTicketFile = filepath.Join(dir, "ticket")
	must(t, os.WriteFile(cfg.CompatTicketFile, []byte("ticket"), 0o600))
	var logs lockedBuffer
	n := nodetest.StartConfigLog(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx := context.Background()
	st := n.Core().Stats()

	// A phone online over UDP, with a pending custom message A it has
	// received and not acknowledged.
	phoneID := uuidOf("full-disk-phone1")
	phone := newUDPPeer(t, n)
	phone.send(heartbeat(1, phoneID))
	waitIn(t, n, stats.UDP, 1)
	pA, err := n.API.Push(ctx, api.PushRequest{UUID: phoneID.String(), Kind: "custom", Data: "A"})
	must(t, err)
	phone.expect(srv(0, wire.CmdCustom, []byte("A")))

	p := dialPusher(t, n)
	fs.Fill(t)
	// bbolt reuses pages it freed before it grows the file: push until
	// the store needs space it cannot get.
	filler := make([]byte, 400)
	refusedAt := -1
	for i := range 5000 {
		if err := p.Custom(uuidOf(fmt.Sprintf("filler-%010d", i)), filler); err != nil {
			refusedAt = i
			break
		}
	}
	if refusedAt < 0 {
		t.Fatal("5000 pushes of 400 bytes accepted on a full filesystem")
	}
	t.Logf("first push refused after %d accepted on the full filesystem", refusedAt)
	status, err := n.API.Status(ctx)
	must(t, err)
	seqBefore, delivered := status.EventSeq, status.Deliveries

	// Every way of pushing is refused, and says so; the log says it once
	// in a while, not once per push (an app server retrying in a loop
	// would otherwise fill the log while the disk is full).
	for range 200 {
		if err := p.Custom(phoneID, []byte("B-port")); err == nil {
			t.Fatal("push port answered 0 on a full disk")
		}
	}
	if c := strings.Count(logs.String(), "push not accepted"); c < 1 || c > 2 {
		t.Errorf("%d log lines for 200 refused pushes, want one or two:\n%s", c, logs.String())
	}
	_, err = n.API.Push(ctx, api.PushRequest{UUID: phoneID.String(), Kind: "custom", Data: "B-http", Key: "key-on-full-disk"})
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Fatalf("HTTP push on a full disk: %v, want 503", err)
	}
	bulk, err := n.API.BulkPush(ctx, api.BulkPushRequest{UUIDs: []string{phoneID.String(), uuidOf("full-disk-other1").String()}, Kind: "custom", Data: "B-bulk"})
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || !strings.Contains(se.Message, "no target was accepted") {
		t.Fatalf("bulk push on a full disk: %+v, %v, want 503", bulk, err)
	}
	q := url.Values{"act": {"user"}, "type": {"20"}, "uuid": {phoneID.String()}, "data": {"B-compat"}, "ticket": {"ticket"}}
	if got := get(t, "http://"+n.HTTPAddr().String()+"/?"+q.Encode()); got != "0" {
		t.Fatalf("compatibility push on a full disk answered %q, want 0", got)
	}
	if _, err := n.API.Expire(ctx, 0); !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Fatalf("expire on a full disk: %v, want 503", err)
	}

	// The node is not ready, and says why.
	if n.API.Ready(ctx) {
		t.Fatal("/readyz says ready while commits fail")
	}
	status, err = n.API.Status(ctx)
	must(t, err)
	if status.Ready || !strings.Contains(status.StoreError, "no space left") {
		t.Fatalf("status while commits fail: ready=%v storeError=%q", status.Ready, status.StoreError)
	}

	// Nothing of the refused pushes happened.
	info, err := n.API.Client(ctx, phoneID.String())
	must(t, err)
	if len(info.Pending) != 1 || info.Pending[0].PushID != pA.ID || string(info.Pending[0].Data) != "A" || info.Pending[0].Fate != api.FateSent {
		t.Fatalf("pending on the phone's record: %+v, want only A (push %d), sent", info.Pending, pA.ID)
	}
	if got, err := n.API.GetPush(ctx, pA.ID); err != nil || got.Fate != api.FateSent {
		t.Fatalf("push A: %+v, %v: a refused push superseded it", got, err)
	}
	if _, err := n.API.Client(ctx, uuidOf("full-disk-other1").String()); !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Fatalf("a refused bulk push created its target's record: %v", err)
	}
	if _, err := n.API.Client(ctx, uuidOf(fmt.Sprintf("filler-%010d", refusedAt)).String()); !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Fatalf("the refused filler push created its record: %v", err)
	}
	status, err = n.API.Status(ctx)
	must(t, err)
	if status.EventSeq != seqBefore {
		t.Fatalf("event sequence moved from %d to %d while every commit failed", seqBefore, status.EventSeq)
	}
	for f, v := range delivered {
		if status.Deliveries[f] != v {
			t.Fatalf("delivery counter %s moved from %d to %d while every commit failed", f, v, status.Deliveries[f])
		}
	}
	if st.CommitFailures.Load() == 0 {
		t.Fatal("no commit failure counted")
	}
	if _, err := n.API.Client(ctx, phoneID.String()); err != nil {
		t.Fatalf("a refused expiry removed the phone's record: %v", err)
	}

	// Space comes back: the node recovers by itself and pushes go through.
	fs.Free(t)
	nodetest.Eventually(t, 15*time.Second, func() error {
		if !n.API.Ready(ctx) {
			return errors.New("not ready after the disk was freed")
		}
		return nil
	})
	pD, err := n.API.Push(ctx, api.PushRequest{UUID: phoneID.String(), Kind: "custom", Data: "D", Key: "key-on-full-disk"})
	must(t, err)
	if pD.Duplicate {
		t.Fatal("the key of a refused push answered as a duplicate")
	}
	// The phone's next datagram is D: none of the refused pushes reached it.
	phone.expect(srv(0, wire.CmdCustom, []byte("D")))
	if got, err := n.API.GetPush(ctx, pA.ID); err != nil || got.Fate != api.FateSuperseded {
		t.Fatalf("push A after D: %+v, %v, want superseded", got, err)
	}
	evs, err := n.API.Events(ctx, seqBefore, 100, 0)
	must(t, err)
	var fates []string
	for _, e := range evs.Events {
		if e.UUID == phoneID.String() {
			fates = append(fates, fmt.Sprintf("%d:%s", e.PushID, e.Fate))
		}
	}
	if want := []string{fmt.Sprintf("%d:superseded", pA.ID), fmt.Sprintf("%d:sent", pD.ID)}; strings.Join(fates, " ") != strings.Join(want, " ") {
		t.Fatalf("the phone's events after the disk was freed: %v, want %v", fates, want)
	}

	// After a restart, what is pending is what was accepted. (The push
	// connection is closed first: stopping does not wait for it then.)
	p.Close()
	n.Stop(t)
	n2 := nodetest.StartConfig(t, cfg)
	info, err = n2.API.Client(ctx, phoneID.String())
	must(t, err)
	if len(info.Pending) != 1 || info.Pending[0].PushID != pD.ID || string(info.Pending[0].Data) != "D" {
		t.Fatalf("pending after restart: %+v, want only D", info.Pending)
	}
	if _, err := n2.API.Client(ctx, uuidOf("full-disk-other1").String()); !errors.As(err, &se) || se.Code != http.StatusNotFound {
		t.Fatalf("a refused bulk push is there after restart: %v", err)
	}
	// The phone's next heartbeat brings D, and nothing else.
	phone2 := newUDPPeer(t, n2)
	phone2.send(heartbeat(1, phoneID))
	phone2.expect(srv(1, wire.CmdCustom, []byte("D")))
	phone2.expectNone()
}

// TestNodeRestartsOnAFullDisk: a node whose disk is full still starts
// (opening a store writes nothing), delivers what it holds, refuses what
// it cannot write, and says it is not ready until it can.
func TestNodeRestartsOnAFullDisk(t *testing.T) {
	fs := smallfs.Mount(t, 24<<20)
	dir := t.TempDir()
	cfg := nodetest.Config(t, dir)
	cfg.DataDir = filepath.Join(fs.Dir, "data")
	n := nodetest.StartConfig(t, cfg)
	ctx := context.Background()
	phoneID := uuidOf("full-disk-phone2")
	pA, err := n.API.Push(ctx, api.PushRequest{UUID: phoneID.String(), Kind: "custom", Data: "A"})
	must(t, err)
	fs.Fill(t)
	p := dialPusher(t, n)
	for i := 0; ; i++ {
		if i == 5000 {
			t.Fatal("5000 pushes of 400 bytes accepted on a full filesystem")
		}
		if p.Custom(uuidOf(fmt.Sprintf("filler-%010d", i)), make([]byte, 400)) != nil {
			break
		}
	}
	// Stopping writes what heartbeats left, if it still fits; if not,
	// it says so.
	p.Close()
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := n.Node.Stop(stopCtx); err != nil && !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("stop on a full disk: %v", err)
	}

	n = nodetest.StartConfig(t, cfg)
	// A phone coming online gets its message.
	phone := newUDPPeer(t, n)
	phone.send(heartbeat(1, phoneID))
	phone.expect(srv(1, wire.CmdCustom, []byte("A")))
	info, err := n.API.Client(ctx, phoneID.String())
	if err != nil || len(info.Pending) != 1 || info.Pending[0].PushID != pA.ID {
		t.Fatalf("after a start on a full disk: %+v, %v", info, err)
	}
	p = dialPusher(t, n)
	if err := p.Custom(phoneID, make([]byte, 400)); err == nil {
		t.Fatal("push accepted on a full disk after a restart")
	}
	if n.API.Ready(ctx) {
		t.Fatal("ready on a full disk after a refused push")
	}
	fs.Free(t)
	nodetest.Eventually(t, 15*time.Second, func() error {
		if !n.API.Ready(ctx) {
			return errors.New("not ready after the disk was freed")
		}
		return nil
	})
	must(t, p.Custom(phoneID, []byte("B")))
	phone.expect(srv(0, wire.CmdCustom, []byte("B")))
}

func get(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return string(b)
}
