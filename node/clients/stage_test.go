package clients

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// waitForWaiters waits until n client messages wait for held records.
func waitForWaiters(t *testing.T, tbl *ClientTable, n int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for tbl.waiting.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d client messages waiting, want %d", tbl.waiting.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

type hbResult struct {
	out []byte
	res HeartbeatResult
}

func heartbeatAsync(tbl *ClientTable, now int64, u wire.UUID) <-chan hbResult {
	ch := make(chan hbResult, 1)
	go func() {
		out, res := tbl.Heartbeat(now, u, state.UDP, addr, nil, 0, 1, nil)
		ch <- hbResult{out, res}
	}()
	return ch
}

// TestStagedPushIsInvisibleUntilReleased: while a push is staged, readers
// see the committed record, and a heartbeat of its client waits: after
// an abort it gets what was there before, after a release it gets the
// push, never anything in between.
func TestStagedPushIsInvisibleUntilReleased(t *testing.T) {
	for _, release := range []bool{false, true} {
		name := map[bool]string{false: "abort", true: "release"}[release]
		t.Run(name, func(t *testing.T) {
			tbl, sink := newTable(Config{CreateByHeartbeat: true})
			u := uuid(1)
			push(tbl, 1, u, 1, state.Custom, 0, []byte("old"))
			st := tbl.Begin()
			fate, d := st.Push(2, u, 2, state.Custom, 0, []byte("new"), nil)
			if fate != state.Queued || d.Msg != nil {
				t.Fatalf("offline client: fate %v, delivery %+v", fate, d)
			}
			if s, _ := tbl.Get(2, u); string(s.Ext.Custom) != "old" || s.Ext.CustomID != 1 {
				t.Fatalf("a reader saw the staged push: %+v", s.Ext)
			}
			got := heartbeatAsync(tbl, 3, u)
			waitForWaiters(t, tbl, 1)
			var c Changes
			tbl.CollectChanges(&c)
			if release {
				st.Release()
			} else {
				st.Abort()
			}
			r := <-got
			want, wantID := "old", uint64(1)
			if release {
				want, wantID = "new", 2
			}
			if r.res != HeartbeatKnown || string(r.out) != string(wire.AppendServer(nil, 1, wire.CmdCustom, []byte(want))) {
				t.Fatalf("heartbeat answered % x (%v), want %q", r.out, r.res, want)
			}
			if len(sink.evs) != 1 || sink.evs[0].PushID != wantID || sink.evs[0].Fate != state.Sent {
				t.Fatalf("heartbeat events %+v, want push %d sent", sink.evs, wantID)
			}
			if s, _ := tbl.Get(4, u); string(s.Ext.Custom) != want {
				t.Fatalf("record after %s: %+v", name, s.Ext)
			}
		})
	}
}

// TestStagedCreateIsInvisibleUntilReleased: a push to an unknown uuid
// creates nothing visible before its commit; a heartbeat of that uuid
// waits rather than creating a second record.
func TestStagedCreateIsInvisibleUntilReleased(t *testing.T) {
	for _, release := range []bool{false, true} {
		tbl, _ := newTable(Config{CreateByHeartbeat: true})
		u := uuid(2)
		st := tbl.Begin()
		st.Push(1, u, 1, state.General, 0, nil, nil)
		if _, ok := tbl.Get(1, u); ok || tbl.Len() != 0 {
			t.Fatal("a staged push created a visible record")
		}
		got := heartbeatAsync(tbl, 2, u)
		waitForWaiters(t, tbl, 1)
		var c Changes
		tbl.CollectChanges(&c)
		if len(c.Keys) != 1 || c.Keys[0] != u {
			t.Fatalf("collected %v, want the staged record", c.Keys)
		}
		if release {
			st.Release()
		} else {
			st.Abort()
		}
		r := <-got
		wantRes, wantOut := HeartbeatCreated, []byte(nil)
		if release {
			wantRes, wantOut = HeartbeatKnown, wire.AppendServer(nil, 1, wire.CmdGeneral, nil)
		}
		if r.res != wantRes || string(r.out) != string(wantOut) || tbl.Len() != 1 {
			t.Fatalf("release=%v: heartbeat %v % x, %d records", release, r.res, r.out, tbl.Len())
		}
	}
}

// TestHeldRecordDropsAMessageThatWaitsTooLong: a commit that never ends
// does not stall the listeners: the message is dropped and nothing
// changes.
func TestHeldRecordDropsAMessageThatWaitsTooLong(t *testing.T) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	tbl.heldWait = 10 * time.Millisecond
	u := uuid(3)
	push(tbl, 1, u, 1, state.General, 0, nil)
	st := tbl.Begin()
	st.Push(2, u, 2, state.General, 0, nil, nil)
	if out, res := tbl.Heartbeat(3, u, state.UDP, addr, nil, 0, 1, nil); res != HeartbeatBusy || len(out) != 0 {
		t.Fatalf("heartbeat of a held record: %v % x", res, out)
	}
	if changed, ok := tbl.Ack(3, u, wire.CmdGeneral, 0, nil); ok || changed {
		t.Fatalf("ack of a held record: changed=%v ok=%v", changed, ok)
	}
	st.Abort()
	s, _ := tbl.Get(4, u)
	if s.Ext.GeneralID != 1 || s.Record.LastSeen != 1 {
		t.Fatalf("a dropped message changed the record: %+v", s)
	}
}

// TestConnectionDetachedDuringACommitStaysDetached: the connection is
// not part of what a stage commits; releasing the stage keeps the live
// record's.
func TestConnectionDetachedDuringACommitStaysDetached(t *testing.T) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	u := uuid(4)
	conn := new(int)
	tbl.Heartbeat(1, u, state.TCP, netip.AddrPort{}, conn, 0, 1, nil)
	st := tbl.Begin()
	_, d := st.Push(2, u, 1, state.General, 0, nil, nil)
	if d.Conn != conn {
		t.Fatalf("delivery %+v, want the connection", d)
	}
	tbl.DetachConn(u, conn)
	st.Release()
	if s, _ := tbl.Get(3, u); s.TCP || s.Ext.GeneralID != 1 {
		t.Fatalf("after release: tcp=%v pending=%d", s.TCP, s.Ext.GeneralID)
	}
}

// TestExpiringRecordIsHeldUntilReleased: records a stage removes stay
// visible until the removal is committed; a heartbeat of one waits, then
// finds it gone (and creates it anew) or, after an abort, still there.
func TestExpiringRecordIsHeldUntilReleased(t *testing.T) {
	for _, release := range []bool{false, true} {
		tbl, _ := newTable(Config{CreateByHeartbeat: true})
		u := uuid(5)
		push(tbl, 1, u, 1, state.General, 0, nil)
		st := tbl.Begin()
		if n := st.Expire(100, 50); n != 1 {
			t.Fatalf("expired %d", n)
		}
		if _, ok := tbl.Get(100, u); !ok {
			t.Fatal("expiring record invisible before its removal is committed")
		}
		got := heartbeatAsync(tbl, 101, u)
		waitForWaiters(t, tbl, 1)
		if release {
			st.Release()
		} else {
			st.Abort()
		}
		r := <-got
		wantRes, wantOut := HeartbeatKnown, wire.AppendServer(nil, 1, wire.CmdGeneral, nil)
		if release {
			wantRes, wantOut = HeartbeatCreated, nil
		}
		if r.res != wantRes || string(r.out) != string(wantOut) {
			t.Fatalf("release=%v: heartbeat %v % x", release, r.res, r.out)
		}
	}
}

// TestPushAfterExpiryInOneStagePanics guards the committer's order.
func TestPushAfterExpiryInOneStagePanics(t *testing.T) {
	tbl, _ := newTable(Config{})
	st := tbl.Begin()
	st.Expire(1, 0)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
		st.Abort()
	}()
	st.Push(1, uuid(1), 1, state.General, 0, nil, nil)
}

// TestStagedPushesOfEveryShardAreReleased: a stage releases the shard
// each uuid lives in, whatever bytes pick it, so every staged push is
// visible after the release and nothing stays held.
func TestStagedPushesOfEveryShardAreReleased(t *testing.T) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	const n = 2048
	us := make([]wire.UUID, n)
	st := tbl.Begin()
	for i := range us {
		// The first byte is the same for all; the shard comes from the rest.
		us[i] = wire.UUID{0x42, byte(i), byte(i >> 8), 0xaa, byte(i * 7)}
		st.Push(1, us[i], uint64(i+1), state.General, 0, nil, nil)
	}
	var c Changes
	tbl.CollectChanges(&c)
	st.Release()
	if tbl.Len() != n {
		t.Fatalf("%d records after the release, want %d", tbl.Len(), n)
	}
	for _, u := range us {
		if _, ok := tbl.Get(2, u); !ok {
			t.Fatalf("uuid %s staged but not released", u)
		}
	}
}
