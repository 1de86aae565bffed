// Package tcpserver serves DDPush clients that keep a TCP connection to
// the client port. Each connection has one reader and one writer.
//
// What the node sends a client waits in the connection as the latest
// message of each kind: the protocol keeps only the latest message of a
// kind (a 0x11 carries the whole pending mask, a 0x20 replaces the one
// before), so a newer one makes a queued one worthless. A burst of pushes
// to a client therefore costs one message per kind however long it is,
// a client that reads, even slowly, always ends up with the latest state,
// and only a client that takes nothing for WriteTimeout is disconnected.
// A connection that ends sends what is waiting first.
package tcpserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/ratelimit"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/tcpaccept"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// Options bound what one connection may cost.
type Options struct {
	// IdleTimeout closes a connection that sends nothing for this long.
	IdleTimeout time.Duration
	// FrameTimeout closes a connection whose message, once started, does
	// not arrive in full within this time (slow senders).
	FrameTimeout time.Duration
	// WriteTimeout closes a connection that takes nothing of what is
	// sent for this long.
	WriteTimeout time.Duration
	// MaxConns caps concurrent connections; 0 means no cap.
	MaxConns int
	// MaxConnsPerSource caps concurrent connections from one address; 0
	// means no cap. Phones behind one carrier NAT share an address, so
	// this is a guard against one abuser, not a per-phone limit.
	MaxConnsPerSource int
}

// maxUUIDsPerConn bounds how many clients one connection may speak for:
// a phone uses one, and the table must be able to forget a closed
// connection everywhere it was attached.
const maxUUIDsPerConn = 16

// Server is the TCP side of the client port.
type Server struct {
	ln    *tcpaccept.Listener
	core  *core.Core
	limit *ratelimit.PerSource
	st    *stats.Stats
	log   *slog.Logger
	opt   Options
}

// Listen binds addr.
func Listen(addr string, c *core.Core, limit *ratelimit.PerSource, opt Options, log *slog.Logger) (*Server, error) {
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 5 * time.Minute
	}
	if opt.FrameTimeout <= 0 {
		opt.FrameTimeout = 10 * time.Second
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	st := c.Stats()
	ln, err := tcpaccept.Listen(addr, tcpaccept.Options{
		Limits: tcpaccept.Limits{MaxConns: opt.MaxConns, MaxConnsPerSource: opt.MaxConnsPerSource},
		Name:   "tcp",
		Log:    log,
		Refused: func(r tcpaccept.Refusal) {
			if r == tcpaccept.OverSource {
				st.Drop(stats.DropTCPPerSource)
			} else {
				st.Drop(stats.DropTCPConnLimit)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return &Server{ln: ln, core: c, limit: limit, st: st, log: log, opt: opt}, nil
}

// Addr is the bound address.
func (s *Server) Addr() netip.AddrPort { return s.ln.AddrPort() }

// Serve accepts until Shutdown.
func (s *Server) Serve() error {
	return s.ln.Serve(func(nc *tcpaccept.Conn) {
		c := &clientConn{s: s, nc: nc, wake: make(chan struct{}, 1)}
		c.run()
	})
}

// Conns is the number of open client connections.
func (s *Server) Conns() int64 { return int64(s.ln.Open()) }

// Shutdown stops accepting and ends every connection, each sending what
// waits for its clients first. Past ctx, connections are closed by force.
func (s *Server) Shutdown(ctx context.Context) error { return s.ln.Shutdown(ctx) }

// Close is Shutdown without a deadline of its own (the drain is still
// bounded: reads end at once, writes within a few seconds).
func (s *Server) Close() error { return s.Shutdown(context.Background()) }

// The kinds of server message a client can have waiting, in the order
// they are written (the protocol's order within one answer).
const (
	slotGeneral = iota
	slotClassified
	slotCustom
	slotHeartbeat
	numSlots
)

func slotOf(cmd byte) int {
	switch cmd {
	case wire.CmdGeneral:
		return slotGeneral
	case wire.CmdClassified:
		return slotClassified
	case wire.CmdCustom:
		return slotCustom
	}
	return slotHeartbeat
}

type clientConn struct {
	s    *Server
	nc   *tcpaccept.Conn
	wake chan struct{} // one token: the writer has something to do

	mu      sync.Mutex
	ending  bool         // the reader is done: the writer sends what waits, then closes
	dead    bool         // a write failed: nothing more can be sent
	clients []*clientOut // clients this connection speaks for, in order of arrival
}

// clientOut is one client as seen from its connection: what waits to be
// sent to it. It is what the client table holds as the client's
// connection (core.ConnSender).
type clientOut struct {
	c    *clientConn
	uuid wire.UUID
	// waiting holds the latest encoded message of each kind, empty when
	// none waits; guarded by c.mu. The buffers are reused.
	waiting [numSlots][]byte
}

// Send implements core.ConnSender: it keeps the messages in b (each
// replacing a waiting one of its kind) for the writer and never blocks.
// It reports false when the connection can send nothing more.
func (o *clientOut) Send(b []byte) bool {
	c := o.c
	c.mu.Lock()
	if c.dead || c.ending {
		c.mu.Unlock()
		return false
	}
	for len(b) > 0 {
		n := wire.ServerFrameLen(b)
		if n == 0 || n > len(b) {
			break
		}
		slot := slotOf(b[2])
		o.waiting[slot] = append(o.waiting[slot][:0], b[:n]...)
		b = b[n:]
	}
	c.mu.Unlock()
	c.poke()
	return true
}

func (c *clientConn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// take appends every waiting message to buf and empties the slots.
func (c *clientConn) take(buf []byte) (_ []byte, frames int, ending bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.clients {
		for i := range o.waiting {
			if len(o.waiting[i]) > 0 {
				buf = append(buf, o.waiting[i]...)
				o.waiting[i] = o.waiting[i][:0]
				frames++
			}
		}
	}
	return buf, frames, c.ending
}

func (c *clientConn) run() {
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop()
	}()
	c.readLoop()
	c.mu.Lock()
	c.ending = true
	clients := c.clients
	c.mu.Unlock()
	for _, o := range clients {
		c.s.core.DetachConn(o.uuid, o)
	}
	c.poke()
	<-writerDone
	_ = c.nc.Close()
}

// writeLoop sends what waits until the reader is done, then sends what is
// left and returns. A write that does not complete in WriteTimeout (or,
// while the node stops, before the drain ends) closes the connection.
func (c *clientConn) writeLoop() {
	var buf []byte
	for {
		<-c.wake
		var frames int
		var ending bool
		buf, frames, ending = c.take(buf[:0])
		if frames > 0 {
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.opt.WriteTimeout))
			if _, err := c.nc.Write(buf); err != nil {
				if isTimeout(err) && !c.nc.Draining() {
					c.s.st.Drop(stats.DropTCPSlowReader)
				}
				c.mu.Lock()
				c.dead = true
				c.mu.Unlock()
				// Unblocks the reader too.
				_ = c.nc.Close()
				return
			}
			c.s.st.PacketsOut[stats.TCP].Add(uint64(frames))
		}
		if ending {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *clientConn) readLoop() {
	s := c.s
	src := c.nc.Source()
	r := bufio.NewReaderSize(c.nc, 256)
	out := make([]byte, 0, 64)
	var m wire.ClientMessage
	for !c.nc.Draining() {
		_ = c.nc.SetReadDeadline(time.Now().Add(s.opt.IdleTimeout))
		if _, err := r.Peek(1); err != nil {
			if isTimeout(err) && !c.nc.Draining() {
				s.st.Drop(stats.DropTCPIdle)
			}
			return
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(s.opt.FrameTimeout))
		hdr, err := r.Peek(wire.ClientHeaderLen)
		if err != nil {
			c.readFailed(err)
			return
		}
		n, err := wire.ClientFrameLen(hdr)
		if err != nil {
			s.st.Drop(stats.DropTCPViolation)
			return
		}
		frame, err := r.Peek(n)
		if err != nil {
			c.readFailed(err)
			return
		}
		now := time.Now()
		if !s.limit.Allow(src, now.Unix()) {
			s.st.Drop(stats.DropRateLimited)
		} else if wire.DecodeClient(frame, &m) != nil {
			s.st.Drop(stats.DropMalformed)
		} else if o := c.attach(m.UUID); o == nil {
			s.st.Drop(stats.DropTCPViolation)
		} else {
			out = s.core.HandleClient(now.UnixNano(), &m, state.TCP, netip.AddrPort{}, o, out[:0])
			if len(out) > 0 && !o.Send(out) {
				return
			}
		}
		// Counted once handled, so that whoever sees the count also sees
		// what the message did.
		s.st.PacketsIn[stats.TCP].Add(1)
		if _, err := r.Discard(n); err != nil {
			return
		}
	}
}

func (c *clientConn) readFailed(err error) {
	switch {
	case isTimeout(err):
		if !c.nc.Draining() {
			c.s.st.Drop(stats.DropTCPSlowFrame)
		}
	case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed):
		c.s.log.Debug("tcp client read", "remote", c.nc.RemoteAddr().String(), "err", err)
	}
}

// attach returns the handle of u on this connection, creating it on u's
// first message; nil past maxUUIDsPerConn.
func (c *clientConn) attach(u wire.UUID) *clientOut {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.clients {
		if o.uuid == u {
			return o
		}
	}
	if len(c.clients) >= maxUUIDsPerConn {
		return nil
	}
	o := &clientOut{c: c, uuid: u}
	c.clients = append(c.clients, o)
	return o
}
