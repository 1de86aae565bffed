package httpapi

import (
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/shard"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/wire"
)

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
		if *bits == 0 {
			// Pending bits are ORed together and only what is set is
			// sent: a zero mask would reach no phone, yet read as done.
			return p, errors.New("bits is 0: a classified push needs at least one bit set; with none there is nothing to send to the phone")
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
		if !utf8.ValidString(h) {
			// Keys come back in JSON (pushes, events), which cannot carry
			// these bytes: a follower would never see its key again.
			writeError(w, http.StatusBadRequest, "the Idempotency-Key header is not valid UTF-8")
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
		st.Push(stats.FromHTTP, spec.Kind, stats.PushRejected)
		var kr *core.KeyReusedError
		if errors.As(err, &kr) {
			// Checked at the home, which holds the first push.
			e := api.Error{Error: kr.Error()}
			if code, body, lerr := a.opt.Shards.Lookup(r.Context(), a.homeOf(u), api.PathPushes+"/"+strconv.FormatUint(kr.ID, 10)); lerr == nil && code == http.StatusOK {
				var first api.Push
				if json.Unmarshal(body, &first) == nil {
					e.Push = &first
				}
			}
			writeJSON(w, http.StatusUnprocessableEntity, e)
			return
		}
		var ue *shard.UnreachableError
		if errors.As(err, &ue) {
			a.logs.Log(slog.LevelWarn, "push not relayed", "push to another pod not answered", "uuid", u.String(), "home", ue.Home, "err", err)
			code := http.StatusServiceUnavailable
			if ue.Unknown {
				code = http.StatusGatewayTimeout
			}
			writeError(w, code, err.Error())
			return
		}
		a.logs.Log(slog.LevelError, "push failed", "push failed", "uuid", u.String(), "err", err)
		writeError(w, http.StatusServiceUnavailable, "the push could not be made durable: "+err.Error())
		return
	}
	code := http.StatusCreated
	if res.Duplicate {
		code = http.StatusOK
		if p, ok, err := a.core.GetPush(res.ID); err == nil && ok && !res.Relayed {
			out := a.pushJSON(&p)
			if why := core.KeyReuseDiffers(&p, &spec); why != "" {
				// A key names one push: answering the first for a
				// different request would report a push that was not made.
				st.Push(stats.FromHTTP, spec.Kind, stats.PushRejected)
				writeJSON(w, http.StatusUnprocessableEntity, api.Error{Push: &out, Error: (&core.KeyReusedError{Key: spec.Key, ID: p.ID, Why: why}).Error()})
				return
			}
			st.Push(stats.FromHTTP, spec.Kind, stats.PushDuplicate)
			out.Duplicate = true
			writeJSON(w, code, out)
			return
		}
		st.Push(stats.FromHTTP, spec.Kind, stats.PushDuplicate)
	} else {
		st.Push(stats.FromHTTP, spec.Kind, stats.PushAccepted)
	}
	out := api.Push{ID: res.ID, UUID: res.UUID.String(), Kind: res.Kind.String(), Fate: res.Fate.String(),
		AcceptedAt: res.AcceptedAt.UTC(), Key: spec.Key, Duplicate: res.Duplicate, Incarnation: a.core.Incarnation()}
	if res.Relayed {
		// Another pod's store holds it: this one's id would be wrong.
		out.Incarnation = ""
		w.Header().Set("X-Home-Pod", strconv.Itoa(res.Home))
	}
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
	if err := repeatedTarget(req.UUIDs, req.UserIDs); err != nil {
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
	var refused error
	unknown := 0
	for range jobs {
		d := <-ch
		if d.err != nil {
			refused = d.err
			resp.Results[d.idx].Error = d.err.Error()
			var ue *shard.UnreachableError
			if errors.As(d.err, &ue) && ue.Unknown {
				resp.Results[d.idx].Unknown = true
				unknown++
			}
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
	// Nothing accepted because the node could not make it durable: say
	// so in the status, as a single push does, not only in the body.
	code := http.StatusOK
	switch {
	case resp.Accepted == 0 && unknown > 0:
		code = http.StatusGatewayTimeout
		resp.Error = fmt.Sprintf("no target is known to be accepted: for %d the home pod did not answer in time, so they may have been (see each result)", unknown)
	case resp.Accepted == 0 && refused != nil:
		code = http.StatusServiceUnavailable
		resp.Error = "no target was accepted: the pushes could not be made durable: " + refused.Error()
	}
	writeJSON(w, code, resp)
}

// repeatedTarget refuses a bulk push that names a client twice (a uuid
// repeated, in any case, or given both as a uuid and as the user id it
// derives from) or names an empty user id. Pushing twice would supersede
// the first push with the second, and quietly dropping one would leave
// the results out of step with the request: either way the caller's list
// holds a mistake they should see.
func repeatedTarget(uuids, userIDs []string) error {
	first := make(map[wire.UUID]string, len(uuids)+len(userIDs))
	see := func(u wire.UUID, name string) error {
		if prev, ok := first[u]; ok {
			return fmt.Errorf("%s and %s are the same client (uuid %s): name each client once in a bulk push", prev, name, u)
		}
		first[u] = name
		return nil
	}
	for i, s := range uuids {
		u, err := wire.ParseUUID(s)
		if err != nil {
			continue // reported in its result
		}
		if err := see(u, fmt.Sprintf("uuids[%d] %q", i, s)); err != nil {
			return err
		}
	}
	for i, s := range userIDs {
		if s == "" {
			return fmt.Errorf("userIds[%d] is empty: a user id names a client", i)
		}
		if err := see(UserUUID(s), fmt.Sprintf("userIds[%d] %q", i, s)); err != nil {
			return err
		}
	}
	return nil
}
