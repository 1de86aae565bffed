// Package tcpserver serves DDPush clients that keep a TCP connection to
// the client port. Each connection has one reader and one writer; what
// the node sends goes through a bounded queue, so a client that stops
// reading is disconnected instead of holding memory or a lock.
package tcpserver

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
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
	// WriteTimeout closes a connection that does not take what is sent.
	WriteTimeout time.Duration
	// MaxConns caps concurrent connections; 0 means no cap.
	MaxConns int
	// QueueLen is how many server messages may wait for one connection.
	QueueLen int
}

// maxUUIDsPerConn bounds how many clients one connection may speak for:
// a phone uses one, and the table must be able to forget a closed
// connection everywhere it was attached.
const maxUUIDsPerConn = 16

// Server is the TCP side of the client port.
type Server struct {
	ln    net.Listener
	core  *core.Core
	limit *ratelimit.PerSource
	st    *stats.Stats
	log   *slog.Logger
	opt   Options
	conns sync.Map // *clientConn -> struct{}
	n     atomic.Int64
	wg    sync.WaitGroup
}

// Listen binds addr.
func Listen(addr string, c *core.Core, limit *ratelimit.PerSource, opt Options, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if opt.QueueLen <= 0 {
		opt.QueueLen = 32
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 5 * time.Minute
	}
	if opt.FrameTimeout <= 0 {
		opt.FrameTimeout = 10 * time.Second
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = 10 * time.Second
	}
	return &Server{ln: ln, core: c, limit: limit, st: c.Stats(), log: log, opt: opt}, nil
}

// Addr is the bound address.
func (s *Server) Addr() netip.AddrPort { return s.ln.Addr().(*net.TCPAddr).AddrPort() }

// Serve accepts until Close.
func (s *Server) Serve() error {
	return tcpaccept.Loop(s.ln, s.opt.MaxConns, &s.n, func() { s.st.Drop(stats.DropTCPConnLimit) }, s.log, func(nc net.Conn) {
		c := &clientConn{s: s, nc: nc, q: make(chan []byte, s.opt.QueueLen), done: make(chan struct{})}
		s.conns.Store(c, struct{}{})
		s.wg.Add(2)
		go c.readLoop()
		go c.writeLoop()
	})
}

// Conns is the number of open client connections.
func (s *Server) Conns() int64 { return s.n.Load() }

// Close stops accepting, closes every connection and waits for them.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.conns.Range(func(k, _ any) bool {
		k.(*clientConn).close()
		return true
	})
	s.wg.Wait()
	return err
}

type clientConn struct {
	s     *Server
	nc    net.Conn
	q     chan []byte
	done  chan struct{}
	once  sync.Once
	uuids []wire.UUID // clients this connection is attached to
}

// Send implements core.ConnSender. It copies b and never blocks: a full
// queue means the client is not reading, and it is disconnected.
func (c *clientConn) Send(b []byte) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.q <- append([]byte(nil), b...):
		return true
	case <-c.done:
		return false
	default:
		c.s.st.Drop(stats.DropTCPSlowReader)
		c.close()
		return false
	}
}

func (c *clientConn) close() {
	c.once.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

func (c *clientConn) writeLoop() {
	defer c.s.wg.Done()
	bw := bufio.NewWriterSize(c.nc, 4096)
	for {
		var b []byte
		select {
		case b = <-c.q:
		case <-c.done:
			return
		}
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.opt.WriteTimeout))
		if _, err := bw.Write(b); err != nil {
			c.close()
			return
		}
		c.s.st.PacketsOut[stats.TCP].Add(uint64(countFrames(b)))
		// Flush only once the queue is drained, so a burst is one write.
		if len(c.q) == 0 {
			if err := bw.Flush(); err != nil {
				if isTimeout(err) {
					c.s.st.Drop(stats.DropTCPSlowReader)
				}
				c.close()
				return
			}
		}
	}
}

func countFrames(b []byte) int {
	n := 0
	for len(b) > 0 {
		l := wire.ServerFrameLen(b)
		if l == 0 || l > len(b) {
			break
		}
		b = b[l:]
		n++
	}
	return n
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *clientConn) readLoop() {
	s := c.s
	defer func() {
		c.close()
		for _, u := range c.uuids {
			s.core.DetachConn(u, c)
		}
		s.conns.Delete(c)
		s.n.Add(-1)
		s.wg.Done()
	}()
	var src netip.Addr
	if ta, ok := c.nc.RemoteAddr().(*net.TCPAddr); ok {
		src = ta.AddrPort().Addr()
	}
	r := bufio.NewReaderSize(c.nc, 256)
	out := make([]byte, 0, 64)
	var m wire.ClientMessage
	for {
		_ = c.nc.SetReadDeadline(time.Now().Add(s.opt.IdleTimeout))
		if _, err := r.Peek(1); err != nil {
			if isTimeout(err) {
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
		s.st.PacketsIn[stats.TCP].Add(1)
		ok := s.limit.Allow(src, now.Unix())
		if !ok {
			s.st.Drop(stats.DropRateLimited)
		} else if wire.DecodeClient(frame, &m) != nil {
			s.st.Drop(stats.DropMalformed)
		} else if !c.attach(m.UUID) {
			s.st.Drop(stats.DropTCPViolation)
		} else {
			out = s.core.HandleClient(now.UnixNano(), &m, state.TCP, netip.AddrPort{}, c, out[:0])
			if len(out) > 0 && !c.Send(out) {
				_, _ = r.Discard(n)
				return
			}
		}
		if _, err := r.Discard(n); err != nil {
			return
		}
	}
}

func (c *clientConn) readFailed(err error) {
	if isTimeout(err) {
		c.s.st.Drop(stats.DropTCPSlowFrame)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.s.log.Debug("tcp client read", "remote", c.nc.RemoteAddr().String(), "err", err)
	}
}

// attach records that this connection speaks for u.
func (c *clientConn) attach(u wire.UUID) bool {
	for i := range c.uuids {
		if c.uuids[i] == u {
			return true
		}
	}
	if len(c.uuids) >= maxUUIDsPerConn {
		return false
	}
	c.uuids = append(c.uuids, u)
	return true
}
