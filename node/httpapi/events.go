package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/store"
)

func eventJSON(e *store.EventWithKey) api.Event {
	return api.Event{Seq: e.Seq, PushID: e.PushID, UUID: e.UUID.String(), Kind: e.Kind.String(), Fate: e.Fate.String(),
		At: time.Unix(0, e.At).UTC(), Key: e.Key}
}

const maxEventsPerCall = 1000

func (a *API) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	from := q.Get("from")
	switch {
	case q.Has("from") && from != "now":
		writeError(w, http.StatusBadRequest, fmt.Sprintf(`from must be "now" (follow from the latest event), got %q`, from))
		return
	case from == "now" && q.Has("after"):
		writeError(w, http.StatusBadRequest, "give either after or from=now, not both")
		return
	}
	var after uint64
	if s := q.Get("after"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("after must be an event sequence number, got %q", s))
			return
		}
		after = v
	} else if s := r.Header.Get("Last-Event-ID"); s != "" {
		// A reconnecting event stream resumes where it was, even when
		// its address says from=now.
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("Last-Event-ID must be an event sequence number, got %q", s))
			return
		}
		after = v
	} else if from == "now" {
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
	if durable := a.core.DurableSeq(); after > durable {
		// The cursor is past the end of this node's log: its store was
		// replaced (moved aside, or restored from an older copy). Waiting
		// for events after the cursor would miss every new one: say so,
		// and where the log is now.
		writeJSON(w, http.StatusOK, api.Events{Events: []api.Event{}, Next: durable, Gap: true, Incarnation: a.core.Incarnation()})
		return
	}
	// A long poll answers after up to wait.
	a.extendWrite(w, wait)
	evs, err := a.core.Events(ctx, after, limit, wait)
	if err != nil && ctx.Err() == nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := api.Events{Events: make([]api.Event, 0, len(evs)), Next: after, Incarnation: a.core.Incarnation()}
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
	// The stream lasts as long as the follower stays; each write must
	// still be taken within WriteTimeout, so a follower that stopped
	// reading is let go.
	a.extendWrite(w, 0)
	rc := http.NewResponseController(w)
	writeWithin := func() {
		if a.opt.WriteTimeout > 0 {
			_ = rc.SetWriteDeadline(time.Now().Add(a.opt.WriteTimeout))
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if first := a.core.FirstEventSeq(); first > after+1 {
		fmt.Fprintf(w, "event: gap\ndata: {\"first\":%d}\n\n", first)
	} else if durable := a.core.DurableSeq(); after > durable {
		// The cursor is past the end of the log (see events): restart
		// the stream at the log's end.
		fmt.Fprintf(w, "event: gap\ndata: {\"first\":%d}\n\n", durable+1)
		after = durable
	}
	fl.Flush()
	for ctx.Err() == nil {
		start := time.Now()
		evs, err := a.core.Events(ctx, after, maxEventsPerCall, sseKeepAlive)
		if err != nil {
			return
		}
		writeWithin()
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
