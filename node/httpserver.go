package node

import (
	"context"
	"fmt"
	stdlog "log"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ddpush/ddpush-operator/node/lograte"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/tcpaccept"
)

// MaxHeaderBytes bounds the request line and headers of an HTTP request.
const MaxHeaderBytes = 64 << 10

// CompatMaxHeaderBytes replaces MaxHeaderBytes while the HttpPushServer
// bridge is enabled: its clients put the payload in the query string,
// percent-encoded, so a payload of the largest content length takes three
// times as many bytes in the request line.
const CompatMaxHeaderBytes = 256 << 10

// listenHTTP binds the HTTP port and builds its server around n.api.
func (n *Node) listenHTTP(cfg Config, st *stats.Stats) error {
	var err error
	if n.httpL, err = tcpaccept.Listen(cfg.HTTPAddr, tcpaccept.Options{
		Limits: tcpaccept.Limits{MaxConns: cfg.HTTPMaxConns, MaxConnsPerSource: cfg.HTTPMaxConnsPerSource},
		Name:   "http",
		Log:    n.log,
		Refused: func(r tcpaccept.Refusal) {
			if r == tcpaccept.OverSource {
				st.Drop(stats.DropHTTPPerSource)
			} else {
				st.Drop(stats.DropHTTPConnLimit)
			}
		},
	}); err != nil {
		return fmt.Errorf("listen http %s: %w", cfg.HTTPAddr, err)
	}
	n.http = &http.Server{
		Handler: n.handlers.track(n.api),
		// Headers here; the body and the answer have per-request
		// deadlines (httpapi), which event streams can move.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Every connection may hold this much before authentication
		// (net/http's default is 1 MB); the API's headers are small.
		MaxHeaderBytes: maxHeaderBytes(cfg),
		// The server's own complaints (a peer's malformed request, a
		// handler's panic) are logged at most once per interval.
		ErrorLog: stdlog.New(lograte.Writer{L: lograte.New(n.log, 10*time.Second), Level: slog.LevelWarn, Key: "http", Msg: "http server"}, "", 0),
	}
	return nil
}

// stopHTTP shuts the HTTP server down: the listener closes, idle
// connections close, reads in progress (a body still arriving, a
// connection waiting for its next request) are interrupted, and requests
// being answered finish. At ctx's end the rest is closed by force.
func (n *Node) stopHTTP(ctx context.Context) error {
	shut := make(chan error, 1)
	go func() { shut <- n.http.Shutdown(ctx) }()
	grace := 2 * time.Second
	if d, ok := ctx.Deadline(); ok {
		grace = min(grace, time.Until(d))
	}
	n.httpL.Drain(grace)
	err := <-shut
	if err == nil {
		return nil
	}
	open := n.httpL.Open()
	_ = n.http.Close()
	n.httpL.CloseAll()
	// Handlers whose connections were closed only need to notice.
	wait, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if n.handlers.wait(wait) != nil {
		return fmt.Errorf("http: %d connections closed by force at the shutdown deadline; %d handlers still running", open, n.handlers.running())
	}
	return fmt.Errorf("http: %d connections closed by force at the shutdown deadline", open)
}

// inflight counts running HTTP handlers.
type inflight struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0, if waited for
}

func (f *inflight) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.n++
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.n--
			if f.n == 0 && f.zero != nil {
				close(f.zero)
				f.zero = nil
			}
			f.mu.Unlock()
		}()
		h.ServeHTTP(w, r)
	})
}

func (f *inflight) running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *inflight) wait(ctx context.Context) error {
	f.mu.Lock()
	if f.n == 0 {
		f.mu.Unlock()
		return nil
	}
	if f.zero == nil {
		f.zero = make(chan struct{})
	}
	zero := f.zero
	f.mu.Unlock()
	select {
	case <-zero:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func maxHeaderBytes(cfg Config) int {
	if cfg.CompatTicketFile != "" {
		return CompatMaxHeaderBytes
	}
	return MaxHeaderBytes
}
