package httpapi

import (
	"crypto/subtle"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// compat is the old HttpPushServer bridge: GET /?act=user&type=10|11|20&
// uuid=…&data=…&ticket=…, answered text/plain "1" (pushed) or "0". It
// reads the query as that bridge did (compatQuery), so that what the old
// web manager sends is pushed as before; docs/protocol.md lists how.
func (a *API) compat(w http.ResponseWriter, r *http.Request) {
	q := compatQuery(r.URL.RawQuery)
	if q["act"] == "" && q["ticket"] == "" {
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
			// Debug: one line per request would let any caller flood the log.
			a.log.Debug("compat push refused", "reason", why, "remote", r.RemoteAddr)
			io.WriteString(w, "0")
			return
		}
		io.WriteString(w, "1")
	}
	if r.Method != http.MethodGet {
		// A HEAD (a link checker, a monitor) must not push.
		answer(false, "only GET pushes")
		return
	}
	if a.opt.CompatTicket == "" {
		answer(false, "the compatibility endpoint is disabled (no ticket configured)")
		return
	}
	if subtle.ConstantTimeCompare([]byte(q["ticket"]), []byte(a.opt.CompatTicket)) != 1 {
		answer(false, "wrong ticket")
		return
	}
	if !strings.EqualFold(q["act"], "user") {
		answer(false, fmt.Sprintf("act %q is not supported (only act=user)", q["act"]))
		return
	}
	u, err := wire.ParseUUID(q["uuid"])
	if err != nil {
		answer(false, err.Error())
		return
	}
	spec := core.PushSpec{UUID: u}
	data := q["data"]
	switch q["type"] {
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
		answer(false, fmt.Sprintf("type %q is not 10, 11 or 20", q["type"]))
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

// compatQuery reads a query string the way the HttpPushServer bridge
// read its request line: pairs split on '&' only (a ';' is data, not a
// separator), each split at its first '=' (a pair without one has an
// empty value), names in any case, and the last of a repeated name
// winning. Values are URL-decoded ('+' is a space); one whose escapes are
// broken is dropped, as the bridge failed on it. Raw spaces and control
// characters in the request line reach here percent-encoded by
// CompatListener.
func compatQuery(raw string) map[string]string {
	q := map[string]string{}
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		v, err := url.QueryUnescape(value)
		if err != nil {
			delete(q, strings.ToLower(name))
			continue
		}
		q[strings.ToLower(name)] = v
	}
	return q
}
