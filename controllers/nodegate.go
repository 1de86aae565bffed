package controllers

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// nodeGate keeps one node that does not answer from holding the workers
// every other tenant's messages need. After a call to a node fails without
// an answer (a timeout, a refused connection), the node's other messages
// wait out a short pause without calling it; one call per pause probes it
// again. An answer of any kind reopens the gate.
type nodeGate struct {
	pause time.Duration
	mu    sync.Mutex
	// until maps a PushNode to the end of its pause; while a probe is out,
	// the pause is pushed forward so that only that call waits on the node.
	until map[types.NamespacedName]time.Time
}

func newNodeGate(pause time.Duration) *nodeGate {
	return &nodeGate{pause: pause, until: map[types.NamespacedName]time.Time{}}
}

// enter reports whether a call to node may go out now. When it may and the
// node is in a pause that just ended, the caller is the probe: the pause is
// extended past the probe's own timeout so that others keep waiting for it.
func (g *nodeGate) enter(node types.NamespacedName, now time.Time, callTimeout time.Duration) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, paused := g.until[node]
	if !paused {
		return time.Time{}, true
	}
	if now.Before(until) {
		return until, false
	}
	g.until[node] = now.Add(callTimeout + g.pause)
	return time.Time{}, true
}

// failed starts (or restarts) a pause after a call got no answer.
func (g *nodeGate) failed(node types.NamespacedName, now time.Time) {
	g.mu.Lock()
	g.until[node] = now.Add(g.pause)
	g.mu.Unlock()
}

// answered ends any pause: the node responds.
func (g *nodeGate) answered(node types.NamespacedName) {
	g.mu.Lock()
	delete(g.until, node)
	g.mu.Unlock()
}
