package httpapi

import "testing"

func TestFixBridgeRequestLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		// Rewritten: a bridge request whose target holds spaces or
		// control characters.
		{"GET /?data=a b HTTP/1.0\r\n\r\n", "GET /?data=a%20b HTTP/1.0\r\nConnection: close\r\n\r\n"},
		{"GET /?data=a b HTTP/1.1\r\nHost: x\r\n\r\n", "GET /?data=a%20b HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n"},
		{"GET /?d=a\tb\x01c\x7f HTTP/1.0\n\n", "GET /?d=a%09b%01c%7F HTTP/1.0\r\nConnection: close\r\n\n"},
		{"GET /?d=HTTP/1.0 x HTTP/1.0\r\n\r\n", "GET /?d=HTTP/1.0%20x HTTP/1.0\r\nConnection: close\r\n\r\n"},
		{"GET /?d=a\rb HTTP/1.0\r\n\r\n", "GET /?d=a%0Db HTTP/1.0\r\nConnection: close\r\n\r\n"},
		// Untouched: nothing to fix, not a bridge request, no version,
		// or the line is not complete.
		{"GET /?data=a%20b HTTP/1.0\r\n\r\n", ""},
		{"GET /?data=你好 HTTP/1.0\r\n\r\n", ""},
		{"GET /v1/status?x=a b HTTP/1.1\r\n\r\n", ""},
		{"POST /?data=a b HTTP/1.1\r\n\r\n", ""},
		{"GET /?data=a b\r\n\r\n", ""},
		{"GET /?data=a b HTTP/x.y\r\n\r\n", ""},
		{"GET /?data=a b HTTP/1.0", ""},
	} {
		got, changed := fixBridgeRequestLine([]byte(tc.in))
		want := tc.want
		if want == "" {
			want = tc.in
		}
		if changed != (tc.want != "") || string(got) != want {
			t.Errorf("fixBridgeRequestLine(%q) = %q, %v; want %q", tc.in, got, changed, want)
		}
	}
}

func TestCompatQuery(t *testing.T) {
	q := compatQuery("ACT=user&type=20&&data=a;b=c&data=x+y%21&empty&bad=%zz&uuid=1&uuid=%GG")
	want := map[string]string{"act": "user", "type": "20", "data": "x y!", "empty": ""}
	if len(q) != len(want) {
		t.Fatalf("compatQuery = %q, want %q", q, want)
	}
	for k, v := range want {
		if q[k] != v {
			t.Errorf("%s = %q, want %q", k, q[k], v)
		}
	}
}
