package httpapi

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/store"
)

func optTime(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	t := time.Unix(0, ns).UTC()
	return &t
}

func (a *API) pushJSON(p *store.Push) api.Push {
	out := api.Push{ID: p.ID, UUID: p.UUID.String(), Kind: p.Kind.String(), Fate: p.Fate.String(), Key: p.Key,
		AcceptedAt: time.Unix(0, p.AcceptedAt).UTC(), SentAt: optTime(p.SentAt), FinishedAt: optTime(p.DoneAt),
		Incarnation: a.core.Incarnation()}
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
	// A push lives at its uuid's home, which handed out its id unless
	// a slot move brought it there: with the uuid given, ask its home;
	// without, look here first, then ask the pod that handed the id out.
	if us := r.URL.Query().Get("uuid"); us != "" {
		u, err := target(us, "")
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if a.relayLookup(w, r, a.homeOf(u)) {
			return
		}
	}
	p, ok, err := a.core.GetPush(id)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if !ok && r.URL.Query().Get("uuid") == "" && a.relayLookup(w, r, a.homeOfID(id)) {
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("push %d is not known (never accepted, or finished and trimmed)", id))
		return
	}
	writeJSON(w, http.StatusOK, a.pushJSON(&p))
}

func (a *API) getClient(w http.ResponseWriter, r *http.Request) {
	u, err := target(r.PathValue("uuid"), r.URL.Query().Get("userId"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if a.relayLookup(w, r, a.homeOf(u)) {
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
		Ready:          a.Ready(),
		Incarnation:    c.Incarnation(),
		LastPushID:     c.LastPushID(),
	}
	if sh := a.opt.Shards; sh != nil {
		s.Ordinal = sh.Ordinal()
		if m := sh.Map(); !m.IsZero() {
			s.SlotMap = &api.SlotMapStatus{Epoch: m.Epoch(), Slots: m.SlotCount(sh.Ordinal()), Ranges: m.Ranges(sh.Ordinal())}
		}
		for _, l := range sh.Links() {
			s.Peers = append(s.Peers, api.PeerStatus{Ordinal: l.PeerOrdinal(), Addr: l.Addr(), Up: l.Up(), LastError: l.LastError()})
		}
	}
	if err := c.StoreErr(); err != nil {
		s.StoreError = err.Error()
	}
	for f := state.Queued; f <= state.Expired; f++ {
		s.Deliveries[f.String()] = st.Deliveries[f].Load()
	}
	if a.opt.TCPClients != nil {
		s.TCPClients = a.opt.TCPClients()
	}
	return s
}

// maxExpireHours is the longest age a time.Duration holds, in whole hours
// (about 292 years).
const maxExpireHours = float64(math.MaxInt64 / int64(time.Hour))

func (a *API) expire(w http.ResponseWriter, r *http.Request) {
	var req api.ExpireRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// An age past what a Duration holds has no defined conversion to one
	// (the result depends on the CPU): refuse it rather than guess.
	if req.OlderThanHours == nil || !(*req.OlderThanHours >= 0 && *req.OlderThanHours <= maxExpireHours) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf(`olderThanHours is required, from 0 to %d, e.g. {"olderThanHours": 48}`, int64(maxExpireHours)))
		return
	}
	age := time.Duration(*req.OlderThanHours * float64(time.Hour))
	n, err := a.core.Expire(age)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "nothing was removed: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, api.ExpireResponse{Removed: n})
}
