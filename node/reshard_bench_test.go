package node_test

import (
	"context"
	"crypto/md5"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// BenchmarkSlotMove moves half the slots of a pod holding MOVEBENCH_RECORDS
// records (default 100,000, each with a pending push) to another pod and
// back, while pushes to the moving slots keep coming through both pods.
// It reports the records moved per second, the longest handoff hold, and
// how long pushes to the moving slots waited (the longest, and the 99th
// percentile), next to the same pushes' p99 before the moves.
func BenchmarkSlotMove(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("MOVEBENCH_RECORDS")); err == nil && v > 0 {
		n = v
	}
	pods := make([]*nodetest.Node, 2)
	peers := map[int]string{}
	for i := range pods {
		pods[i] = nodetest.Start(b, func(c *node.Config) { c.PeerAddr, c.Ordinal = "127.0.0.1:0", i })
		peers[i] = pods[i].Shard().PeerAddr()
	}
	all := []slotmap.Range{{From: 0, To: slotmap.NumSlots - 1, Ordinal: 0}}
	m, _ := slotmap.New(1, all, peers)
	nodetest.PutSlotMap(b, m, pods...)
	ctx := context.Background()
	uuids := make([]string, 0, 1000)
	for i := range n {
		uuids = append(uuids, wire.UUID(md5.Sum([]byte("mb"+strconv.Itoa(i)))).String())
		if len(uuids) == cap(uuids) || i == n-1 {
			if _, err := pods[0].API.BulkPush(ctx, api.BulkPushRequest{UUIDs: uuids, Kind: "general"}); err != nil {
				b.Fatal(err)
			}
			uuids = uuids[:0]
		}
	}
	// Pushes to uuids of the moving slots, one at a time per pusher.
	var mu sync.Mutex
	var waits []time.Duration
	measure := func(stop <-chan struct{}, w int) {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			u := wire.UUID(md5.Sum([]byte(fmt.Sprintf("mbp%d-%d", w, i%500))))
			if slotmap.Slot(u) > 511 {
				continue
			}
			start := time.Now()
			_, err := pods[i%2].API.Push(ctx, api.PushRequest{UUID: u.String(), Kind: "general"})
			if err == nil {
				mu.Lock()
				waits = append(waits, time.Since(start))
				mu.Unlock()
			}
		}
	}
	run := func(d time.Duration) []time.Duration {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() { measure(stop, w) })
		}
		time.Sleep(d)
		close(stop)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		out := waits
		waits = nil
		return out
	}
	quiet := run(time.Second)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() { measure(stop, w) })
	}
	var records int64
	var moving time.Duration
	var hold float64
	epoch := uint64(1)
	b.ResetTimer()
	for i := range b.N {
		src, dst := i%2, 1-i%2
		epoch++
		ranges := []slotmap.Range{{From: 0, To: 511, Ordinal: dst}, {From: 512, To: 1023, Ordinal: 0}}
		next, _ := slotmap.New(epoch, ranges, peers)
		id := "bench-" + strconv.FormatUint(epoch, 10)
		start := time.Now()
		if _, err := pods[src].API.StartMove(ctx, api.MoveRequest{ID: id, Map: api.FromMap(next), Target: dst, TargetURL: "http://" + pods[dst].HTTPAddr().String()}); err != nil {
			b.Fatal(err)
		}
		var mv api.Move
		for {
			got, err := pods[src].API.GetMove(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			if got.Phase == api.MoveDone {
				mv = got
				break
			}
			if got.Phase == api.MoveFailed {
				b.Fatalf("move failed: %s", got.Error)
			}
			time.Sleep(2 * time.Millisecond)
		}
		moving += time.Since(start)
		records += mv.Records
		hold = max(hold, mv.HoldMillis)
		nodetest.PutSlotMap(b, next, pods...)
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	during := waits
	pct := func(ws []time.Duration, p float64) float64 {
		if len(ws) == 0 {
			return 0
		}
		s := slices.Clone(ws)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(float64(len(s))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(records)/moving.Seconds(), "records/s")
	b.ReportMetric(hold, "hold-max-ms")
	b.ReportMetric(pct(during, 1), "push-wait-max-ms")
	b.ReportMetric(pct(during, .99), "push-wait-p99-ms")
	b.ReportMetric(pct(quiet, .99), "push-p99-quiet-ms")
}
