package httpapi

import (
	"net/http"
	"time"
)

// Every request gets deadlines as soon as its headers are read, before it
// is authenticated: its body must arrive within ReadTimeout and its answer
// be taken within WriteTimeout, so that a peer sending a Content-Length
// and no body, or reading nothing, holds its connection for a bounded
// time. The server itself has no ReadTimeout or WriteTimeout: those would
// end the event streams and long polls, which move their own deadlines
// once authenticated (events.go).

// setDeadlines starts the deadlines of a request.
func (a *API) setDeadlines(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	now := time.Now()
	if a.opt.ReadTimeout > 0 {
		_ = rc.SetReadDeadline(now.Add(a.opt.ReadTimeout))
	}
	if a.opt.WriteTimeout > 0 {
		_ = rc.SetWriteDeadline(now.Add(a.opt.WriteTimeout))
	}
}

// extendWrite gives the answer until d from now plus WriteTimeout, and
// lifts the read deadline: these requests have no body, and once it was
// read, a read deadline passing would cancel the request's context.
func (a *API) extendWrite(w http.ResponseWriter, d time.Duration) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	if a.opt.WriteTimeout > 0 {
		_ = rc.SetWriteDeadline(time.Now().Add(d + a.opt.WriteTimeout))
	}
}

// untimed lifts both deadlines of an authenticated request that lasts as
// long as it asks (a CPU profile or a trace).
func untimed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		h(w, r)
	}
}
