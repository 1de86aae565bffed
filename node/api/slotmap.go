package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/ddpush/ddpush-operator/node/slotmap"
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
	_, err := c.do(ctx, http.MethodGet, PathSlotOwner+"?"+q.Encode(), nil, nil, &out)
	return out, noMap(err)
}

// PutSlotMap hands the node a slot map (a slotmap.Map or its JSON form)
// and returns the map the node then holds. A node refuses a map older
// than its own (409) and an invalid one (400).
func (c *Client) PutSlotMap(ctx context.Context, m any) (SlotMap, error) {
	var out SlotMap
	_, err := c.do(ctx, http.MethodPut, PathSlotMap, nil, m, &out)
	return out, err
}

// MapOf builds a slot map from its API form.
func MapOf(s SlotMap) (slotmap.Map, error) {
	ranges := make([]slotmap.Range, len(s.Ranges))
	for i, r := range s.Ranges {
		ranges[i] = slotmap.Range{From: r.From, To: r.To, Ordinal: r.Ordinal}
	}
	peers := make(map[int]string, len(s.Peers))
	for k, a := range s.Peers {
		o, err := strconv.Atoi(k)
		if err != nil {
			return slotmap.Map{}, fmt.Errorf("%w: peer %q is not an ordinal", slotmap.ErrInvalid, k)
		}
		peers[o] = a
	}
	return slotmap.New(s.Epoch, ranges, peers)
}

// FromMap is the API form of a slot map.
func FromMap(m slotmap.Map) SlotMap {
	sp := m.Spec()
	out := SlotMap{Epoch: sp.Epoch, Ranges: make([]SlotRange, len(sp.Ranges)), Peers: make(map[string]string, len(sp.Peers))}
	for i, r := range sp.Ranges {
		out.Ranges[i] = SlotRange{From: r.From, To: r.To, Ordinal: r.Ordinal}
	}
	for o, a := range sp.Peers {
		out.Peers[strconv.Itoa(o)] = a
	}
	return out
}
