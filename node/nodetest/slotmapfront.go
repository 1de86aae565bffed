package nodetest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// SlotMapFront stands in front of a real node's HTTP port and answers the
// slot map part of the API (GET /v1/slotmap, GET /v1/slotmap/owner, the
// ordinal, slotmap and peers of GET /v1/status) as a pod of a sharded
// PushNode does; everything else goes to the node unchanged. It lets the
// tools that show slot maps be tested before every node serves them: only
// what the node cannot answer yet is answered here.
type SlotMapFront struct {
	URL string

	mu   sync.Mutex
	self int
	m    slotmap.Map
	up   map[int]bool
}

// StartSlotMapFront serves n's API at the returned front's URL as the pod
// with ordinal self holding m (the zero Map: no map). up says which peer
// links are up; the others are down.
func StartSlotMapFront(t testing.TB, n *Node, self int, m slotmap.Map, up map[int]bool) *SlotMapFront {
	t.Helper()
	f := &SlotMapFront{self: self, m: m, up: up}
	target, err := url.Parse("http://" + n.HTTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1 // event streams go through as they are written
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathSlotMap, f.auth(f.getMap))
	mux.HandleFunc("GET "+api.PathSlotMapOwner, f.auth(f.owner))
	mux.HandleFunc("GET "+api.PathStatus, f.auth(func(w http.ResponseWriter, r *http.Request) { f.status(w, r, proxy) }))
	mux.Handle("/", proxy)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// Set replaces the map and the peer link states.
func (f *SlotMapFront) Set(m slotmap.Map, up map[int]bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m, f.up = m, up
}

func (f *SlotMapFront) state() (int, slotmap.Map, map[int]bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.self, f.m, f.up
}

func (f *SlotMapFront) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+Token {
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid bearer token"})
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *SlotMapFront) noMap(w http.ResponseWriter, self int) {
	writeJSON(w, http.StatusNotFound, map[string]any{"error": "this node has no slot map: it serves every slot", "self": self})
}

func (f *SlotMapFront) getMap(w http.ResponseWriter, r *http.Request) {
	self, m, _ := f.state()
	if m.IsZero() {
		f.noMap(w, self)
		return
	}
	b, err := m.MarshalJSON()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error()})
		return
	}
	var doc map[string]any
	_ = json.Unmarshal(b, &doc)
	doc["self"] = self
	writeJSON(w, http.StatusOK, doc)
}

func (f *SlotMapFront) owner(w http.ResponseWriter, r *http.Request) {
	self, m, _ := f.state()
	q := r.URL.Query()
	hex, user := q.Get("uuid"), q.Get("userId")
	var u wire.UUID
	switch {
	case hex != "" && user != "":
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "give either uuid or userId, not both"})
		return
	case hex != "":
		var err error
		if u, err = wire.ParseUUID(hex); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error()})
			return
		}
	case q.Has("userId"):
		u = httpapi.UserUUID(user)
	default:
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "give uuid or userId"})
		return
	}
	if m.IsZero() {
		f.noMap(w, self)
		return
	}
	o := m.OwnerOf(u)
	peer, _ := m.Peer(o)
	writeJSON(w, http.StatusOK, api.SlotOwner{UUID: u.String(), Slot: int(slotmap.Slot(u)), Ordinal: o, Peer: peer, Self: self, Epoch: m.Epoch()})
}

// status adds the sharding fields to the node's own answer.
func (f *SlotMapFront) status(w http.ResponseWriter, r *http.Request, proxy http.Handler) {
	rec := httptest.NewRecorder()
	proxy.ServeHTTP(rec, r)
	var doc map[string]any
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &doc) != nil {
		w.WriteHeader(rec.Code)
		_, _ = io.Copy(w, bytes.NewReader(rec.Body.Bytes()))
		return
	}
	self, m, up := f.state()
	doc["ordinal"] = self
	if !m.IsZero() {
		doc["slotmap"] = api.StatusSlotMap{Epoch: m.Epoch(), Slots: m.SlotCount(self), Ranges: m.Ranges(self)}
		var peers []api.StatusPeer
		for _, o := range m.Ordinals() {
			if o == self {
				continue
			}
			addr, _ := m.Peer(o)
			peers = append(peers, api.StatusPeer{Ordinal: o, Addr: addr, Up: up[o]})
		}
		doc["peers"] = peers
	}
	writeJSON(w, http.StatusOK, doc)
}

// EvenMap is slotmap.EvenSplit over n ordinals with made-up peer
// addresses, failing the test on error.
func EvenMap(t testing.TB, n int, epoch uint64) slotmap.Map {
	t.Helper()
	peers := map[int]string{}
	for o := range n {
		peers[o] = "pushnode-" + strconv.Itoa(o) + ".pushnode-peers:9977"
	}
	m, err := slotmap.EvenSplit(n, epoch, peers)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
