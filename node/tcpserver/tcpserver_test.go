package tcpserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/clients"
	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/ratelimit"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/wire"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start runs a core and a TCP client server on loopback until the test
// ends.
func start(t *testing.T, maxContent int, opt Options) (*Server, *core.Core) {
	t.Helper()
	c, err := core.Open(t.TempDir(), core.Options{
		Table:         clients.Config{CreateByHeartbeat: true, Policy: state.PolicyNever, OnlineWindow: int64(time.Minute)},
		MaxContentLen: maxContent,
		Logger:        quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	s, err := Listen("127.0.0.1:0", c, ratelimit.New(0), opt, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := s.Shutdown(sctx); err != nil {
			t.Error(err)
		}
		cancel()
		<-c.Done()
	})
	return s, c
}

func uuidOf(s string) wire.UUID {
	var u wire.UUID
	copy(u[:], s)
	return u
}

// client is a phone on a real TCP connection.
type client struct {
	t  *testing.T
	nc net.Conn
	u  wire.UUID
}

func dial(t *testing.T, s *Server, u wire.UUID) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, u: u}
}

// dialSmallBuffer connects with a receive buffer of a few kilobytes, so
// that what the node sends soon waits in the node.
func dialSmallBuffer(t *testing.T, s *Server, u wire.UUID) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048) })
		return errors.Join(err, serr)
	}}
	nc, err := d.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, u: u}
}

func (c *client) send(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) heartbeat() { c.send(wire.AppendClient(nil, 1, wire.CmdHeartbeat, c.u, nil)) }

// read reads one server message.
func (c *client) read(timeout time.Duration) (wire.ServerMessage, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	hdr := make([]byte, wire.ServerHeaderLen)
	if _, err := io.ReadFull(c.nc, hdr); err != nil {
		return wire.ServerMessage{}, err
	}
	frame := make([]byte, wire.ServerFrameLen(hdr))
	copy(frame, hdr)
	if _, err := io.ReadFull(c.nc, frame[len(hdr):]); err != nil {
		return wire.ServerMessage{}, err
	}
	var m wire.ServerMessage
	err := wire.DecodeServer(frame, &m)
	return m, err
}

// attached waits until the table has c's connection for its uuid.
func attached(t *testing.T, c *core.Core, u wire.UUID) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if s, ok := c.Lookup(u); ok && s.TCP {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("client not attached to its connection")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func push(t *testing.T, c *core.Core, u wire.UUID, payload string) {
	t.Helper()
	if _, err := c.Push(context.Background(), core.PushSpec{UUID: u, Kind: state.Custom, Payload: []byte(payload)}); err != nil {
		t.Error(err)
	}
}

// TestBurstEndsWithTheLatest: a client that is not reading at the moment
// gets 300 pushes at once, more than its socket buffers hold. It is not
// dropped, and once it reads it has the latest message (the protocol
// keeps only that one), on a connection that still works.
func TestBurstEndsWithTheLatest(t *testing.T) {
	const size = 500
	s, c := start(t, size, Options{})
	u := uuidOf("burst-client-001")
	cl := dialSmallBuffer(t, s, u)
	cl.heartbeat()
	attached(t, c, u)

	body := func(i int) string {
		return fmt.Sprintf("message %03d ", i) + string(bytes.Repeat([]byte("x"), size-12))
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range next {
				push(t, c, u, body(i))
			}
		})
	}
	for i := range 300 {
		next <- i
	}
	close(next)
	wg.Wait()
	snap, _ := c.Lookup(u)
	latest := string(snap.Ext.Custom)

	var got []string
	for {
		m, err := cl.read(2 * time.Second)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		if m.Cmd != wire.CmdCustom {
			t.Fatalf("unexpected message %#x", m.Cmd)
		}
		got = append(got, string(m.Body))
	}
	t.Logf("300 pushes reached the client as %d messages", len(got))
	if len(got) == 0 || got[len(got)-1] != latest {
		t.Fatalf("%d messages, the last is not the latest push", len(got))
	}
	if n := c.Stats().Drops[stats.DropTCPSlowReader].Load(); n != 0 {
		t.Fatalf("dropped as a slow reader %d times", n)
	}
	if n := c.Stats().PacketsOut[stats.TCP].Load(); n != uint64(len(got)) {
		t.Fatalf("%d packets counted out, %d written", n, len(got))
	}
	// Still connected: a heartbeat gets the pending message again.
	cl.heartbeat()
	m, err := cl.read(5 * time.Second)
	if err != nil || string(m.Body) != latest {
		t.Fatalf("after the burst: %.20q, %v", m.Body, err)
	}
}

// TestSlowReaderKeepsTheLatest: a client reads, but slower than big
// pushes come in, so the node's writes to it wait on full socket
// buffers. It is not dropped, and it ends up with the latest message.
func TestSlowReaderKeepsTheLatest(t *testing.T) {
	const size = 60000
	s, c := start(t, size, Options{})
	u := uuidOf("slow-reader-0001")
	cl := dialSmallBuffer(t, s, u)
	cl.heartbeat()
	attached(t, c, u)

	// The client reads 16 kB every 5 ms, about 3 MB/s.
	var received bytes.Buffer
	readerDone := make(chan error, 1)
	pushed := make(chan struct{})
	go func() {
		buf := make([]byte, 16<<10)
		for {
			_ = cl.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := cl.nc.Read(buf)
			received.Write(buf[:n])
			if err != nil {
				var ne net.Error
				select {
				case <-pushed:
					if errors.As(err, &ne) && ne.Timeout() {
						err = nil // quiet for 2 s after the last push: all in
					}
				default:
				}
				readerDone <- err
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Go(func() {
			payload := bytes.Repeat([]byte("x"), size)
			for i := range next {
				copy(payload, fmt.Sprintf("message %03d", i))
				push(t, c, u, string(payload))
			}
		})
	}
	for i := range 300 { // 18 MB
		next <- i
	}
	close(next)
	wg.Wait()
	close(pushed)
	snap, _ := c.Lookup(u)
	latest := string(snap.Ext.Custom)
	if err := <-readerDone; err != nil {
		t.Fatalf("client read %d bytes, then: %v", received.Len(), err)
	}
	b := received.Bytes()
	var got int
	var last string
	for len(b) > 0 {
		n := wire.ServerFrameLen(b)
		var m wire.ServerMessage
		if n == 0 || n > len(b) || wire.DecodeServer(b[:n], &m) != nil {
			t.Fatalf("garbled stream after %d messages", got)
		}
		got++
		last = string(m.Body)
		b = b[n:]
	}
	t.Logf("300 pushes of %d bytes reached the client as %d messages", size, got)
	if last != latest {
		t.Fatalf("the last message read is %.11q, want %.11q", last, latest)
	}
	if n := c.Stats().Drops[stats.DropTCPSlowReader].Load(); n != 0 {
		t.Fatalf("dropped as a slow reader %d times", n)
	}
}

// TestWhatWaitsIsSentBeforeClosing: the node answers a heartbeat and then
// closes for a protocol violation that came in the same write; the answer
// still reaches the client before the close.
func TestWhatWaitsIsSentBeforeClosing(t *testing.T) {
	s, c := start(t, 0, Options{})
	for i := range 20 {
		u := uuidOf(fmt.Sprintf("flush-client-%03d", i))
		push(t, c, u, "pending")
		cl := dial(t, s, u)
		bad := wire.AppendClient(nil, 1, wire.CmdHeartbeat, u, nil)
		bad[19], bad[20] = 0, 9 // a body longer than any client message
		cl.send(append(wire.AppendClient(nil, 1, wire.CmdHeartbeat, u, nil), bad...))
		m, err := cl.read(5 * time.Second)
		if err != nil || m.Cmd != wire.CmdCustom || string(m.Body) != "pending" {
			t.Fatalf("round %d: the answer before the close: %+v, %v", i, m, err)
		}
		if _, err := cl.read(5 * time.Second); !errors.Is(err, io.EOF) {
			t.Fatalf("round %d: after the answer: %v, want the connection closed", i, err)
		}
	}
}

// TestClientThatTakesNothingIsLetGo: a client that reads nothing while
// big messages keep coming is disconnected after WriteTimeout, and
// counted.
func TestClientThatTakesNothingIsLetGo(t *testing.T) {
	s, c := start(t, 60000, Options{WriteTimeout: 200 * time.Millisecond})
	u := uuidOf("stuck-client-001")
	cl := dialSmallBuffer(t, s, u)
	cl.heartbeat()
	attached(t, c, u)
	big := bytes.Repeat([]byte("x"), 60000)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; c.Stats().Drops[stats.DropTCPSlowReader].Load() == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatal("a client reading nothing was never let go")
		}
		big[0] = byte(i)
		push(t, c, u, string(big))
	}
	deadline = time.Now().Add(5 * time.Second)
	for s.Conns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connection stayed open")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestShutdownEndsClientsPromptly: idle clients (one with a 10 min idle
// timeout) are ended by a shutdown at once, without counting them idle.
func TestShutdownEndsClientsPromptly(t *testing.T) {
	for i := range 10 {
		s, c := start(t, 0, Options{IdleTimeout: 10 * time.Minute})
		u := uuidOf(fmt.Sprintf("idle-client-%03d", i))
		cl := dial(t, s, u)
		cl.heartbeat()
		attached(t, c, u)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		begin := time.Now()
		err := s.Shutdown(ctx)
		cancel()
		if err != nil || time.Since(begin) > 3*time.Second {
			t.Fatalf("shutdown took %v: %v", time.Since(begin), err)
		}
		if _, err := cl.read(5 * time.Second); !errors.Is(err, io.EOF) {
			t.Fatalf("client after shutdown: %v, want EOF", err)
		}
		if n := c.Stats().Drops[stats.DropTCPIdle].Load(); n != 0 {
			t.Fatalf("shutdown counted as idle %d times", n)
		}
		if snap, _ := c.Lookup(u); snap.TCP {
			t.Fatal("the client still has a connection after shutdown")
		}
	}
}

// TestConnectionsPerSource: one address cannot take every place.
func TestConnectionsPerSource(t *testing.T) {
	s, c := start(t, 0, Options{MaxConnsPerSource: 2})
	from := func(src string) net.Conn {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		nc, err := d.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc
	}
	from("127.0.0.1")
	from("127.0.0.1")
	third := from("127.0.0.1")
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := third.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("third connection from one address: %v, want closed", err)
	}
	other := &client{t: t, nc: from("127.0.0.2"), u: uuidOf("other-source-001")}
	push(t, c, other.u, "hello")
	other.heartbeat()
	if m, err := other.read(5 * time.Second); err != nil || string(m.Body) != "hello" {
		t.Fatalf("another address: %+v, %v", m, err)
	}
	if c.Stats().Drops[stats.DropTCPPerSource].Load() != 1 {
		t.Fatalf("drops %v", c.Stats().DropsByName())
	}
}
