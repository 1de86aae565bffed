package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/shard"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// slotMapJSON is the slot map as GET /v1/slotmap shows it: the map's own
// JSON form plus this pod's ordinal.
func (a *API) writeSlotMap(w http.ResponseWriter, m slotmap.Map) {
	b, err := m.MarshalJSON()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	// The map's JSON is an object: add "self" before its closing brace.
	out := append(b[:len(b)-1:len(b)-1], fmt.Sprintf(`,"self":%d}`, a.ordinal())...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(out, '\n'))
}

func (a *API) ordinal() int {
	if a.opt.Shards == nil {
		return 0
	}
	return a.opt.Shards.Ordinal()
}

func (a *API) getSlotMap(w http.ResponseWriter, _ *http.Request) {
	var m slotmap.Map
	if a.opt.Shards != nil {
		m = a.opt.Shards.Map()
	}
	if m.IsZero() {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "no slot map: this node serves every slot", "self": a.ordinal()})
		return
	}
	a.writeSlotMap(w, m)
}

func (a *API) putSlotMap(w http.ResponseWriter, r *http.Request) {
	if a.opt.Shards == nil {
		writeError(w, http.StatusConflict, "this node does not take a slot map: it was started without --peer-addr, so it cannot be one pod of a sharded PushNode")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	var m slotmap.Map
	if err := m.UnmarshalJSON(body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if m.IsZero() {
		writeError(w, http.StatusBadRequest, "the body must be a slot map object, not null")
		return
	}
	if a.opt.Moves != nil {
		if id := a.opt.Moves.Busy(); id != "" && !m.Equal(a.opt.Shards.Map()) {
			writeError(w, http.StatusConflict, "slot move "+id+" of this pod runs, and ends by installing its own map: hand this map again once it is done")
			return
		}
	}
	changed, err := a.opt.Shards.Install(m, a.core.Store().PutSlotMap)
	switch {
	case errors.Is(err, shard.ErrEpoch), errors.Is(err, shard.ErrMovesSlots):
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		a.log.Error("slot map not installed", "epoch", m.Epoch(), "err", err)
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if changed {
		a.log.Info("slot map installed", "epoch", m.Epoch())
	}
	a.writeSlotMap(w, a.opt.Shards.Map())
}

func (a *API) getSlotOwner(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	u, err := target(q.Get("uuid"), q.Get("userId"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out := api.SlotOwner{UUID: u.String(), Slot: int(slotmap.Slot(u)), Ordinal: a.ordinal(), Self: a.ordinal()}
	if a.opt.Shards != nil {
		if m := a.opt.Shards.Map(); !m.IsZero() {
			out.Epoch = m.Epoch()
			out.Ordinal = m.OwnerOf(u)
			out.Peer, _ = m.Peer(out.Ordinal)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// relayLookup answers a GET for a uuid (or a push id) homed on another
// pod with that pod's answer; it reports false when this pod answers
// itself.
func (a *API) relayLookup(w http.ResponseWriter, r *http.Request, home int) bool {
	s := a.opt.Shards
	if s == nil || home == s.Ordinal() || r.Header.Get(relayedHeader) != "" {
		return false
	}
	if home < 0 {
		writeError(w, http.StatusServiceUnavailable, "this pod has no slot map yet, so it cannot tell which pod to ask")
		return true
	}
	code, body, err := s.Lookup(r.Context(), home, r.URL.RequestURI())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("pod %d, which holds the answer, did not give it: %v", home, errors.Unwrap(err)))
		return true
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Home-Pod", strconv.Itoa(home))
	w.WriteHeader(code)
	_, _ = w.Write(body)
	return true
}

// relayedHeader marks a lookup another pod relayed here: it is answered
// here whatever this pod's map says, so that two pods whose maps
// disagree do not pass a lookup back and forth.
const relayedHeader = "X-Relayed-Lookup"

// homeOf is the pod that owns u, or this pod without a map.
func (a *API) homeOf(u wire.UUID) int {
	if a.opt.Shards == nil {
		return 0
	}
	o, _ := a.opt.Shards.Home(u)
	return o
}

// homeOfID is the pod that handed out push id, when the map names it.
func (a *API) homeOfID(id uint64) int {
	s := a.opt.Shards
	if s == nil {
		return 0
	}
	o, ok := slotmap.OrdinalOfID(id)
	if !ok {
		return s.Ordinal()
	}
	if _, named := s.Map().Peer(o); !named {
		return s.Ordinal()
	}
	return o
}

// Lookups serves the lookups other pods relay here: the GET routes of
// the API, without the token (the peer link is authenticated).
func (a *API) Lookups() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET "+api.PathPushes+"/{id}", params(a.getPush, "uuid"))
	m.HandleFunc("GET "+api.PathClients+"{uuid}", params(a.getClient, "userId"))
	m.HandleFunc("GET "+api.PathClients, params(a.getClient, "userId"))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set(relayedHeader, "1")
		m.ServeHTTP(w, r)
	})
}
