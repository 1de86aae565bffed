package tcpaccept

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func listen(t *testing.T, opt Options) *Listener {
	t.Helper()
	if opt.Log == nil {
		opt.Log = quietLog()
	}
	l, err := Listen("127.0.0.1:0", opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = l.Shutdown(ctx)
	})
	return l
}

// dialFrom connects to l from the loopback address src (127.0.0.x).
func dialFrom(t *testing.T, l *Listener, src string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByPeer reports whether the server closed c (EOF or reset) within
// a few seconds; false means it is still open.
func closedByPeer(t *testing.T, c net.Conn, within time.Duration) bool {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// echo serves every connection by echoing until EOF or drain.
func echo(c *Conn) {
	defer c.Close()
	buf := make([]byte, 64)
	for {
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("no echo: %v", err)
	}
}

func TestLimitsTotalAndPerSource(t *testing.T) {
	var overTotal, overSource atomic.Int64
	l := listen(t, Options{Limits: Limits{MaxConns: 4, MaxConnsPerSource: 2}, Name: "test",
		Refused: func(r Refusal) {
			if r == OverSource {
				overSource.Add(1)
			} else {
				overTotal.Add(1)
			}
		}})
	go l.Serve(echo)

	// Two from one address are served; the third is closed at once.
	a1, a2 := dialFrom(t, l, "127.0.0.1"), dialFrom(t, l, "127.0.0.1")
	roundTrip(t, a1)
	roundTrip(t, a2)
	if !closedByPeer(t, dialFrom(t, l, "127.0.0.1"), 5*time.Second) {
		t.Fatal("a third connection from one address was kept")
	}
	// Another address still gets in: one peer cannot take every place.
	b1, b2 := dialFrom(t, l, "127.0.0.2"), dialFrom(t, l, "127.0.0.2")
	roundTrip(t, b1)
	roundTrip(t, b2)
	// The total cap holds across addresses.
	if !closedByPeer(t, dialFrom(t, l, "127.0.0.3"), 5*time.Second) {
		t.Fatal("a connection past the total cap was kept")
	}
	if overSource.Load() != 1 || overTotal.Load() != 1 {
		t.Fatalf("refusals: %d over source, %d over total; want 1 and 1", overSource.Load(), overTotal.Load())
	}
	// A closed connection frees its place, in total and for its source.
	a1.Close()
	waitOpen(t, l, 3)
	a3 := dialFrom(t, l, "127.0.0.1")
	roundTrip(t, a3)
	if l.Open() != 4 {
		t.Fatalf("%d open, want 4", l.Open())
	}
}

func waitOpen(t *testing.T, l *Listener, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for l.Open() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", l.Open(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNoCapsMeansNoCaps(t *testing.T) {
	l := listen(t, Options{})
	go l.Serve(echo)
	for range 20 {
		roundTrip(t, dialFrom(t, l, "127.0.0.1"))
	}
	if l.Open() != 20 {
		t.Fatalf("%d open, want 20", l.Open())
	}
}

// TestDeadlineReArmedAfterDrainStillWakes is the race behind a shutdown
// that waited out an idle timeout: a handler that sets a long read
// deadline just after the drain interrupted its connection (it was busy
// answering, not reading) must still wake at once. Here the handler
// re-arms exactly then, every time.
func TestDeadlineReArmedAfterDrainStillWakes(t *testing.T) {
	l := listen(t, Options{})
	busy := make(chan struct{})
	proceed := make(chan struct{})
	go l.Serve(func(c *Conn) {
		defer c.Close()
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			return
		}
		close(busy)
		<-proceed // answering the request while the drain begins
		for {
			_ = c.SetReadDeadline(time.Now().Add(time.Hour))
			if _, err := c.Read(b[:]); err != nil {
				return
			}
		}
	})
	c := dialFrom(t, l, "127.0.0.1")
	if _, err := c.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	<-busy
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- l.Shutdown(ctx)
	}()
	for !l.drainedForTest() {
		if time.Since(start) > 5*time.Second {
			t.Fatal("drain did not begin")
		}
		time.Sleep(time.Millisecond)
	}
	close(proceed)
	if err := <-done; err != nil || time.Since(start) > 3*time.Second {
		t.Fatalf("shutdown took %v: %v", time.Since(start), err)
	}
}

// TestDrainLetsAnAnswerOut: a handler busy with a request when the drain
// begins still writes its answer, then sees Draining and closes.
func TestDrainLetsAnAnswerOut(t *testing.T) {
	l := listen(t, Options{})
	got := make(chan struct{})
	release := make(chan struct{})
	go l.Serve(func(c *Conn) {
		defer c.Close()
		var b [1]byte
		for !c.Draining() {
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := c.Read(b[:]); err != nil {
				return
			}
			close(got)
			<-release // the request is being handled
			_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
			if _, err := c.Write([]byte("A")); err != nil {
				return
			}
		}
	})
	c := dialFrom(t, l, "127.0.0.1")
	if _, err := c.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	<-got
	done := make(chan error, 1)
	go func() { done <- l.Shutdown(context.Background()) }()
	// The drain begins while the request is handled.
	deadline := time.Now().Add(5 * time.Second)
	for !l.drainedForTest() {
		if time.Now().After(deadline) {
			t.Fatal("drain did not begin")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, err := io.ReadAll(c)
	if !bytes.Equal(all, []byte("A")) {
		t.Fatalf("read %q (%v), want the answer then EOF", all, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func (l *Listener) drainedForTest() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.drained
}

// TestShutdownBoundedByAPeerThatDoesNotRead: a handler blocked writing to
// a peer that reads nothing (and a write deadline of an hour) is cut off
// by the drain's write limit.
func TestShutdownBoundedByAPeerThatDoesNotRead(t *testing.T) {
	l := listen(t, Options{})
	writing := make(chan struct{})
	go l.Serve(func(c *Conn) {
		defer c.Close()
		_ = c.SetWriteDeadline(time.Now().Add(time.Hour))
		big := make([]byte, 1<<20)
		var once sync.Once
		for {
			once.Do(func() { close(writing) })
			if _, err := c.Write(big); err != nil {
				return
			}
		}
	})
	c := dialFrom(t, l, "127.0.0.1")
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	<-writing
	time.Sleep(100 * time.Millisecond) // the socket buffers fill up
	start := time.Now()
	if err := l.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > drainGrace+2*time.Second {
		t.Fatalf("shutdown took %v with a peer that does not read", d)
	}
}

// TestShutdownDeadlineClosesByForce: a handler that ignores the drain
// (it never reads, it sleeps on its connection being closed) is closed by
// force at ctx's end, and Shutdown says so.
func TestShutdownDeadlineClosesByForce(t *testing.T) {
	l := listen(t, Options{Name: "stubborn"})
	started := make(chan struct{})
	go l.Serve(func(c *Conn) {
		close(started)
		// Reads the raw connection, so the drain's deadline does not stop
		// it: only closing the connection does.
		var b [1]byte
		for {
			_ = c.Conn.SetReadDeadline(time.Time{})
			_, err := c.Conn.Read(b[:])
			var ne net.Error
			if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
				return
			}
		}
	})
	dialFrom(t, l, "127.0.0.1")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := l.Shutdown(ctx)
	if err == nil {
		t.Fatal("shutdown past its deadline reported nothing")
	}
	if d := time.Since(start); d > 300*time.Millisecond+closeGrace {
		t.Fatalf("shutdown took %v", d)
	}
	if l.Open() != 0 {
		t.Fatalf("%d connections left open", l.Open())
	}
}

// TestShutdownRightAfterServe races Serve on its goroutine against an
// immediate Shutdown (as a node stopped right after starting does), and
// a Shutdown with no Serve at all.
func TestShutdownRightAfterServe(t *testing.T) {
	for range 100 {
		l, err := Listen("127.0.0.1:0", Options{Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan struct{})
		go func() {
			_ = l.Serve(echo)
			close(served)
		}()
		if err := l.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-served
	}
	l, err := Listen("127.0.0.1:0", Options{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.Serve(echo); err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// TestConnectionsAcceptedDuringShutdownAreClosed: a client dialing while
// the listener shuts down is either served and ended by the drain, or
// closed; none stays open once Shutdown returned.
func TestConnectionsAcceptedDuringShutdownAreClosed(t *testing.T) {
	for range 20 {
		l, err := Listen("127.0.0.1:0", Options{Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		go l.Serve(echo)
		stop := make(chan struct{})
		var dialers sync.WaitGroup
		var conns []net.Conn
		var mu sync.Mutex
		for range 4 {
			dialers.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					c, err := net.Dial("tcp", l.Addr().String())
					if err != nil {
						return
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			})
		}
		time.Sleep(5 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = l.Shutdown(ctx)
		cancel()
		close(stop)
		dialers.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if l.Open() != 0 {
			t.Fatalf("%d connections open after Shutdown", l.Open())
		}
		for _, c := range conns {
			c.Close()
		}
	}
}
