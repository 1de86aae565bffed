package core

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// An ack's change to its record is durable in the same commit as its
// Acknowledged event, however many heartbeat-changed records wait for
// write-back: otherwise a crash right after that commit finds the push
// acknowledged in the store and still pending in its record, and the
// phone's next heartbeat gets it again. The same for a heartbeat that
// hands a push over (its Sent event).
func TestAckIsDurableWithItsEventBehindAWriteBackBacklog(t *testing.T) {
	for _, backlog := range []int{0, 1, 99, 100, 101, 250} {
		dir := t.TempDir()
		opt := Options{
			Table:          clients.Config{CreateByHeartbeat: true, OnlineWindow: int64(time.Minute)},
			Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
			WriteBackBatch: 100,
		}
		c, err := Open(dir, opt)
		if err != nil {
			t.Fatal(err)
		}
		w := &committer{}
		acked, sent := wire.UUID{0xaa, 1}, wire.UUID{0xaa, 2}
		ids := map[wire.UUID]uint64{}
		for _, u := range []wire.UUID{acked, sent} {
			o := &op{push: PushSpec{UUID: u, Kind: state.Custom, Payload: []byte("pay me once")}}
			if _, err := c.enqueue(o); err != nil {
				t.Fatal(err)
			}
			if err := c.commitCycle(w); err != nil || o.err != nil {
				t.Fatal(err, o.err)
			}
			ids[u] = o.res.ID
		}
		for i := range backlog {
			u := wire.UUID{0xb0, byte(i >> 16), byte(i >> 8), byte(i)}
			c.Table().Heartbeat(time.Now().UnixNano(), u, state.UDP, hbFrom, nil, 0, 1, nil)
		}
		now := time.Now().UnixNano()
		c.Table().Heartbeat(now, acked, state.UDP, hbFrom, nil, 0, 1, nil) // handed over
		if _, ok := c.Table().Ack(now, acked, wire.CmdCustom, 0, nil); !ok {
			t.Fatal("ack refused")
		}
		c.Table().Heartbeat(now, sent, state.UDP, hbFrom, nil, 0, 1, nil) // handed over, not acked
		if err := c.commitCycle(w); err != nil {
			t.Fatal(err)
		}
		if err := c.store.Close(); err != nil { // as a SIGKILL: nothing more is committed
			t.Fatal(err)
		}

		c2, err := Open(dir, opt)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := c2.Lookup(acked)
		pa, _, _ := c2.GetPush(ids[acked])
		if pa.Fate != state.Acknowledged || a.Ext.Custom != nil {
			t.Errorf("backlog %d: acked push is %v in the store, record still pending: %v", backlog, pa.Fate, a.Ext.Custom != nil)
		}
		s, _ := c2.Lookup(sent)
		ps, _, _ := c2.GetPush(ids[sent])
		if ps.Fate != state.Sent || !s.Ext.CustomSent {
			t.Errorf("backlog %d: handed-over push is %v in the store, record says sent: %v", backlog, ps.Fate, s.Ext.CustomSent)
		}
		c2.store.Close()
	}
}
