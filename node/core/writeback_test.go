package core

import (
	"context"
	"net/netip"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

var hbFrom = netip.MustParseAddrPort("127.0.0.1:40000")

func heartbeatNew(c *Core, from, to int) {
	for i := from; i < to; i++ {
		u := wire.UUID{0xb0, byte(i >> 16), byte(i >> 8), byte(i)}
		c.Table().Heartbeat(time.Now().UnixNano(), u, state.UDP, hbFrom, nil, 0, 1, nil)
	}
}

// Records created by heartbeats are written back in commits of at most
// WriteBackBatch records: Flush waits for all of them, and a graceful
// stop writes whatever is left.
func TestWriteBackInBatches(t *testing.T) {
	dir := t.TempDir()
	opt := Options{
		Table:          clients.Config{CreateByHeartbeat: true, OnlineWindow: int64(time.Minute)},
		WriteBackBatch: 100,
		FlushInterval:  time.Hour, // only Flush and the stop commit
	}
	c, stop := startCoreOn(t, dir, opt)
	heartbeatNew(c, 0, 1000)
	before := c.Stats().Commits.Load()
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := c.Stats().Commits.Load() - before; n < 10 {
		t.Fatalf("1000 records written back in %d commits of at most 100", n)
	}
	if n := c.WriteBackPending(); n != 0 {
		t.Fatalf("%d records not written back after Flush", n)
	}
	heartbeatNew(c, 1000, 1550)
	stop()

	c, stop = startCoreOn(t, dir, opt)
	defer stop()
	if n := c.Records(); n != 1550 {
		t.Fatalf("reopened with %d records, want 1550", n)
	}
}

func forcedGCs() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// Once the table has grown by a burst of records and they are written
// back, the core gives the memory the burst left behind back to the
// system (two forced collections), without a Flush or a restart.
func TestMemoryReleasedAfterGrowth(t *testing.T) {
	c, stop := startCoreOn(t, t.TempDir(), Options{
		Table:         clients.Config{CreateByHeartbeat: true, OnlineWindow: int64(time.Minute)},
		FlushInterval: 50 * time.Millisecond,
		ReleaseGrowth: 5000,
	})
	defer stop()
	heartbeatNew(c, 0, 5000/2)
	base := forcedGCs()
	time.Sleep(300 * time.Millisecond)
	if n := forcedGCs(); n != base {
		t.Fatalf("%d forced collections after growing by %d records, less than %d", n-base, 5000/2, 5000)
	}
	heartbeatNew(c, 5000/2, 5000+1000)
	deadline := time.Now().Add(20 * time.Second)
	for forcedGCs()-base < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("memory not released after growing by %d records (%d pending write-back)", 5000+1000, c.WriteBackPending())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Heartbeats that change nothing meaningful (same address, last-seen time
// within the same step) leave nothing to write back while the node runs;
// a new address or a new step does, and a graceful stop writes the
// latest last-seen times all the same.
func TestWriteBackOnlyMeaningfulHeartbeats(t *testing.T) {
	dir := t.TempDir()
	const step = int64(10 * time.Second)
	opt := Options{
		Table:         clients.Config{CreateByHeartbeat: true, OnlineWindow: int64(time.Minute), SeenStep: step},
		FlushInterval: time.Hour, // only Flush and the stop commit
	}
	c, stop := startCoreOn(t, dir, opt)
	base := time.Now().UnixNano()
	base -= base % step
	const n = 200
	beat := func(at int64, from netip.AddrPort) {
		for i := range n {
			c.Table().Heartbeat(at, wire.UUID{0xc0, byte(i)}, state.UDP, from, nil, 0, 1, nil)
		}
	}
	beat(base, hbFrom)
	if got := c.WriteBackPending(); got != n {
		t.Fatalf("%d records to write back after creating %d", got, n)
	}
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for k := int64(1); k <= 5; k++ {
		beat(base+k*step/10, hbFrom)
	}
	if got := c.WriteBackPending(); got != 0 {
		t.Errorf("%d records to write back after heartbeats that changed nothing meaningful", got)
	}
	other := netip.MustParseAddrPort("127.0.0.1:40001")
	beat(base+step/2, other)
	if got := c.WriteBackPending(); got != n {
		t.Errorf("%d records to write back after %d phones changed address", got, n)
	}
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	beat(base+step/2+1, other)
	if got := c.WriteBackPending(); got != 0 {
		t.Errorf("%d records to write back after heartbeats in the same step", got)
	}
	beat(base+step+1, other)
	if got := c.WriteBackPending(); got != n {
		t.Errorf("%d records to write back after heartbeats in a new step", got)
	}
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	beat(base+step+2, other) // changes nothing meaningful: not written back while running...
	if got := c.WriteBackPending(); got != 0 {
		t.Errorf("%d records to write back after heartbeats in the same step", got)
	}
	stop() // ...but a graceful stop writes it

	c, stop = startCoreOn(t, dir, opt)
	defer stop()
	for i := range n {
		snap, ok := c.Table().Get(time.Now().UnixNano(), wire.UUID{0xc0, byte(i)})
		if !ok {
			t.Fatalf("record %d lost", i)
		}
		addr, _ := snap.Record.Addr()
		if snap.Record.LastSeen != base+step+2 || addr != other {
			t.Fatalf("record %d after a graceful restart: seen %d (want %d), address %v (want %v)", i, snap.Record.LastSeen-base, step+2, addr, other)
		}
	}
}

// A phone that heartbeats every 14 s, and last did 50 s before a graceful
// restart, is still online after it (window 60 s): the stop wrote its
// last heartbeat, not the first of its step.
func TestGracefulStopKeepsLastSeen(t *testing.T) {
	dir := t.TempDir()
	const window = int64(60 * time.Second)
	const step = window / 4
	opt := Options{Table: clients.Config{CreateByHeartbeat: true, OnlineWindow: window, SeenStep: step}, FlushInterval: time.Hour}
	c, stop := startCoreOn(t, dir, opt)
	base := time.Now().UnixNano()
	base -= base % step
	u := wire.UUID{0xd0, 1}
	c.Table().Heartbeat(base, u, state.UDP, hbFrom, nil, 0, 1, nil)
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	last := base + step - int64(time.Second)
	c.Table().Heartbeat(last, u, state.UDP, hbFrom, nil, 0, 1, nil)
	stop()
	c, stop = startCoreOn(t, dir, opt)
	defer stop()
	snap, ok := c.Table().Get(last+50*int64(time.Second), u)
	if !ok {
		t.Fatal("record lost")
	}
	if snap.Record.LastSeen != last || !snap.Online {
		t.Fatalf("after a graceful restart: last seen %v before its real last heartbeat, online %v (heartbeat 50 s ago, window 60 s)", time.Duration(last-snap.Record.LastSeen), snap.Online)
	}
}

// A slot move takes a record whose last-seen time is ahead of the stored
// one as changed, so that its tail carries the time to the new home.
func TestExtractSlotsTakesLaggingLastSeen(t *testing.T) {
	const step = int64(15 * time.Second)
	c, stop := startCoreOn(t, t.TempDir(), Options{
		Table:         clients.Config{CreateByHeartbeat: true, OnlineWindow: int64(time.Minute), SeenStep: step},
		FlushInterval: time.Hour,
	})
	defer stop()
	base := time.Now().UnixNano()
	base -= base % step
	lag, still := wire.UUID{0xe0, 1}, wire.UUID{0xe0, 2}
	for _, u := range []wire.UUID{lag, still} {
		c.Table().Heartbeat(base, u, state.UDP, hbFrom, nil, 0, 1, nil)
	}
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Table().Heartbeat(base+1, lag, state.UDP, hbFrom, nil, 0, 1, nil)
	var all slotmap.Set
	all.Add(0, slotmap.NumSlots-1)
	got, err := c.ExtractSlots(context.Background(), all)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("extracted %d records, want 2", len(got))
	}
	for _, e := range got {
		if want := e.Rec.UUID == lag; e.Dirty != want {
			t.Errorf("record %x taken as changed %v, want %v (last seen %d after the stored time)", e.Rec.UUID[:2], e.Dirty, want, e.Rec.LastSeen-base)
		}
	}
}
