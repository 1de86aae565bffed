package node_test

import (
	"context"
	"crypto/md5"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node"
	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/nodetest"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// TestSlotMovesInProcess moves slots to a pod and back between two nodes
// of this process, so that the race detector sees the move, the hold and
// the handoff next to phones and pushes.
func TestSlotMovesInProcess(t *testing.T) {
	pods := make([]*nodetest.Node, 2)
	peers := map[int]string{}
	for i := range pods {
		pods[i] = nodetest.Start(t, func(c *node.Config) { c.PeerAddr, c.Ordinal = "127.0.0.1:0", i })
		peers[i] = pods[i].Shard().PeerAddr()
	}
	m, err := slotmap.New(1, []slotmap.Range{{From: 0, To: slotmap.NumSlots - 1, Ordinal: 0}}, peers)
	if err != nil {
		t.Fatal(err)
	}
	nodetest.PutSlotMap(t, m, pods...)
	ctx := context.Background()

	uuids := make([]string, 600)
	for i := range uuids {
		uuids[i] = wire.UUID(md5.Sum([]byte("inproc" + strconv.Itoa(i)))).String()
	}
	if _, err := pods[0].API.BulkPush(ctx, api.BulkPushRequest{UUIDs: uuids, Kind: "general"}); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	type acc struct {
		id uint64
		u  string
	}
	accepted := map[string]acc{}
	// Phones that are pushed to heartbeat once, and then only ack (a
	// heartbeat crossing a message makes the node send it again, and the
	// second ack, which names no message, would ack the next one); others
	// heartbeat all along.
	phones := make([]*phone.Phone, 16)
	for i := range phones {
		ph, err := phone.Dial([]string{"udp", "tcp"}[i%2], pods[(i/2)%2].ClientAddr().String(), wire.UUID(md5.Sum([]byte("inproc-phone"+strconv.Itoa(i)))))
		if err != nil {
			t.Fatal(err)
		}
		ph.AutoAck = true
		defer ph.Close()
		phones[i] = ph
		beat := i >= 8
		if !beat {
			if err := ph.Heartbeat(); err != nil {
				t.Fatal(err)
			}
		}
		wg.Go(func() {
			tick := time.NewTicker(30 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case msg := <-ph.Messages():
					if msg.Cmd == wire.CmdCustom {
						mu.Lock()
						got[string(msg.Body)]++
						mu.Unlock()
					}
				case <-tick.C:
					if beat {
						_ = ph.Heartbeat()
					}
				case <-stop:
					return
				}
			}
		})
	}
	pushed := phones[:8]
	stopPush := make(chan struct{})
	var pwg sync.WaitGroup
	for w := range 2 {
		pwg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stopPush:
					return
				default:
				}
				data := fmt.Sprintf("p%d-%d", w, i)
				u := pushed[w+2*(i%(len(pushed)/2))].UUID.String()
				res, err := pods[(w+i)%2].API.Push(ctx, api.PushRequest{UUID: u, Kind: "custom", Data: data})
				if err != nil {
					continue
				}
				mu.Lock()
				accepted[data] = acc{res.ID, u}
				mu.Unlock()
				// The next custom message to this phone only once this
				// one arrived: acks name no message, and an ack crossing
				// a newer message would ack that one.
				for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
					mu.Lock()
					n := got[data]
					mu.Unlock()
					if n > 0 {
						break
					}
				}
			}
		})
	}

	move := func(id string, src, dst int, to slotmap.Map) {
		t.Helper()
		_, err := pods[src].API.StartMove(ctx, api.MoveRequest{ID: id, Map: api.FromMap(to), Target: dst, TargetURL: "http://" + pods[dst].HTTPAddr().String()})
		if err != nil {
			t.Fatal(err)
		}
		nodetest.Eventually(t, 30*time.Second, func() error {
			got, err := pods[src].API.GetMove(ctx, id)
			if err != nil || got.Phase != api.MoveDone {
				return fmt.Errorf("move %s: %+v %v", id, got, err)
			}
			return nil
		})
		nodetest.PutSlotMap(t, to, pods...)
	}
	time.Sleep(200 * time.Millisecond)
	half, _ := slotmap.New(2, []slotmap.Range{{From: 0, To: 511, Ordinal: 1}, {From: 512, To: 1023, Ordinal: 0}}, peers)
	if os.Getenv("NOMOVE") == "" {
		move("e2", 0, 1, half)
		time.Sleep(200 * time.Millisecond)
		back, _ := slotmap.New(3, []slotmap.Range{{From: 0, To: slotmap.NumSlots - 1, Ordinal: 0}}, peers)
		move("e3", 1, 0, back)
	} else {
		time.Sleep(2 * time.Second)
	}
	time.Sleep(200 * time.Millisecond)
	close(stopPush)
	pwg.Wait()
	defer wg.Wait()
	defer close(stop)

	// The protocol keeps one custom message per phone: an accepted push
	// is delivered, or superseded by a newer one before it was.
	nodetest.Eventually(t, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for data, a := range accepted {
			p, err := pods[1].API.GetPushOf(ctx, a.id, a.u)
			if err != nil {
				return fmt.Errorf("accepted push %s (%d): %v", data, a.id, err)
			}
			switch {
			case p.Fate == api.FateSuperseded:
			case p.Fate == api.FateAcknowledged && got[data] > 0:
			default:
				var tr string
				for i, ph := range pushed {
					if ph.UUID.String() == a.u {
						tr = fmt.Sprintf("phone %d %s front %d slot %d", i, []string{"udp", "tcp"}[i%2], (i/2)%2, slotmap.Slot(ph.UUID))
					}
				}
				return fmt.Errorf("accepted push %s (%d) to %s is %s, received %d times", data, a.id, tr, p.Fate, got[data])
			}
		}
		return nil
	})
	if n0, n1 := pods[0].Core().Records(), pods[1].Core().Records(); n0 != int64(len(uuids)+len(phones)) || n1 != 0 {
		t.Errorf("records: pod 0 holds %d, pod 1 %d; want %d and 0", n0, n1, len(uuids)+len(phones))
	}
	if len(accepted) == 0 {
		t.Error("no push accepted")
	}
}
