package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ddpush/ddpush-operator/node/api"
)

// A key names one push. Sent again with the same push (however the
// target and payload are spelt) it answers 200 with the first push; sent
// with a different push it is refused with 422, carries the first push,
// and changes nothing.
func TestIdempotencyKeyReusedForAnotherPush(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	u, other := md5Hex("idem-user"), uuidFor("idem-other")
	bits := api.Bits(0x5)
	firsts := map[string]api.PushRequest{
		"custom":     {UUID: u, Kind: api.KindCustom, Data: "12345678", Key: "k-custom"},
		"classified": {UUID: u, Kind: api.KindClassified, Bits: &bits, Key: "k-classified"},
		"general":    {UUID: u, Kind: api.KindGeneral, Key: "k-general"},
	}
	ids := map[string]uint64{}
	for name, req := range firsts {
		p, r := tn.push(req)
		if r.code != http.StatusCreated {
			t.Fatalf("first %s push: %s", name, r)
		}
		ids[name] = p.ID
	}

	same := map[string]api.PushRequest{
		"custom, same bytes as binaryData":  {UUID: u, Kind: api.KindCustom, BinaryData: []byte("12345678"), Key: "k-custom"},
		"custom, target as its user id":     {UserID: "idem-user", Kind: api.KindCustom, Data: "12345678", Key: "k-custom"},
		"custom, uuid in upper case":        {UUID: strings.ToUpper(u), Kind: api.KindCustom, Data: "12345678", Key: "k-custom"},
		"classified, same bits":             {UUID: u, Kind: api.KindClassified, Bits: &bits, Key: "k-classified"},
		"general, target as its user id":    {UserID: "idem-user", Kind: api.KindGeneral, Key: "k-general"},
		"custom, key in the header instead": {UUID: u, Kind: api.KindCustom, Data: "12345678"},
	}
	for name, req := range same {
		var kv []string
		if req.Key == "" {
			kv = []string{api.HeaderIdempotencyKey, "k-custom"}
		}
		p, r := tn.push(req, kv...)
		first := ids[strings.SplitN(name, ",", 2)[0]]
		if r.code != http.StatusOK || !p.Duplicate || p.ID != first {
			t.Fatalf("%s: %s, want 200 duplicate of push %d", name, r, first)
		}
	}

	other8 := api.Bits(0x8)
	differs := map[string]struct {
		req  api.PushRequest
		want string
	}{
		"custom, other bytes of the same length": {api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "12345679", Key: "k-custom"}, "other 8 bytes"},
		"custom, a byte more":                    {api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "123456789", Key: "k-custom"}, "carried 8 bytes"},
		"custom, to another client":              {api.PushRequest{UUID: other, Kind: api.KindCustom, Data: "12345678", Key: "k-custom"}, "went to uuid " + u},
		"custom, to another user id":             {api.PushRequest{UserID: "idem-user2", Kind: api.KindCustom, Data: "12345678", Key: "k-custom"}, "went to uuid " + u},
		"custom key, as general":                 {api.PushRequest{UUID: u, Kind: api.KindGeneral, Key: "k-custom"}, "was a custom push"},
		"classified, other bits":                 {api.PushRequest{UUID: u, Kind: api.KindClassified, Bits: &other8, Key: "k-classified"}, "carried bits 0x5"},
		"general key, as custom":                 {api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "x", Key: "k-general"}, "was a general push"},
	}
	for name, tc := range differs {
		before := tn.counters()
		r := tn.call(http.MethodPost, api.PathPushes, mustJSON(t, tc.req))
		msg := wantError(t, r, http.StatusUnprocessableEntity, "idempotency key", tc.want, "new key")
		e := decodeAs[api.Error](t, r)
		first := ids[strings.SplitN(name, ",", 2)[0]]
		if strings.HasPrefix(name, "custom key") {
			first = ids["custom"]
		} else if strings.HasPrefix(name, "general key") {
			first = ids["general"]
		}
		if e.Push == nil || e.Push.ID != first || e.Push.Duplicate {
			t.Fatalf("%s: %q carries push %+v, want push %d", name, msg, e.Push, first)
		}
		tn.unchanged(before, name)
	}
	if _, ok := tn.client(other); ok {
		t.Fatal("a refused reuse of a key created a record")
	}
	c, _ := tn.client(u)
	if pe := pendingOf(t, c, api.KindCustom); pe.PushID != ids["custom"] || string(pe.Data) != "12345678" {
		t.Fatalf("pending custom %+v after refused reuses", pe)
	}
	if uint64(c.Mask) != 0x5 {
		t.Fatalf("mask %#x after refused reuses, want 0x5", uint64(c.Mask))
	}
}

// Text reaches the phone as the bytes it is: characters outside the
// basic plane (a surrogate pair in JSON), and a real U+FFFD, are kept.
func TestPushTextIsExact(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	for i, tc := range []struct{ json, want string }{
		{`"\ud83d\ude00"`, "\U0001F600"},
		{`"\uD83D\uDE00!"`, "\U0001F600!"},
		{`"😀"`, "\U0001F600"},
		{`"\ufffd"`, "\ufffd"},
		{`"` + "\ufffd" + `"`, "\ufffd"},
		{`"a\\ud800"`, `a\ud800`}, // an escaped backslash, then text
		{`"\u00e9t\u00E9"`, "été"},
	} {
		u := uuidFor("exact-" + string(rune('a'+i)))
		body := `{"uuid":"` + u + `","kind":"custom","data":` + tc.json + `}`
		r := tn.call(http.MethodPost, api.PathPushes, []byte(body))
		if r.code != http.StatusCreated {
			t.Fatalf("%s: %s", body, r)
		}
		c, _ := tn.client(u)
		if got := pendingOf(t, c, api.KindCustom).Data; string(got) != tc.want {
			t.Fatalf("%s: pending % x, want % x", tc.json, got, tc.want)
		}
	}
}
