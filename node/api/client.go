package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls a node's HTTP API.
type Client struct {
	// BaseURL is e.g. http://pushnode-internal:8080.
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// NewClient returns a client with a sane timeout for non-streaming calls.
func NewClient(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTP: &http.Client{Timeout: 2 * time.Minute}}
}

// StatusError is an answer outside 2xx.
type StatusError struct {
	Code    int
	Message string
	// Body is the answer as it came, for callers that read more from it
	// than the message.
	Body []byte
}

func (e *StatusError) Error() string { return fmt.Sprintf("node answered %d: %s", e.Code, e.Message) }

func (c *Client) do(ctx context.Context, method, path string, header http.Header, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return 0, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return resp.StatusCode, &StatusError{Code: resp.StatusCode, Message: e.Error, Body: b}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s %s answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// Push pushes one message.
func (c *Client) Push(ctx context.Context, r PushRequest) (Push, error) {
	var p Push
	_, err := c.do(ctx, http.MethodPost, PathPushes, nil, r, &p)
	return p, err
}

// BulkPush pushes one message to many targets.
func (c *Client) BulkPush(ctx context.Context, r BulkPushRequest) (BulkPushResponse, error) {
	var out BulkPushResponse
	_, err := c.do(ctx, http.MethodPost, PathPushesBulk, nil, r, &out)
	return out, err
}

// GetPush reads a push's fate.
func (c *Client) GetPush(ctx context.Context, id uint64) (Push, error) {
	var p Push
	_, err := c.do(ctx, http.MethodGet, PathPushes+"/"+strconv.FormatUint(id, 10), nil, nil, &p)
	return p, err
}

// GetPushOf reads a push at the home of its uuid: after a slot move a
// push is no longer at the pod that handed out its id.
func (c *Client) GetPushOf(ctx context.Context, id uint64, uuid string) (Push, error) {
	var p Push
	_, err := c.do(ctx, http.MethodGet, PathPushes+"/"+strconv.FormatUint(id, 10)+"?uuid="+url.QueryEscape(uuid), nil, nil, &p)
	return p, err
}

// Client looks a client up by uuid.
func (c *Client) Client(ctx context.Context, uuid string) (ClientInfo, error) {
	var out ClientInfo
	_, err := c.do(ctx, http.MethodGet, PathClients+url.PathEscape(uuid), nil, nil, &out)
	return out, err
}

// ClientByUserID looks a client up by the user id its uuid derives from.
func (c *Client) ClientByUserID(ctx context.Context, userID string) (ClientInfo, error) {
	var out ClientInfo
	_, err := c.do(ctx, http.MethodGet, PathClients+"?userId="+url.QueryEscape(userID), nil, nil, &out)
	return out, err
}

// Status reads the node's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	_, err := c.do(ctx, http.MethodGet, PathStatus, nil, nil, &s)
	return s, err
}

// Expire removes records inactive for longer than hours.
func (c *Client) Expire(ctx context.Context, hours float64) (ExpireResponse, error) {
	var out ExpireResponse
	_, err := c.do(ctx, http.MethodPost, PathExpire, nil, ExpireRequest{OlderThanHours: &hours}, &out)
	return out, err
}

// Events reads events after a cursor, waiting up to wait for the first.
func (c *Client) Events(ctx context.Context, after uint64, limit int, wait time.Duration) (Events, error) {
	var out Events
	q := url.Values{}
	q.Set("after", strconv.FormatUint(after, 10))
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	_, err := c.do(ctx, http.MethodGet, PathEvents+"?"+q.Encode(), nil, nil, &out)
	return out, err
}

// Ready reports whether /readyz answers 200.
func (c *Client) Ready(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BaseURL+PathReadyz, nil)
	if err != nil {
		return false
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
