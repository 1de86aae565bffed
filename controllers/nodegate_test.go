package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func TestNodeGate(t *testing.T) {
	g := newNodeGate(2 * time.Second)
	a := types.NamespacedName{Namespace: "ns", Name: "a"}
	b := types.NamespacedName{Namespace: "ns", Name: "b"}
	t0 := time.Unix(1000, 0)
	if _, ok := g.enter(a, t0, 5*time.Second); !ok {
		t.Fatal("a node never seen failing is gated")
	}
	g.failed(a, t0)
	if until, ok := g.enter(a, t0.Add(time.Second), 5*time.Second); ok || !until.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("during the pause: ok=%v until=%v", ok, until)
	}
	if _, ok := g.enter(b, t0.Add(time.Second), 5*time.Second); !ok {
		t.Fatal("another node's pause gates b")
	}
	// The pause ends: exactly one probe goes out, the others wait for it.
	if _, ok := g.enter(a, t0.Add(2*time.Second), 5*time.Second); !ok {
		t.Fatal("no probe after the pause")
	}
	if _, ok := g.enter(a, t0.Add(3*time.Second), 5*time.Second); ok {
		t.Fatal("a second call went out while the probe was out")
	}
	g.answered(a)
	if _, ok := g.enter(a, t0.Add(3*time.Second), 5*time.Second); !ok {
		t.Fatal("still gated after the node answered")
	}
}
