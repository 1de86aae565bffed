package httpapi_test

// These tests drive the HTTP API of a real node: every listener on a free
// loopback port, the bbolt store in t.TempDir(), real phones over UDP and
// TCP. Nothing is mocked. Every wait is bounded by a deadline.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/wire"
)

const (
	testToken  = "test-api-token-0123456789"
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
	cfg := node.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.ClientAddr = "127.0.0.1:0"
	cfg.PushAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.RateLimit = 0
	cfg.APITokenFile = filepath.Join(dir, "api-token")
	if err := os.WriteFile(cfg.APITokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !o.noTicket {
		cfg.CompatTicketFile = filepath.Join(dir, "compat-ticket")
		if err := os.WriteFile(cfg.CompatTicketFile, []byte(testTicket+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var n *node.Node
	var err error
	for attempt := 1; ; attempt++ {
		n, err = node.Start(cfg, logger)
		// With port 0, node.Start binds client TCP to the port the kernel
		// picked for UDP, which a TCP socket may already hold. Retry a
		// few times rather than fail on that (a known node.Start issue).
		if err == nil || attempt == 5 || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		t.Logf("start node, attempt %d: %v", attempt, err)
	}
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Errorf("stop node: %v", err)
		}
	})
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

func TestAuth(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	protected := []struct{ method, path string }{
		{http.MethodPost, api.PathPushes},
		{http.MethodPost, api.PathPushesBulk},
		{http.MethodGet, api.PathPushes + "/1"},
		{http.MethodGet, api.PathClients + uuidFor("a")},
		{http.MethodGet, api.PathClients + "?userId=10001"},
		{http.MethodGet, api.PathStatus},
		{http.MethodPost, api.PathExpire},
		{http.MethodGet, api.PathEvents},
		{http.MethodGet, "/v1/nothing-here"},
	}
	before := tn.counters()
	body := mustJSON(t, api.PushRequest{UUID: uuidFor("a"), Kind: api.KindGeneral})
	for _, p := range protected {
		r := tn.raw(p.method, p.path, body, nil)
		msg := wantError(t, r, http.StatusUnauthorized, "bearer token")
		if !strings.Contains(msg, "Authorization: Bearer") {
			t.Errorf("%s %s without a token: %q does not say how to send the token", p.method, p.path, msg)
		}
		if !strings.HasPrefix(r.hdr.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s %s: WWW-Authenticate %q", p.method, p.path, r.hdr.Get("WWW-Authenticate"))
		}
		for _, auth := range []string{"Bearer wrong-token", "Bearer " + testToken + "x", testToken, "Basic " + testToken, "Bearer", "Bearer  " + testToken} {
			r := tn.raw(p.method, p.path, body, http.Header{"Authorization": {auth}})
			wantError(t, r, http.StatusUnauthorized, "invalid bearer token")
		}
	}
	tn.unchanged(before, "unauthenticated requests")
	if _, ok := tn.client(uuidFor("a")); ok {
		t.Fatal("an unauthenticated push created a record")
	}

	// The right token opens every endpoint.
	if r := tn.call(http.MethodGet, api.PathStatus, nil); r.code != http.StatusOK {
		t.Fatalf("status with the token: %s", r)
	}
	if _, r := tn.push(api.PushRequest{UUID: uuidFor("a"), Kind: api.KindGeneral}); r.code != http.StatusCreated {
		t.Fatalf("push with the token: %s", r)
	}
	if r := tn.call(http.MethodGet, api.PathEvents+"?after=0", nil); r.code != http.StatusOK {
		t.Fatalf("events with the token: %s", r)
	}

	// Health, readiness and metrics are open.
	for _, p := range []string{api.PathHealthz, api.PathReadyz, api.PathMetrics} {
		if r := tn.raw(http.MethodGet, p, nil, nil); r.code != http.StatusOK {
			t.Errorf("%s without a token: %s", p, r)
		}
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	if r := tn.raw(http.MethodGet, api.PathHealthz, nil, nil); r.code != 200 || strings.TrimSpace(string(r.body)) != "ok" {
		t.Fatalf("healthz: %s", r)
	}
	if r := tn.raw(http.MethodGet, api.PathReadyz, nil, nil); r.code != 200 || strings.TrimSpace(string(r.body)) != "ok" {
		t.Fatalf("readyz: %s", r)
	}
	tn.push(api.PushRequest{UUID: uuidFor("m1"), Kind: api.KindGeneral})
	tn.push(api.PushRequest{UUID: uuidFor("m2"), Kind: api.KindCustom, Data: "x"})
	r := tn.raw(http.MethodGet, api.PathMetrics, nil, nil)
	if r.code != 200 {
		t.Fatalf("metrics: %s", r)
	}
	text := string(r.body)
	for _, want := range []string{
		"pushnode_records 2\n",
		"pushnode_pushes_total{",
		`pushnode_pushes_total{kind="general",result="accepted",source="http"} 1`,
		`pushnode_pushes_total{kind="custom",result="accepted",source="http"} 1`,
		"pushnode_drops_total{",
		`pushnode_drops_total{reason="malformed"} 0`,
		"pushnode_ack_latency_seconds_bucket",
		"pushnode_ack_latency_seconds_count 0",
		"pushnode_commit_duration_seconds_bucket",
		`pushnode_deliveries_total{fate="queued"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
}

func TestPushTargetsAndKinds(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})

	// By uuid, general, to a client never seen: queued.
	u1 := uuidFor("general")
	p, r := tn.push(api.PushRequest{UUID: u1, Kind: api.KindGeneral})
	if r.code != http.StatusCreated || p.ID == 0 || p.UUID != u1 || p.Kind != api.KindGeneral || p.Fate != api.FateQueued || p.Duplicate {
		t.Fatalf("general push: %s", r)
	}
	if p.AcceptedAt.IsZero() || time.Since(p.AcceptedAt) > time.Minute {
		t.Fatalf("acceptedAt %v", p.AcceptedAt)
	}
	c, ok := tn.client(u1)
	if !ok {
		t.Fatal("the push did not create the record")
	}
	if pe := pendingOf(t, c, api.KindGeneral); pe.PushID != p.ID || pe.Sent {
		t.Fatalf("pending general %+v, want push %d unsent", pe, p.ID)
	}
	if c.Online || c.Transport != "" || c.Address != "" || c.LastHeartbeat != nil {
		t.Fatalf("a client never seen looks online: %+v", c)
	}

	// Uppercase hex is a valid uuid too; the answer is canonical.
	p, _ = tn.push(api.PushRequest{UUID: strings.ToUpper(uuidFor("upper")), Kind: api.KindGeneral})
	if p.UUID != uuidFor("upper") {
		t.Fatalf("uuid %q, want lowercase %q", p.UUID, uuidFor("upper"))
	}

	// By userId: the node hashes it with MD5 as DDPush clients do.
	want := md5Hex("10001")
	if want != "d89f3a35931c386956c1a402a8e09941" {
		t.Fatalf("md5(10001) = %s", want)
	}
	p, r = tn.push(api.PushRequest{UserID: "10001", Kind: api.KindGeneral})
	if r.code != http.StatusCreated || p.UUID != want {
		t.Fatalf("push by userId: uuid %s, want md5(10001) = %s (%s)", p.UUID, want, r)
	}
	byUser := tn.call(http.MethodGet, api.PathClients+"?userId=10001", nil)
	if byUser.code != 200 {
		t.Fatalf("lookup by userId: %s", byUser)
	}
	if c := decodeAs[api.ClientInfo](t, byUser); c.UUID != want || pendingOf(t, c, api.KindGeneral).PushID != p.ID {
		t.Fatalf("lookup by userId: %s", byUser)
	}
	if c, ok := tn.client(want); !ok || pendingOf(t, c, api.KindGeneral).PushID != p.ID {
		t.Fatalf("lookup of md5(10001) by uuid: %+v %v", c, ok)
	}

	// Classified: bits as a JSON number, a decimal string, a 0x hex string;
	// the masks OR together.
	uc := uuidFor("classified")
	var ids []uint64
	for _, tc := range []struct {
		raw  string
		want uint64
	}{
		{`1`, 0x1},
		{`"2"`, 0x2},
		{`"0x0F00"`, 0xf00},
		{`18446744073709551615`, 0xffffffffffffffff},
	} {
		body := fmt.Sprintf(`{"uuid":%q,"kind":"classified","bits":%s}`, uc, tc.raw)
		r := tn.call(http.MethodPost, api.PathPushes, []byte(body))
		if r.code != http.StatusCreated {
			t.Fatalf("classified bits %s: %s", tc.raw, r)
		}
		p := decodeAs[api.Push](t, r)
		if p.Kind != api.KindClassified || p.Bits == nil || uint64(*p.Bits) != tc.want {
			t.Fatalf("classified bits %s: answer %s, want bits %#x", tc.raw, r, tc.want)
		}
		if wantHex := fmt.Sprintf(`"bits":"0x%x"`, tc.want); !strings.Contains(string(r.body), wantHex) {
			t.Fatalf("bits are not written as a hex string: %s lacks %s", r.body, wantHex)
		}
		ids = append(ids, p.ID)
	}
	c, _ = tn.client(uc)
	if c.Mask != api.Bits(0xffffffffffffffff) {
		t.Fatalf("mask %#x, want all bits", uint64(c.Mask))
	}
	// The last push covers every bit, so it supersedes the others.
	if pe := pendingOf(t, c, api.KindClassified); pe.PushID != ids[3] || pe.Bits == nil || uint64(*pe.Bits) != 0xffffffffffffffff {
		t.Fatalf("pending classified %+v, want push %d", pe, ids[3])
	}
	for _, id := range ids[:3] {
		if f := tn.getPush(id).Fate; f != api.FateSuperseded {
			t.Fatalf("push %d fate %s, want superseded", id, f)
		}
	}
	// Disjoint bits keep both pushes pending.
	uc2 := uuidFor("classified2")
	a, _ := tn.push(map[string]any{"uuid": uc2, "kind": "classified", "bits": "0x1"})
	b, _ := tn.push(map[string]any{"uuid": uc2, "kind": "classified", "bits": "0x2"})
	c, _ = tn.client(uc2)
	if c.Mask != 3 || len(c.Pending) != 2 || c.Pending[0].PushID != a.ID || c.Pending[1].PushID != b.ID {
		t.Fatalf("two disjoint classified pushes: %+v", c)
	}

	// Custom with text data (sent as UTF-8) and with base64 binaryData.
	ut := uuidFor("custom-text")
	p, r = tn.push(api.PushRequest{UUID: ut, Kind: api.KindCustom, Data: "héllo"})
	if r.code != http.StatusCreated || p.Size != 6 || p.Fate != api.FateQueued {
		t.Fatalf("custom text: %s", r)
	}
	c, _ = tn.client(ut)
	if pe := pendingOf(t, c, api.KindCustom); pe.PushID != p.ID || pe.Size != 6 || !bytes.Equal(pe.Data, []byte("héllo")) {
		t.Fatalf("pending custom %+v", pe)
	}
	ub := uuidFor("custom-binary")
	bin := []byte{0x00, 0x01, 0xfe, 0xff, '\n'}
	body := fmt.Sprintf(`{"uuid":%q,"kind":"custom","binaryData":%q}`, ub, base64.StdEncoding.EncodeToString(bin))
	r = tn.call(http.MethodPost, api.PathPushes, []byte(body))
	if r.code != http.StatusCreated {
		t.Fatalf("custom binary: %s", r)
	}
	p = decodeAs[api.Push](t, r)
	c, _ = tn.client(ub)
	if pe := pendingOf(t, c, api.KindCustom); pe.PushID != p.ID || pe.Size != len(bin) || !bytes.Equal(pe.Data, bin) {
		t.Fatalf("pending binary custom %+v, want %x", pe, bin)
	}
	// A payload of exactly the maximum content length is accepted.
	p, r = tn.push(api.PushRequest{UUID: ub, Kind: api.KindCustom, Data: strings.Repeat("z", wire.DefaultMaxContentLen)})
	if r.code != http.StatusCreated || p.Size != wire.DefaultMaxContentLen {
		t.Fatalf("custom of max length: %s", r)
	}
}

func TestPushIdempotency(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})

	var u string
	check := func(name string, first, second func() (api.Push, response)) {
		t.Helper()
		before := tn.status()
		p1, r1 := first()
		p2, r2 := second()
		if r1.code != http.StatusCreated || p1.Duplicate {
			t.Fatalf("%s: first answer %s, want 201 without duplicate", name, r1)
		}
		if r2.code != http.StatusOK || !p2.Duplicate || p2.ID != p1.ID || p2.Key != p1.Key || p2.UUID != p1.UUID || p2.Kind != p1.Kind {
			t.Fatalf("%s: second answer %s, want 200 with id %d and duplicate:true", name, r2, p1.ID)
		}
		after := tn.status()
		if d := after.Pushes["accepted"] - before.Pushes["accepted"]; d != 1 {
			t.Fatalf("%s: %d pushes accepted, want 1", name, d)
		}
		if d := after.Pushes["duplicate"] - before.Pushes["duplicate"]; d != 1 {
			t.Fatalf("%s: %d duplicates counted, want 1", name, d)
		}
		if after.EventSeq != before.EventSeq+1 {
			t.Fatalf("%s: event sequence moved from %d to %d, want one queued event", name, before.EventSeq, after.EventSeq)
		}
		c, _ := tn.client(u)
		if pe := pendingOf(t, c, api.KindCustom); pe.PushID != p1.ID {
			t.Fatalf("%s: pending custom is push %d, want %d", name, pe.PushID, p1.ID)
		}
	}

	u = uuidFor("idem-body")
	req := api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "once", Key: "order-1"}
	check("body key",
		func() (api.Push, response) { return tn.push(req) },
		func() (api.Push, response) {
			// Even with another payload, a repeated key is the first push.
			r2 := req
			r2.Data = "twice"
			return tn.push(r2)
		})
	c, _ := tn.client(u)
	if pe := pendingOf(t, c, api.KindCustom); string(pe.Data) != "once" {
		t.Fatalf("a duplicate replaced the payload: %q", pe.Data)
	}

	first, _ := tn.client(u)
	u = uuidFor("idem-header")
	hreq := api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "by header"}
	check("Idempotency-Key header",
		func() (api.Push, response) { return tn.push(hreq, api.HeaderIdempotencyKey, "order-2") },
		func() (api.Push, response) { return tn.push(hreq, api.HeaderIdempotencyKey, "order-2") })

	// Header and body naming the same key agree; header then body dedupes.
	u = uuidFor("idem-mixed")
	breq := api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "mixed", Key: "order-3"}
	check("header then body",
		func() (api.Push, response) { return tn.push(breq, api.HeaderIdempotencyKey, "order-3") },
		func() (api.Push, response) { return tn.push(breq) })
	if p := tn.getPush(first.Pending[0].PushID); p.Key != "order-1" {
		t.Fatalf("push read back with key %q", p.Key)
	}

	// Concurrent requests with one key make one push.
	u = uuidFor("idem-concurrent")
	body := mustJSON(t, api.PushRequest{UUID: u, Kind: api.KindGeneral, Key: "concurrent"})
	before := tn.status()
	const n = 8
	var wg sync.WaitGroup
	codes := make([]int, n)
	got := make([]api.Push, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, tn.base+api.PathPushes,
				bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := tn.http.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			codes[i] = resp.StatusCode
			errs[i] = json.NewDecoder(resp.Body).Decode(&got[i])
		}()
	}
	wg.Wait()
	created := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("concurrent push %d: %v", i, errs[i])
		}
		if got[i].ID != got[0].ID {
			t.Fatalf("concurrent pushes with one key got ids %d and %d", got[0].ID, got[i].ID)
		}
		switch codes[i] {
		case http.StatusCreated:
			created++
		case http.StatusOK:
			if !got[i].Duplicate {
				t.Fatalf("200 without duplicate: %+v", got[i])
			}
		default:
			t.Fatalf("concurrent push %d: status %d", i, codes[i])
		}
	}
	after := tn.status()
	if created != 1 || after.Pushes["accepted"]-before.Pushes["accepted"] != 1 || after.Pushes["duplicate"]-before.Pushes["duplicate"] != n-1 {
		t.Fatalf("%d concurrent pushes with one key: %d created, accepted +%d, duplicate +%d", n, created,
			after.Pushes["accepted"]-before.Pushes["accepted"], after.Pushes["duplicate"]-before.Pushes["duplicate"])
	}
}

func TestPushErrorsChangeNothing(t *testing.T) {
	t.Parallel()
	const maxLen = 16
	tn := startNode(t, nodeOpts{mutate: func(c *node.Config) { c.MaxContentLen = maxLen }})
	// Some state to compare against.
	tn.push(api.PushRequest{UUID: uuidFor("existing"), Kind: api.KindCustom, Data: "keep me", Key: "existing"})

	u := uuidFor("target")
	huge := make([]byte, 0, httpapi.MaxBodyBytes+1024)
	huge = fmt.Appendf(huge, `{"uuid":%q,"kind":"custom","data":"`, u)
	huge = append(huge, bytes.Repeat([]byte("a"), httpapi.MaxBodyBytes)...)
	huge = append(huge, `"}`...)

	cases := []struct {
		name string
		body string
		hdr  []string
		want []string // the error mentions each
	}{
		{"empty body", ``, nil, []string{"empty"}},
		{"whitespace body", "  \n", nil, []string{"empty"}},
		{"invalid JSON", `{"uuid": "` + u + `", "kind": `, nil, []string{"not valid JSON"}},
		{"not an object", `["general"]`, nil, []string{"not valid JSON"}},
		{"unknown field", `{"uuid":"` + u + `","kind":"general","priority":"high"}`, nil, []string{"unknown field", "priority"}},
		{"two JSON values", `{"uuid":"` + u + `","kind":"general"} {"uuid":"` + u + `","kind":"general"}`, nil, []string{"more than one JSON value"}},
		{"uuid and userId", `{"uuid":"` + u + `","userId":"10001","kind":"general"}`, nil, []string{"either uuid or userId"}},
		{"no target", `{"kind":"general"}`, nil, []string{"target is required", "uuid", "userId"}},
		{"uuid of 31 characters", `{"uuid":"` + u[:31] + `","kind":"general"}`, nil, []string{"uuid", "32 hex", "31"}},
		{"uuid of 33 characters", `{"uuid":"` + u + `0","kind":"general"}`, nil, []string{"uuid", "32 hex"}},
		{"non-hex uuid", `{"uuid":"` + "zz" + u[2:] + `","kind":"general"}`, nil, []string{"uuid", "32 hex"}},
		{"unknown kind", `{"uuid":"` + u + `","kind":"urgent"}`, nil, []string{"urgent", "general, classified, custom"}},
		{"missing kind", `{"uuid":"` + u + `"}`, nil, []string{"kind is required"}},
		{"bits on custom", `{"uuid":"` + u + `","kind":"custom","data":"x","bits":1}`, nil, []string{"bits", "classified"}},
		{"bits on general", `{"uuid":"` + u + `","kind":"general","bits":"0x1"}`, nil, []string{"bits", "classified"}},
		{"data on general", `{"uuid":"` + u + `","kind":"general","data":"x"}`, nil, []string{"data", "custom"}},
		{"binaryData on classified", `{"uuid":"` + u + `","kind":"classified","bits":1,"binaryData":"AA=="}`, nil, []string{"data", "custom"}},
		{"classified without bits", `{"uuid":"` + u + `","kind":"classified"}`, nil, []string{"needs bits"}},
		{"classified with null bits", `{"uuid":"` + u + `","kind":"classified","bits":null}`, nil, []string{"needs bits"}},
		{"negative bits", `{"uuid":"` + u + `","kind":"classified","bits":-1}`, nil, []string{"bits", "64-bit"}},
		{"bits not hex", `{"uuid":"` + u + `","kind":"classified","bits":"0xZZ"}`, nil, []string{"bits", "64-bit"}},
		{"bits too large", `{"uuid":"` + u + `","kind":"classified","bits":"18446744073709551616"}`, nil, []string{"bits", "64-bit"}},
		{"custom without data", `{"uuid":"` + u + `","kind":"custom"}`, nil, []string{"at least one byte"}},
		{"custom with empty data", `{"uuid":"` + u + `","kind":"custom","data":""}`, nil, []string{"at least one byte"}},
		{"custom with empty binaryData", `{"uuid":"` + u + `","kind":"custom","binaryData":""}`, nil, []string{"at least one byte"}},
		{"binaryData not base64", `{"uuid":"` + u + `","kind":"custom","binaryData":"not base64!"}`, nil, []string{"not valid JSON"}},
		{"data above the maximum", `{"uuid":"` + u + `","kind":"custom","data":"` + strings.Repeat("x", maxLen+1) + `"}`, nil, []string{"17 bytes", "maximum of 16"}},
		{"binaryData above the maximum", `{"uuid":"` + u + `","kind":"custom","binaryData":"` + base64.StdEncoding.EncodeToString(make([]byte, maxLen+1)) + `"}`, nil, []string{"maximum of 16"}},
		{"data and binaryData", `{"uuid":"` + u + `","kind":"custom","data":"x","binaryData":"eA=="}`, nil, []string{"either data or binaryData"}},
		{"header key differs from body key", `{"uuid":"` + u + `","kind":"general","key":"a"}`, []string{api.HeaderIdempotencyKey, "b"}, []string{"Idempotency-Key", "differ"}},
		{"key too long", `{"uuid":"` + u + `","kind":"general","key":"` + strings.Repeat("k", 257) + `"}`, nil, []string{"key", "256"}},
		{"header key too long", `{"uuid":"` + u + `","kind":"general"}`, []string{api.HeaderIdempotencyKey, strings.Repeat("k", 257)}, []string{"key", "256"}},
		{"body over 4 MiB", string(huge), nil, []string{"larger than", strconv.Itoa(httpapi.MaxBodyBytes)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tn := *tn
			tn.t = t
			before := tn.counters()
			r := tn.call(http.MethodPost, api.PathPushes, []byte(tc.body), tc.hdr...)
			msg := wantError(t, r, http.StatusBadRequest, tc.want...)
			t.Logf("%s → %q", tc.name, msg)
			tn.unchanged(before, tc.name)
			if _, ok := tn.client(u); ok {
				t.Fatalf("%s created a record for %s", tc.name, u)
			}
			if _, ok := tn.client(md5Hex("10001")); ok {
				t.Fatalf("%s created a record for userId 10001", tc.name)
			}
		})
	}
	// The key of a refused push was not taken: a valid push with it is new.
	p, r := tn.push(api.PushRequest{UUID: u, Kind: api.KindGeneral, Key: "a"})
	if r.code != http.StatusCreated || p.Duplicate {
		t.Fatalf("the key of a refused push is taken: %s", r)
	}
	// And the earlier state is intact.
	c, ok := tn.client(uuidFor("existing"))
	if !ok || string(pendingOf(t, c, api.KindCustom).Data) != "keep me" {
		t.Fatalf("existing client changed: %+v", c)
	}
}

func TestBulkPush(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	good1, good2 := uuidFor("bulk1"), uuidFor("bulk2")
	bad1, bad2 := "nothex", uuidFor("bulk3")[:31]
	req := api.BulkPushRequest{
		UUIDs:   []string{good1, bad1, good2, bad2},
		UserIDs: []string{"10001", "alice"},
		Kind:    api.KindCustom,
		Data:    "hi all",
	}
	before := tn.status()
	r := tn.call(http.MethodPost, api.PathPushesBulk, mustJSON(t, req))
	if r.code != http.StatusOK {
		t.Fatalf("bulk: %s", r)
	}
	res := decodeAs[api.BulkPushResponse](t, r)
	if res.Accepted != 4 || res.Rejected != 2 || len(res.Results) != 6 {
		t.Fatalf("bulk: accepted %d rejected %d results %d, want 4/2/6: %s", res.Accepted, res.Rejected, len(res.Results), r)
	}
	wantTargets := []string{good1, bad1, good2, bad2, "10001", "alice"}
	wantUUIDs := []string{good1, "", good2, "", md5Hex("10001"), md5Hex("alice")}
	ids := map[uint64]bool{}
	for i, x := range res.Results {
		if x.Target != wantTargets[i] {
			t.Fatalf("result %d is for %q, want %q", i, x.Target, wantTargets[i])
		}
		if wantUUIDs[i] == "" {
			if x.Error == "" || !strings.Contains(x.Error, "uuid") || !strings.Contains(x.Error, "32 hex") || x.ID != 0 {
				t.Fatalf("result for invalid %q: %+v", x.Target, x)
			}
			continue
		}
		if x.Error != "" || x.UUID != wantUUIDs[i] || x.ID == 0 || x.Fate != api.FateQueued || ids[x.ID] {
			t.Fatalf("result %d: %+v, want uuid %s queued with a fresh id", i, x, wantUUIDs[i])
		}
		ids[x.ID] = true
		c, ok := tn.client(x.UUID)
		if !ok {
			t.Fatalf("no record for %s", x.UUID)
		}
		if pe := pendingOf(t, c, api.KindCustom); pe.PushID != x.ID || string(pe.Data) != "hi all" {
			t.Fatalf("pending for %s: %+v", x.UUID, pe)
		}
		if p := tn.getPush(x.ID); p.UUID != x.UUID || p.Kind != api.KindCustom || p.Size != len("hi all") {
			t.Fatalf("push %d: %+v", x.ID, p)
		}
	}
	after := tn.status()
	if after.Records-before.Records != 4 || after.Pushes["accepted"]-before.Pushes["accepted"] != 4 || after.EventSeq-before.EventSeq != 4 {
		t.Fatalf("bulk: records +%d accepted +%d events +%d, want 4 each", after.Records-before.Records,
			after.Pushes["accepted"]-before.Pushes["accepted"], after.EventSeq-before.EventSeq)
	}

	// Classified bulk with bits as a string.
	r = tn.call(http.MethodPost, api.PathPushesBulk, []byte(`{"userIds":["bob"],"kind":"classified","bits":"0x30"}`))
	if res := decodeAs[api.BulkPushResponse](t, r); r.code != 200 || res.Accepted != 1 {
		t.Fatalf("classified bulk: %s", r)
	}
	if c, _ := tn.client(md5Hex("bob")); c.Mask != 0x30 {
		t.Fatalf("bob's mask %#x", uint64(c.Mask))
	}

	// Refused requests change nothing.
	tooMany := api.BulkPushRequest{Kind: api.KindGeneral}
	for i := range api.MaxBulkTargets + 1 {
		tooMany.UUIDs = append(tooMany.UUIDs, uuidFor("many"+strconv.Itoa(i)))
	}
	split := api.BulkPushRequest{Kind: api.KindGeneral, UUIDs: tooMany.UUIDs[:api.MaxBulkTargets], UserIDs: []string{"one-too-many"}}
	for _, tc := range []struct {
		name string
		body []byte
		want []string
	}{
		{"no targets", mustJSON(t, api.BulkPushRequest{Kind: api.KindGeneral}), []string{"no targets"}},
		{"empty target lists", []byte(`{"uuids":[],"userIds":[],"kind":"general"}`), []string{"no targets"}},
		{"too many uuids", mustJSON(t, tooMany), []string{strconv.Itoa(api.MaxBulkTargets + 1), strconv.Itoa(api.MaxBulkTargets)}},
		{"too many uuids and userIds", mustJSON(t, split), []string{strconv.Itoa(api.MaxBulkTargets)}},
		{"bad kind", []byte(`{"uuids":["` + uuidFor("k") + `"],"kind":"loud"}`), []string{"loud"}},
		{"data on general", []byte(`{"uuids":["` + uuidFor("k") + `"],"kind":"general","data":"x"}`), []string{"custom"}},
		{"custom without data", []byte(`{"uuids":["` + uuidFor("k") + `"],"kind":"custom"}`), []string{"at least one byte"}},
		{"unknown field", []byte(`{"uuids":["` + uuidFor("k") + `"],"kind":"general","uuid":"x"}`), []string{"unknown field"}},
		{"empty body", nil, []string{"empty"}},
	} {
		before := tn.counters()
		r := tn.call(http.MethodPost, api.PathPushesBulk, tc.body)
		wantError(t, r, http.StatusBadRequest, tc.want...)
		tn.unchanged(before, "bulk "+tc.name)
	}
	if _, ok := tn.client(uuidFor("many0")); ok {
		t.Fatal("a refused bulk push created a record")
	}
	if _, ok := tn.client(uuidFor("k")); ok {
		t.Fatal("a refused bulk push created a record")
	}
}

func TestGetPush(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	u := uuidFor("getpush")
	p, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "abc", Key: "gp-1"})
	got := tn.getPush(p.ID)
	if got.ID != p.ID || got.UUID != u || got.Kind != api.KindCustom || got.Fate != api.FateQueued || got.Size != 3 ||
		got.Key != "gp-1" || got.SentAt != nil || got.FinishedAt != nil || got.Duplicate || !got.AcceptedAt.Equal(p.AcceptedAt) {
		t.Fatalf("get push: %+v, pushed %+v", got, p)
	}
	pc, _ := tn.push(map[string]any{"uuid": u, "kind": "classified", "bits": 6})
	if got := tn.getPush(pc.ID); got.Bits == nil || *got.Bits != 6 || got.Kind != api.KindClassified {
		t.Fatalf("get classified push: %+v", got)
	}
	// A newer custom push supersedes the first.
	p2, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "def"})
	if got := tn.getPush(p.ID); got.Fate != api.FateSuperseded || got.FinishedAt == nil {
		t.Fatalf("superseded push: %+v", got)
	}
	if got := tn.getPush(p2.ID); got.Fate != api.FateQueued {
		t.Fatalf("newer push: %+v", got)
	}

	wantError(t, tn.call(http.MethodGet, api.PathPushes+"/999999", nil), http.StatusNotFound, "999999", "not known")
	for _, bad := range []string{"abc", "0", "-1", "1.5", "0x10", "18446744073709551616"} {
		wantError(t, tn.call(http.MethodGet, api.PathPushes+"/"+bad, nil), http.StatusBadRequest, "positive integer")
	}
}

func TestGetClient(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	u := uuidFor("client")
	wantError(t, tn.call(http.MethodGet, api.PathClients+u, nil), http.StatusNotFound, "no client", u)
	wantError(t, tn.call(http.MethodGet, api.PathClients+"?userId=nobody", nil), http.StatusNotFound, "no client", md5Hex("nobody"))
	for _, bad := range []string{u[:31], "g" + u[1:], u + "00"} {
		wantError(t, tn.call(http.MethodGet, api.PathClients+bad, nil), http.StatusBadRequest, "uuid", "32 hex")
	}
	wantError(t, tn.call(http.MethodGet, api.PathClients, nil), http.StatusBadRequest, "target is required")
	wantError(t, tn.call(http.MethodGet, api.PathClients+u+"?userId=10001", nil), http.StatusBadRequest, "either uuid or userId")

	g, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindGeneral})
	cl, _ := tn.push(map[string]any{"uuid": u, "kind": "classified", "bits": "0x5"})
	cu, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindCustom, BinaryData: []byte{1, 2, 3}})
	c, ok := tn.client(u)
	if !ok {
		t.Fatal("no record after pushes")
	}
	if c.UUID != u || c.Online || c.Mask != 5 || len(c.Pending) != 3 {
		t.Fatalf("client: %+v", c)
	}
	if p := c.Pending[0]; p.Kind != api.KindGeneral || p.PushID != g.ID || p.Sent {
		t.Fatalf("pending[0] %+v", p)
	}
	if p := c.Pending[1]; p.Kind != api.KindClassified || p.PushID != cl.ID || p.Bits == nil || *p.Bits != 5 {
		t.Fatalf("pending[1] %+v", p)
	}
	if p := c.Pending[2]; p.Kind != api.KindCustom || p.PushID != cu.ID || p.Size != 3 || !bytes.Equal(p.Data, []byte{1, 2, 3}) {
		t.Fatalf("pending[2] %+v", p)
	}
	if c.LastChange.General == nil || c.LastChange.Classified == nil || c.LastChange.Custom == nil {
		t.Fatalf("lastChange: %+v", c.LastChange)
	}
	if c.LastActivity.IsZero() || c.LastActivity.After(time.Now().Add(time.Second)) {
		t.Fatalf("lastActivity %v", c.LastActivity)
	}
	// Uppercase in the path finds the same client.
	if c2, ok := tn.client(strings.ToUpper(u)); !ok || c2.UUID != u {
		t.Fatalf("uppercase lookup: %+v %v", c2, ok)
	}
}

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

func TestExpire(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	ua, ub, uu, ut := uuidFor("exp-a"), uuidFor("exp-b"), uuidFor("exp-udp"), uuidFor("exp-tcp")
	pa, _ := tn.push(api.PushRequest{UUID: ua, Kind: api.KindCustom, Data: "a", Key: "exp-a"})
	pb1, _ := tn.push(api.PushRequest{UUID: ub, Kind: api.KindGeneral, Key: "exp-b1"})
	pb2, _ := tn.push(map[string]any{"uuid": ub, "kind": "classified", "bits": 3, "key": "exp-b2"})

	udp := dialPhone(t, tn, "udp", uu)
	heartbeatUntilOnline(t, tn, udp, uu, "udp")
	tcp := dialPhone(t, tn, "tcp", ut)
	heartbeatUntilOnline(t, tn, tcp, ut, "tcp")

	// Refused requests change nothing.
	for _, tc := range []struct{ body, want string }{
		{``, "empty"},
		{`{}`, "olderThanHours is required"},
		{`{"olderThanHours": null}`, "olderThanHours is required"},
		{`{"olderThanHours": -1}`, ">= 0"},
		{`{"olderThanHours": "1"}`, "not valid JSON"},
		{`{"hours": 1}`, "unknown field"},
	} {
		before := tn.counters()
		wantError(t, tn.call(http.MethodPost, api.PathExpire, []byte(tc.body)), http.StatusBadRequest, tc.want)
		tn.unchanged(before, "expire "+tc.body)
	}
	// A large age removes nothing.
	r := tn.call(http.MethodPost, api.PathExpire, []byte(`{"olderThanHours": 1000}`))
	if r.code != 200 || decodeAs[api.ExpireResponse](t, r).Removed != 0 {
		t.Fatalf("expire 1000 h: %s", r)
	}
	s0 := tn.status()
	if s0.Records != 4 {
		t.Fatalf("%d records, want 4", s0.Records)
	}

	r = tn.call(http.MethodPost, api.PathExpire, []byte(`{"olderThanHours": 0}`))
	if r.code != 200 {
		t.Fatalf("expire 0: %s", r)
	}
	if got := decodeAs[api.ExpireResponse](t, r).Removed; got != 3 {
		t.Fatalf("expire 0 removed %d, want 3 (all but the TCP client)", got)
	}
	for _, u := range []string{ua, ub, uu} {
		if _, ok := tn.client(u); ok {
			t.Fatalf("client %s survived expiry", u)
		}
	}
	if c, ok := tn.client(ut); !ok || c.Transport != "tcp" {
		t.Fatalf("the TCP client was expired: %+v %v", c, ok)
	}
	s1 := tn.status()
	if s1.Records != 1 || s1.Deliveries["expired"] != 3 {
		t.Fatalf("after expiry: records %d, expired deliveries %d", s1.Records, s1.Deliveries["expired"])
	}
	for _, p := range []api.Push{pa, pb1, pb2} {
		if got := tn.getPush(p.ID); got.Fate != api.FateExpired || got.FinishedAt == nil {
			t.Fatalf("push %d after expiry: %+v", p.ID, got)
		}
	}
	// The response came after the removal was durable: the events are there.
	evs := tn.events(fmt.Sprintf("after=%d", s0.EventSeq))
	expired := map[uint64]string{}
	for _, e := range evs.Events {
		if e.Fate != api.FateExpired {
			t.Fatalf("unexpected event %+v", e)
		}
		expired[e.PushID] = e.Key
	}
	if len(expired) != 3 || expired[pa.ID] != "exp-a" || expired[pb1.ID] != "exp-b1" || expired[pb2.ID] != "exp-b2" {
		t.Fatalf("expired events: %+v", evs.Events)
	}
	// The expired client can come back.
	heartbeatUntilOnline(t, tn, udp, uu, "udp")
}

func TestStatusCounters(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{mutate: func(c *node.Config) {
		c.MaxContentLen = 64
		c.HeartbeatPolicy = "always"
		c.ExpiryAge = 7 * time.Hour
	}})
	s := tn.status()
	if s.Records != 0 || s.Pushes["accepted"] != 0 || s.EventSeq != 0 || s.MaxContentLen != 64 || s.HeartbeatRule != "always" ||
		s.ExpiryAgeHours != 7 || s.Version != node.Version || s.StartedAt.IsZero() || s.StoreBytes <= 0 || s.UptimeSeconds < 0 {
		t.Fatalf("fresh status: %+v", s)
	}

	tn.push(api.PushRequest{UUID: uuidFor("s1"), Kind: api.KindGeneral, Key: "s-k"})
	tn.push(api.PushRequest{UUID: uuidFor("s1"), Kind: api.KindGeneral, Key: "s-k"})
	tn.push(api.PushRequest{UUID: uuidFor("s2"), Kind: api.KindCustom, Data: "x"})
	tn.push(api.PushRequest{UserID: "s3", Kind: api.KindCustom, Data: "y"})
	tn.call(http.MethodPost, api.PathPushes, []byte(`{"uuid":"bad","kind":"general"}`))
	tn.call(http.MethodPost, api.PathPushes, []byte(`{"uuid":"`+uuidFor("s4")+`","kind":"bad"}`))
	r := tn.raw(http.MethodGet, "/?act=user&type=10&uuid="+uuidFor("s5")+"&ticket="+testTicket, nil, nil)
	if string(r.body) != "1" {
		t.Fatalf("compat push: %s", r)
	}

	s = tn.status()
	want := map[string]uint64{"accepted": 4, "duplicate": 1, "rejected": 2}
	for k, v := range want {
		if s.Pushes[k] != v {
			t.Errorf("pushes[%s] = %d, want %d (%v)", k, s.Pushes[k], v, s.Pushes)
		}
	}
	if s.Records != 4 || s.EventSeq != 4 || s.Deliveries["queued"] != 4 || s.Deliveries["sent"] != 0 ||
		s.PacketsIn["udp"] != 0 || s.PacketsIn["tcp"] != 0 || s.Online != 0 || s.TCPClients != 0 {
		t.Fatalf("status: %+v", s)
	}

	// Packets are counted too; a TCP client shows up.
	ph := dialPhone(t, tn, "tcp", uuidFor("s-tcp"))
	heartbeatUntilOnline(t, tn, ph, uuidFor("s-tcp"), "tcp")
	s = tn.status()
	if s.PacketsIn["tcp"] < 1 || s.TCPClients != 1 || s.Records != 5 {
		t.Fatalf("status with a TCP client: %+v", s)
	}
}

func TestCompat(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	compat := func(q url.Values) response {
		t.Helper()
		r := tn.raw(http.MethodGet, "/?"+q.Encode(), nil, nil)
		if r.code != http.StatusOK || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/plain") {
			t.Fatalf("compat %s: %s (%s)", q.Encode(), r, r.hdr.Get("Content-Type"))
		}
		return r
	}
	q := func(typ, uuid, data, ticket string) url.Values {
		v := url.Values{"act": {"user"}, "type": {typ}, "uuid": {uuid}, "ticket": {ticket}}
		if data != "" {
			v.Set("data", data)
		}
		return v
	}

	// type 20 with percent-encoded UTF-8 arrives as those bytes.
	u20 := uuidFor("compat20")
	r := tn.raw(http.MethodGet, "/?act=user&type=20&uuid="+u20+"&data=h%C3%A9llo&ticket="+testTicket, nil, nil)
	if r.code != 200 || string(r.body) != "1" || r.hdr.Get("Content-Type") != "text/plain" {
		t.Fatalf("compat type 20: %s %q", r, r.hdr.Get("Content-Type"))
	}
	c, ok := tn.client(u20)
	if !ok || !bytes.Equal(pendingOf(t, c, api.KindCustom).Data, []byte{'h', 0xc3, 0xa9, 'l', 'l', 'o'}) {
		t.Fatalf("compat type 20 payload: %+v", c)
	}

	// type 11: data is a signed decimal Java long.
	for i, tc := range []struct {
		data string
		want uint64
	}{
		{"5", 5},
		{"-1", 0xffffffffffffffff},
		{"-9223372036854775808", 0x8000000000000000},
		{"9223372036854775807", 0x7fffffffffffffff},
	} {
		u := uuidFor("compat11-" + strconv.Itoa(i))
		if r := compat(q("11", u, tc.data, testTicket)); string(r.body) != "1" {
			t.Fatalf("type 11 data %s: %s", tc.data, r)
		}
		c, ok := tn.client(u)
		if !ok || uint64(c.Mask) != tc.want || uint64(*pendingOf(t, c, api.KindClassified).Bits) != tc.want {
			t.Fatalf("type 11 data %s: mask %#x, want %#x", tc.data, uint64(c.Mask), tc.want)
		}
	}

	// type 10.
	u10 := uuidFor("compat10")
	if r := compat(q("10", u10, "", testTicket)); string(r.body) != "1" {
		t.Fatalf("type 10: %s", r)
	}
	if c, ok := tn.client(u10); !ok {
		t.Fatal("type 10 made no record")
	} else {
		pendingOf(t, c, api.KindGeneral)
	}
	s := tn.status()
	if s.Pushes["accepted"] != 6 {
		t.Fatalf("compat pushes counted as %v", s.Pushes)
	}

	// Refusals: "0" and nothing pushed.
	un := uuidFor("compat-refused")
	refused := map[string]url.Values{
		"wrong ticket":        q("20", un, "x", "wrong"),
		"ticket with a space": q("20", un, "x", testTicket+" "),
		"no ticket":           {"act": {"user"}, "type": {"20"}, "uuid": {un}, "data": {"x"}},
		"act=more":            {"act": {"more"}, "type": {"20"}, "uuid": {un}, "data": {"x"}, "ticket": {testTicket}},
		"no act":              {"type": {"20"}, "uuid": {un}, "data": {"x"}, "ticket": {testTicket}},
		"unknown type":        q("12", un, "x", testTicket),
		"no type":             {"act": {"user"}, "uuid": {un}, "data": {"x"}, "ticket": {testTicket}},
		"bad uuid":            q("20", un[:31], "x", testTicket),
		"non-hex uuid":        q("20", "x"+un[1:], "x", testTicket),
		"type 11 not decimal": q("11", un, "0x10", testTicket),
		"type 11 fraction":    q("11", un, "1.5", testTicket),
		"type 11 no data":     q("11", un, "", testTicket),
		"type 11 above long":  q("11", un, "9223372036854775808", testTicket),
		"type 20 no data":     q("20", un, "", testTicket),
		"type 20 too long":    q("20", un, strings.Repeat("x", wire.DefaultMaxContentLen+1), testTicket),
	}
	before := tn.counters()
	for name, v := range refused {
		if r := compat(v); string(r.body) != "0" {
			t.Fatalf("%s: answered %q, want 0", name, r.body)
		}
	}
	tn.unchanged(before, "refused compat pushes")
	if _, ok := tn.client(un); ok {
		t.Fatal("a refused compat push created a record")
	}

	// Without act or ticket, / describes the node.
	if r := tn.raw(http.MethodGet, "/", nil, nil); r.code != 200 || !strings.Contains(string(r.body), "/v1/") {
		t.Fatalf("GET /: %s", r)
	}
}

func TestCompatDisabledWithoutTicket(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{noTicket: true})
	u := uuidFor("noticket")
	before := tn.counters()
	for _, ticket := range []string{testTicket, "", "anything"} {
		r := tn.raw(http.MethodGet, "/?act=user&type=20&uuid="+u+"&data=x&ticket="+url.QueryEscape(ticket), nil, nil)
		if r.code != 200 || string(r.body) != "0" {
			t.Fatalf("compat without a configured ticket (ticket %q): %s", ticket, r)
		}
	}
	tn.unchanged(before, "compat pushes to a node without a ticket")
	if _, ok := tn.client(u); ok {
		t.Fatal("compat push without a configured ticket created a record")
	}
}

func TestUnknownPaths(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	for _, p := range []struct{ method, path string }{
		{http.MethodGet, "/v1/nothing"},
		{http.MethodGet, "/v1/"},
		{http.MethodPost, "/v1/status/extra"},
		{http.MethodGet, api.PathPushes},           // GET on a POST-only path
		{http.MethodDelete, api.PathPushes + "/1"}, // no DELETE
		{http.MethodPost, "/v2/pushes"},
	} {
		r := tn.call(p.method, p.path, nil)
		if strings.HasPrefix(p.path, "/v1/") {
			wantError(t, r, http.StatusNotFound, "no such endpoint", p.path)
			continue
		}
		if r.code != http.StatusNotFound && r.code != http.StatusMethodNotAllowed {
			t.Fatalf("%s %s: %s", p.method, p.path, r)
		}
	}
}

// A node being stopped must not wait for its followers: an open event
// stream and a waiting long poll end at once, and Stop returns without
// running into its deadline (which used to leave the store unclosed and,
// after the core closed, made the stream spin writing keep-alives).
func TestStopEndsFollowers(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	tn.push(api.PushRequest{UUID: uuidFor("stop"), Kind: api.KindGeneral})
	frames, _ := openSSE(t, tn, "?after=0")
	nextFrames(t, frames, 1)

	type result struct {
		code int
		evs  api.Events
		err  error
	}
	wrote := make(chan struct{})
	done := make(chan result, 1)
	go func() {
		var once sync.Once
		ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { close(wrote) }) },
		})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tn.base+api.PathEvents+"?after=1&wait=5m", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		// A connection of its own: one reused from the pool may be closed
		// as idle by the shutdown before the server reads the request.
		resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		out := result{code: resp.StatusCode}
		out.err = json.NewDecoder(resp.Body).Decode(&out.evs)
		done <- out
	}()
	select {
	case <-wrote:
	case <-time.After(wait):
		t.Fatal("long poll request not written")
	}

	// The server accepts connections in order: once a request on a newer
	// connection is answered, the long poll's connection is accepted and
	// its request almost surely read, so the shutdown will answer it
	// rather than drop it.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: wait}
	if resp, err := fresh.Get(tn.base + api.PathHealthz); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	if err := tn.n.Stop(ctx); err != nil {
		t.Fatalf("stop with followers: %v after %v", err, time.Since(start))
	}
	if d := time.Since(start); d > wait/2 {
		t.Fatalf("stop took %v with followers connected", d)
	}
	select {
	case res := <-done:
		if res.code == 0 && errors.Is(res.err, io.EOF) {
			// net/http drops a request it reads after the shutdown began,
			// and nothing tells the client when its request was read. The
			// open stream already proves that Stop does not wait.
			t.Logf("the long poll was not read before the shutdown: %v", res.err)
			break
		}
		if res.err != nil || res.code != http.StatusOK || len(res.evs.Events) != 0 || res.evs.Next != 1 {
			t.Fatalf("long poll ended by stop: %+v (%v)", res, res.err)
		}
	case <-time.After(wait):
		t.Fatal("the long poll did not end with the node")
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return // the stream ended
			}
			t.Fatalf("frame after stop: %+v", f)
		case <-timer.C:
			t.Fatal("the event stream did not end with the node")
		}
	}
}

// A client that gives up on a push (timeout, hang-up) and retries with the
// same idempotency key gets the first push, never a second one.
func TestIdempotentRetryAfterClientCancel(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	send := func(ctx context.Context, key string) (api.Push, error) {
		body := mustJSON(t, api.PushRequest{UUID: uuidFor(key), Kind: api.KindGeneral, Key: key})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, tn.base+api.PathPushes, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := tn.http.Do(req)
		if err != nil {
			return api.Push{}, err
		}
		defer resp.Body.Close()
		var p api.Push
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			return p, fmt.Errorf("status %d", resp.StatusCode)
		}
		return p, json.NewDecoder(resp.Body).Decode(&p)
	}
	const n = 60
	retried := map[string]uint64{}
	for i := range n {
		key := fmt.Sprintf("retry-%d", i)
		ctx, cancel := context.WithCancel(t.Context())
		first := make(chan struct{})
		go func() {
			defer close(first)
			_, _ = send(ctx, key) // given up on below
		}()
		// Give up after a varying moment: before, during or after the commit.
		time.Sleep(time.Duration(i%20) * 100 * time.Microsecond)
		cancel()
		<-first
		p, err := send(t.Context(), key)
		if err != nil {
			t.Fatalf("retry of %s: %v", key, err)
		}
		retried[key] = p.ID
	}
	// Every push of every key, from the event log.
	ids := map[string]map[uint64]bool{}
	var after uint64
	for {
		evs := tn.events(fmt.Sprintf("after=%d", after))
		if len(evs.Events) == 0 {
			break
		}
		for _, e := range evs.Events {
			if ids[e.Key] == nil {
				ids[e.Key] = map[uint64]bool{}
			}
			ids[e.Key][e.PushID] = true
		}
		after = evs.Next
	}
	for key, id := range retried {
		if len(ids[key]) != 1 || !ids[key][id] {
			t.Errorf("key %s: pushes %v, want only %d", key, slices.Sorted(maps.Keys(ids[key])), id)
		}
	}
}
