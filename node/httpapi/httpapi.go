// Package httpapi is the node's HTTP API: JSON pushes and lookups behind a
// bearer token, the delivery event stream, the old HttpPushServer bridge
// as a compatibility endpoint, and the health, readiness and metrics
// endpoints. Requests are validated fully before anything changes.
package httpapi

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/lograte"
	"github.com/ddpush/ddpush-operator/node/reshard"
	"github.com/ddpush/ddpush-operator/node/shard"
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
	// ReadTimeout bounds the arrival of a request's body and WriteTimeout
	// the sending of its answer (see deadlines.go); 0 leaves them unset.
	ReadTimeout, WriteTimeout time.Duration
	// Shards is this pod's place in a sharded PushNode; nil for a node
	// started without a peer address.
	Shards *shard.Router
	// Moves runs this pod's side of slot moves; nil when Shards is.
	Moves *reshard.Mover
}

// MaxBodyBytes bounds request bodies.
const MaxBodyBytes = 4 << 20

// API serves the node's HTTP endpoints.
type API struct {
	core  *core.Core
	opt   Options
	log   *slog.Logger
	logs  *lograte.Limiter // lines every request could repeat
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
	a := &API{core: c, opt: opt, log: opt.Logger, logs: lograte.New(opt.Logger, 10*time.Second), mux: http.NewServeMux(), drain: make(chan struct{})}
	m := a.mux
	m.HandleFunc("POST "+api.PathPushes, a.auth(params(a.push)))
	m.HandleFunc("POST "+api.PathPushesBulk, a.auth(params(a.bulk)))
	m.HandleFunc("GET "+api.PathPushes+"/{id}", a.auth(params(a.getPush, "uuid")))
	m.HandleFunc("GET "+api.PathClients+"{uuid}", a.auth(params(a.getClient, "userId")))
	m.HandleFunc("GET "+api.PathClients, a.auth(params(a.getClient, "userId")))
	m.HandleFunc("GET "+api.PathStatus, a.auth(params(a.status)))
	m.HandleFunc("GET "+api.PathSlotMap, a.auth(params(a.getSlotMap)))
	m.HandleFunc("PUT "+api.PathSlotMap, a.auth(params(a.putSlotMap)))
	m.HandleFunc("GET "+api.PathSlotOwner, a.auth(params(a.getSlotOwner, "uuid", "userId")))
	m.HandleFunc("POST "+api.PathExpire, a.auth(params(a.expire)))
	a.routeMoves(m)
	m.HandleFunc("GET "+api.PathEvents, a.auth(params(a.events, "after", "from", "limit", "wait")))
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
		if a.opt.Shards != nil && a.opt.Shards.Map().IsZero() {
			http.Error(w, "not ready: this pod of a sharded PushNode has no slot map yet (PUT /v1/slotmap)", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	if opt.Registry != nil {
		m.Handle("GET "+api.PathMetrics, promhttp.HandlerFor(opt.Registry, promhttp.HandlerOpts{}))
	}
	if opt.Pprof {
		m.HandleFunc("/debug/pprof/", a.auth(pprof.Index))
		m.HandleFunc("/debug/pprof/profile", a.auth(untimed(pprof.Profile)))
		m.HandleFunc("/debug/pprof/trace", a.auth(untimed(pprof.Trace)))
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
func (a *API) Ready() bool {
	return a.ready.Load() && a.core.StoreErr() == nil && (a.opt.Shards == nil || !a.opt.Shards.Map().IsZero())
}

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
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.setDeadlines(w)
	a.mux.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

func (a *API) auth(h http.HandlerFunc) http.HandlerFunc {
	want := []byte(a.opt.Token)
	return func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		got, ok := bearerToken(header)
		if a.opt.Token == "" || !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pushnode"`)
			msg := "missing bearer token: send Authorization: Bearer <token>"
			switch {
			case header != "" && !ok:
				msg = "the Authorization header is not a bearer token: send Authorization: Bearer <token>"
			case header != "":
				msg = "invalid bearer token"
			}
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		h(w, r)
	}
}

// params refuses a request whose query names a parameter the endpoint does
// not take, or names one twice: either would be ignored without a word (a
// "?key=" on a push would not make it idempotent, a misspelt "wiat" would
// not wait).
func params(h http.HandlerFunc, allowed ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			writeError(w, http.StatusBadRequest, "the query string is malformed: "+err.Error())
			return
		}
		for name, values := range q {
			if !slices.Contains(allowed, name) {
				takes := "no query parameters"
				if len(allowed) > 0 {
					takes = "only " + strings.Join(allowed, ", ")
				}
				writeError(w, http.StatusBadRequest, fmt.Sprintf("unknown query parameter %q: %s %s takes %s", name, r.Method, r.URL.Path, takes))
				return
			}
			if len(values) > 1 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %q is given %d times: give it once", name, len(values)))
				return
			}
		}
		h(w, r)
	}
}

// bearerToken reads the token of an Authorization header. The scheme is
// case-insensitive and separated from the token by one or more spaces
// (RFC 9110 section 11.4; RFC 6750 section 2.1).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	return token, token != ""
}

// decodeBody reads a JSON object into v. Anything that decoding would
// silently drop or alter is refused with a message saying what: text
// that is not valid Unicode, a field named twice, an unknown field, a
// second value after the first.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return fmt.Errorf("request body is larger than %d bytes", MaxBodyBytes)
		}
		return fmt.Errorf("read request body: %w", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return errors.New("request body is empty: send a JSON object")
	}
	if err := checkJSONText(body); err != nil {
		return err
	}
	if err := checkRepeatedFields(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if uf := unknownFieldError(err, v); uf != nil {
			return uf
		}
		return fmt.Errorf("request body is not valid JSON for this endpoint: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("request body holds more than one JSON value, or text after it: send one JSON object")
	}
	return nil
}
