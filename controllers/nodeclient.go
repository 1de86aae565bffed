package controllers

import (
	"net"
	"net/http"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
)

// nodeTransport carries every call the operator makes to a node. One
// transport keeps connections open between calls: the default one keeps
// two idle connections per host, so with more workers than that calling
// one pod, most calls opened (and closed) a TCP connection of their own.
var nodeTransport = &http.Transport{
	Proxy:               nil, // nodes are reached inside the cluster, never through a proxy
	DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	MaxIdleConns:        1024,
	MaxIdleConnsPerHost: 64,
	IdleConnTimeout:     90 * time.Second,
	ForceAttemptHTTP2:   false,
}

// newNodeClient is a client of one pod's HTTP API whose calls give up
// after timeout, sharing nodeTransport with every other.
func newNodeClient(url, token string, timeout time.Duration) *api.Client {
	c := api.NewClient(url, token)
	c.HTTP = &http.Client{Transport: nodeTransport, Timeout: timeout}
	return c
}
