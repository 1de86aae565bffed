package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/wire"
)

func TestDeliveryToUDPPhone(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	u := uuidFor("phone")
	p := dialPhone(t, tn, "udp", u)
	p.AutoAck = true

	c := heartbeatUntilOnline(t, tn, p, u, "udp")
	if c.Address != p.LocalAddr().String() || c.LastHeartbeat == nil || len(c.Pending) != 0 {
		t.Fatalf("online client: %+v, phone at %s", c, p.LocalAddr())
	}

	payload := "hello, phone"
	pu, r := tn.push(api.PushRequest{UUID: u, Kind: api.KindCustom, Data: payload, Key: "deliver-1"})
	if r.code != http.StatusCreated || pu.Fate != api.FateSent {
		t.Fatalf("push to an online client: %s, want fate sent", r)
	}
	m := nextCmd(t, p, wire.CmdCustom, wait)
	if string(m.Body) != payload || m.AppID != 0 {
		t.Fatalf("phone got appId %d body %q, want appId 0 body %q", m.AppID, m.Body, payload)
	}
	var got api.Push
	eventually(t, wait, func() error {
		got = tn.getPush(pu.ID)
		if got.Fate != api.FateAcknowledged {
			return fmt.Errorf("push %d fate %s", pu.ID, got.Fate)
		}
		return nil
	})
	if got.SentAt == nil || got.FinishedAt == nil || got.FinishedAt.Before(*got.SentAt) || got.Key != "deliver-1" {
		t.Fatalf("acknowledged push: %+v", got)
	}
	c, _ = tn.client(u)
	if !c.Online || c.Transport != "udp" || c.Address != p.LocalAddr().String() || len(c.Pending) != 0 {
		t.Fatalf("client after delivery: %+v", c)
	}

	// A general and a classified push also arrive at once and are acked.
	pg, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindGeneral})
	nextCmd(t, p, wire.CmdGeneral, wait)
	pc, _ := tn.push(map[string]any{"uuid": u, "kind": "classified", "bits": "0x8000000000000001"})
	if mc := nextCmd(t, p, wire.CmdClassified, wait); !bytes.Equal(mc.Body, []byte{0x80, 0, 0, 0, 0, 0, 0, 1}) {
		t.Fatalf("classified body % x", mc.Body)
	}
	eventually(t, wait, func() error {
		for _, id := range []uint64{pg.ID, pc.ID} {
			if f := tn.getPush(id).Fate; f != api.FateAcknowledged {
				return fmt.Errorf("push %d fate %s", id, f)
			}
		}
		return nil
	})

	// The counters move just after the commit that made the fates
	// readable, so they may lag a moment behind.
	eventually(t, wait, func() error {
		s := tn.status()
		if s.Deliveries["sent"] != 3 || s.Deliveries["acknowledged"] != 3 || s.Deliveries["queued"] != 0 || s.PacketsIn["udp"] < 4 || s.PacketsOut["udp"] < 3 {
			return fmt.Errorf("status after delivery: deliveries %v packetsIn %v packetsOut %v", s.Deliveries, s.PacketsIn, s.PacketsOut)
		}
		return nil
	})
	eventually(t, wait, func() error {
		mr := tn.raw(http.MethodGet, api.PathMetrics, nil, nil)
		if !strings.Contains(string(mr.body), "pushnode_ack_latency_seconds_count 3\n") {
			return errors.New("ack latency not observed three times")
		}
		return nil
	})
}

// collectEvents follows the event log with long polls from after until
// stop reports it has seen enough, bounded by wait.
func collectEvents(t *testing.T, tn *testNode, after uint64, stop func([]api.Event) bool) ([]api.Event, uint64) {
	t.Helper()
	var all []api.Event
	deadline := time.Now().Add(wait)
	for !stop(all) {
		if time.Now().After(deadline) {
			t.Fatalf("events not complete within %v: %+v", wait, all)
		}
		evs := tn.events(fmt.Sprintf("after=%d&wait=1s", after))
		for _, e := range evs.Events {
			if e.Seq <= after {
				t.Fatalf("event %d came after cursor %d", e.Seq, after)
			}
		}
		if len(evs.Events) > 0 && evs.Next != evs.Events[len(evs.Events)-1].Seq {
			t.Fatalf("next %d is not the last seq %d", evs.Next, evs.Events[len(evs.Events)-1].Seq)
		}
		if len(evs.Events) == 0 && evs.Next != after {
			t.Fatalf("no events, next %d, want the cursor %d", evs.Next, after)
		}
		all = append(all, evs.Events...)
		after = evs.Next
	}
	return all, after
}

type evWant struct {
	push uint64
	kind string
	fate string
	key  string
}

func checkEvents(t *testing.T, got []api.Event, firstSeq uint64, uuid string, want []evWant) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		e := got[i]
		if e.Seq != firstSeq+uint64(i) || e.PushID != w.push || e.Kind != w.kind || e.Fate != w.fate || e.Key != w.key || e.UUID != uuid || e.At.IsZero() {
			t.Fatalf("event %d: %+v, want seq %d %+v for %s", i, e, firstSeq+uint64(i), w, uuid)
		}
	}
}

func TestEventsLongPoll(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	u := uuidFor("events")

	// Nothing yet: a short wait returns empty with the cursor unchanged.
	start := time.Now()
	if evs := tn.events("after=0&wait=200ms"); len(evs.Events) != 0 || evs.Next != 0 || evs.Gap {
		t.Fatalf("empty log: %+v", evs)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("wait=200ms returned after %v", d)
	}

	// queued, superseded, queued; then the phone heartbeats: sent, acknowledged.
	p1, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "one", Key: "ev-1"})
	p2, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "two", Key: "ev-2"})
	ph := dialPhone(t, tn, "udp", u)
	deadline := time.Now().Add(wait)
	for {
		if err := ph.Heartbeat(); err != nil {
			t.Fatal(err)
		}
		m, err := ph.Next(2 * time.Second)
		if err == nil && m.Cmd == wire.CmdCustom {
			if string(m.Body) != "two" {
				t.Fatalf("heartbeat answered with %q, want the latest payload", m.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 0x20 answer to heartbeats within %v (%v)", wait, err)
		}
	}
	want := []evWant{
		{p1.ID, api.KindCustom, api.FateQueued, "ev-1"},
		{p1.ID, api.KindCustom, api.FateSuperseded, "ev-1"},
		{p2.ID, api.KindCustom, api.FateQueued, "ev-2"},
		{p2.ID, api.KindCustom, api.FateSent, "ev-2"},
		{p2.ID, api.KindCustom, api.FateAcknowledged, "ev-2"},
	}
	got, next := collectEvents(t, tn, 0, func(evs []api.Event) bool { return len(evs) >= len(want) })
	checkEvents(t, got, 1, u, want)
	if next != 5 {
		t.Fatalf("cursor %d after five events", next)
	}

	// One call from the start returns them all; limit and after page.
	all := tn.events("after=0&wait=1s")
	checkEvents(t, all.Events, 1, u, want)
	if all.Next != 5 {
		t.Fatalf("next %d, want 5", all.Next)
	}
	page := tn.events("after=2&limit=2")
	checkEvents(t, page.Events, 3, u, want[2:4])
	if page.Next != 4 {
		t.Fatalf("page next %d, want 4", page.Next)
	}
	rest := tn.events(fmt.Sprintf("after=%d", page.Next))
	checkEvents(t, rest.Events, 5, u, want[4:])
	// Nothing newer: an immediate answer without wait, empty, same cursor.
	if evs := tn.events("after=5"); len(evs.Events) != 0 || evs.Next != 5 {
		t.Fatalf("after the last event: %+v", evs)
	}
	if evs := tn.events("from=now&wait=100ms"); len(evs.Events) != 0 || evs.Next != 5 {
		t.Fatalf("from=now: %+v", evs)
	}

	// A waiting long poll is woken by a new push.
	type result struct {
		evs api.Events
		err error
		d   time.Duration
	}
	wrote := make(chan struct{})
	done := make(chan result, 1)
	go func() {
		var once sync.Once
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { close(wrote) }) },
		})
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tn.base+api.PathEvents+"?after=5&wait=60s", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := tn.http.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		var out result
		if resp.StatusCode != 200 {
			out.err = fmt.Errorf("status %d", resp.StatusCode)
		} else {
			out.err = json.NewDecoder(resp.Body).Decode(&out.evs)
		}
		out.d = time.Since(start)
		done <- out
	}()
	select {
	case <-wrote:
	case <-time.After(wait):
		t.Fatal("long poll request not written")
	}
	u2 := uuidFor("events-offline")
	p3, _ := tn.push(api.PushRequest{UUID: u2, Kind: api.KindGeneral, Key: "ev-3"})
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatal(res.err)
		}
		checkEvents(t, res.evs.Events, 6, u2, []evWant{{p3.ID, api.KindGeneral, api.FateQueued, "ev-3"}})
		if res.evs.Next != 6 || res.d > wait {
			t.Fatalf("woken long poll: next %d after %v", res.evs.Next, res.d)
		}
	case <-time.After(wait):
		t.Fatalf("a waiting long poll was not woken by a push within %v", wait)
	}

	// Bad parameters.
	for _, q := range []string{"after=abc", "after=-1", "after=1.5", "limit=0", "limit=1001", "limit=x", "limit=-3",
		"wait=forever", "wait=-1s", "wait=6m", "wait=10"} {
		r := tn.call(http.MethodGet, api.PathEvents+"?"+q, nil)
		name := strings.SplitN(q, "=", 2)[0]
		wantError(t, r, http.StatusBadRequest, name)
	}
	wantError(t, tn.call(http.MethodGet, api.PathEvents, nil, "Last-Event-ID", "abc"), http.StatusBadRequest, "Last-Event-ID")
	// Long poll honours Last-Event-ID too.
	if evs := tn.events("limit=1"); len(evs.Events) != 1 || evs.Events[0].Seq != 1 {
		t.Fatalf("no cursor: %+v", evs)
	}
	r := tn.call(http.MethodGet, api.PathEvents, nil, "Last-Event-ID", "4")
	if evs := decodeAs[api.Events](t, r); len(evs.Events) != 2 || evs.Events[0].Seq != 5 {
		t.Fatalf("Last-Event-ID 4: %s", r)
	}
}

type sseFrame struct {
	id, event, data string
}

// openSSE starts an event stream; frames arrive on the returned channel
// until the test ends.
func openSSE(t *testing.T, tn *testNode, query string, kv ...string) (<-chan sseFrame, http.Header) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tn.base+api.PathEvents+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Accept", "text/event-stream")
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	// No client timeout: the stream is bounded by ctx.
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("event stream: %d %s", resp.StatusCode, b)
	}
	out := make(chan sseFrame, 64)
	go func() {
		defer close(out)
		br := bufio.NewReader(resp.Body)
		var f sseFrame
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			switch {
			case line == "":
				if f != (sseFrame{}) {
					select {
					case out <- f:
					case <-ctx.Done():
						return
					}
				}
				f = sseFrame{}
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id: "):
				f.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				f.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				f.data = strings.TrimPrefix(line, "data: ")
			default:
				f.data = "unexpected line " + strconv.Quote(line)
			}
		}
	}()
	return out, resp.Header
}

// nextFrames reads n frames, each a delivery event, bounded by wait.
func nextFrames(t *testing.T, frames <-chan sseFrame, n int) []api.Event {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var evs []api.Event
	for len(evs) < n {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatalf("event stream ended after %d frames", len(evs))
			}
			if f.event != "delivery" {
				t.Fatalf("frame %+v, want event: delivery", f)
			}
			var e api.Event
			if err := json.Unmarshal([]byte(f.data), &e); err != nil {
				t.Fatalf("frame data %q: %v", f.data, err)
			}
			if f.id != strconv.FormatUint(e.Seq, 10) {
				t.Fatalf("frame id %q but seq %d", f.id, e.Seq)
			}
			evs = append(evs, e)
		case <-timer.C:
			t.Fatalf("only %d of %d frames within %v", len(evs), n, wait)
		}
	}
	return evs
}

func TestEventsSSE(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	u := uuidFor("sse")
	g1, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindGeneral, Key: "sse-1"})
	g2, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindGeneral, Key: "sse-2"})

	frames, hdr := openSSE(t, tn, "?after=0")
	if ct := hdr.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	checkEvents(t, nextFrames(t, frames, 3), 1, u, []evWant{
		{g1.ID, api.KindGeneral, api.FateQueued, "sse-1"},
		{g1.ID, api.KindGeneral, api.FateSuperseded, "sse-1"},
		{g2.ID, api.KindGeneral, api.FateQueued, "sse-2"},
	})
	// A push while the stream is open arrives live.
	c1, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "live", Key: "sse-3"})
	checkEvents(t, nextFrames(t, frames, 1), 4, u, []evWant{{c1.ID, api.KindCustom, api.FateQueued, "sse-3"}})

	// Reconnecting with Last-Event-ID resumes after it.
	resumed, _ := openSSE(t, tn, "", "Last-Event-ID", "2")
	checkEvents(t, nextFrames(t, resumed, 2), 3, u, []evWant{
		{g2.ID, api.KindGeneral, api.FateQueued, "sse-2"},
		{c1.ID, api.KindCustom, api.FateQueued, "sse-3"},
	})
	// from=now skips history.
	fromNow, _ := openSSE(t, tn, "?from=now")
	c2, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "newer", Key: "sse-4"})
	want := []evWant{{c1.ID, api.KindCustom, api.FateSuperseded, "sse-3"}, {c2.ID, api.KindCustom, api.FateQueued, "sse-4"}}
	checkEvents(t, nextFrames(t, fromNow, 2), 5, u, want)
	checkEvents(t, nextFrames(t, frames, 2), 5, u, want)
	checkEvents(t, nextFrames(t, resumed, 2), 5, u, want)

	// Bad parameters are refused before the stream starts.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, tn.base+api.PathEvents+"?after=x", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := tn.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantError(t, response{code: resp.StatusCode, hdr: resp.Header, body: b}, http.StatusBadRequest, "after")
}
