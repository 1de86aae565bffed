package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/wire"
)

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
		{`{"olderThanHours": -1}`, "from 0 to 2562047"},
		// Ages past what a duration holds were converted to whatever
		// the CPU makes of an out-of-range float.
		{`{"olderThanHours": 2562048}`, "from 0 to 2562047"},
		{`{"olderThanHours": 1e19}`, "from 0 to 2562047"},
		{`{"olderThanHours": 1e300}`, "from 0 to 2562047"},
		{`{"olderThanHours": "1"}`, "not valid JSON"},
		{`{"hours": 1}`, "unknown field"},
	} {
		before := tn.counters()
		wantError(t, tn.call(http.MethodPost, api.PathExpire, []byte(tc.body)), http.StatusBadRequest, tc.want)
		tn.unchanged(before, "expire "+tc.body)
	}
	// A large age removes nothing, up to the largest.
	for _, hours := range []string{"1000", "2562047"} {
		r := tn.call(http.MethodPost, api.PathExpire, []byte(`{"olderThanHours": `+hours+`}`))
		if r.code != 200 || decodeAs[api.ExpireResponse](t, r).Removed != 0 {
			t.Fatalf("expire %s h: %s", hours, r)
		}
	}
	s0 := tn.status()
	if s0.Records != 4 {
		t.Fatalf("%d records, want 4", s0.Records)
	}

	r := tn.call(http.MethodPost, api.PathExpire, []byte(`{"olderThanHours": 0}`))
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
