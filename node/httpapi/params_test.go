package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/ddpush/ddpush-operator/node/api"
)

// A query parameter an endpoint does not take, or one given twice, is
// refused: ignored, it would leave the caller believing it had effect (a
// "?key=" would not make a push idempotent).
func TestQueryParametersAreChecked(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	u := uuidFor("params")
	p, _ := tn.push(api.PushRequest{UUID: u, Kind: api.KindGeneral})
	push := mustJSON(t, api.PushRequest{UUID: u, Kind: api.KindCustom, Data: "x"})
	for _, tc := range []struct {
		method, path string
		body         []byte
		want         []string
	}{
		{http.MethodPost, api.PathPushes + "?key=k1", push, []string{`unknown query parameter "key"`, "no query parameters"}},
		{http.MethodPost, api.PathPushesBulk + "?kind=general", []byte(`{"uuids":["` + u + `"],"kind":"general"}`), []string{`"kind"`}},
		{http.MethodPost, api.PathExpire + "?olderThanHours=0", []byte(`{"olderThanHours": 1000}`), []string{`"olderThanHours"`}},
		{http.MethodGet, api.PathStatus + "?verbose=1", nil, []string{`"verbose"`}},
		{http.MethodGet, api.PathPushes + "/1?fate=sent", nil, []string{`"fate"`}},
		{http.MethodGet, api.PathClients + "?userId=a&userId=b", nil, []string{`"userId" is given 2 times`}},
		{http.MethodGet, api.PathClients + "?userid=10001", nil, []string{`"userid"`, "only userId"}},
		{http.MethodGet, api.PathEvents + "?after=0&wiat=1s", nil, []string{`"wiat"`, "only after, from, limit, wait"}},
		{http.MethodGet, api.PathEvents + "?after=0&after=1", nil, []string{`"after" is given 2 times`}},
		{http.MethodGet, api.PathEvents + "?from=start", nil, []string{`from must be "now"`}},
		{http.MethodGet, api.PathEvents + "?from=", nil, []string{`from must be "now"`}},
		{http.MethodGet, api.PathEvents + "?from=now&after=0", nil, []string{"either after or from=now"}},
		{http.MethodGet, api.PathEvents + "?after=0;wait=1s", nil, []string{"malformed"}},
	} {
		before := tn.counters()
		wantError(t, tn.call(tc.method, tc.path, tc.body), http.StatusBadRequest, tc.want...)
		tn.unchanged(before, tc.method+" "+tc.path)
	}
	if c, _ := tn.client(u); len(c.Pending) != 1 || c.Pending[0].PushID != p.ID {
		t.Fatalf("refused requests changed the client: %+v", c)
	}
	// The parameters each endpoint takes still work.
	for _, path := range []string{api.PathEvents + "?from=now&wait=0s&limit=5", api.PathEvents + "?after=0", api.PathClients + "?userId=10001x"} {
		if r := tn.call(http.MethodGet, path, nil); r.code != http.StatusOK && r.code != http.StatusNotFound {
			t.Fatalf("GET %s: %s", path, r)
		}
	}
}

// An event stream reconnecting with Last-Event-ID resumes there, even when
// its address asks for from=now (an EventSource reuses its address).
func TestEventStreamResumesDespiteFromNow(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	for i := range 3 {
		tn.push(api.PushRequest{UUID: uuidFor("resume-" + string(rune('a'+i))), Kind: api.KindGeneral})
	}
	frames, _ := openSSE(t, tn, "?from=now", "Last-Event-ID", "1")
	evs := nextFrames(t, frames, 2)
	if evs[0].Seq != 2 || evs[1].Seq != 3 {
		t.Fatalf("resumed at %d, %d; want 2, 3", evs[0].Seq, evs[1].Seq)
	}
}
