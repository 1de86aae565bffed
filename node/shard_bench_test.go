//go:build unix

package node_test

import (
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/pusher"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// What relaying costs: two pods in this process, uuids homed on pod 1,
// heartbeats and pushes sent to pod 1 itself ("local") or to pod 0,
// which relays them ("relayed"). The figure is CPU time of the whole
// process (both pods, the load generator included) per answered
// heartbeat or push, so relayed minus local is what a relay adds.
//
//	go test -run '^$' -bench 'Shard' -benchtime 3s ./node/

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchPods(b *testing.B) ([]*nodetest.Node, slotmap.Map) {
	// Every heartbeat is answered, so that it can be counted.
	return nodetest.StartShards(b, 2, 1, func(_ int, c *node.Config) { c.HeartbeatPolicy = "always" })
}

func BenchmarkShardHeartbeat(b *testing.B) {
	for _, mode := range []string{"local", "relayed"} {
		b.Run(mode, func(b *testing.B) {
			pods, m := benchPods(b)
			entry := pods[1]
			if mode == "relayed" {
				entry = pods[0]
			}
			const uuids = 1024
			msgs := make([][]byte, uuids)
			for i := range msgs {
				msgs[i] = wire.AppendClient(nil, 1, wire.CmdHeartbeat, uuidHomedOn(b, m, 1, "hb"+strconv.Itoa(i)), nil)
			}
			conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(entry.ClientAddr()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			// A window of heartbeats in flight: send until that many are
			// unanswered, then wait for answers (a lost one times out).
			const window = 64
			buf := make([]byte, 64)
			answered := 0
			start := processCPU()
			b.ResetTimer()
			inflight := 0
			for i := 0; answered < b.N; {
				for inflight < window && i < b.N+window {
					if _, err := conn.Write(msgs[i%uuids]); err != nil {
						b.Fatal(err)
					}
					i++
					inflight++
				}
				_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := conn.Read(buf); err != nil {
					inflight = 0 // lost in a full buffer: send again
					continue
				}
				answered++
				inflight--
			}
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-start)/float64(answered), "cpu-ns/heartbeat")
		})
	}
}

func BenchmarkShardPush(b *testing.B) {
	for _, mode := range []string{"local", "relayed"} {
		b.Run(mode, func(b *testing.B) {
			pods, m := benchPods(b)
			entry := pods[1]
			if mode == "relayed" {
				entry = pods[0]
			}
			const conns = 16
			targets := make([]wire.UUID, 256)
			for i := range targets {
				targets[i] = uuidHomedOn(b, m, 1, "push"+strconv.Itoa(i))
			}
			var next sync.Mutex
			left := b.N
			start := processCPU()
			b.ResetTimer()
			var wg sync.WaitGroup
			for c := range conns {
				wg.Go(func() {
					ps, err := pusher.Dial(entry.PushAddr().String(), 10*time.Second)
					if err != nil {
						b.Error(err)
						return
					}
					defer ps.Close()
					for k := c; ; k += conns {
						next.Lock()
						if left == 0 {
							next.Unlock()
							return
						}
						left--
						next.Unlock()
						if err := ps.General(targets[k%len(targets)]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/push")
		})
	}
}
