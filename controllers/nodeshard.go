package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// The node's slot map endpoints. They live here rather than in node/api
// because only the operator calls them.
const pathSlotMap = "/v1/slotmap"

// shardClient is what the operator asks one pod about its shard.
type shardClient struct {
	base, token string
	http        *http.Client
}

func newShardClient(url, token string) *shardClient {
	return &shardClient{base: strings.TrimRight(url, "/"), token: token, http: &http.Client{Timeout: nodeStatusTimeout}}
}

// nodeShardStatus is the part of GET /v1/status about sharding.
type nodeShardStatus struct {
	api.Status
	Ordinal *int `json:"ordinal"`
	SlotMap *struct {
		Epoch  uint64 `json:"epoch"`
		Slots  int    `json:"slots"`
		Ranges string `json:"ranges"`
	} `json:"slotmap"`
}

// heldMap is what GET /v1/slotmap says: the map the pod holds (zero when
// none) and the ordinal it takes itself for.
type heldMap struct {
	Map  slotmap.Map
	Self *int
	// Supported is false when the node does not know the endpoint at
	// all: an image from before sharding.
	Supported bool
}

func (c *shardClient) call(ctx context.Context, method, path string, in []byte) (int, []byte, error) {
	var body io.Reader
	if in != nil {
		body = bytes.NewReader(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return 0, nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("read %s %s answer: %w", method, path, err)
	}
	return resp.StatusCode, b, nil
}

func statusError(code int, b []byte) *api.StatusError {
	var e api.Error
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(b))
	}
	return &api.StatusError{Code: code, Message: e.Error}
}

func (c *shardClient) status(ctx context.Context) (nodeShardStatus, error) {
	var st nodeShardStatus
	code, b, err := c.call(ctx, http.MethodGet, api.PathStatus, nil)
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, statusError(code, b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("decode the node's status: %w", err)
	}
	return st, nil
}

func (c *shardClient) slotMap(ctx context.Context) (heldMap, error) {
	code, b, err := c.call(ctx, http.MethodGet, pathSlotMap, nil)
	if err != nil {
		return heldMap{}, err
	}
	var self struct {
		Self *int `json:"self"`
	}
	_ = json.Unmarshal(b, &self)
	switch code {
	case http.StatusOK:
		h := heldMap{Self: self.Self, Supported: true}
		if err := json.Unmarshal(b, &h.Map); err != nil {
			return h, fmt.Errorf("decode the slot map the pod holds: %w", err)
		}
		return h, nil
	case http.StatusNotFound:
		// A node that knows slot maps says who it is even without one;
		// a 404 without it is a router that has no such path.
		return heldMap{Self: self.Self, Supported: self.Self != nil}, nil
	}
	return heldMap{}, statusError(code, b)
}

func (c *shardClient) putSlotMap(ctx context.Context, m slotmap.Map) error {
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode slot map: %w", err)
	}
	code, b, err := c.call(ctx, http.MethodPut, pathSlotMap, body)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return statusError(code, b)
	}
	return nil
}
