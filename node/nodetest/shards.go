package nodetest

import (
	"context"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// StartShards runs n pods of one sharded PushNode (ordinals 0 to n-1, each
// with its peer listener on loopback), hands each an even slot map of the
// given epoch over the HTTP API, and waits until every peer link is up.
// mutate, if not nil, adjusts each pod's configuration first.
func StartShards(t testing.TB, n int, epoch uint64, mutate func(ordinal int, c *node.Config)) ([]*Node, slotmap.Map) {
	t.Helper()
	pods := make([]*Node, n)
	peers := map[int]string{}
	for i := range pods {
		pods[i] = Start(t, func(c *node.Config) {
			c.PeerAddr = "127.0.0.1:0"
			c.Ordinal = i
			if mutate != nil {
				mutate(i, c)
			}
		})
		peers[i] = pods[i].Shard().PeerAddr()
	}
	m, err := slotmap.EvenSplit(n, epoch, peers)
	if err != nil {
		t.Fatal(err)
	}
	PutSlotMap(t, m, pods...)
	return pods, m
}

// PutSlotMap hands m to every pod and waits until each pod's links to the
// pods m names are up.
func PutSlotMap(t testing.TB, m slotmap.Map, pods ...*Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, p := range pods {
		if _, err := p.API.PutSlotMap(ctx, m); err != nil {
			t.Fatalf("PUT /v1/slotmap: %v", err)
		}
	}
	for _, p := range pods {
		for _, l := range p.Shard().Links() {
			if err := l.WaitUp(ctx); err != nil {
				t.Fatalf("peer link of ordinal %d to %d: %v", p.Shard().Ordinal(), l.PeerOrdinal(), err)
			}
		}
	}
}
