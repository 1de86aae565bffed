package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// prober is one probe of a running container, with the kubelet's
// semantics: first run after initialDelaySeconds, then every
// periodSeconds; successThreshold consecutive successes or
// failureThreshold consecutive failures settle the result.
type prober struct {
	kind       string
	p          *corev1.Probe
	next       time.Time
	succ, fail int32
	warned     bool
}

func newProber(kind string, p *corev1.Probe, started time.Time) *prober {
	if p == nil {
		return nil
	}
	return &prober{kind: kind, p: p, next: started.Add(time.Duration(p.InitialDelaySeconds) * time.Second)}
}

func (pr *prober) due(now time.Time) bool { return pr != nil && !now.Before(pr.next) }

func orDefault(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

// record runs the probe and says whether the result is settled as success
// (ok) or as failure (failed).
func (pr *prober) record(c *container, now time.Time) (ok, failed bool) {
	pr.next = now.Add(time.Duration(orDefault(pr.p.PeriodSeconds, 10)) * time.Second)
	good, msg := c.w.probeOnce(c, pr)
	if good {
		pr.succ, pr.fail = pr.succ+1, 0
	} else {
		pr.succ, pr.fail = 0, pr.fail+1
		c.w.r.event(c.w.pod, corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %s", pr.kind, msg)
	}
	return pr.succ >= orDefault(pr.p.SuccessThreshold, 1), pr.fail >= orDefault(pr.p.FailureThreshold, 3)
}

// runProbes advances the container's probes: startup gates the others;
// readiness sets ready; liveness (and a failed startup) kill the process.
func (c *container) runProbes(now time.Time) {
	if !c.killDeadline.IsZero() {
		if now.After(c.killDeadline) {
			signalGroup(c.proc.Pid, syscall.SIGKILL)
		}
		return
	}
	if !c.startupOK {
		if !c.startup.due(now) {
			return
		}
		ok, failed := c.startup.record(c, now)
		switch {
		case ok:
			c.startupOK = true
			if c.readiness != nil {
				c.readiness.next = now // find out at once, not a period later
			}
		case failed:
			c.kill("failed its startup probe")
		}
		return
	}
	if c.readiness == nil {
		c.ready = true
	} else if c.readiness.due(now) {
		ok, failed := c.readiness.record(c, now)
		if ok {
			c.ready = true
		} else if failed {
			c.ready = false
		}
	}
	if c.liveness.due(now) {
		if _, failed := c.liveness.record(c, now); failed {
			c.kill("failed its liveness probe")
		}
	}
}

// probeOnce runs one check of an httpGet or tcpSocket probe against the
// pod IP. exec and grpc probes are not supported: they count as passing.
func (w *podWorker) probeOnce(c *container, pr *prober) (bool, string) {
	timeout := time.Duration(orDefault(pr.p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(w.r.ctx, timeout)
	defer cancel()
	switch h := pr.p.ProbeHandler; {
	case h.HTTPGet != nil:
		port, err := resolvePort(h.HTTPGet.Port, c.spec)
		if err != nil {
			return false, err.Error()
		}
		host := w.ip
		if h.HTTPGet.Host != "" {
			host = h.HTTPGet.Host
		}
		scheme := strings.ToLower(string(h.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		path := h.HTTPGet.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		url := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port)) + path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err.Error()
		}
		req.Header.Set("User-Agent", "kube-probe/localcluster")
		for _, hd := range h.HTTPGet.HTTPHeaders {
			req.Header.Set(hd.Name, hd.Value)
		}
		resp, err := probeClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return false, fmt.Sprintf("HTTP probe failed with statuscode: %d (GET %s)", resp.StatusCode, url)
		}
		return true, ""
	case h.TCPSocket != nil:
		port, err := resolvePort(h.TCPSocket.Port, c.spec)
		if err != nil {
			return false, err.Error()
		}
		host := w.ip
		if h.TCPSocket.Host != "" {
			host = h.TCPSocket.Host
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false, err.Error()
		}
		conn.Close()
		return true, ""
	}
	if !pr.warned {
		pr.warned = true
		w.r.event(w.pod, corev1.EventTypeWarning, "ProbeNotSupported", "%s probe of container %s is not an httpGet or tcpSocket probe: the local runner treats it as passing", pr.kind, c.spec.Name)
	}
	return true, ""
}

var probeClient = &http.Client{
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true},
}

// resolvePort turns a number or a named container port into a number.
func resolvePort(p intstr.IntOrString, c corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p.StrVal)
}
