// Package httpapi is the node's HTTP API: JSON pushes and lookups behind a
// bearer token, the delivery event stream, the old HttpPushServer bridge
// as a compatibility endpoint, and the health, readiness and metrics
// endpoints. Requests are validated fully before anything changes.
package httpapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/state"
)

// Options configure the API.
type Options struct {
	// Token is the bearer token every /v1 call must carry.
	Token string
	// CompatTicket enables the HttpPushServer bridge (GET /?act=user…)
	// and is the ticket it must be given; empty disables it.
	CompatTicket string
	Version      string
	Registry     *prometheus.Registry
	Logger       *slog.Logger
	// Extra is mounted as is (the web console).
	Extra map[string]http.Handler
	// Pprof mounts net/http/pprof behind the token.
	Pprof bool
	// TCPClients reports open client TCP connections.
	TCPClients func() int64
	Policy     state.Policy
	ExpiryAge  time.Duration
}

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 4 << 20

// API serves the node's HTTP endpoints.
type API struct {
	core  *core.Core
	opt   Options
	log   *slog.Logger
	ready atomic.Bool
	mux   *http.ServeMux

	drainMu sync.Mutex
	// drain is closed while the API is not ready: waiting long polls and
	// event streams end, so that they do not hold up a node being stopped
	// (http.Server.Shutdown waits for every active request).
	drain chan struct{}
}

// New builds the API around c.
func New(c *core.Core, opt Options) *API {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	a := &API{core: c, opt: opt, log: opt.Logger, mux: http.NewServeMux(), drain: make(chan struct{})}
	m := a.mux
	m.HandleFunc("POST "+api.PathPushes, a.auth(a.push))
	m.HandleFunc("POST "+api.PathPushesBulk, a.auth(a.bulk))
	m.HandleFunc("GET "+api.PathPushes+"/{id}", a.auth(a.getPush))
	m.HandleFunc("GET "+api.PathClients+"{uuid}", a.auth(a.getClient))
	m.HandleFunc("GET "+api.PathClients, a.auth(a.getClient))
	m.HandleFunc("GET "+api.PathStatus, a.auth(a.status))
	m.HandleFunc("POST "+api.PathExpire, a.auth(a.expire))
	m.HandleFunc("GET "+api.PathEvents, a.auth(a.events))
	m.HandleFunc("/v1/", a.auth(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	}))
	m.HandleFunc("GET "+api.PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	m.HandleFunc("GET "+api.PathReadyz, func(w http.ResponseWriter, r *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if err := a.core.StoreErr(); err != nil {
			http.Error(w, "not ready: the store cannot be written: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	if opt.Registry != nil {
		m.Handle("GET "+api.PathMetrics, promhttp.HandlerFor(opt.Registry, promhttp.HandlerOpts{}))
	}
	if opt.Pprof {
		m.HandleFunc("/debug/pprof/", a.auth(pprof.Index))
		m.HandleFunc("/debug/pprof/profile", a.auth(pprof.Profile))
		m.HandleFunc("/debug/pprof/trace", a.auth(pprof.Trace))
		m.HandleFunc("/debug/pprof/symbol", a.auth(pprof.Symbol))
	}
	for p, h := range opt.Extra {
		m.Handle(p, h)
	}
	m.HandleFunc("GET /{$}", a.compat)
	return a
}

// SetReady flips /readyz. Turning it off also ends waiting long polls and
// event streams: their followers reconnect to a node that is ready.
func (a *API) SetReady(ok bool) {
	a.drainMu.Lock()
	defer a.drainMu.Unlock()
	select {
	case <-a.drain:
		if ok {
			a.drain = make(chan struct{})
		}
	default:
		if !ok {
			close(a.drain)
		}
	}
	a.ready.Store(ok)
}

// Ready reports what /readyz answers: started, not stopping, and the
// store's commits succeed.
func (a *API) Ready() bool { return a.ready.Load() && a.core.StoreErr() == nil }

// followContext is the context of a long poll or an event stream: the
// request's, also cancelled when the API stops being ready.
func (a *API) followContext(r *http.Request) (context.Context, context.CancelFunc) {
	a.drainMu.Lock()
	drain := a.drain
	a.drainMu.Unlock()
	ctx, cancel := context.WithCancel(r.Context())
	go func() {
		select {
		case <-drain:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// pushContext is the context a push is made with. A push is applied the
// moment the core accepts it and only waits for its commit afterwards, so
// a client hanging up must not turn it into a failure: a retry with the
// same idempotency key would then push a second time.
func pushContext(r *http.Request) context.Context { return context.WithoutCancel(r.Context()) }

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

func (a *API) auth(h http.HandlerFunc) http.HandlerFunc {
	want := []byte("Bearer " + a.opt.Token)
	return func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if a.opt.Token == "" || subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pushnode"`)
			msg := "missing bearer token: send Authorization: Bearer <token>"
			if len(got) > 0 {
				msg = "invalid bearer token"
			}
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		h(w, r)
	}
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mb *http.MaxBytesError
		switch {
		case errors.As(err, &mb):
			return fmt.Errorf("request body is larger than %d bytes", MaxBodyBytes)
		case errors.Is(err, io.EOF):
			return errors.New("request body is empty: send a JSON object")
		}
		return fmt.Errorf("request body is not valid JSON for this endpoint: %v", err)
	}
	if dec.More() {
		return errors.New("request body holds more than one JSON value")
	}
	return nil
}
