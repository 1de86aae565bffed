package node_test

// Slot moves at their edges: races between a commit and an abort, maps
// handed out during a move, packets and pushes held by a handoff,
// idempotency keys of two pods. They run in-process pods.

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
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

// uuidInSlots is a uuid whose slot is in [lo, hi].
func uuidInSlots(seed string, lo, hi int) wire.UUID {
	for i := 0; ; i++ {
		u := wire.UUID(md5.Sum([]byte(seed + strconv.Itoa(i))))
		if s := int(slotmap.Slot(u)); s >= lo && s <= hi {
			return u
		}
	}
}

// twoPodsAllOnZero starts two pods; pod 0 owns every slot (epoch 1). It returns
// the pods, the peers and the map a move of slots 0-511 to pod 1 installs
// (epoch 2).
func twoPodsAllOnZero(t *testing.T) ([]*nodetest.Node, map[int]string, slotmap.Map, slotmap.Map) {
	t.Helper()
	pods := make([]*nodetest.Node, 2)
	peers := map[int]string{}
	for i := range pods {
		pods[i] = nodetest.Start(t, func(c *node.Config) { c.PeerAddr, c.Ordinal = "127.0.0.1:0", i })
		peers[i] = pods[i].Shard().PeerAddr()
	}
	m1, err := slotmap.New(1, []slotmap.Range{{From: 0, To: slotmap.NumSlots - 1, Ordinal: 0}}, peers)
	if err != nil {
		t.Fatal(err)
	}
	nodetest.PutSlotMap(t, m1, pods...)
	m2, err := slotmap.New(2, []slotmap.Range{{From: 0, To: 511, Ordinal: 1}, {From: 512, To: 1023, Ordinal: 0}}, peers)
	if err != nil {
		t.Fatal(err)
	}
	return pods, peers, m1, m2
}

// TestSlotMapPutDuringMoveDoesNotWedgeIt: a PUT /v1/slotmap at a move's
// source while the move runs is refused (409), and a map as new as the
// move's that reached the source all the same does not keep the move from
// ending: the moved slots go to the target in it, and pushes through the
// source reach them.
func TestSlotMapPutDuringMoveDoesNotWedgeIt(t *testing.T) {
	t.Setenv(node.MovePauseEnv, "stream:1500ms")
	pods, peers, _, m2 := twoPodsAllOnZero(t)
	ctx := context.Background()
	if _, err := pods[0].API.StartMove(ctx, api.MoveRequest{ID: "wedge", Map: api.FromMap(m2), Target: 1,
		TargetURL: "http://" + pods[1].HTTPAddr().String()}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	// The operator (re)sends the map pod 0 holds, with a newer epoch: it
	// gives pod 0 the same slots, so the pod takes it.
	m3, _ := slotmap.New(3, []slotmap.Range{{From: 0, To: slotmap.NumSlots - 1, Ordinal: 0}}, peers)
	if _, err := pods[0].API.PutSlotMap(ctx, m3); err != nil {
		t.Logf("PUT during the move refused (fine): %v", err)
	} else {
		t.Logf("PUT of epoch 3 at the source accepted while move to epoch 2 runs")
	}

	var last api.Move
	deadline := time.Now().Add(12 * time.Second)
	for time.Now().Before(deadline) {
		got, err := pods[0].API.GetMove(ctx, "wedge")
		if err == nil {
			last = got
			if got.Phase == api.MoveDone || got.Phase == api.MoveFailed {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if last.Phase != api.MoveDone && last.Phase != api.MoveFailed {
		t.Errorf("move still %q 12 s after it could have finished (source wedged): %+v", last.Phase, last)
	}
	// Whatever became of the move, a push to a moved slot must be
	// accepted through either pod.
	u := uuidInSlots("wedge", 0, 511)
	for i, p := range pods {
		pctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		_, err := p.API.Push(pctx, api.PushRequest{UUID: u.String(), Kind: "custom", Data: "x" + strconv.Itoa(i)})
		cancel()
		if err != nil {
			t.Errorf("push to slot %d through pod %d refused: %v", slotmap.Slot(u), i, err)
		}
	}
	sm0, _ := pods[0].API.SlotMap(ctx)
	sm1, _ := pods[1].API.SlotMap(ctx)
	t.Logf("pod 0 epoch %d, pod 1 epoch %d", sm0.Epoch, sm1.Epoch)
}

// TestAbortDuringCommitNeverBothSucceed: an abort that reaches the target
// while it commits (the source's resolve after its commit call failed) is
// refused, and so is one after the commit: a slot never ends with two
// homes. The target pauses inside its commit (the "install" step), so the
// abort lands in that window every time.
func TestAbortDuringCommitNeverBothSucceed(t *testing.T) {
	t.Setenv(node.MovePauseEnv, "install:700ms")
	pods, _, _, m2 := twoPodsAllOnZero(t)
	ctx := context.Background()
	const id = "race"
	rng := rand.New(rand.NewPCG(1, 2))
	first := true
	for b := range 2 {
		e := &api.MoveEntries{Source: 0, Target: 1, Slots: "0-511", First: first}
		first = false
		for range 1000 {
			var u wire.UUID
			for i := range u {
				u[i] = byte(rng.Uint32())
			}
			u[0] &^= 2 // slot (u[0]<<8|u[1]) mod 1024 < 512
			e.Fronts = append(e.Fronts, api.MoveFront{UUID: u[:], UDP: 0, TCP: -1})
		}
		if err := pods[1].API.SendMoveEntries(ctx, id, e); err != nil {
			t.Fatalf("batch %d: %v", b, err)
		}
	}
	var commitErr error
	var committed api.Move
	done := make(chan struct{})
	go func() {
		defer close(done)
		committed, commitErr = pods[1].API.CommitMove(ctx, id, api.MoveCommit{Map: api.FromMap(m2)})
	}()
	// Wait until the commit is under way at the target, then abort.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := pods[1].API.GetMove(ctx, id)
		if err == nil && got.Phase == "committing" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the target never showed its commit under way: %+v %v", got, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	aborted, abortErr := pods[1].API.AbortMove(ctx, id)
	var se *api.StatusError
	if abortErr == nil {
		t.Errorf("an abort during the commit was answered %+v: the target must refuse it", aborted)
	} else if !errors.As(abortErr, &se) || se.Code != http.StatusConflict {
		t.Errorf("an abort during the commit: want 409 conflict, got %v", abortErr)
	} else if !strings.Contains(se.Error(), "being committed") {
		t.Errorf("an abort during the commit should say the commit is under way, got %v", abortErr)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the commit did not end")
	}
	if commitErr != nil || committed.Phase != api.MoveCommitted {
		t.Fatalf("the commit: %+v %v", committed, commitErr)
	}
	if _, err := pods[1].API.AbortMove(ctx, id); err == nil {
		t.Error("an abort after the commit was accepted: the target serves the slots and a source told \"aborted\" would serve them too")
	}
	sm, err := pods[1].API.SlotMap(ctx)
	if err != nil || sm.Epoch != m2.Epoch() {
		t.Errorf("the target's map after the commit: epoch %d (%v), want %d", sm.Epoch, err, m2.Epoch())
	}
	got, err := pods[1].API.GetMove(ctx, id)
	if err != nil || got.Phase != api.MoveCommitted {
		t.Errorf("the move after the commit and a refused abort: %+v %v", got, err)
	}
}

// TestRelayedAckHeldInHandoffReachesNewHome: a phone whose front is not
// its home acks a message while a move of its slot holds it at the
// source; the source keeps the relayed ack and, once the move commits,
// sends it on to the new home, which does not send the message again.
func TestRelayedAckHeldInHandoffReachesNewHome(t *testing.T) {
	ackInHandoff(t, 1)
}

// TestAckAtSourceHeldInHandoffArrives: the same with the phone on the
// source's own socket.
func TestAckAtSourceHeldInHandoffArrives(t *testing.T) {
	ackInHandoff(t, 0)
}

func ackInHandoff(t *testing.T, front int) {
	t.Setenv(node.MovePauseEnv, "commit:2s")
	pods, _, _, m2 := twoPodsAllOnZero(t)
	ctx := context.Background()
	u := uuidInSlots("relayed-ack", 0, 511)
	ph := dialPhone(t, "udp", pods[front], u)
	ph.AutoAck = false
	if err := ph.Heartbeat(); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, 5*time.Second, func() error {
		c, err := pods[0].API.Client(ctx, u.String())
		if err != nil || !c.Online {
			return fmt.Errorf("phone not online at its home: %+v %v", c, err)
		}
		return nil
	})
	res, err := pods[0].API.Push(ctx, api.PushRequest{UUID: u.String(), Kind: "custom", Data: "hello"})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := ph.Next(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pods[0].API.StartMove(ctx, api.MoveRequest{ID: "ack", Map: api.FromMap(m2), Target: 1,
		TargetURL: "http://" + pods[1].HTTPAddr().String()}); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, 10*time.Second, func() error {
		got, err := pods[0].API.GetMove(ctx, "ack")
		if err != nil || got.Phase != api.MoveHandoff {
			return fmt.Errorf("move: %+v %v", got, err)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // the tail is sent; the source holds the slot, pausing before the commit
	if err := ph.Ack(msg); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, 15*time.Second, func() error {
		got, err := pods[0].API.GetMove(ctx, "ack")
		if err != nil || got.Phase != api.MoveDone {
			return fmt.Errorf("move: %+v %v", got, err)
		}
		return nil
	})
	var fate string
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		p, err := pods[1].API.GetPushOf(ctx, res.ID, u.String())
		if err == nil {
			fate = p.Fate
			if fate == api.FateAcknowledged {
				break
			}
		}
	}
	if fate != api.FateAcknowledged {
		// What the lost ack costs: the next heartbeat brings the message again.
		_ = ph.Heartbeat()
		again, aerr := ph.Next(2 * time.Second)
		t.Errorf("the phone acked push %d during the handoff, and after the move it is %q at its new home; after a heartbeat the phone got %q again (%v)", res.ID, fate, again.Body, aerr)
	}
}

func dialPhone(t *testing.T, network string, at *nodetest.Node, u wire.UUID) *phone.Phone {
	t.Helper()
	ph, err := phone.Dial(network, at.ClientAddr().String(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ph.Close() })
	return ph
}

// TestTargetNeverAbortsACommittedMove: after many other moves a target
// still refuses to call off a move it committed, which a source back from
// a restart in that move's handoff may ask.
func TestTargetNeverAbortsACommittedMove(t *testing.T) {
	pods, _, _, m2 := twoPodsAllOnZero(t)
	ctx := context.Background()
	if _, err := pods[0].API.StartMove(ctx, api.MoveRequest{ID: "real", Map: api.FromMap(m2), Target: 1,
		TargetURL: "http://" + pods[1].HTTPAddr().String()}); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, 15*time.Second, func() error {
		got, err := pods[1].API.GetMove(ctx, "real")
		if err != nil || got.Phase != api.MoveCommitted {
			return fmt.Errorf("move at the target: %+v %v", got, err)
		}
		return nil
	})
	// Other moves to pod 1 that were called off (any 64 finished moves do).
	for i := range 65 {
		id := "other-" + strconv.Itoa(i)
		if err := pods[1].API.SendMoveEntries(ctx, id, &api.MoveEntries{Source: 0, Target: 1, Slots: "700", First: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := pods[1].API.AbortMove(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	_, gerr := pods[1].API.GetMove(ctx, "real")
	a, err := pods[1].API.AbortMove(ctx, "real")
	sm, _ := pods[1].API.SlotMap(ctx)
	if err == nil {
		t.Errorf("the target committed move \"real\" (it holds epoch %d and serves its slots), yet GET says %v and an abort of it answers %q", sm.Epoch, gerr, a.Phase)
	}
}

// TestMovedKeyKeepsTargetsOwnKey: idempotency keys are indexed per pod,
// so two pods may each hold a push under the same key (pushes to uuids of
// different pods); a move does not overwrite the target's own entry, so a
// retry of the target's own push is still answered as a retry.
func TestMovedKeyKeepsTargetsOwnKey(t *testing.T) {
	pods := make([]*nodetest.Node, 2)
	peers := map[int]string{}
	for i := range pods {
		pods[i] = nodetest.Start(t, func(c *node.Config) { c.PeerAddr, c.Ordinal = "127.0.0.1:0", i })
		peers[i] = pods[i].Shard().PeerAddr()
	}
	m1, _ := slotmap.New(1, []slotmap.Range{{From: 0, To: 511, Ordinal: 0}, {From: 512, To: 1023, Ordinal: 1}}, peers)
	nodetest.PutSlotMap(t, m1, pods...)
	m2, _ := slotmap.New(2, []slotmap.Range{{From: 0, To: 255, Ordinal: 1}, {From: 256, To: 511, Ordinal: 0}, {From: 512, To: 1023, Ordinal: 1}}, peers)
	ctx := context.Background()
	a := uuidInSlots("key-a", 0, 255)    // moves from pod 0 to pod 1
	b := uuidInSlots("key-b", 512, 1023) // stays at pod 1
	qReq := api.PushRequest{UUID: b.String(), Kind: "custom", Data: "q", Key: "order-1"}
	q, err := pods[1].API.Push(ctx, qReq)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pods[0].API.Push(ctx, api.PushRequest{UUID: a.String(), Kind: "custom", Data: "p", Key: "order-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := pods[0].API.StartMove(ctx, api.MoveRequest{ID: "keys", Map: api.FromMap(m2), Target: 1,
		TargetURL: "http://" + pods[1].HTTPAddr().String()}); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, 15*time.Second, func() error {
		got, err := pods[0].API.GetMove(ctx, "keys")
		if err != nil || got.Phase != api.MoveDone {
			return fmt.Errorf("move: %+v %v", got, err)
		}
		return nil
	})
	again, err := pods[1].API.Push(ctx, qReq)
	if err != nil || again.ID != q.ID {
		t.Errorf("retry of push %d (accepted at pod 1 before the move, key %q) after a move brought another push of that key: %+v %v", q.ID, qReq.Key, again, err)
	}
}

// TestPushToHeldSlotIsRefusedInTime: while a source holds a slot whose
// move cannot be settled (its target went away in the handoff), an HTTP
// push to that slot is refused (503) within the relay's wait, not held
// for good.
func TestPushToHeldSlotIsRefusedInTime(t *testing.T) {
	t.Setenv(node.MovePauseEnv, "commit:1s")
	pods, _, _, m2 := twoPodsAllOnZero(t)
	ctx := context.Background()
	if _, err := pods[0].API.StartMove(ctx, api.MoveRequest{ID: "held", Map: api.FromMap(m2), Target: 1,
		TargetURL: "http://" + pods[1].HTTPAddr().String()}); err != nil {
		t.Fatal(err)
	}
	nodetest.Eventually(t, 10*time.Second, func() error {
		got, err := pods[0].API.GetMove(ctx, "held")
		if err != nil || got.Phase != api.MoveHandoff {
			return fmt.Errorf("move: %+v %v", got, err)
		}
		return nil
	})
	pods[1].Stop(t) // the target goes away before the commit
	time.Sleep(1500 * time.Millisecond)
	u := uuidInSlots("held", 0, 511)
	pctx, cancel := context.WithTimeout(ctx, 12*time.Second)
	defer cancel()
	start := time.Now()
	_, err := pods[0].API.Push(pctx, api.PushRequest{UUID: u.String(), Kind: "custom", Data: "x"})
	if pctx.Err() != nil {
		t.Errorf("push to held slot %d at the source got no answer in %v (err %v): it waits for the hold to end, without limit", slotmap.Slot(u), time.Since(start).Round(time.Second), err)
	} else {
		t.Logf("answered after %v: %v", time.Since(start), err)
	}
}

// TestMoveEntriesKeysOutsideTheMoveRefused: a move's batch whose
// idempotency keys name no push of the move is refused and changes
// nothing: the target's own key entries stay.
func TestMoveEntriesKeysOutsideTheMoveRefused(t *testing.T) {
	pods := make([]*nodetest.Node, 2)
	peers := map[int]string{}
	for i := range pods {
		pods[i] = nodetest.Start(t, func(c *node.Config) { c.PeerAddr, c.Ordinal = "127.0.0.1:0", i })
		peers[i] = pods[i].Shard().PeerAddr()
	}
	m1, _ := slotmap.New(1, []slotmap.Range{{From: 0, To: 511, Ordinal: 0}, {From: 512, To: 1023, Ordinal: 1}}, peers)
	nodetest.PutSlotMap(t, m1, pods...)
	ctx := context.Background()
	b := uuidInSlots("own", 512, 1023)
	qReq := api.PushRequest{UUID: b.String(), Kind: "custom", Data: "q", Key: "own-key"}
	q, err := pods[1].API.Push(ctx, qReq)
	if err != nil {
		t.Fatal(err)
	}
	e := &api.MoveEntries{Source: 0, Target: 1, Slots: "0-9", First: true,
		Keys: []api.EntryKV{{K: []byte("own-key"), V: []byte{0, 0, 0, 0, 0, 0, 0, 7}}}}
	if err := pods[1].API.SendMoveEntries(ctx, "bogus", e); err != nil {
		t.Logf("batch refused (fine): %v", err)
	}
	if _, err := pods[1].API.AbortMove(ctx, "bogus"); err != nil {
		t.Fatal(err)
	}
	again, err := pods[1].API.Push(ctx, qReq)
	if err != nil || again.ID != q.ID {
		t.Errorf("retry of push %d with its key after a called-off move's batch named that key: %+v %v", q.ID, again, err)
	}
}

// TestSameMovePostedTwiceAtOnce: POSTing a move again answers its state,
// also when the POSTs come together.
func TestSameMovePostedTwiceAtOnce(t *testing.T) {
	t.Setenv(node.MovePauseEnv, "stream:500ms")
	pods, _, _, m2 := twoPodsAllOnZero(t)
	ctx := context.Background()
	req := api.MoveRequest{ID: "twice", Map: api.FromMap(m2), Target: 1, TargetURL: "http://" + pods[1].HTTPAddr().String()}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	start := make(chan struct{})
	for i := range errs {
		wg.Go(func() {
			<-start
			_, errs[i] = pods[0].API.StartMove(ctx, req)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("POST %d of the same move: %v", i, err)
		}
	}
}
