package httpapi_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
)

// rawRequest writes req as it is on a new connection to the node's HTTP
// port and reads the one response.
func (tn *testNode) rawRequest(req string) (*http.Response, []byte, net.Conn) {
	tn.t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(tn.base, "http://"), 5*time.Second)
	if err != nil {
		tn.t.Fatal(err)
	}
	tn.t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, req); err != nil {
		tn.t.Fatal(err)
	}
	method, _, _ := strings.Cut(req, " ")
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		tn.t.Fatalf("response to %q: %v", req, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		tn.t.Fatal(err)
	}
	return resp, body, c
}

// The old web manager's PHP put the message into the URL as typed and
// sent it with file_get_contents (HTTP/1.0). The HttpPushServer bridge
// cut its query at '&' and the first '=', took names in any case, and
// URL-decoded the message; it pushed what such requests carried and
// answered 1. These requests, byte for byte, must push the same.
func TestCompatTakesWhatTheOldBridgeTook(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	for i, tc := range []struct {
		name  string
		query string // after "GET /?", up to " HTTP/1.0"
		want  string // the payload the phone is to get
	}{
		{"raw space", "act=user&type=20&uuid={U}&data=hello world&ticket={T}", "hello world"},
		{"raw spaces everywhere", "act=user&type=20&uuid={U}&data= two  spaces &ticket={T}", " two  spaces "},
		{"raw tab", "act=user&type=20&uuid={U}&data=a\tb&ticket={T}", "a\tb"},
		{"raw UTF-8", "act=user&type=20&uuid={U}&data=你好 world&ticket={T}", "你好 world"},
		{"semicolon", "act=user&type=20&uuid={U}&data=a;b&ticket={T}", "a;b"},
		{"plus is a space", "act=user&type=20&uuid={U}&data=a+b%2Bc&ticket={T}", "a b+c"},
		{"equals sign in data", "act=user&type=20&uuid={U}&data=k=v&ticket={T}", "k=v"},
		{"names in upper case", "ACT=user&Type=20&UUID={U}&Data=caps&TICKET={T}", "caps"},
		{"act in upper case", "act=USER&type=20&uuid={U}&data=x&ticket={T}", "x"},
		{"the last of a repeated name", "act=user&type=20&uuid={U}&data=first&data=second&ticket={T}", "second"},
		{"uuid in upper case", "act=user&type=20&uuid={UPPER}&data=x&ticket={T}", "x"},
		{"hash sign", "act=user&type=20&uuid={U}&data=a#b&ticket={T}", "a#b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := *tn
			tn.t = t
			u := uuidFor("bridge-" + string(rune('a'+i)))
			q := strings.NewReplacer("{UPPER}", strings.ToUpper(u), "{U}", u, "{T}", testTicket).Replace(tc.query)
			resp, body, _ := tn.rawRequest("GET /?" + q + " HTTP/1.0\r\nHost: node\r\n\r\n")
			if resp.StatusCode != http.StatusOK || string(body) != "1" {
				t.Fatalf("GET /?%s: %s %q", q, resp.Status, body)
			}
			c, ok := tn.client(u)
			if !ok {
				t.Fatalf("no record for %s", u)
			}
			if got := pendingOf(t, c, api.KindCustom).Data; string(got) != tc.want {
				t.Fatalf("pushed %q, want %q", got, tc.want)
			}
		})
	}

	// What the bridge refused is refused, and changes nothing.
	un := uuidFor("bridge-refused")
	before := tn.counters()
	for _, q := range []string{
		"act=user&type=20&uuid=" + un + "&data=100% sure&ticket=" + testTicket, // a broken escape
		"act=user&type=20&uuid=" + un + "&data=x&ticket=" + testTicket + " extra",
		"act=user&type=20&uuid=" + un + "&data=x y&ticket=wrong",
		"act=user&type=11&uuid=" + un + "&data=1 2&ticket=" + testTicket,
	} {
		resp, body, _ := tn.rawRequest("GET /?" + q + " HTTP/1.0\r\n\r\n")
		if resp.StatusCode != http.StatusOK || string(body) != "0" {
			t.Fatalf("GET /?%s: %s %q, want 0", q, resp.Status, body)
		}
	}
	// A HEAD must not push.
	resp, _, _ := tn.rawRequest("HEAD /?act=user&type=20&uuid=" + un + "&data=x&ticket=" + testTicket + " HTTP/1.0\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD: %s", resp.Status)
	}
	tn.unchanged(before, "refused bridge requests")
	if _, ok := tn.client(un); ok {
		t.Fatal("a refused bridge request created a record")
	}
}

// A rewritten bridge request ends its connection, as every bridge
// connection ended; a keep-alive client reconnects and is read afresh.
// Other requests keep net/http's strict parsing and keep-alive.
func TestCompatRawRequestLineClosesItsConnection(t *testing.T) {
	t.Parallel()
	tn := startNode(t, nodeOpts{})
	u := uuidFor("bridge-keepalive")
	resp, body, c := tn.rawRequest("GET /?act=user&type=20&uuid=" + u + "&data=a b&ticket=" + testTicket + " HTTP/1.1\r\nHost: node\r\n\r\n")
	if string(body) != "1" || !resp.Close {
		t.Fatalf("keep-alive bridge request: %s %q, close %v", resp.Status, body, resp.Close)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the connection stayed open (read %d bytes)", n)
	}

	// A well-formed bridge request keeps its connection for the next one.
	resp, body, c = tn.rawRequest("GET /?act=user&type=20&uuid=" + u + "&data=a%20b&ticket=" + testTicket + " HTTP/1.1\r\nHost: node\r\n\r\n")
	if string(body) != "1" || resp.Close {
		t.Fatalf("well-formed bridge request: %s %q, close %v", resp.Status, body, resp.Close)
	}
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if r, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("second request on the connection: %v %v", r, err)
	}

	// Raw spaces outside the bridge stay a bad request.
	resp, _, _ = tn.rawRequest("GET /v1/clients/?userId=a b HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer " + testToken + "\r\n\r\n")
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("raw space in an API request: %s", resp.Status)
	}
	c2, ok := tn.client(u)
	if !ok || !bytes.Equal(pendingOf(t, c2, api.KindCustom).Data, []byte("a b")) {
		t.Fatalf("bridge pushes: %+v", c2)
	}
}
