package shard

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/peer"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// The home side: what fronts relay for uuids homed here. These run on
// the reader of a front's stream and must not block; pushes and lookups
// go on their own goroutines and answer when done.

// PhonePacket implements peer.HomeHandler.
func (r *Router) PhonePacket(from *peer.Session, p *peer.PhonePacket) {
	r.clocks.lateness(from.Ordinal(), time.Now().UnixNano(), p.Arrival)
	var m wire.ClientMessage
	if wire.DecodeClient(p.Raw, &m) != nil {
		r.opt.Core.Stats().Drop(stats.DropRelayedMalformed)
		return
	}
	if !r.Local(m.UUID) {
		if r.holdRelayed(from, p, m.UUID) {
			return
		}
		// The front routed by another map than ours; the phone tries
		// again with its next heartbeat, by when the maps agree.
		r.opt.Core.Stats().Drop(stats.DropNotHome)
		return
	}
	bp := r.bufs.Get().(*[]byte)
	out := (*bp)[:0]
	if p.Transport == peer.TCP {
		out = r.opt.Core.HandleRelayed(p.Arrival, &m, state.TCP, netip.AddrPort{}, from.RemoteConn(p.ConnID), from.Ordinal(), out)
	} else {
		out = r.opt.Core.HandleRelayed(p.Arrival, &m, state.UDP, p.Addr, nil, from.Ordinal(), out)
	}
	if len(out) > 0 {
		_ = from.SendToPhone(&peer.ToPhone{Route: p.Route, Bytes: out})
	}
	*bp = out
	r.bufs.Put(bp)
}

// Detach implements peer.HomeHandler.
func (r *Router) Detach(from *peer.Session, d *peer.Detach) {
	conn := from.RemoteConn(d.ConnID)
	for _, u := range d.UUIDs {
		r.opt.Core.DetachRelayed(u, conn)
	}
}

// PushReq implements peer.HomeHandler.
func (r *Router) PushReq(from *peer.Session, q *peer.PushReq) {
	spec := core.PushSpec{UUID: q.UUID, Kind: state.Kind(q.Kind), Bits: q.Bits, Key: q.Key}
	if q.Budget > 0 {
		now := time.Now()
		left := q.Budget - r.clocks.lateness(from.Ordinal(), now.UnixNano(), q.SentAt)
		if left <= 0 {
			r.opt.Core.Stats().Drop(stats.DropRelayTooLate)
			_ = from.SendPushAns(&peer.PushAns{Corr: q.Corr, Status: peer.PushRefused,
				Reason: "the push reached its home after the relaying pod stopped waiting for it"})
			return
		}
		spec.NotAfter = now.Add(left)
	}
	if len(q.Payload) > 0 {
		spec.Payload = bytes.Clone(q.Payload)
	}
	corr := q.Corr
	go func() {
		// A push for a slot this pod gave away is forwarded to the
		// slot's new home: the front routed it by an older map.
		ctx, cancel := pushContext(spec)
		defer cancel()
		res, err := r.pushHome(ctx, spec)
		a := peer.PushAns{Corr: corr}
		var ie *core.InputError
		var kr *core.KeyReusedError
		var ue *UnreachableError
		if err == nil && res.Duplicate && !res.Relayed {
			// A key names one push: the home, which holds the first,
			// checks that this is the same push again.
			if first, ok, gerr := r.opt.Core.GetPush(res.ID); gerr == nil && ok {
				if why := core.KeyReuseDiffers(&first, &spec); why != "" {
					_ = from.SendPushAns(&peer.PushAns{Corr: corr, Status: peer.PushKeyReused, ID: first.ID, Reason: clip(why)})
					return
				}
			}
		}
		switch {
		case err == nil:
			a.Status, a.ID, a.Fate, a.Duplicate, a.AcceptedAt = peer.PushAccepted, res.ID, uint8(res.Fate), res.Duplicate, res.AcceptedAt.UnixNano()
		case errors.As(err, &ie):
			a.Status, a.Reason = peer.PushInvalid, clip(ie.Msg)
		case errors.As(err, &kr):
			a.Status, a.ID, a.Reason = peer.PushKeyReused, kr.ID, clip(kr.Why)
		case errors.As(err, &ue) && ue.Unknown:
			// Whether the pod it was forwarded to took it is unknown:
			// no answer, so that the front says "unknown" too rather
			// than "refused".
			return
		default:
			a.Status, a.Reason = peer.PushRefused, clip(err.Error())
		}
		_ = from.SendPushAns(&a)
	}()
}

// LookupReq implements peer.HomeHandler: the body is the path (with
// query) of a GET on this pod's HTTP API.
func (r *Router) LookupReq(from *peer.Session, q *peer.LookupReq) {
	corr, path := q.Corr, string(q.Body)
	go func() {
		a := peer.LookupAns{Corr: corr, Code: http.StatusNotFound, Body: []byte(`{"error":"this pod answers no lookups"}`)}
		if hp := r.lookups.Load(); hp != nil {
			h := *hp
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
			if err != nil {
				a.Code, a.Body = http.StatusBadRequest, []byte(`{"error":"bad lookup path"}`)
			} else {
				w := &recorder{code: http.StatusOK}
				h.ServeHTTP(w, req)
				a.Code, a.Body = uint16(w.code), w.body.Bytes()
				if len(a.Body) > peer.MaxLookupBody {
					a.Code, a.Body = http.StatusInternalServerError, []byte(`{"error":"lookup answer too large to relay"}`)
				}
			}
		}
		_ = from.SendLookupAns(&a)
	}()
}

// Lookup runs a GET of the HTTP API (path with query) at pod home.
func (r *Router) Lookup(ctx context.Context, home int, path string) (code int, body []byte, err error) {
	l := r.link(home)
	if l == nil {
		return 0, nil, &UnreachableError{Home: home, Err: peer.ErrLinkDown}
	}
	ans, err := l.Lookup(ctx, []byte(path))
	if err != nil {
		return 0, nil, &UnreachableError{Home: home, Err: err}
	}
	return int(ans.Code), ans.Body, nil
}

type recorder struct {
	code int
	body bytes.Buffer
	h    http.Header
}

func (w *recorder) Header() http.Header {
	if w.h == nil {
		w.h = http.Header{}
	}
	return w.h
}
func (w *recorder) Write(b []byte) (int, error) { return w.body.Write(b) }
func (w *recorder) WriteHeader(code int)        { w.code = code }

func clip(s string) string {
	if len(s) > peer.MaxReasonLen {
		return s[:peer.MaxReasonLen]
	}
	return s
}
