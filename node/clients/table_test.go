package clients

import (
	"net/netip"
	"testing"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

type recordingSink struct{ evs []state.Event }

func (s *recordingSink) Append(evs []state.Event) { s.evs = append(s.evs, evs...) }

func newTable(cfg Config) (*ClientTable, *recordingSink) {
	s := &recordingSink{}
	if cfg.OnlineWindow == 0 {
		cfg.OnlineWindow = 60e9
	}
	return New(cfg, s), s
}

func uuid(i int) wire.UUID {
	var u wire.UUID
	u[0], u[1], u[2] = byte(i), byte(i>>8), byte(i>>16)
	u[15] = 0xaa
	return u
}

var addr = netip.MustParseAddrPort("127.0.0.1:40000")

func TestHeartbeatOfKnownClientAllocatesNothing(t *testing.T) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true, Policy: state.PolicyAlways})
	for i := range 1000 {
		tbl.Heartbeat(1, uuid(i), state.UDP, addr, nil, 0, 1, nil)
	}
	out := make([]byte, 0, 64)
	u := uuid(500)
	now := int64(2)
	allocs := testing.AllocsPerRun(1000, func() {
		now++
		out, _ = tbl.Heartbeat(now, u, state.UDP, addr, nil, 0, 1, out[:0])
	})
	if allocs != 0 {
		t.Fatalf("heartbeat allocates %.1f times per packet", allocs)
	}
	if len(out) != wire.ServerHeaderLen {
		t.Fatalf("answer % x", out)
	}
}

func TestLookupAllocatesNothing(t *testing.T) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	for i := range 1000 {
		tbl.Heartbeat(1, uuid(i), state.UDP, addr, nil, 0, 1, nil)
	}
	u := uuid(77)
	s := tbl.shard(&u)
	allocs := testing.AllocsPerRun(1000, func() {
		s.mu.Lock()
		r := s.lookup(&u)
		s.mu.Unlock()
		if r == nil {
			t.Fatal("not found")
		}
	})
	if allocs != 0 {
		t.Fatalf("lookup allocates %.1f times", allocs)
	}
}

func TestChangesAreCollectedOnceAndRedone(t *testing.T) {
	tbl, sink := newTable(Config{CreateByHeartbeat: true})
	tbl.Heartbeat(1, uuid(1), state.UDP, addr, nil, 0, 1, nil)
	tbl.Heartbeat(2, uuid(2), state.UDP, addr, nil, 0, 1, nil)
	var c Changes
	tbl.CollectChanges(&c)
	if len(c.Keys) != 2 || len(c.Values) != 2 {
		t.Fatalf("first collection: %d keys", len(c.Keys))
	}
	for i, k := range c.Keys {
		var r state.Record
		if err := r.UnmarshalBinary(c.Values[i]); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	c.Reset()
	tbl.CollectChanges(&c)
	if len(c.Keys) != 0 {
		t.Fatalf("clean records collected again: %v", c.Keys)
	}
	// A failed write is retried.
	tbl.Heartbeat(3, uuid(1), state.UDP, addr, nil, 0, 1, nil)
	tbl.CollectChanges(&c)
	tbl.Redo(&c)
	c.Reset()
	tbl.CollectChanges(&c)
	if len(c.Keys) != 1 || c.Keys[0] != uuid(1) {
		t.Fatalf("after redo: %v", c.Keys)
	}
	if len(sink.evs) != 0 {
		t.Fatalf("heartbeats without pushes made events %+v", sink.evs)
	}
}

// push stages and releases one push, as a successful commit does.
func push(tbl *ClientTable, now int64, u wire.UUID, id uint64, kind state.Kind, bits uint64, payload []byte) (state.Fate, Delivery, []state.Event) {
	st := tbl.Begin()
	fate, d := st.Push(now, u, id, kind, bits, payload, nil)
	var c Changes
	tbl.CollectChanges(&c)
	st.Release()
	return fate, d, st.Events()
}

func TestExpireRemovesAndReportsGone(t *testing.T) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	push(tbl, 10, uuid(1), 1, state.General, 0, nil)
	tbl.Heartbeat(100, uuid(2), state.UDP, addr, nil, 0, 1, nil)
	conn := new(int)
	tbl.Heartbeat(10, uuid(3), state.TCP, netip.AddrPort{}, conn, 0, 1, nil)
	var c Changes
	tbl.CollectChanges(&c)
	st := tbl.Begin()
	if n := st.Expire(200, 50); n != 1 {
		t.Fatalf("expired %d, want 1 (the TCP client stays, the recent one stays)", n)
	}
	c.Reset()
	tbl.CollectChanges(&c)
	if len(c.Gone) != 1 || c.Gone[0] != uuid(1) {
		t.Fatalf("gone %v", c.Gone)
	}
	evs := st.Events()
	if len(evs) != 1 || evs[0].Fate != state.Expired || evs[0].PushID != 1 {
		t.Fatalf("events %+v", evs)
	}
	if _, ok := tbl.Get(200, uuid(1)); !ok {
		t.Fatal("expired record gone before its removal is committed")
	}
	st.Release()
	if tbl.Len() != 2 {
		t.Fatalf("len %d", tbl.Len())
	}
	if _, ok := tbl.Get(200, uuid(1)); ok {
		t.Fatal("expired record still there after release")
	}
	// The slot is reused and the new record starts clean.
	tbl.Heartbeat(300, uuid(4), state.UDP, addr, nil, 0, 1, nil)
	if s, ok := tbl.Get(300, uuid(4)); !ok || s.Record.HasPending() {
		t.Fatalf("reused slot: %+v %v", s, ok)
	}
}

func TestDetachOnlyTheCurrentConnection(t *testing.T) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	a, b := new(int), new(int)
	tbl.Heartbeat(1, uuid(1), state.TCP, netip.AddrPort{}, a, 0, 1, nil)
	tbl.Heartbeat(2, uuid(1), state.TCP, netip.AddrPort{}, b, 0, 1, nil)
	tbl.DetachConn(uuid(1), a) // the old connection closing must not unplug the new one
	if s, _ := tbl.Get(3, uuid(1)); !s.TCP {
		t.Fatal("new connection detached by the old one")
	}
	tbl.DetachConn(uuid(1), b)
	if s, _ := tbl.Get(3, uuid(1)); s.TCP {
		t.Fatal("connection still attached")
	}
}

func BenchmarkHeartbeat(b *testing.B) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true, Policy: state.PolicyAlways})
	const n = 1 << 16
	for i := range n {
		tbl.Heartbeat(1, uuid(i), state.UDP, addr, nil, 0, 1, nil)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		out := make([]byte, 0, 64)
		i := 0
		for pb.Next() {
			out, _ = tbl.Heartbeat(int64(i), uuid(i&(n-1)), state.UDP, addr, nil, 0, 1, out[:0])
			i++
		}
	})
}

func BenchmarkLookup(b *testing.B) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	const n = 1 << 16
	for i := range n {
		tbl.Heartbeat(1, uuid(i), state.UDP, addr, nil, 0, 1, nil)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tbl.Get(1, uuid(i&(n-1)))
	}
}

// Every byte of a uuid takes part in choosing its shard: uuids that differ
// in one byte only, at any position, spread over the shards instead of
// all waiting on one lock.
func TestShardUsesEveryByte(t *testing.T) {
	if shardCount != 256 {
		t.Fatalf("the test expects 256 shards, the table has %d", shardCount)
	}
	for pos := range wire.UUIDLen {
		seen := map[int]bool{}
		for v := range 256 {
			var u wire.UUID
			copy(u[:], "0123456789abcdef")
			u[pos] = byte(v)
			seen[shardOf(&u)] = true
		}
		// 256 values thrown at 256 shards at random reach about 162.
		if len(seen) < 128 {
			t.Errorf("uuids differing only in byte %d reach %d of %d shards", pos, len(seen), shardCount)
		}
	}
}

// A shard grows by whole chunks: records keep their place as it grows,
// slots freed by expiry are reused before a new chunk is taken, and every
// record is found and ranged over across chunk boundaries.
func TestShardGrowsByChunks(t *testing.T) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	// uuids of one shard, enough for three chunks and a bit.
	var ids []wire.UUID
	shard := -1
	for i := 0; len(ids) < 3*chunkLen+5; i++ {
		u := uuid(i)
		if shard < 0 {
			shard = shardOf(&u)
		}
		if shardOf(&u) == shard {
			ids = append(ids, u)
		}
	}
	s := &tbl.shards[shard]
	tbl.Heartbeat(1, ids[0], state.UDP, addr, nil, 0, 1, nil)
	r0 := s.lookup(&ids[0])
	for _, u := range ids[1:] {
		tbl.Heartbeat(1, u, state.UDP, addr, nil, 0, 1, nil)
	}
	if got := len(s.chunks); got != 4 {
		t.Fatalf("%d records in %d chunks, want 4", len(ids), got)
	}
	if s.lookup(&ids[0]) != r0 {
		t.Fatal("a record moved when its shard grew")
	}
	// Expire the first chunkLen+1 records (last seen at 1), keep the rest.
	for _, u := range ids[chunkLen+1:] {
		tbl.Heartbeat(5, u, state.UDP, addr, nil, 0, 1, nil)
	}
	st := tbl.Begin()
	if n := st.Expire(10, 3); n != chunkLen+1 {
		t.Fatalf("expired %d, want %d", n, chunkLen+1)
	}
	st.Release()
	if tbl.Len() != int64(len(ids)-chunkLen-1) {
		t.Fatalf("Len %d", tbl.Len())
	}
	// New records take the freed slots: no new chunk.
	for i := range chunkLen + 1 {
		tbl.Heartbeat(20, ids[i], state.UDP, addr, nil, 0, 1, nil)
	}
	if got := len(s.chunks); got != 4 || s.n != uint32(len(ids)) {
		t.Fatalf("after reuse: %d chunks, %d slots", got, s.n)
	}
	seen := map[wire.UUID]bool{}
	tbl.Range(func(r *state.Record) bool { seen[r.UUID] = true; return true })
	for _, u := range ids {
		snap, ok := tbl.Get(20, u)
		if !ok || !seen[u] || snap.Record.UUID != u {
			t.Fatalf("record %s lost (get %v, ranged %v)", u, ok, seen[u])
		}
	}
}

// A capped collection takes at most Limit changed records, leaves the rest
// dirty for the next, and the next ones start where it stopped, so that
// every record is collected exactly once.
func TestCollectChangesLimit(t *testing.T) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	const n = 1000
	for i := range n {
		tbl.Heartbeat(1, uuid(i), state.UDP, addr, nil, 0, 1, nil)
	}
	seen := map[wire.UUID]int{}
	var c Changes
	rounds := 0
	for more := true; more; rounds++ {
		c.Reset()
		c.Limit = 64
		more = tbl.CollectChanges(&c)
		if len(c.Keys) > 64 || len(c.Keys) != len(c.Values) {
			t.Fatalf("round %d: %d keys, %d values, limit 64", rounds, len(c.Keys), len(c.Values))
		}
		for i, u := range c.Keys {
			seen[u]++
			if snap, _ := tbl.Get(1, u); string(snap.Record.AppendBinary(nil)) != string(c.Values[i]) {
				t.Fatalf("value of %s is not its record", u)
			}
		}
		if got, want := tbl.Dirty(), int64(n-len(seen)); got != want {
			t.Fatalf("round %d: %d dirty, want %d", rounds, got, want)
		}
	}
	if rounds != (n+63)/64 || len(seen) != n {
		t.Fatalf("%d records collected in %d rounds", len(seen), rounds)
	}
	for u, k := range seen {
		if k != 1 {
			t.Fatalf("%s collected %d times", u, k)
		}
	}
}

// Once written back, a shard's dirty list does not keep the capacity a
// burst of new records grew it to.
func TestDirtyListShrinksAfterBurst(t *testing.T) {
	tbl, _ := newTable(Config{CreateByHeartbeat: true})
	shard := -1
	made := 0
	for i := 0; made <= maxIdleDirtyCap; i++ {
		u := wire.UUID{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24), 0xdd}
		if shard < 0 {
			shard = shardOf(&u)
		}
		if shardOf(&u) == shard {
			tbl.Heartbeat(1, u, state.UDP, addr, nil, 0, 1, nil)
			made++
		}
	}
	s := &tbl.shards[shard]
	if cap(s.dirty) <= maxIdleDirtyCap {
		t.Fatalf("dirty list of %d records has capacity %d", made, cap(s.dirty))
	}
	var c Changes
	if tbl.CollectChanges(&c) || len(c.Keys) != made {
		t.Fatalf("collected %d of %d", len(c.Keys), made)
	}
	if cap(s.dirty) != 0 {
		t.Fatalf("written-back dirty list keeps capacity %d", cap(s.dirty))
	}
}
