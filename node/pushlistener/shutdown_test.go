package pushlistener

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/pusher"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/wire"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startCore runs a core on a temporary store until the test ends.
func startCore(t *testing.T) *core.Core {
	t.Helper()
	c, err := core.Open(t.TempDir(), core.Options{
		Table:  clients.Config{CreateByHeartbeat: true, Policy: state.PolicyNever, OnlineWindow: int64(time.Minute)},
		Logger: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	t.Cleanup(func() {
		cancel()
		<-c.Done()
	})
	return c
}

// serve runs a push listener on c; it is shut down when the test ends
// unless the test did so.
func serve(t *testing.T, c *core.Core, opt Options) *PushListener {
	t.Helper()
	l, err := Listen("127.0.0.1:0", c, opt, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	go l.Serve()
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func uuidOf(i, j int) wire.UUID {
	var u wire.UUID
	copy(u[:], fmt.Sprintf("p%03d-%011d", i, j))
	return u
}

// shutdownWithin shuts l down and fails the test if that takes longer
// than bound or reports connections closed by force.
func shutdownWithin(t *testing.T, l *PushListener, bound time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := l.Shutdown(ctx)
	if d := time.Since(start); d > bound || err != nil {
		t.Fatalf("shutdown took %v (bound %v): %v", d, bound, err)
	}
}

// TestShutdownRightAfterAnAnswer: the connection that just answered a
// push re-arms its idle timeout (600 s) while the listener shuts down;
// the shutdown must not wait for it.
func TestShutdownRightAfterAnAnswer(t *testing.T) {
	c := startCore(t)
	for i := range 30 {
		l := serve(t, c, Options{})
		p, err := pusher.Dial(l.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.General(uuidOf(0, i)); err != nil {
			t.Fatal(err)
		}
		shutdownWithin(t, l, 3*time.Second)
		// The connection is closed, not left open.
		if _, err := p.Raw(wire.AppendPush(nil, 1, wire.CmdGeneral, uuidOf(0, i), nil)); err == nil {
			t.Fatal("a push after shutdown was answered")
		}
		p.Close()
	}
}

// TestShutdownUnderContinuousPushes: sixteen connections push without a
// pause; shutdown ends every one promptly, and every push answered 0 is
// in the table.
func TestShutdownUnderContinuousPushes(t *testing.T) {
	c := startCore(t)
	l := serve(t, c, Options{})
	const workers = 16
	accepted := make([][]int, workers)
	var total atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			p, err := pusher.Dial(l.Addr().String(), 10*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer p.Close()
			for i := 0; ; i++ {
				u := uuidOf(w, i)
				if err := p.Custom(u, u[:]); err != nil {
					if errors.Is(err, pusher.ErrRejected) {
						t.Errorf("push %d of worker %d rejected", i, w)
					}
					return
				}
				accepted[w] = append(accepted[w], i)
				total.Add(1)
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for total.Load() < 500 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d pushes in 30 s", total.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	shutdownWithin(t, l, 3*time.Second)
	wg.Wait()
	if l.Conns() != 0 {
		t.Fatalf("%d connections open after shutdown", l.Conns())
	}
	for w := range workers {
		for _, i := range accepted[w] {
			u := uuidOf(w, i)
			s, ok := c.Lookup(u)
			if !ok || string(s.Ext.Custom) != string(u[:]) {
				t.Fatalf("push %d of worker %d answered 0 but not in the table", i, w)
			}
		}
	}
	t.Logf("%d pushes answered before shutdown", total.Load())
}

// TestShutdownIsNotCountedAsADrop: connections the shutdown ends (idle,
// or in the middle of a request) are not the peers' fault.
func TestShutdownIsNotCountedAsADrop(t *testing.T) {
	c := startCore(t)
	l := serve(t, c, Options{})
	idle, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	half, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	req := wire.AppendPush(nil, 1, wire.CmdCustom, uuidOf(1, 1), []byte("half"))
	if _, err := half.Write(req[:10]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for l.Conns() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("connections not accepted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the half request is being read
	shutdownWithin(t, l, 3*time.Second)
	st := c.Stats()
	for _, d := range []stats.Drop{stats.DropPushIdle, stats.DropPushSlowFrame} {
		if n := st.Drops[d].Load(); n != 0 {
			t.Errorf("%s counted %d times for a shutdown", d, n)
		}
	}
	if _, ok := c.Lookup(uuidOf(1, 1)); ok {
		t.Fatal("half a request was applied")
	}
}

// TestConnectionsPerSource: one address cannot take every place on the
// push port.
func TestConnectionsPerSource(t *testing.T) {
	c := startCore(t)
	l := serve(t, c, Options{MaxConns: 10, MaxConnsPerSource: 2})
	// push sends a general push from a new connection from src and
	// returns the answer.
	push := func(src string, u wire.UUID) error {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		nc, err := d.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() }) // held open: it keeps its place
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := nc.Write(wire.AppendPush(nil, 1, wire.CmdGeneral, u, nil)); err != nil {
			return err
		}
		var ans [1]byte
		if _, err := io.ReadFull(nc, ans[:]); err != nil {
			return err
		}
		if ans[0] != wire.PushAccepted {
			return fmt.Errorf("answer %d", ans[0])
		}
		return nil
	}
	for i := range 2 {
		if err := push("127.0.0.1", uuidOf(2, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := push("127.0.0.1", uuidOf(2, 2)); err == nil {
		t.Fatal("a third connection from one address was served")
	}
	if err := push("127.0.0.2", uuidOf(2, 3)); err != nil {
		t.Fatalf("another address was refused: %v", err)
	}
	st := c.Stats()
	if st.Drops[stats.DropPushPerSource].Load() != 1 || st.Drops[stats.DropPushConnLimit].Load() != 0 {
		t.Fatalf("drops %v", st.DropsByName())
	}
}
