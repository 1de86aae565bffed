package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
)

// Paths of the slot map: which pod of a sharded PushNode is the home of a
// uuid.
const (
	PathSlotMap      = "/v1/slotmap"       // GET, PUT
	PathSlotMapOwner = "/v1/slotmap/owner" // GET ?uuid=HEX or ?userId=STR
)

// SlotRange gives the slots From..To (inclusive) to an ordinal.
type SlotRange struct {
	From    int `json:"from"`
	To      int `json:"to"`
	Ordinal int `json:"ordinal"`
}

// SlotMap answers GET /v1/slotmap. Peers maps an ordinal, as a decimal
// string, to the peer-link address of its pod; Self is the ordinal of the
// pod that answered.
type SlotMap struct {
	Epoch  uint64            `json:"epoch"`
	Ranges []SlotRange       `json:"ranges"`
	Peers  map[string]string `json:"peers"`
	Self   int               `json:"self"`
}

// SlotOwner answers GET /v1/slotmap/owner: the home of a uuid.
type SlotOwner struct {
	UUID    string `json:"uuid"`
	Slot    int    `json:"slot"`
	Ordinal int    `json:"ordinal"`
	Peer    string `json:"peer"`
	Self    int    `json:"self"`
	Epoch   uint64 `json:"epoch"`
}

// StatusSlotMap summarises the slot map in GET /v1/status.
type StatusSlotMap struct {
	Epoch uint64 `json:"epoch"`
	// Slots is how many slots this pod owns, Ranges which ("0-341").
	Slots  int    `json:"slots"`
	Ranges string `json:"ranges"`
}

// StatusPeer is one peer link of this pod in GET /v1/status.
type StatusPeer struct {
	Ordinal int    `json:"ordinal"`
	Addr    string `json:"addr"`
	Up      bool   `json:"up"`
}

// NoSlotMapError is the 404 of a node that has no slot map: it serves
// every slot itself.
type NoSlotMapError struct {
	Message string
	// Self is the ordinal of the node that answered; -1 when it did not
	// say (a node from before slot maps).
	Self int
}

func (e *NoSlotMapError) Error() string { return "the node has no slot map: " + e.Message }

// noMap turns a 404 into a NoSlotMapError. A 404 that names the node's
// ordinal comes from a node without a map; one that does not comes from a
// node that predates slot maps, which is unsharded too.
func noMap(err error) error {
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotFound {
		return err
	}
	var e struct {
		Self *int `json:"self"`
	}
	self := -1
	if json.Unmarshal(se.Body, &e) == nil && e.Self != nil {
		self = *e.Self
	}
	return &NoSlotMapError{Message: se.Message, Self: self}
}

// SlotMap reads the node's slot map. A node without one answers a
// *NoSlotMapError.
func (c *Client) SlotMap(ctx context.Context) (SlotMap, error) {
	var out SlotMap
	_, err := c.do(ctx, http.MethodGet, PathSlotMap, nil, nil, &out)
	return out, noMap(err)
}

// SlotOwner asks the node which pod is the home of a uuid (uuid set) or
// of the uuid a user id derives from (userID set). A node without a map
// answers a *NoSlotMapError.
func (c *Client) SlotOwner(ctx context.Context, uuid, userID string) (SlotOwner, error) {
	q := url.Values{}
	if uuid != "" {
		q.Set("uuid", uuid)
	}
	if userID != "" {
		q.Set("userId", userID)
	}
	var out SlotOwner
	_, err := c.do(ctx, http.MethodGet, PathSlotMapOwner+"?"+q.Encode(), nil, nil, &out)
	return out, noMap(err)
}
