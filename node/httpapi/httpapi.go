// Package httpapi is the node's HTTP API: JSON pushes and lookups behind a
// bearer token, the delivery event stream, the old HttpPushServer bridge
// as a compatibility endpoint, and the health, readiness and metrics
// endpoints. Requests are validated fully before anything changes.
package httpapi

import (
	"context"
	"crypto/md5"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/store"
	"github.com/ddpush/ddpush-operator/node/wire"
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

// UserUUID is the uuid a DDPush client derives from its user id.
func UserUUID(userID string) wire.UUID { return wire.UUID(md5.Sum([]byte(userID))) }

func target(uuid, userID string) (wire.UUID, error) {
	switch {
	case uuid != "" && userID != "":
		return wire.UUID{}, errors.New("give either uuid or userId, not both")
	case uuid != "":
		u, err := wire.ParseUUID(uuid)
		if err != nil {
			return u, fmt.Errorf("uuid: %w", err)
		}
		return u, nil
	case userID != "":
		return UserUUID(userID), nil
	}
	return wire.UUID{}, errors.New("a target is required: give uuid (32 hex characters) or userId")
}

// message builds the spec common to single and bulk pushes.
func (a *API) message(kind string, bits *api.Bits, data string, binary []byte) (core.PushSpec, error) {
	var p core.PushSpec
	k, ok := state.ParseKind(kind)
	if !ok {
		if kind == "" {
			return p, errors.New("kind is required: general, classified or custom")
		}
		return p, fmt.Errorf("kind %q is not one of general, classified, custom", kind)
	}
	p.Kind = k
	if data != "" && binary != nil {
		return p, errors.New("give either data or binaryData, not both")
	}
	switch k {
	case state.Classified:
		if bits == nil {
			return p, errors.New("a classified push needs bits (a 64-bit mask)")
		}
		p.Bits = uint64(*bits)
	default:
		if bits != nil {
			return p, fmt.Errorf("bits are only for classified pushes, not %s", k)
		}
	}
	if k != state.Custom && (data != "" || binary != nil) {
		return p, fmt.Errorf("data is only for custom pushes, not %s", k)
	}
	if k == state.Custom {
		if binary != nil {
			p.Payload = binary
		} else {
			p.Payload = []byte(data)
		}
	}
	if err := a.core.Validate(&p); err != nil {
		return p, err
	}
	return p, nil
}

func (a *API) push(w http.ResponseWriter, r *http.Request) {
	st := a.core.Stats()
	var req api.PushRequest
	if err := decodeBody(w, r, &req); err != nil {
		st.Push(stats.FromHTTP, 0, stats.PushRejected)
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if h := r.Header.Get(api.HeaderIdempotencyKey); h != "" {
		if req.Key != "" && req.Key != h {
			writeError(w, http.StatusBadRequest, "the Idempotency-Key header and the body's key differ")
			return
		}
		req.Key = h
	}
	u, err := target(req.UUID, req.UserID)
	if err != nil {
		st.Push(stats.FromHTTP, 0, stats.PushRejected)
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	spec, err := a.message(req.Kind, req.Bits, req.Data, req.BinaryData)
	if err != nil {
		st.Push(stats.FromHTTP, spec.Kind, stats.PushRejected)
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	spec.UUID, spec.Key = u, req.Key
	if len(spec.Key) > core.MaxKeyLen {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("key is longer than %d bytes", core.MaxKeyLen))
		return
	}
	res, err := a.core.Push(pushContext(r), spec)
	if err != nil {
		var ie *core.InputError
		if errors.As(err, &ie) {
			st.Push(stats.FromHTTP, spec.Kind, stats.PushRejected)
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		a.log.Error("push failed", "uuid", u.String(), "err", err)
		st.Push(stats.FromHTTP, spec.Kind, stats.PushRejected)
		writeError(w, http.StatusServiceUnavailable, "the push could not be made durable: "+err.Error())
		return
	}
	code := http.StatusCreated
	if res.Duplicate {
		st.Push(stats.FromHTTP, spec.Kind, stats.PushDuplicate)
		code = http.StatusOK
		if p, ok, err := a.core.GetPush(res.ID); err == nil && ok {
			out := pushJSON(&p)
			out.Duplicate = true
			writeJSON(w, code, out)
			return
		}
	} else {
		st.Push(stats.FromHTTP, spec.Kind, stats.PushAccepted)
	}
	out := api.Push{ID: res.ID, UUID: res.UUID.String(), Kind: res.Kind.String(), Fate: res.Fate.String(),
		AcceptedAt: res.AcceptedAt.UTC(), Key: spec.Key, Duplicate: res.Duplicate}
	switch spec.Kind {
	case state.Custom:
		out.Size = len(spec.Payload)
	case state.Classified:
		b := api.Bits(spec.Bits)
		out.Bits = &b
	}
	writeJSON(w, code, out)
}

func (a *API) bulk(w http.ResponseWriter, r *http.Request) {
	st := a.core.Stats()
	var req api.BulkPushRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	n := len(req.UUIDs) + len(req.UserIDs)
	if n == 0 {
		writeError(w, http.StatusBadRequest, "no targets: give uuids and/or userIds")
		return
	}
	if n > api.MaxBulkTargets {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%d targets is more than the %d one call may name", n, api.MaxBulkTargets))
		return
	}
	spec, err := a.message(req.Kind, req.Bits, req.Data, req.BinaryData)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	resp := api.BulkPushResponse{Results: make([]api.BulkResult, 0, n)}
	type job struct {
		idx int
		u   wire.UUID
	}
	var jobs []job
	for _, s := range req.UUIDs {
		u, err := wire.ParseUUID(s)
		if err != nil {
			resp.Results = append(resp.Results, api.BulkResult{Target: s, Error: "uuid: " + err.Error()})
			continue
		}
		jobs = append(jobs, job{len(resp.Results), u})
		resp.Results = append(resp.Results, api.BulkResult{Target: s, UUID: u.String()})
	}
	for _, s := range req.UserIDs {
		u := UserUUID(s)
		jobs = append(jobs, job{len(resp.Results), u})
		resp.Results = append(resp.Results, api.BulkResult{Target: s, UUID: u.String()})
	}
	// Pushes run concurrently so that one commit carries many of them.
	ctx := pushContext(r)
	type done struct {
		idx int
		res core.PushResult
		err error
	}
	ch := make(chan done, len(jobs))
	sem := make(chan struct{}, 256)
	for _, j := range jobs {
		sem <- struct{}{}
		go func(j job) {
			defer func() { <-sem }()
			p := spec
			p.UUID = j.u
			if p.Payload != nil {
				p.Payload = append([]byte(nil), spec.Payload...)
			}
			res, err := a.core.Push(ctx, p)
			ch <- done{j.idx, res, err}
		}(j)
	}
	for range jobs {
		d := <-ch
		if d.err != nil {
			resp.Results[d.idx].Error = d.err.Error()
			st.Push(stats.FromHTTP, spec.Kind, stats.PushRejected)
			continue
		}
		resp.Results[d.idx].ID = d.res.ID
		resp.Results[d.idx].Fate = d.res.Fate.String()
		st.Push(stats.FromHTTP, spec.Kind, stats.PushAccepted)
	}
	for _, res := range resp.Results {
		if res.Error != "" {
			resp.Rejected++
		} else {
			resp.Accepted++
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func optTime(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	t := time.Unix(0, ns).UTC()
	return &t
}

func pushJSON(p *store.Push) api.Push {
	out := api.Push{ID: p.ID, UUID: p.UUID.String(), Kind: p.Kind.String(), Fate: p.Fate.String(), Key: p.Key,
		AcceptedAt: time.Unix(0, p.AcceptedAt).UTC(), SentAt: optTime(p.SentAt), FinishedAt: optTime(p.DoneAt)}
	switch p.Kind {
	case state.Custom:
		out.Size = p.Size
	case state.Classified:
		b := api.Bits(p.Bits)
		out.Bits = &b
	}
	return out
}

func (a *API) getPush(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("push id must be a positive integer, got %q", r.PathValue("id")))
		return
	}
	p, ok, err := a.core.GetPush(id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("push %d is not known (never accepted, or finished and trimmed)", id))
		return
	}
	writeJSON(w, http.StatusOK, pushJSON(&p))
}

func (a *API) getClient(w http.ResponseWriter, r *http.Request) {
	u, err := target(r.PathValue("uuid"), r.URL.Query().Get("userId"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	snap, ok := a.core.Lookup(u)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no client %s on this node", u))
		return
	}
	writeJSON(w, http.StatusOK, ClientJSON(&snap))
}

// ClientJSON renders a client snapshot.
func ClientJSON(s *clients.Snapshot) api.ClientInfo {
	r, e := &s.Record, &s.Ext
	c := api.ClientInfo{UUID: r.UUID.String(), Online: s.Online, LastActivity: time.Unix(0, r.LastSeen).UTC(),
		Pending: []api.Pending{}, Mask: api.Bits(e.Mask)}
	switch {
	case s.UDP && s.TCP:
		c.Transport = "udp+tcp"
	case s.UDP:
		c.Transport = "udp"
	case s.TCP:
		c.Transport = "tcp"
	}
	if addr, ok := r.Addr(); ok {
		c.Address = addr.String()
	}
	if _, ok := r.Addr(); ok || s.TCP {
		c.LastHeartbeat = optTime(r.LastSeen)
	}
	c.LastChange = api.LastChange{General: optTime(e.GeneralAt), Classified: optTime(e.MaskAt), Custom: optTime(e.CustomAt)}
	if e.GeneralID != 0 {
		c.Pending = append(c.Pending, api.Pending{Kind: api.KindGeneral, PushID: e.GeneralID, At: time.Unix(0, e.GeneralAt).UTC(), Sent: e.GeneralSent})
	}
	for _, cp := range e.Classes {
		b := api.Bits(cp.Bits)
		c.Pending = append(c.Pending, api.Pending{Kind: api.KindClassified, PushID: cp.ID, At: time.Unix(0, e.MaskAt).UTC(), Sent: cp.Sent, Bits: &b})
	}
	if e.Custom != nil {
		c.Pending = append(c.Pending, api.Pending{Kind: api.KindCustom, PushID: e.CustomID, At: time.Unix(0, e.CustomAt).UTC(), Sent: e.CustomSent, Size: len(e.Custom), Data: e.Custom})
	}
	for i := range c.Pending {
		c.Pending[i].Fate = api.FateQueued
		if c.Pending[i].Sent {
			c.Pending[i].Fate = api.FateSent
		}
	}
	return c
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.Status())
}

// Status collects the node's status.
func (a *API) Status() api.Status {
	c := a.core
	st := c.Stats()
	s := api.Status{
		Version:        a.opt.Version,
		Records:        c.Records(),
		Online:         c.Online(),
		PacketsIn:      map[string]uint64{"udp": st.PacketsIn[stats.UDP].Load(), "tcp": st.PacketsIn[stats.TCP].Load()},
		PacketsOut:     map[string]uint64{"udp": st.PacketsOut[stats.UDP].Load(), "tcp": st.PacketsOut[stats.TCP].Load()},
		Pushes:         map[string]uint64{"accepted": st.PushesBy(stats.PushAccepted), "rejected": st.PushesBy(stats.PushRejected), "duplicate": st.PushesBy(stats.PushDuplicate)},
		Deliveries:     map[string]uint64{},
		Drops:          st.DropsByName(),
		UptimeSeconds:  time.Since(c.Started()).Seconds(),
		StoreBytes:     c.Store().Size(),
		EventSeq:       c.DurableSeq(),
		MaxContentLen:  c.MaxContentLen(),
		StartedAt:      c.Started().UTC(),
		HeartbeatRule:  a.opt.Policy.String(),
		ExpiryAgeHours: a.opt.ExpiryAge.Hours(),
	}
	for f := state.Queued; f <= state.Expired; f++ {
		s.Deliveries[f.String()] = st.Deliveries[f].Load()
	}
	if a.opt.TCPClients != nil {
		s.TCPClients = a.opt.TCPClients()
	}
	return s
}

func (a *API) expire(w http.ResponseWriter, r *http.Request) {
	var req api.ExpireRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.OlderThanHours == nil || *req.OlderThanHours < 0 {
		writeError(w, http.StatusBadRequest, `olderThanHours is required and must be >= 0, e.g. {"olderThanHours": 48}`)
		return
	}
	age := time.Duration(*req.OlderThanHours * float64(time.Hour))
	n := a.core.Expire(age)
	if err := a.core.Flush(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "expired in memory but not yet durable: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, api.ExpireResponse{Removed: n})
}

func eventJSON(e *store.EventWithKey) api.Event {
	return api.Event{Seq: e.Seq, PushID: e.PushID, UUID: e.UUID.String(), Kind: e.Kind.String(), Fate: e.Fate.String(),
		At: time.Unix(0, e.At).UTC(), Key: e.Key}
}

const maxEventsPerCall = 1000

func (a *API) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if s := q.Get("after"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("after must be an event sequence number, got %q", s))
			return
		}
		after = v
	} else if s := r.Header.Get("Last-Event-ID"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("Last-Event-ID must be an event sequence number, got %q", s))
			return
		}
		after = v
	} else if q.Get("from") == "now" {
		after = a.core.DurableSeq()
	}
	limit := maxEventsPerCall
	if s := q.Get("limit"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > maxEventsPerCall {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be between 1 and %d", maxEventsPerCall))
			return
		}
		limit = v
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > 5*time.Minute {
			writeError(w, http.StatusBadRequest, `wait must be a duration up to 5m, e.g. "30s"`)
			return
		}
		wait = d
	}
	ctx, cancel := a.followContext(r)
	defer cancel()
	if strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		a.sse(ctx, w, after)
		return
	}
	evs, err := a.core.Events(ctx, after, limit, wait)
	if err != nil && ctx.Err() == nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := api.Events{Events: make([]api.Event, 0, len(evs)), Next: after}
	if first := a.core.FirstEventSeq(); first > after+1 {
		out.Gap = true
	}
	for i := range evs {
		out.Events = append(out.Events, eventJSON(&evs[i]))
		out.Next = evs[i].Seq
	}
	writeJSON(w, http.StatusOK, out)
}

// sseKeepAlive is how long an idle event stream waits before a comment.
const sseKeepAlive = 15 * time.Second

// sse streams events as Server-Sent Events until the client goes away or
// the node stops.
func (a *API) sse(ctx context.Context, w http.ResponseWriter, after uint64) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported by this connection")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if first := a.core.FirstEventSeq(); first > after+1 {
		fmt.Fprintf(w, "event: gap\ndata: {\"first\":%d}\n\n", first)
	}
	fl.Flush()
	for ctx.Err() == nil {
		start := time.Now()
		evs, err := a.core.Events(ctx, after, maxEventsPerCall, sseKeepAlive)
		if err != nil {
			return
		}
		if len(evs) == 0 {
			if time.Since(start) < sseKeepAlive {
				// Events stopped waiting early with nothing: the core
				// is closing. Looping would spin.
				return
			}
			// A comment keeps proxies from closing an idle stream.
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return
			}
		}
		for i := range evs {
			b, _ := json.Marshal(eventJSON(&evs[i]))
			if _, err := fmt.Fprintf(w, "id: %d\nevent: delivery\ndata: %s\n\n", evs[i].Seq, b); err != nil {
				return
			}
			after = evs[i].Seq
		}
		fl.Flush()
	}
}

// compat is the old HttpPushServer bridge: GET /?act=user&type=10|11|20&
// uuid=…&data=…&ticket=…, answered text/plain "1" (pushed) or "0".
func (a *API) compat(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("act") == "" && q.Get("ticket") == "" {
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			// A browser: the web console is what it came for.
			http.Redirect(w, r, "/console/", http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "pushnode: DDPush-compatible push node. The JSON API is under /v1/.\n")
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	answer := func(ok bool, why string) {
		if !ok {
			a.log.Info("compat push refused", "reason", why, "remote", r.RemoteAddr)
			io.WriteString(w, "0")
			return
		}
		io.WriteString(w, "1")
	}
	if a.opt.CompatTicket == "" {
		answer(false, "the compatibility endpoint is disabled (no ticket configured)")
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("ticket")), []byte(a.opt.CompatTicket)) != 1 {
		answer(false, "wrong ticket")
		return
	}
	if !strings.EqualFold(q.Get("act"), "user") {
		answer(false, fmt.Sprintf("act %q is not supported (only act=user)", q.Get("act")))
		return
	}
	u, err := wire.ParseUUID(q.Get("uuid"))
	if err != nil {
		answer(false, err.Error())
		return
	}
	spec := core.PushSpec{UUID: u}
	data := q.Get("data")
	switch q.Get("type") {
	case "10":
		spec.Kind = state.General
	case "11":
		// The bridge read the bits as a signed Java long.
		v, err := strconv.ParseInt(data, 10, 64)
		if err != nil {
			answer(false, "type 11 needs data to be a decimal 64-bit number")
			return
		}
		spec.Kind, spec.Bits = state.Classified, uint64(v)
	case "20":
		spec.Kind, spec.Payload = state.Custom, []byte(data)
	default:
		answer(false, fmt.Sprintf("type %q is not 10, 11 or 20", q.Get("type")))
		return
	}
	st := a.core.Stats()
	if _, err := a.core.Push(pushContext(r), spec); err != nil {
		st.Push(stats.FromHTTP, spec.Kind, stats.PushRejected)
		answer(false, err.Error())
		return
	}
	st.Push(stats.FromHTTP, spec.Kind, stats.PushAccepted)
	answer(true, "")
}
