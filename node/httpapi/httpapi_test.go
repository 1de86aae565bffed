package httpapi_test

// These tests drive the HTTP API of a real node: every listener on a free
// loopback port, the bbolt store in t.TempDir(), real phones over UDP and
// TCP. Nothing is mocked. Every wait is bounded by a deadline.

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/wire"
)

const (
	testToken  = nodetest.Token
	testTicket = "test-compat-ticket"
	// wait bounds every retry loop and every message wait.
	wait = 10 * time.Second
)

// testNode is a running node and how to reach its HTTP API.
type testNode struct {
	t    *testing.T
	n    *node.Node
	base string
	http *http.Client
}

type nodeOpts struct {
	// noTicket starts the node without a compat ticket file.
	noTicket bool
	mutate   func(*node.Config)
}

// startNode starts a node with an API token file and (unless noTicket) a
// compat ticket file written into t.TempDir(), and stops it when the test
// ends.
func startNode(t *testing.T, o nodeOpts) *testNode {
	t.Helper()
	dir := t.TempDir()
	cfg := nodetest.Config(t, dir)
	if !o.noTicket {
		cfg.CompatTicketFile = filepath.Join(dir, "compat-ticket")
		if err := os.WriteFile(cfg.CompatTicketFile, []byte(testTicket+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	n := nodetest.StartConfig(t, cfg).Node
	return &testNode{t: t, n: n, base: "http://" + n.HTTPAddr().String(), http: &http.Client{Timeout: 30 * time.Second}}
}

// poll retries check until it returns nil or timeout passes, and returns
// its last error.
func poll(timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		err := check()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// eventually retries check until it returns nil, failing the test if the
// deadline passes first.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	if err := poll(timeout, check); err != nil {
		t.Fatalf("not true within %v: %v", timeout, err)
	}
}

type response struct {
	code int
	hdr  http.Header
	body []byte
}

func (r response) String() string { return fmt.Sprintf("%d %s", r.code, bytes.TrimSpace(r.body)) }

// raw sends a request with exactly the headers given (no token).
func (tn *testNode) raw(method, path string, body []byte, hdr http.Header) response {
	tn.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(tn.t.Context(), method, tn.base+path, rd)
	if err != nil {
		tn.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := tn.http.Do(req)
	if err != nil {
		tn.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tn.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{code: resp.StatusCode, hdr: resp.Header, body: b}
}

// call sends a request with the right bearer token; kv are extra header
// name/value pairs.
func (tn *testNode) call(method, path string, body []byte, kv ...string) response {
	tn.t.Helper()
	h := http.Header{"Authorization": {"Bearer " + testToken}}
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[0+i], kv[i+1])
	}
	return tn.raw(method, path, body, h)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeAs[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if ct := r.hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want application/json (answer %s)", ct, r)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %s: %v", v, r, err)
	}
	return v
}

// wantError checks a 4xx answer with a JSON {"error": "..."} body that
// contains every one of parts.
func wantError(t *testing.T, r response, code int, parts ...string) string {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d (answer %s)", r.code, code, r)
	}
	e := decodeAs[api.Error](t, r)
	if strings.TrimSpace(e.Error) == "" {
		t.Fatalf("empty error message in %s", r)
	}
	for _, p := range parts {
		if !strings.Contains(e.Error, p) {
			t.Fatalf("error %q does not mention %q", e.Error, p)
		}
	}
	return e.Error
}

func (tn *testNode) push(req any, kv ...string) (api.Push, response) {
	tn.t.Helper()
	r := tn.call(http.MethodPost, api.PathPushes, mustJSON(tn.t, req), kv...)
	if r.code != http.StatusCreated && r.code != http.StatusOK {
		tn.t.Fatalf("push %s: %s", mustJSON(tn.t, req), r)
	}
	return decodeAs[api.Push](tn.t, r), r
}

func (tn *testNode) status() api.Status {
	tn.t.Helper()
	r := tn.call(http.MethodGet, api.PathStatus, nil)
	if r.code != http.StatusOK {
		tn.t.Fatalf("status: %s", r)
	}
	return decodeAs[api.Status](tn.t, r)
}

func (tn *testNode) getPush(id uint64) api.Push {
	tn.t.Helper()
	r := tn.call(http.MethodGet, api.PathPushes+"/"+strconv.FormatUint(id, 10), nil)
	if r.code != http.StatusOK {
		tn.t.Fatalf("get push %d: %s", id, r)
	}
	return decodeAs[api.Push](tn.t, r)
}

// client looks a client up; ok is false on 404.
func (tn *testNode) client(uuid string) (api.ClientInfo, bool) {
	tn.t.Helper()
	r := tn.call(http.MethodGet, api.PathClients+uuid, nil)
	if r.code == http.StatusNotFound {
		wantError(tn.t, r, http.StatusNotFound, "no client")
		return api.ClientInfo{}, false
	}
	if r.code != http.StatusOK {
		tn.t.Fatalf("client %s: %s", uuid, r)
	}
	return decodeAs[api.ClientInfo](tn.t, r), true
}

func (tn *testNode) events(query string) api.Events {
	tn.t.Helper()
	r := tn.call(http.MethodGet, api.PathEvents+"?"+query, nil)
	if r.code != http.StatusOK {
		tn.t.Fatalf("events ?%s: %s", query, r)
	}
	return decodeAs[api.Events](tn.t, r)
}

// counters is what an invalid request must not change.
type counters struct {
	Records    int64
	Accepted   uint64
	Duplicate  uint64
	EventSeq   uint64
	Deliveries string
	PacketsOut string
}

func (tn *testNode) counters() counters {
	tn.t.Helper()
	s := tn.status()
	return counters{
		Records: s.Records, Accepted: s.Pushes["accepted"], Duplicate: s.Pushes["duplicate"], EventSeq: s.EventSeq,
		Deliveries: fmt.Sprint(s.Deliveries), PacketsOut: fmt.Sprint(s.PacketsOut),
	}
}

func (tn *testNode) unchanged(before counters, what string) {
	tn.t.Helper()
	if after := tn.counters(); after != before {
		tn.t.Fatalf("%s changed the node: before %+v, after %+v", what, before, after)
	}
}

// uuidFor is a distinct, valid uuid per name.
func uuidFor(name string) string {
	s := md5.Sum([]byte("httpapi-test/" + name))
	return hex.EncodeToString(s[:])
}

func md5Hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func mustUUID(t *testing.T, s string) wire.UUID {
	t.Helper()
	u, err := wire.ParseUUID(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// pendingOf returns the pending entry of kind, failing if there is not
// exactly one.
func pendingOf(t *testing.T, c api.ClientInfo, kind string) api.Pending {
	t.Helper()
	var found []api.Pending
	for _, p := range c.Pending {
		if p.Kind == kind {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		t.Fatalf("client %s: %d pending %s entries, want 1: %+v", c.UUID, len(found), kind, c.Pending)
	}
	return found[0]
}

func dialPhone(t *testing.T, tn *testNode, network, uuid string) *phone.Phone {
	t.Helper()
	p, err := phone.Dial(network, tn.n.ClientAddr().String(), mustUUID(t, uuid))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// nextCmd waits for the next server message with cmd, skipping others.
func nextCmd(t *testing.T, p *phone.Phone, cmd byte, d time.Duration) phone.Message {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no 0x%02x message within %v", cmd, d)
		}
		m, err := p.Next(left)
		if err != nil {
			t.Fatalf("waiting for 0x%02x: %v", cmd, err)
		}
		if m.Cmd == cmd {
			return m
		}
	}
}

// heartbeatUntilOnline heartbeats until the node reports the client
// online over transport. It sends another heartbeat only when one went
// unanswered for a while (a lost datagram), so that none is left in flight
// to be applied later (a late one would recreate an expired record).
func heartbeatUntilOnline(t *testing.T, tn *testNode, p *phone.Phone, uuid, transport string) api.ClientInfo {
	t.Helper()
	var c api.ClientInfo
	deadline := time.Now().Add(wait)
	for {
		if err := p.Heartbeat(); err != nil {
			t.Fatal(err)
		}
		err := poll(2*time.Second, func() error {
			var ok bool
			c, ok = tn.client(uuid)
			if !ok || !c.Online || c.Transport != transport {
				return fmt.Errorf("client %s not online over %s yet: %+v", uuid, transport, c)
			}
			return nil
		})
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("not online within %v: %v", wait, err)
		}
	}
}

// ---------------------------------------------------------------------------
