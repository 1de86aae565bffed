package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ddpush/ddpush-operator/node/api"
)

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
		for _, auth := range []string{"Bearer wrong-token", "Bearer " + testToken + "x", "bearer " + strings.ToUpper(testToken), "Bearer x" + testToken} {
			r := tn.raw(p.method, p.path, body, http.Header{"Authorization": {auth}})
			wantError(t, r, http.StatusUnauthorized, "invalid bearer token")
		}
		for _, auth := range []string{testToken, "Basic " + testToken, "Bearer", "Bearer ", "Bearer\t" + testToken, "Bearertoken " + testToken, "Token " + testToken} {
			r := tn.raw(p.method, p.path, body, http.Header{"Authorization": {auth}})
			wantError(t, r, http.StatusUnauthorized, "not a bearer token", "Authorization: Bearer <token>")
		}
	}
	tn.unchanged(before, "unauthenticated requests")
	if _, ok := tn.client(uuidFor("a")); ok {
		t.Fatal("an unauthenticated push created a record")
	}

	// The scheme is case-insensitive and may be followed by more than one
	// space (RFC 9110 section 11.4, RFC 6750 section 2.1).
	for _, auth := range []string{"bearer " + testToken, "BEARER " + testToken, "BeArEr " + testToken, "Bearer  " + testToken, "bearer    " + testToken} {
		if r := tn.raw(http.MethodGet, api.PathStatus, nil, http.Header{"Authorization": {auth}}); r.code != http.StatusOK {
			t.Errorf("Authorization %q: %s", auth, r)
		}
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
