// Package tcpaccept owns what the node's TCP listeners (client TCP, the
// push port, HTTP) share: accepting, refusing connections past a cap in
// total and per source address, backing off (and logging once per
// interval) when accepting fails, and a shutdown that ends in bounded
// time whatever the peers do.
//
// Shutdown is deterministic because every connection is a *Conn whose
// deadlines go through the listener: once the listener drains, a read
// deadline can no longer be moved into the future and a write deadline no
// later than the drain's end. A goroutine that re-arms its idle timeout
// just after the drain interrupted its read therefore still wakes at once,
// instead of sleeping out the idle timeout.
package tcpaccept

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ddpush/ddpush-operator/node/lograte"
)

// Limits bound how many connections a listener holds.
type Limits struct {
	// MaxConns caps open connections; 0 means no cap.
	MaxConns int
	// MaxConnsPerSource caps open connections from one address; 0 means
	// no cap.
	MaxConnsPerSource int
}

// Refusal is why a connection was closed as soon as it was accepted.
type Refusal uint8

const (
	OverTotal  Refusal = iota // MaxConns reached
	OverSource                // MaxConnsPerSource reached for its address
)

// Options configure a Listener.
type Options struct {
	Limits
	// Name says which listener a log line is about ("push", "tcp", "http").
	Name string
	// Refused counts a refused connection; nil ignores it.
	Refused func(Refusal)
	Log     *slog.Logger
	// LogInterval is the least time between two log lines of one kind
	// (accept errors); default 10 s.
	LogInterval time.Duration
}

// Accept back-off after an error, doubling from the first to the last.
const (
	firstBackoff = 5 * time.Millisecond
	lastBackoff  = time.Second
)

// aLongTimeAgo is a deadline that has passed: I/O with it fails at once.
var aLongTimeAgo = time.Unix(1, 0)

// Listener accepts connections of one TCP listener.
type Listener struct {
	ln     net.Listener
	opt    Options
	logs   *lograte.Limiter
	closed chan struct{} // closed by Close: stops the accept back-off

	mu        sync.Mutex
	closing   bool
	drained   bool
	writeBy   time.Time // once drained: no write deadline after this
	conns     map[*Conn]struct{}
	perSource map[netip.Addr]int
	empty     chan struct{} // closed when the last connection closes, if waited for
	serving   bool
	loopDone  chan struct{}
	handlers  sync.WaitGroup
}

// New wraps ln.
func New(ln net.Listener, opt Options) *Listener {
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.LogInterval <= 0 {
		opt.LogInterval = 10 * time.Second
	}
	return &Listener{
		ln: ln, opt: opt, logs: lograte.New(opt.Log, opt.LogInterval), closed: make(chan struct{}),
		conns: map[*Conn]struct{}{}, perSource: map[netip.Addr]int{}, loopDone: make(chan struct{}),
	}
}

// Listen binds a TCP address.
func Listen(addr string, opt Options) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return New(ln, opt), nil
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// AddrPort is the bound address as a netip.AddrPort.
func (l *Listener) AddrPort() netip.AddrPort { return l.ln.Addr().(*net.TCPAddr).AddrPort() }

// Open is the number of open connections.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Accept returns the next connection within the limits, as a *Conn. It
// never returns a transient error (it backs off and retries instead); it
// returns an error wrapping net.ErrClosed once the listener is closed.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.accept()
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (l *Listener) accept() (*Conn, error) {
	var backoff time.Duration
	for {
		nc, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			// Typically out of file descriptors: the pending connection
			// stays queued in the kernel, so retrying at once would spin.
			backoff = min(max(2*backoff, firstBackoff), lastBackoff)
			l.logs.Log(slog.LevelWarn, "accept", "cannot accept connections; retrying",
				"listener", l.opt.Name, "addr", l.ln.Addr().String(), "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.closed:
				t.Stop()
				return nil, fmt.Errorf("accept %s: %w", l.opt.Name, net.ErrClosed)
			}
			continue
		}
		backoff = 0
		if c := l.register(nc); c != nil {
			return c, nil
		}
	}
}

// register tracks nc, or closes it when the listener is closing or a
// limit is reached.
func (l *Listener) register(nc net.Conn) *Conn {
	var src netip.Addr
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		src = ta.AddrPort().Addr().Unmap()
	}
	l.mu.Lock()
	var refusal Refusal
	switch {
	case l.closing:
		// Accepted just as the listener closed: not a refusal.
		l.mu.Unlock()
		_ = nc.Close()
		return nil
	case l.opt.MaxConns > 0 && len(l.conns) >= l.opt.MaxConns:
		refusal = OverTotal
	case l.opt.MaxConnsPerSource > 0 && l.perSource[src] >= l.opt.MaxConnsPerSource:
		refusal = OverSource
	default:
		c := &Conn{Conn: nc, l: l, src: src}
		l.conns[c] = struct{}{}
		l.perSource[src]++
		l.mu.Unlock()
		return c
	}
	l.mu.Unlock()
	// Counted before the close, so that whoever sees the connection
	// closed also sees it counted.
	if l.opt.Refused != nil {
		l.opt.Refused(refusal)
	}
	_ = nc.Close()
	return nil
}

func (l *Listener) remove(c *Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[c]; !ok {
		return
	}
	delete(l.conns, c)
	if n := l.perSource[c.src] - 1; n > 0 {
		l.perSource[c.src] = n
	} else {
		delete(l.perSource, c.src)
	}
	if len(l.conns) == 0 && l.empty != nil {
		close(l.empty)
		l.empty = nil
	}
}

// Close stops accepting; open connections are left alone.
func (l *Listener) Close() error {
	l.mu.Lock()
	already := l.closing
	l.closing = true
	l.mu.Unlock()
	if already {
		return nil
	}
	close(l.closed)
	return l.ln.Close()
}

// Drain stops accepting and interrupts every connection's reads, now and
// from now on; writes may go on until grace has passed. What a handler was
// doing when its read was interrupted (answering a request it had read)
// completes if it can write in time.
func (l *Listener) Drain(grace time.Duration) {
	_ = l.Close()
	l.mu.Lock()
	if !l.drained {
		l.drained = true
		l.writeBy = time.Now().Add(grace)
	}
	writeBy := l.writeBy
	conns := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.drain(writeBy)
	}
}

// CloseAll closes every open connection.
func (l *Listener) CloseAll() {
	l.mu.Lock()
	conns := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// WaitConns waits until every connection is closed or ctx is done.
func (l *Listener) WaitConns(ctx context.Context) error {
	l.mu.Lock()
	if len(l.conns) == 0 {
		l.mu.Unlock()
		return nil
	}
	if l.empty == nil {
		l.empty = make(chan struct{})
	}
	empty := l.empty
	l.mu.Unlock()
	select {
	case <-empty:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Serve accepts until the listener is closed and runs handle for each
// connection on its own goroutine; handle must close the connection.
// Shutdown waits for these goroutines.
func (l *Listener) Serve(handle func(*Conn)) error {
	l.mu.Lock()
	if l.closing || l.serving {
		l.mu.Unlock()
		return nil
	}
	l.serving = true
	l.mu.Unlock()
	defer close(l.loopDone)
	for {
		c, err := l.accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		// Added by the accept loop itself, before Shutdown's Wait (which
		// waits for this loop to end first): no Add races the Wait.
		l.handlers.Add(1)
		go func() {
			defer l.handlers.Done()
			handle(c)
		}()
	}
}

// closeGrace is how long handlers get to return once their connections
// are closed by force; they are only expected to tidy up.
const closeGrace = 2 * time.Second

// drainGrace is how long writes may take once a shutdown began, at most:
// an answer already being written still goes out to a peer that reads.
const drainGrace = 2 * time.Second

// Shutdown stops accepting, interrupts every connection (each handler
// finishes what it was doing and closes), and waits for the handlers
// started by Serve. When ctx ends first, the remaining connections are
// closed by force. It returns an error naming what did not end in time.
func (l *Listener) Shutdown(ctx context.Context) error {
	grace := drainGrace
	if d, ok := ctx.Deadline(); ok {
		grace = min(grace, time.Until(d))
	}
	l.Drain(grace)
	l.mu.Lock()
	serving := l.serving
	l.mu.Unlock()
	if serving {
		<-l.loopDone
	}
	done := make(chan struct{})
	go func() {
		l.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	open := l.Open()
	l.CloseAll()
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-done:
		return fmt.Errorf("%s: %d connections closed by force at the shutdown deadline", l.opt.Name, open)
	case <-t.C:
		return fmt.Errorf("%s: %d connections closed by force at the shutdown deadline, and their handlers did not return", l.opt.Name, open)
	}
}

// Conn is an accepted connection. Its deadlines respect the listener's
// drain; Close releases its place under the limits.
type Conn struct {
	net.Conn
	l   *Listener
	src netip.Addr

	mu      sync.Mutex
	drained bool
	writeBy time.Time
	once    sync.Once
	err     error
}

// Source is the peer's address.
func (c *Conn) Source() netip.Addr { return c.src }

// Draining reports whether the listener is shutting down: the handler
// should finish what it is doing and close.
func (c *Conn) Draining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drained
}

func (c *Conn) drain(writeBy time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drained, c.writeBy = true, writeBy
	_ = c.Conn.SetReadDeadline(aLongTimeAgo)
	_ = c.Conn.SetWriteDeadline(writeBy)
}

// SetReadDeadline sets the read deadline, except that once the listener
// drains every read fails at once.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drained {
		t = aLongTimeAgo
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline, no later than the end of the
// listener's drain.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drained && (t.IsZero() || t.After(c.writeBy)) {
		t = c.writeBy
	}
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

// Close closes the connection once and frees its place.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.err = c.Conn.Close()
		c.l.remove(c)
	})
	return c.err
}

// CloseWrite half-closes the connection when it can (net/http uses it to
// end a response gracefully).
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
