// Package api holds the JSON types of the node's HTTP API and a Go client
// for it, shared by the node, pushctl and the operator so that they cannot
// disagree on the wire format.
package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Paths of the HTTP API.
const (
	PathPushes     = "/v1/pushes"      // POST: push one; GET /v1/pushes/{id}: its fate
	PathPushesBulk = "/v1/pushes/bulk" // POST: push to many
	PathClients    = "/v1/clients/"    // GET /v1/clients/{uuid} or /v1/clients/?userId=
	PathStatus     = "/v1/status"      // GET
	PathExpire     = "/v1/expire"      // POST
	PathEvents     = "/v1/events"      // GET: long poll, or SSE with Accept: text/event-stream
	PathSlotMap    = "/v1/slotmap"     // GET, PUT: the pod's slot map
	PathSlotOwner  = "/v1/slotmap/owner"
	PathHealthz    = "/healthz"
	PathReadyz     = "/readyz"
	PathMetrics    = "/metrics"

	// HeaderIdempotencyKey may carry a push's idempotency key instead of
	// the body's "key".
	HeaderIdempotencyKey = "Idempotency-Key"
)

// Kinds and fates as they appear in JSON.
const (
	KindGeneral    = "general"
	KindClassified = "classified"
	KindCustom     = "custom"

	FateQueued       = "queued"
	FateSent         = "sent"
	FateAcknowledged = "acknowledged"
	FateSuperseded   = "superseded"
	FateExpired      = "expired"
)

// Bits is a 64-bit mask. It reads a JSON number, a decimal string or a
// "0x" hex string, and writes a hex string, because JavaScript numbers
// cannot hold every 64-bit value.
type Bits uint64

// MarshalJSON writes "0x…".
func (b Bits) MarshalJSON() ([]byte, error) {
	return []byte(`"0x` + strconv.FormatUint(uint64(b), 16) + `"`), nil
}

// UnmarshalJSON reads a number or a string.
func (b *Bits) UnmarshalJSON(data []byte) error {
	s := string(data)
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
	}
	v, err := ParseBits(s)
	if err != nil {
		return err
	}
	*b = Bits(v)
	return nil
}

// ParseBits reads a decimal or 0x-prefixed hex 64-bit mask.
func ParseBits(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	var v uint64
	var err error
	if h, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok {
		v, err = strconv.ParseUint(h, 16, 64)
	} else {
		v, err = strconv.ParseUint(s, 10, 64)
	}
	if err != nil {
		return 0, fmt.Errorf("bits must be a 64-bit unsigned number (decimal or 0x hex), got %q", s)
	}
	return v, nil
}

// PushRequest is the body of POST /v1/pushes. Exactly one of UUID and
// UserID names the target; UserID is hashed with MD5 as DDPush clients do.
type PushRequest struct {
	UUID   string `json:"uuid,omitempty"`
	UserID string `json:"userId,omitempty"`
	Kind   string `json:"kind"`
	Bits   *Bits  `json:"bits,omitempty"`
	// Data is a Custom payload as text (sent as its UTF-8 bytes).
	Data string `json:"data,omitempty"`
	// BinaryData is a Custom payload as base64.
	BinaryData []byte `json:"binaryData,omitempty"`
	// Key makes the push idempotent: the node answers a repeated key with
	// the first push instead of pushing again.
	Key string `json:"key,omitempty"`
}

// BulkPushRequest is the body of POST /v1/pushes/bulk: one message to
// many targets.
type BulkPushRequest struct {
	UUIDs      []string `json:"uuids,omitempty"`
	UserIDs    []string `json:"userIds,omitempty"`
	Kind       string   `json:"kind"`
	Bits       *Bits    `json:"bits,omitempty"`
	Data       string   `json:"data,omitempty"`
	BinaryData []byte   `json:"binaryData,omitempty"`
}

// MaxBulkTargets bounds one bulk request.
const MaxBulkTargets = 10000

// Push is an accepted push and what became of it.
type Push struct {
	ID         uint64     `json:"id"`
	UUID       string     `json:"uuid"`
	Kind       string     `json:"kind"`
	Fate       string     `json:"fate"`
	Size       int        `json:"size,omitempty"`
	Bits       *Bits      `json:"bits,omitempty"`
	Key        string     `json:"key,omitempty"`
	AcceptedAt time.Time  `json:"acceptedAt"`
	SentAt     *time.Time `json:"sentAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	// Duplicate is true when the idempotency key was seen before and
	// this is the earlier push.
	Duplicate bool `json:"duplicate,omitempty"`
	// Incarnation is the id of the store holding the push (see
	// Status.Incarnation): a push id names this push only together with it.
	Incarnation string `json:"incarnation,omitempty"`
}

// BulkResult is one target of a bulk push.
type BulkResult struct {
	Target string `json:"target"`
	UUID   string `json:"uuid,omitempty"`
	ID     uint64 `json:"id,omitempty"`
	Fate   string `json:"fate,omitempty"`
	Error  string `json:"error,omitempty"`
	// Unknown is set with Error when the target's home pod (of a sharded
	// PushNode) did not answer in time: the push may have been accepted.
	Unknown bool `json:"unknown,omitempty"`
}

// BulkPushResponse answers POST /v1/pushes/bulk: 200 when any target
// was accepted, 503 when none was (each certainly refused), 504 when none
// was accepted and for some the outcome is unknown.
type BulkPushResponse struct {
	Accepted int          `json:"accepted"`
	Rejected int          `json:"rejected"`
	Results  []BulkResult `json:"results"`
	// Error says why, when no target was accepted.
	Error string `json:"error,omitempty"`
}

// Pending is one message waiting for a client's ack.
type Pending struct {
	Kind   string    `json:"kind"`
	PushID uint64    `json:"pushId"`
	At     time.Time `json:"at"`
	Sent   bool      `json:"sent"`
	// Fate is "queued" or "sent": a pending message has no other.
	Fate string `json:"fate"`
	Bits *Bits  `json:"bits,omitempty"`
	Size int    `json:"size,omitempty"`
	// Data is the pending custom payload, as base64.
	Data []byte `json:"data,omitempty"`
}

// ClientInfo answers GET /v1/clients/{uuid}.
type ClientInfo struct {
	UUID          string     `json:"uuid"`
	Online        bool       `json:"online"`
	Transport     string     `json:"transport,omitempty"` // udp, tcp, udp+tcp, or empty when offline
	LastHeartbeat *time.Time `json:"lastHeartbeat,omitempty"`
	// LastActivity is the last heartbeat, or the push that created the
	// record; expiry counts from it.
	LastActivity time.Time  `json:"lastActivity"`
	Address      string     `json:"address,omitempty"` // last UDP source
	Pending      []Pending  `json:"pending"`
	Mask         Bits       `json:"mask"`
	LastChange   LastChange `json:"lastChange"`
}

// LastChange is the time of the last push of each kind.
type LastChange struct {
	General    *time.Time `json:"general,omitempty"`
	Classified *time.Time `json:"classified,omitempty"`
	Custom     *time.Time `json:"custom,omitempty"`
}

// Status answers GET /v1/status.
type Status struct {
	Version        string            `json:"version"`
	Records        int64             `json:"records"`
	Online         int64             `json:"online"`
	PacketsIn      map[string]uint64 `json:"packetsIn"`
	PacketsOut     map[string]uint64 `json:"packetsOut"`
	Pushes         map[string]uint64 `json:"pushes"`
	Deliveries     map[string]uint64 `json:"deliveries"`
	Drops          map[string]uint64 `json:"drops"`
	UptimeSeconds  float64           `json:"uptimeSeconds"`
	StoreBytes     int64             `json:"storeBytes"`
	EventSeq       uint64            `json:"eventSeq"`
	MaxContentLen  int               `json:"maxContentLength"`
	TCPClients     int64             `json:"tcpClients"`
	StartedAt      time.Time         `json:"startedAt"`
	HeartbeatRule  string            `json:"heartbeatPolicy"`
	ExpiryAgeHours float64           `json:"expiryAgeHours"`
	// Ready is what /readyz says: false while stopping or while the
	// store's commits fail.
	Ready bool `json:"ready"`
	// StoreError is why the store's commits fail, while they do.
	StoreError string `json:"storeError,omitempty"`
	// Incarnation is the id of the node's store, generated when the store
	// was created: the same across restarts, new when the store is
	// replaced by an empty one (push ids and event numbers then start
	// again, so they name other pushes and events than before).
	Incarnation string `json:"incarnation"`
	// LastPushID is the last push id handed out: every push this store
	// accepted has an id at most this. A client that knows an accepted
	// push with a greater id, from this incarnation, knows that the store
	// was put back to an older copy and that the push is gone.
	LastPushID uint64 `json:"lastPushId"`
	// Ordinal is this pod's ordinal in its PushNode (0 for a node that is
	// not sharded).
	Ordinal int `json:"ordinal"`
	// SlotMap summarises the slot map; absent when the node has none and
	// serves every slot.
	SlotMap *SlotMapStatus `json:"slotmap,omitempty"`
	// Peers are the links this pod dialed to the other pods.
	Peers []PeerStatus `json:"peers,omitempty"`
}

// SlotMapStatus is what /v1/status says of the slot map.
type SlotMapStatus struct {
	Epoch  uint64 `json:"epoch"`
	Slots  int    `json:"slots"`  // slots homed on this pod
	Ranges string `json:"ranges"` // e.g. "0-341", "-" for none
}

// PeerStatus is one peer link of /v1/status.
type PeerStatus struct {
	Ordinal   int    `json:"ordinal"`
	Addr      string `json:"addr"`
	Up        bool   `json:"up"`
	LastError string `json:"lastError,omitempty"`
}

// SlotOwner answers GET /v1/slotmap/owner.
type SlotOwner struct {
	UUID    string `json:"uuid"`
	Slot    int    `json:"slot"`
	Ordinal int    `json:"ordinal"`
	Peer    string `json:"peer,omitempty"`
	Self    int    `json:"self"`
	Epoch   uint64 `json:"epoch"`
}

// ExpireRequest is the body of POST /v1/expire: remove records whose last
// activity is older than the given hours (the Java console's clean-N).
type ExpireRequest struct {
	OlderThanHours *float64 `json:"olderThanHours"`
}

// ExpireResponse answers POST /v1/expire.
type ExpireResponse struct {
	Removed int `json:"removed"`
}

// Event is one delivery event.
type Event struct {
	Seq    uint64    `json:"seq"`
	PushID uint64    `json:"pushId"`
	UUID   string    `json:"uuid"`
	Kind   string    `json:"kind"`
	Fate   string    `json:"fate"`
	At     time.Time `json:"at"`
	Key    string    `json:"key,omitempty"`
}

// Events answers GET /v1/events.
type Events struct {
	Events []Event `json:"events"`
	// Next is the cursor for the following call (the last seq returned,
	// or the one given when nothing came).
	Next uint64 `json:"next"`
	// Gap is true when events after the given cursor were already
	// trimmed, or when the cursor is past the end of the node's log (its
	// store was replaced, and Next is the log's end): either way the
	// follower missed some and should look up what it waits for.
	Gap bool `json:"gap,omitempty"`
	// Incarnation is the id of the store whose log these events are
	// from: a cursor kept from a store of another incarnation means
	// nothing in this log.
	Incarnation string `json:"incarnation,omitempty"`
}

// Error is every error body.
type Error struct {
	Error string `json:"error"`
	// Push is the push an idempotency key was first used for, when a
	// request reusing the key differs from it (422).
	Push *Push `json:"push,omitempty"`
}
