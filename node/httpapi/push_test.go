package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/wire"
)

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
		func() (api.Push, response) { return tn.push(req) })
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
		{"unknown field", `{"uuid":"` + u + `","kind":"general","priority":"high"}`, nil, []string{"unknown field", "priority", "takes uuid, userId, kind, bits, data, binaryData, key"}},
		{"misspelt field", `{"uuid":"` + u + `","kind":"custom","dat":"x"}`, nil, []string{"unknown field", `"dat"`, "data"}},
		{"two JSON values", `{"uuid":"` + u + `","kind":"general"} {"uuid":"` + u + `","kind":"general"}`, nil, []string{"more than one JSON value"}},
		{"text after the object", `{"uuid":"` + u + `","kind":"general"} x`, nil, []string{"more than one JSON value"}},
		{"a brace too many", `{"uuid":"` + u + `","kind":"general"}}`, nil, []string{"more than one JSON value"}},
		// A field named twice would keep one value and drop the other.
		{"data twice", `{"uuid":"` + u + `","kind":"custom","data":"a","data":"b"}`, nil, []string{`"data" appears twice`}},
		{"uuid twice", `{"uuid":"` + uuidFor("other") + `","uuid":"` + u + `","kind":"general"}`, nil, []string{`"uuid" appears twice`}},
		{"data and Data", `{"uuid":"` + u + `","kind":"custom","data":"a","Data":"b"}`, nil, []string{`"data" and "Data"`, "same field"}},
		// Text JSON cannot carry would reach the phone as U+FFFD.
		{"data not UTF-8", "{\"uuid\":\"" + u + "\",\"kind\":\"custom\",\"data\":\"caf\xe9\"}", nil, []string{"not valid UTF-8", "0xe9", "binaryData"}},
		{"data with a cut UTF-8 sequence", "{\"uuid\":\"" + u + "\",\"kind\":\"custom\",\"data\":\"\xe4\xbd\"}", nil, []string{"not valid UTF-8"}},
		{"userId not UTF-8", "{\"userId\":\"\xff10001\",\"kind\":\"general\"}", nil, []string{"not valid UTF-8"}},
		{"key not UTF-8", "{\"uuid\":\"" + u + "\",\"kind\":\"general\",\"key\":\"k\xc0\"}", nil, []string{"not valid UTF-8"}},
		{"lone high surrogate", `{"uuid":"` + u + `","kind":"custom","data":"\ud83d"}`, nil, []string{`\ud83d`, "surrogate", "binaryData"}},
		{"lone low surrogate", `{"uuid":"` + u + `","kind":"custom","data":"a\uDE00b"}`, nil, []string{`\ude00`, "surrogate"}},
		{"high surrogate before a letter", `{"uuid":"` + u + `","kind":"custom","data":"\ud83d\u0041"}`, nil, []string{"surrogate"}},
		{"surrogates reversed", `{"uuid":"` + u + `","kind":"custom","data":"\ude00\ud83d"}`, nil, []string{"surrogate"}},
		{"lone surrogate in userId", `{"userId":"\ud800","kind":"general"}`, nil, []string{"surrogate"}},
		{"header key not UTF-8", `{"uuid":"` + u + `","kind":"general"}`, []string{api.HeaderIdempotencyKey, "k\xff"}, []string{"Idempotency-Key", "UTF-8"}},
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
		{"zero bits", `{"uuid":"` + u + `","kind":"classified","bits":0}`, nil, []string{"bits is 0", "at least one bit"}},
		{"zero bits in hex", `{"uuid":"` + u + `","kind":"classified","bits":"0x0000"}`, nil, []string{"bits is 0"}},
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
		// A client named twice would get two pushes, the first superseded.
		{"uuid twice", mustJSON(t, api.BulkPushRequest{Kind: api.KindGeneral, UUIDs: []string{uuidFor("k"), uuidFor("k2"), uuidFor("k")}}),
			[]string{`uuids[0] "` + uuidFor("k") + `"`, `uuids[2] "` + uuidFor("k") + `"`, "same client", "once"}},
		{"uuid twice in two cases", mustJSON(t, api.BulkPushRequest{Kind: api.KindGeneral, UUIDs: []string{uuidFor("k"), strings.ToUpper(uuidFor("k"))}}),
			[]string{"uuids[0]", "uuids[1]", "same client"}},
		{"a uuid and the user id it derives from", mustJSON(t, api.BulkPushRequest{Kind: api.KindGeneral, UUIDs: []string{md5Hex("k-user")}, UserIDs: []string{"k-user"}}),
			[]string{"uuids[0]", `userIds[0] "k-user"`, md5Hex("k-user"), "same client"}},
		{"user id twice", mustJSON(t, api.BulkPushRequest{Kind: api.KindCustom, Data: "x", UserIDs: []string{"k-user", "k-other", "k-user"}}),
			[]string{"userIds[0]", "userIds[2]", "same client"}},
		{"empty user id", mustJSON(t, api.BulkPushRequest{Kind: api.KindGeneral, UserIDs: []string{"k-user", ""}}), []string{"userIds[1] is empty"}},
		{"user id not UTF-8", []byte("{\"userIds\":[\"k-\xff\"],\"kind\":\"general\"}"), []string{"not valid UTF-8"}},
		{"data with a lone surrogate", []byte(`{"userIds":["k-user"],"kind":"custom","data":"\udbff"}`), []string{"surrogate"}},
	} {
		before := tn.counters()
		r := tn.call(http.MethodPost, api.PathPushesBulk, tc.body)
		wantError(t, r, http.StatusBadRequest, tc.want...)
		tn.unchanged(before, "bulk "+tc.name)
	}
	if _, ok := tn.client(uuidFor("many0")); ok {
		t.Fatal("a refused bulk push created a record")
	}
	for _, u := range []string{uuidFor("k"), uuidFor("k2"), md5Hex("k-user"), md5Hex("k-other")} {
		if _, ok := tn.client(u); ok {
			t.Fatalf("a refused bulk push created a record for %s", u)
		}
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
