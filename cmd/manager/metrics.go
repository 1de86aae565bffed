package main

import (
	"crypto/tls"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// metricsOptions serves the manager's metrics on addr. Secure (the
// default) is HTTPS, with a self-signed certificate, answering only
// callers whose bearer token the API server authenticates (TokenReview)
// and authorizes for get on the non-resource URL /metrics
// (SubjectAccessReview): bind the metrics-reader ClusterRole to
// Prometheus's ServiceAccount. Otherwise it is plain HTTP open to anyone
// who reaches the port, for clusters that keep it internal some other way.
func metricsOptions(addr string, secure bool) metricsserver.Options {
	o := metricsserver.Options{BindAddress: addr, SecureServing: secure}
	if secure {
		o.FilterProvider = filters.WithAuthenticationAndAuthorization
		// HTTP/2 stays off: its stream-reset flood (CVE-2023-44487) needs
		// no authentication to hurt.
		o.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
	}
	return o
}
