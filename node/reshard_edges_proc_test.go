package node_test

import (
	"context"
	"crypto/md5"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// TestSourceKilledInStreamTargetDropsCopy: a source SIGKILLed while it
// streams tells the target, once it is back, to drop what it got: the
// target then holds no records of slots it does not serve.
func TestSourceKilledInStreamTargetDropsCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills node processes")
	}
	mp := startMovePods(t, "handoff:3s")
	ctx := context.Background()
	uuids := make([]string, 400)
	for i := range uuids {
		uuids[i] = wire.UUID(md5.Sum([]byte("leftover" + strconv.Itoa(i)))).String()
	}
	if _, err := mp.procs[0].API.BulkPush(ctx, api.BulkPushRequest{UUIDs: uuids, Kind: "general"}); err != nil {
		t.Fatal(err)
	}
	m2 := mp.moveMap(0, 511)
	if _, err := mp.startMove("left", m2); err != nil {
		t.Fatal(err)
	}
	mp.waitPaused(0) // streamed, paused before the handoff
	_ = mp.procs[0].Signal(t, syscall.SIGKILL, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	mp.start(0, "")
	got, err := mp.procs[0].API.GetMove(ctx, "left")
	if err != nil || got.Phase != api.MoveFailed {
		t.Fatalf("source after the restart: %+v %v", got, err)
	}
	time.Sleep(2 * time.Second)
	st1, err := mp.procs[1].API.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tm, _ := mp.procs[1].API.GetMove(ctx, "left")
	st0, _ := mp.procs[0].API.Status(ctx)
	if st1.Records != 0 {
		t.Errorf("the move failed at its source (which holds %d records), and the target, which serves no slot, still holds %d records of it; the move there is %q", st0.Records, st1.Records, tm.Phase)
	}
}
