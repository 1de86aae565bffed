package node_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/pusher"
	"github.com/ddpush/ddpush-operator/node/stats"
)

// stopWithin stops n and fails the test past bound or on an error (a
// listener closed by force is one).
func stopWithin(t *testing.T, n *node.Node, bound time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := n.Stop(ctx)
	if d := time.Since(start); d > bound || err != nil {
		t.Fatalf("stop took %v (bound %v): %v", d, bound, err)
	}
}

// startLogged starts a node whose log is kept in the returned buffer.
func startLogged(t *testing.T, mutate func(*node.Config)) (*node.Node, *lockedBuffer) {
	t.Helper()
	cfg := nodetest.Config(t, t.TempDir())
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &lockedBuffer{}
	n, err := node.Start(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	return n, logs
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStopRightAfterStart: a node stopped as soon as it started (a test
// that skips, a pod killed at once) stops cleanly; the race detector
// watches the listeners' goroutines starting while they are stopped.
func TestStopRightAfterStart(t *testing.T) {
	for range 10 {
		n, _ := startLogged(t, nil)
		stopWithin(t, n, 5*time.Second)
	}
}

// TestStopRightAfterAPushAnswer: the push connection that just answered
// re-arms its 600 s idle timeout while the node stops; Stop must not wait
// for it (it did, for as long as the idle timeout).
func TestStopRightAfterAPushAnswer(t *testing.T) {
	for i := range 20 {
		n, _ := startLogged(t, nil)
		p, err := pusher.Dial(n.PushAddr().String(), 5*time.Second)
		must(t, err)
		must(t, p.General(uuidOf(fmt.Sprintf("stop-after-%04d", i))))
		stopWithin(t, n, 5*time.Second)
		p.Close()
	}
}

// rawHTTP opens a TCP connection to the HTTP port from src (127.0.0.x)
// and writes req as is.
func rawHTTP(t *testing.T, addr, src, req string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	must(t, err)
	t.Cleanup(func() { c.Close() })
	if req != "" {
		_, err = io.WriteString(c, req)
		must(t, err)
	}
	return c
}

// closedWithin reads c until the node closes it, and fails past d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v (read %q)", d, b)
	}
	return string(b)
}

// TestHTTPBodyThatNeverArrives: a request announcing a body it never
// sends holds its connection only for the read timeout, authenticated
// or not.
func TestHTTPBodyThatNeverArrives(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.HTTPReadTimeout = 300 * time.Millisecond })
	addr := n.HTTPAddr().String()
	for _, auth := range []string{"", "Authorization: Bearer " + nodetest.Token + "\r\n"} {
		c := rawHTTP(t, addr, "127.0.0.1", "POST "+api.PathPushes+" HTTP/1.1\r\nHost: node\r\n"+auth+
			"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n")
		start := time.Now()
		got := closedWithin(t, c, 5*time.Second)
		t.Logf("auth %v: closed after %v, answer %.40q", auth != "", time.Since(start), got)
	}
}

// TestHTTPConnectionsPerSource: one address cannot take every HTTP
// connection; another still gets answers.
func TestHTTPConnectionsPerSource(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) { c.HTTPMaxConnsPerSource = 3 })
	addr := n.HTTPAddr().String()
	for range 3 {
		rawHTTP(t, addr, "127.0.0.1", "")
	}
	nodetest.Eventually(t, 5*time.Second, func() error {
		// A fourth from the same address is closed without an answer.
		if got := closedWithin(t, rawHTTP(t, addr, "127.0.0.1", "GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n"), 5*time.Second); got != "" {
			return fmt.Errorf("answered %q", got)
		}
		return nil
	})
	got := closedWithin(t, rawHTTP(t, addr, "127.0.0.2", "GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"), 5*time.Second)
	if !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Fatalf("another address: %q", got)
	}
	if d := n.Core().Stats().Drops[stats.DropHTTPPerSource].Load(); d < 1 {
		t.Fatalf("drops %v", n.Core().Stats().DropsByName())
	}
}

// TestEventStreamsOutliveTheTimeouts: with read and write timeouts far
// shorter than the wait, an event stream and a long poll still work:
// they move their deadlines once authenticated. An unauthenticated
// request does not get that.
func TestEventStreamsOutliveTheTimeouts(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.HTTPReadTimeout = 200 * time.Millisecond
		c.HTTPWriteTimeout = 200 * time.Millisecond
	})
	addr := n.HTTPAddr().String()
	// A connection per call: with timeouts this short the server closes
	// an idle kept-alive connection within 200 ms, and a POST sent on one
	// it is closing fails with EOF (net/http does not resend a POST).
	cl := api.NewClient("http://"+addr, nodetest.Token)
	cl.HTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	stream := rawHTTP(t, addr, "127.0.0.1", "GET "+api.PathEvents+"?from=now HTTP/1.1\r\nHost: node\r\n"+
		"Authorization: Bearer "+nodetest.Token+"\r\nAccept: text/event-stream\r\n\r\n")
	longPoll := make(chan api.Events, 1)
	pollErr := make(chan error, 1)
	go func() {
		evs, err := cl.Events(context.Background(), n.Core().DurableSeq(), 10, 3*time.Second)
		if err != nil {
			pollErr <- err
			return
		}
		longPoll <- evs
	}()
	time.Sleep(time.Second) // five times the timeouts
	u := uuidOf("outlive-timeouts")
	_, err := cl.Push(context.Background(), api.PushRequest{UUID: u.String(), Kind: "general"})
	must(t, err)

	select {
	case evs := <-longPoll:
		if len(evs.Events) == 0 || evs.Events[0].UUID != u.String() {
			t.Fatalf("long poll: %+v", evs)
		}
	case err := <-pollErr:
		t.Fatalf("long poll: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("long poll did not answer")
	}
	_ = stream.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(stream)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream ended before the event: %v", err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, u.String()) {
			break
		}
	}
	// Without the token a long poll gets no more time: with a body that
	// never arrives, its connection ends within the timeouts (net/http
	// waits for the body before answering, so the 401 may not make it).
	c := rawHTTP(t, addr, "127.0.0.1", "GET "+api.PathEvents+"?wait=5m HTTP/1.1\r\nHost: node\r\nContent-Length: 5\r\n\r\n")
	if got := closedWithin(t, c, 5*time.Second); got != "" && !strings.HasPrefix(got, "HTTP/1.1 401") {
		t.Fatalf("unauthenticated long poll: %q", got)
	}
}

// TestStopWithSlowHTTPPeers: a body that never arrives, an event stream,
// a long poll and an idle keep-alive connection do not hold a stopping
// node (with its default 30 s read timeout) for more than a moment.
func TestStopWithSlowHTTPPeers(t *testing.T) {
	n, logs := startLogged(t, nil)
	addr := n.HTTPAddr().String()
	bearer := "Authorization: Bearer " + nodetest.Token + "\r\n"
	peers := []net.Conn{
		rawHTTP(t, addr, "127.0.0.1", "POST "+api.PathPushes+" HTTP/1.1\r\nHost: node\r\n"+bearer+"Content-Length: 10\r\n\r\n"),
		rawHTTP(t, addr, "127.0.0.1", "GET "+api.PathEvents+" HTTP/1.1\r\nHost: node\r\n"+bearer+"Accept: text/event-stream\r\n\r\n"),
		rawHTTP(t, addr, "127.0.0.1", "GET "+api.PathEvents+"?wait=5m&from=now HTTP/1.1\r\nHost: node\r\n"+bearer+"\r\n"),
		rawHTTP(t, addr, "127.0.0.1", "GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n"),
		rawHTTP(t, addr, "127.0.0.1", ""),
	}
	time.Sleep(200 * time.Millisecond) // every request is read
	stopWithin(t, n, 5*time.Second)
	for _, c := range peers {
		closedWithin(t, c, time.Second)
	}
	if strings.Contains(logs.String(), "by force") {
		t.Fatalf("stop closed connections by force:\n%s", logs.String())
	}
}

// TestCompatRefusalsDoNotFloodTheLog: the bridge's refusals are
// answered, not logged at info, so any caller cannot fill the log.
func TestCompatRefusalsDoNotFloodTheLog(t *testing.T) {
	n, logs := startLogged(t, nil)
	c := &http.Client{Timeout: 5 * time.Second}
	for range 50 {
		resp, err := c.Get("http://" + n.HTTPAddr().String() + "/?act=user&type=10&uuid=x&ticket=wrong")
		must(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "0" {
			t.Fatalf("refusal answered %q", b)
		}
	}
	if k := strings.Count(logs.String(), "compat"); k > 0 {
		t.Fatalf("%d log lines at info for refused compat pushes:\n%s", k, logs.String())
	}
}

// TestHTTPHeadersAreBounded: a peer cannot make the node hold net/http's
// default megabyte of headers per connection.
func TestHTTPHeadersAreBounded(t *testing.T) {
	n := nodetest.Start(t, nil)
	big := strings.Repeat("a", node.MaxHeaderBytes+8<<10) // net/http allows 4 kB of slack
	c := rawHTTP(t, n.HTTPAddr().String(), "127.0.0.1", "GET /healthz HTTP/1.1\r\nHost: node\r\nX-Big: "+big+"\r\n\r\n")
	if got := closedWithin(t, c, 5*time.Second); !strings.HasPrefix(got, "HTTP/1.1 431") {
		t.Fatalf("headers over %d bytes: %.60q", node.MaxHeaderBytes, got)
	}
	// Ordinary headers are fine.
	c = rawHTTP(t, n.HTTPAddr().String(), "127.0.0.1", "GET /healthz HTTP/1.1\r\nHost: node\r\nX-Small: "+big[:1000]+"\r\nConnection: close\r\n\r\n")
	if got := closedWithin(t, c, 5*time.Second); !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Fatalf("small headers: %.60q", got)
	}
}

// TestHTTPHeadersBoundWithTheBridge: with the HttpPushServer bridge on, a
// request line long enough for a percent-encoded payload of the largest
// content length is read, and one past the larger bound is still refused.
func TestHTTPHeadersBoundWithTheBridge(t *testing.T) {
	n := nodetest.Start(t, func(c *node.Config) {
		c.CompatTicketFile = filepath.Join(t.TempDir(), "ticket")
		must(t, os.WriteFile(c.CompatTicketFile, []byte("bridge-ticket"), 0o600))
	})
	fits := strings.Repeat("a", 3*65502+100) // %XX for each byte of the largest payload
	c := rawHTTP(t, n.HTTPAddr().String(), "127.0.0.1", "GET /healthz?x="+fits+" HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
	if got := closedWithin(t, c, 5*time.Second); strings.HasPrefix(got, "HTTP/1.1 431") {
		t.Fatalf("a request line of %d bytes with the bridge on: %.60q", len(fits), got)
	}
	big := strings.Repeat("a", node.CompatMaxHeaderBytes+8<<10)
	c = rawHTTP(t, n.HTTPAddr().String(), "127.0.0.1", "GET /healthz HTTP/1.1\r\nHost: node\r\nX-Big: "+big+"\r\n\r\n")
	if got := closedWithin(t, c, 5*time.Second); !strings.HasPrefix(got, "HTTP/1.1 431") {
		t.Fatalf("headers over %d bytes with the bridge on: %.60q", node.CompatMaxHeaderBytes, got)
	}
}
