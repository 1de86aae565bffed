package core

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/nodetest/smallfs"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/store"
	"github.com/ddpush/ddpush-operator/node/wire"
)

func startCore(t *testing.T, dir string) (*Core, func()) {
	t.Helper()
	c, err := Open(dir, Options{
		Table:  clients.Config{CreateByHeartbeat: true, OnlineWindow: int64(time.Minute)},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	stop := func() {
		cancel()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("core did not stop")
		}
	}
	return c, stop
}

func uid(i int) wire.UUID { return wire.UUID{byte(i), byte(i >> 8), 0xcc} }

func TestConcurrentPushesShareCommits(t *testing.T) {
	c, stop := startCore(t, t.TempDir())
	defer stop()
	const n = 256
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Push(context.Background(), PushSpec{UUID: uid(i), Kind: state.Custom, Payload: []byte("x")}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	commits := c.Stats().Commits.Load()
	t.Logf("%d pushes in %d commits", n, commits)
	if commits >= n/2 {
		t.Fatalf("%d concurrent pushes took %d commits: group commit is not grouping", n, commits)
	}
}

func TestIdempotencyKeyPushesOnce(t *testing.T) {
	dir := t.TempDir()
	c, stop := startCore(t, dir)
	const n = 32
	ids := make(chan uint64, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.Push(context.Background(), PushSpec{UUID: uid(1), Kind: state.General, Key: "same-key"})
			if err != nil {
				t.Error(err)
				return
			}
			ids <- r.ID
		}()
	}
	wg.Wait()
	close(ids)
	var first uint64
	dups := 0
	for id := range ids {
		if first == 0 {
			first = id
		}
		if id != first {
			t.Fatalf("same key got ids %d and %d", first, id)
		}
		dups++
	}
	if dups != n {
		t.Fatalf("%d answers", dups)
	}
	// Only one push happened: one event, one pending general notice.
	evs, err := c.Events(context.Background(), 0, 100, 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("events %+v, %v", evs, err)
	}
	stop()

	// The key survives a restart.
	c2, stop2 := startCore(t, dir)
	defer stop2()
	r, err := c2.Push(context.Background(), PushSpec{UUID: uid(1), Kind: state.General, Key: "same-key"})
	if err != nil || r.ID != first || !r.Duplicate {
		t.Fatalf("after restart: %+v, %v (want id %d, duplicate)", r, err, first)
	}
}

func TestInvalidPushChangesNothing(t *testing.T) {
	c, stop := startCore(t, t.TempDir())
	defer stop()
	for _, p := range []PushSpec{
		{UUID: uid(1), Kind: 0},
		{UUID: uid(1), Kind: state.Custom},
		{UUID: uid(1), Kind: state.Custom, Payload: make([]byte, 501)},
		{UUID: uid(1), Kind: state.General, Payload: []byte("x")},
		{UUID: uid(1), Kind: state.General, Bits: 1},
		{UUID: uid(1), Kind: state.Classified, Payload: []byte("x")},
		{UUID: uid(1), Kind: state.Custom, Payload: []byte("x"), Bits: 2},
		{UUID: uid(1), Kind: state.General, Key: string(make([]byte, MaxKeyLen+1))},
	} {
		if _, err := c.Push(context.Background(), p); err == nil {
			t.Errorf("accepted %+v", p)
		}
	}
	if c.Records() != 0 || c.nextID.Load() != 0 {
		t.Fatalf("rejected pushes left %d records, id counter %d", c.Records(), c.nextID.Load())
	}
}

func TestEventsWaitForDurability(t *testing.T) {
	c, stop := startCore(t, t.TempDir())
	defer stop()
	got := make(chan int, 1)
	go func() {
		evs, err := c.Events(context.Background(), 0, 10, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- len(evs)
	}()
	if _, err := c.Push(context.Background(), PushSpec{UUID: uid(2), Kind: state.General}); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != 1 {
			t.Fatalf("%d events", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiting follower not woken")
	}
}

func BenchmarkPushGroupCommit(b *testing.B) {
	c, err := Open(b.TempDir(), Options{Table: clients.Config{OnlineWindow: int64(time.Minute)}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	defer func() { cancel(); <-c.Done() }()
	for _, par := range []int{1, 32} {
		b.Run(fmt.Sprintf("concurrent=%d", par), func(b *testing.B) {
			b.SetParallelism(par)
			b.ReportAllocs()
			var i int64
			var mu sync.Mutex
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					mu.Lock()
					i++
					n := i
					mu.Unlock()
					if _, err := c.Push(ctx, PushSpec{UUID: uid(int(n)), Kind: state.Custom, Payload: []byte("bench")}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// startCoreOn is startCore with options.
func startCoreOn(t *testing.T, dir string, opt Options) (*Core, func()) {
	t.Helper()
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c, err := Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	return c, func() {
		cancel()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("core did not stop")
		}
	}
}

// fillUntilRefused pushes to fresh uuids until the store cannot take one.
func fillUntilRefused(t *testing.T, c *Core) wire.UUID {
	t.Helper()
	for i := range 5000 {
		u := wire.UUID{0xf1, byte(i >> 8), byte(i)}
		if _, err := c.Push(context.Background(), PushSpec{UUID: u, Kind: state.Custom, Payload: make([]byte, 400)}); err != nil {
			return u
		}
	}
	t.Fatal("5000 pushes accepted on a full filesystem")
	return wire.UUID{}
}

// TestRefusedPushLeavesNoTrace refuses a push on a really full disk and
// checks that nothing of it is left: not in the record (the older push
// it would have superseded is still pending), not in the id or event
// counters (the next accepted push takes the id and sequence numbers it
// would have had), not in the events, not under its idempotency key, not
// in the delivery counters.
func TestRefusedPushLeavesNoTrace(t *testing.T) {
	fs := smallfs.Mount(t, 24<<20)
	c, stop := startCoreOn(t, filepath.Join(fs.Dir, "data"), Options{RetryInterval: 10 * time.Millisecond})
	defer stop()
	ctx := context.Background()
	u := uid(7)
	a, err := c.Push(ctx, PushSpec{UUID: u, Kind: state.Custom, Payload: []byte("A")})
	if err != nil {
		t.Fatal(err)
	}
	fs.Fill(t)
	refusedFiller := fillUntilRefused(t, c)
	lastID, nextSeq, durable := c.nextID.Load(), c.ev.nextSeq, c.DurableSeq()
	records := c.Records()
	var deliveries [6]uint64
	for f := range deliveries {
		deliveries[f] = c.Stats().Deliveries[f].Load()
	}

	if _, err := c.Push(ctx, PushSpec{UUID: u, Kind: state.Custom, Payload: []byte("B"), Key: "k"}); err == nil {
		t.Fatal("push accepted on a full disk")
	}
	if c.StoreErr() == nil {
		t.Fatal("no store error while commits fail")
	}
	snap, ok := c.Lookup(u)
	if !ok || snap.Ext.CustomID != a.ID || string(snap.Ext.Custom) != "A" {
		t.Fatalf("record after the refused push: %+v", snap.Ext)
	}
	if p, _, err := c.GetPush(a.ID); err != nil || p.Fate != state.Queued {
		t.Fatalf("push A after the refused push: %+v, %v", p, err)
	}
	if _, ok := c.Lookup(refusedFiller); ok {
		t.Fatal("a refused push created its record")
	}
	if c.nextID.Load() != lastID || c.ev.nextSeq != nextSeq || c.DurableSeq() != durable || c.Records() != records {
		t.Fatalf("counters moved: id %d->%d, seq %d->%d, durable %d->%d, records %d->%d",
			lastID, c.nextID.Load(), nextSeq, c.ev.nextSeq, durable, c.DurableSeq(), records, c.Records())
	}
	for f := range deliveries {
		if got := c.Stats().Deliveries[f].Load(); got != deliveries[f] {
			t.Fatalf("delivery counter %v moved from %d to %d", state.Fate(f), deliveries[f], got)
		}
	}
	if _, ok, err := c.Store().PushByKey("k"); ok || err != nil {
		t.Fatalf("the refused push's key is taken (%v)", err)
	}

	fs.Free(t)
	nodetestEventually(t, func() error { return c.StoreErr() })
	got, err := c.Push(ctx, PushSpec{UUID: u, Kind: state.Custom, Payload: []byte("C"), Key: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Duplicate || got.ID != lastID+1 {
		t.Fatalf("push after recovery: %+v, want a new push with id %d", got, lastID+1)
	}
	evs, err := c.Events(ctx, durable, 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Event{
		{Seq: nextSeq, Event: state.Event{PushID: a.ID, UUID: u, Kind: state.Custom, Fate: state.Superseded}},
		{Seq: nextSeq + 1, Event: state.Event{PushID: got.ID, UUID: u, Kind: state.Custom, Fate: state.Queued}},
	}
	if len(evs) != len(want) {
		t.Fatalf("events after recovery: %+v", evs)
	}
	for i, e := range evs {
		w := want[i]
		if e.Seq != w.Seq || e.PushID != w.PushID || e.Fate != w.Fate || e.UUID != w.UUID {
			t.Fatalf("event %d: %+v, want %+v", i, e.Event, w)
		}
	}
}

// TestRefusedExpiryRemovesNothing: an expiry whose commit fails leaves
// every record where it was, and says so; once the disk has space it
// removes them, for good.
func TestRefusedExpiryRemovesNothing(t *testing.T) {
	fs := smallfs.Mount(t, 24<<20)
	dir := filepath.Join(fs.Dir, "data")
	c, stop := startCoreOn(t, dir, Options{RetryInterval: 10 * time.Millisecond})
	ctx := context.Background()
	// Enough records that removing them rewrites more pages than a full
	// disk has free in the file.
	for i := range 300 {
		if _, err := c.Push(ctx, PushSpec{UUID: uid(i), Kind: state.Custom, Payload: make([]byte, 400)}); err != nil {
			t.Fatal(err)
		}
	}
	fs.Fill(t)
	fillUntilRefused(t, c)
	records, durable := c.Records(), c.DurableSeq()
	if n, err := c.Expire(0); err == nil {
		t.Fatalf("expiry removed %d records with a full disk", n)
	}
	if ev, err := c.Events(ctx, durable, 10, 0); err != nil || len(ev) != 0 {
		t.Fatalf("events of a refused expiry: %+v, %v", ev, err)
	}
	if c.Records() != records || c.DurableSeq() != durable {
		t.Fatalf("a refused expiry changed the table: records %d->%d, durable %d->%d", records, c.Records(), durable, c.DurableSeq())
	}
	if _, ok := c.Lookup(uid(1)); !ok {
		t.Fatal("record gone after a refused expiry")
	}
	fs.Free(t)
	n, err := c.Expire(0)
	if err != nil || n != int(records) || c.Records() != 0 {
		t.Fatalf("expiry after recovery: %d, %v, %d records left", n, err, c.Records())
	}
	stop()
	c2, stop2 := startCoreOn(t, dir, Options{})
	defer stop2()
	if c2.Records() != 0 {
		t.Fatalf("%d records back after a restart", c2.Records())
	}
}

// TestAnsweredFateIsTheStoredFate: the fate a push is answered with is
// the fate it is stored with, including a classified push of no bits,
// which is complete at once.
func TestAnsweredFateIsTheStoredFate(t *testing.T) {
	c, stop := startCore(t, t.TempDir())
	defer stop()
	for _, p := range []PushSpec{
		{UUID: uid(1), Kind: state.Classified, Bits: 0},
		{UUID: uid(1), Kind: state.Classified, Bits: 3},
		{UUID: uid(2), Kind: state.General},
		{UUID: uid(3), Kind: state.Custom, Payload: []byte("x")},
	} {
		res, err := c.Push(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		stored, ok, err := c.GetPush(res.ID)
		if err != nil || !ok {
			t.Fatalf("push %d not stored: %v", res.ID, err)
		}
		if res.Fate != stored.Fate {
			t.Errorf("%v push of bits %d answered %v, stored %v", p.Kind, p.Bits, res.Fate, stored.Fate)
		}
	}
}

func nodetestEventually(t *testing.T, check func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFateAnsweredIsTheFateCommitted: two pushes of one kind to one
// client in the same commit: the first is answered superseded, as it is
// stored, not queued as it was for a moment before the second.
func TestFateAnsweredIsTheFateCommitted(t *testing.T) {
	c, err := Open(t.TempDir(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.store.Close()
	ops := []*op{
		{push: PushSpec{UUID: uid(1), Kind: state.Custom, Payload: []byte("first")}},
		{push: PushSpec{UUID: uid(1), Kind: state.Custom, Payload: []byte("second")}},
	}
	if err := c.commit(&committer{}, ops); err != nil {
		t.Fatal(err)
	}
	for i, want := range []state.Fate{state.Superseded, state.Queued} {
		stored, _, err := c.GetPush(ops[i].res.ID)
		if err != nil || ops[i].res.Fate != want || stored.Fate != want {
			t.Fatalf("push %d: answered %v, stored %v (%v), want %v", i, ops[i].res.Fate, stored.Fate, err, want)
		}
	}
}
