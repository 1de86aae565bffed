package api

import (
	"context"
	"net/http"
	"net/url"
)

// Paths of slot moves (resharding). The operator starts a move at the
// source pod and reads its progress there; the source calls the target's
// import paths itself. All take the PushNode's API token.
const (
	// PathMoves: POST starts (or resumes) a move at its source;
	// GET /v1/moves/{id} reads it, at the source or at the target.
	PathMoves = "/v1/moves"
)

// Phases of a move, as its source reports them. A move is done when the
// target holds the slots and the source has deleted its copy; failed
// means it stopped with the slots still at the source (POST the same move
// again to retry).
const (
	MoveStreaming = "streaming" // records go to the target; the source still serves the slots
	MoveHandoff   = "handoff"   // the source holds the slots' new writes and sends the rest
	MoveCommitted = "committed" // the target serves the slots; the source forwards and deletes its copy
	MoveDone      = "done"
	MoveFailed    = "failed"
	// At the target: records arrive, and the slots are not served yet.
	MoveImporting = "importing"
)

// MoveRequest is the body of POST /v1/moves at the source pod. Map is the
// slot map that holds once the move is done: the pod's current map with
// some of its own slots given to Target, and the next epoch. The source
// and the target install it themselves; the caller hands it to the other
// pods afterwards (they keep forwarding to the source until then, which
// forwards on). ID names the move: POSTing the same ID again resumes it,
// or answers its state when it is done.
type MoveRequest struct {
	ID        string  `json:"id"`
	Map       SlotMap `json:"map"`
	Target    int     `json:"target"`
	TargetURL string  `json:"targetURL"` // the target pod's HTTP API, e.g. http://pod-2.svc:8080
}

// Move is the state of a move.
type Move struct {
	ID     string `json:"id"`
	Phase  string `json:"phase"`
	Source int    `json:"source"`
	Target int    `json:"target"`
	Epoch  uint64 `json:"epoch"` // of the map the move installs
	Slots  int    `json:"slots"`
	// Records and Pushes count what was sent to (or, at the target,
	// received from) the other side, the handoff's tail included.
	Records int64 `json:"records"`
	Pushes  int64 `json:"pushes"`
	// HoldMillis is how long the slots' writes were held in the handoff.
	HoldMillis float64 `json:"holdMillis,omitempty"`
	Error      string  `json:"error,omitempty"`
}

// StartMove starts or resumes a move at its source pod (202 while it
// runs, 200 when it is done).
func (c *Client) StartMove(ctx context.Context, r MoveRequest) (Move, error) {
	var m Move
	_, err := c.do(ctx, http.MethodPost, PathMoves, nil, r, &m)
	return m, err
}

// GetMove reads a move; a pod that knows no move of that id answers 404.
func (c *Client) GetMove(ctx context.Context, id string) (Move, error) {
	var m Move
	_, err := c.do(ctx, http.MethodGet, PathMoves+"/"+url.PathEscape(id), nil, nil, &m)
	return m, err
}

// What a move's source sends its target. These are pod-to-pod calls; the
// target checks them against its own slot map.

// MoveEntries is the body of POST /v1/moves/{id}/entries at the target: a
// batch of the slots' stored entries. First marks the move's first batch:
// the target then drops whatever an earlier attempt of the move left.
type MoveEntries struct {
	Source  int       `json:"source"`
	Target  int       `json:"target"`
	Slots   string    `json:"slots"` // e.g. "0-63,128"
	First   bool      `json:"first,omitempty"`
	Records []EntryKV `json:"records,omitempty"`
	Pushes  []EntryKV `json:"pushes,omitempty"`
	Keys    []EntryKV `json:"keys,omitempty"`
	Gone    [][]byte  `json:"gone,omitempty"` // uuids of records deleted since they were sent
	// Fronts say where the phones of the handoff's records are reached,
	// which stored records leave out.
	Fronts []MoveFront `json:"fronts,omitempty"`
}

// MoveFront is where one phone is reached: the pod whose socket its last
// UDP packet came through, and the pod holding its TCP connection (with
// that pod's incarnation and the connection's id there); -1 for none.
type MoveFront struct {
	UUID        []byte `json:"uuid"`
	UDP         int    `json:"udp"`
	TCP         int    `json:"tcp"`
	Incarnation uint64 `json:"incarnation,omitempty"`
	ConnID      uint64 `json:"connId,omitempty"`
}

// EntryKV is one stored entry.
type EntryKV struct {
	K []byte `json:"k"`
	V []byte `json:"v"`
}

// MoveCommit is the body of POST /v1/moves/{id}/commit at the target: the
// map the target installs, from which on it serves the slots.
type MoveCommit struct {
	Map SlotMap `json:"map"`
}

// SendMoveEntries sends a batch of a move's entries to its target.
func (c *Client) SendMoveEntries(ctx context.Context, id string, e *MoveEntries) error {
	_, err := c.do(ctx, http.MethodPost, PathMoves+"/"+url.PathEscape(id)+"/entries", nil, e, nil)
	return err
}

// CommitMove has the target serve the move's slots.
func (c *Client) CommitMove(ctx context.Context, id string, m MoveCommit) (Move, error) {
	var out Move
	_, err := c.do(ctx, http.MethodPost, PathMoves+"/"+url.PathEscape(id)+"/commit", nil, m, &out)
	return out, err
}

// AbortMove has the target drop what a move sent it; it refuses once
// the move committed.
func (c *Client) AbortMove(ctx context.Context, id string) (Move, error) {
	var out Move
	_, err := c.do(ctx, http.MethodPost, PathMoves+"/"+url.PathEscape(id)+"/abort", nil, struct{}{}, &out)
	return out, err
}
