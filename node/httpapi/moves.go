package httpapi

import (
	"errors"
	"net/http"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/reshard"
)

// Slot moves: the operator starts one at its source and follows it; the
// source calls the target's entries, commit and abort.

func (a *API) routeMoves(m *http.ServeMux) {
	m.HandleFunc("POST "+api.PathMoves, a.auth(params(a.startMove)))
	m.HandleFunc("GET "+api.PathMoves+"/{id}", a.auth(params(a.getMove)))
	m.HandleFunc("POST "+api.PathMoves+"/{id}/entries", a.auth(params(a.moveEntries)))
	m.HandleFunc("POST "+api.PathMoves+"/{id}/commit", a.auth(params(a.commitMove)))
	m.HandleFunc("POST "+api.PathMoves+"/{id}/abort", a.auth(params(a.abortMove)))
}

// moves is the mover, or nil after answering that this node takes no
// moves.
func (a *API) moves(w http.ResponseWriter) *reshard.Mover {
	if a.opt.Moves == nil {
		writeError(w, http.StatusConflict, "this node takes no slot moves: it was started without --peer-addr, so it is not one pod of a sharded PushNode")
	}
	return a.opt.Moves
}

func writeMoveError(w http.ResponseWriter, err error) {
	var ie *reshard.InputError
	var ce *reshard.ConflictError
	switch {
	case errors.As(err, &ie):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.As(err, &ce):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	}
}

func (a *API) startMove(w http.ResponseWriter, r *http.Request) {
	mv := a.moves(w)
	if mv == nil {
		return
	}
	var req api.MoveRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	got, err := mv.Start(req)
	if err != nil {
		writeMoveError(w, err)
		return
	}
	code := http.StatusAccepted
	if got.Phase == api.MoveDone {
		code = http.StatusOK
	}
	writeJSON(w, code, got)
}

func (a *API) getMove(w http.ResponseWriter, r *http.Request) {
	mv := a.moves(w)
	if mv == nil {
		return
	}
	got, ok := mv.Get(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "this pod takes part in no move "+r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, got)
}

func (a *API) moveEntries(w http.ResponseWriter, r *http.Request) {
	mv := a.moves(w)
	if mv == nil {
		return
	}
	var e api.MoveEntries
	if err := decodeBody(w, r, &e); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := mv.Entries(r.PathValue("id"), &e); err != nil {
		writeMoveError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) commitMove(w http.ResponseWriter, r *http.Request) {
	mv := a.moves(w)
	if mv == nil {
		return
	}
	var c api.MoveCommit
	if err := decodeBody(w, r, &c); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	got, err := mv.Commit(r.PathValue("id"), c)
	if err != nil {
		writeMoveError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, got)
}

func (a *API) abortMove(w http.ResponseWriter, r *http.Request) {
	mv := a.moves(w)
	if mv == nil {
		return
	}
	got, err := mv.Abort(r.PathValue("id"))
	if err != nil {
		writeMoveError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, got)
}
