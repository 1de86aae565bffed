package core

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/state"
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
