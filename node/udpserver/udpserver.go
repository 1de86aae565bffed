// Package udpserver serves DDPush clients over UDP: one datagram is one
// client message, and every server message of an answer goes back as its
// own datagram to the source. Datagrams are read and answered in batches
// (recvmmsg/sendmmsg, see node/udpbatch) so that a busy node spends two
// system calls per batch rather than two per heartbeat; readers reuse
// their buffers, so a heartbeat costs no allocation.
package udpserver

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/ratelimit"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/udpbatch"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// Server is the UDP side of the client port.
type Server struct {
	conn    *net.UDPConn
	core    *core.Core
	limit   *ratelimit.PerSource
	st      *stats.Stats
	log     *slog.Logger
	readers int

	mu      sync.Mutex
	closed  bool
	serving bool
	done    chan struct{} // closed when Serve returns
}

// Listen binds addr (e.g. ":9966").
func Listen(addr string, c *core.Core, limit *ratelimit.PerSource, log *slog.Logger) (*Server, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, err
	}
	// A burst of heartbeats should queue in the kernel, not be dropped.
	_ = conn.SetReadBuffer(udpbatch.SocketBuffer)
	_ = conn.SetWriteBuffer(udpbatch.SocketBuffer)
	return &Server{conn: conn, core: c, limit: limit, st: c.Stats(), log: log, readers: udpbatch.DefaultReaders(),
		done: make(chan struct{})}, nil
}

// Addr is the bound address.
func (s *Server) Addr() netip.AddrPort { return s.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// SendUDP implements core.UDPSender.
func (s *Server) SendUDP(b []byte, to netip.AddrPort) error {
	_, err := s.conn.WriteToUDPAddrPort(b, to)
	return err
}

// Serve reads until Close, with one reader per CPU (at least two). After
// Close it returns at once.
func (s *Server) Serve() {
	// Serve usually runs on its own goroutine, racing a Close right after
	// the start: only a Serve that began before Close is waited for.
	s.mu.Lock()
	if s.closed || s.serving {
		s.mu.Unlock()
		return
	}
	s.serving = true
	s.mu.Unlock()
	defer close(s.done)
	err := udpbatch.Serve(s.conn, s.readers, udpbatch.DefaultBatch, udpbatch.BufSize, s.handle, wire.ServerFrameLen, udpbatch.Counters{
		Received: s.received,
		Sent:     s.sent,
		Failed:   s.failed,
	})
	if err != nil {
		s.log.Error("udp server stopped", "err", err)
	}
}

func (s *Server) received(n int) { s.st.PacketsIn[stats.UDP].Add(uint64(n)) }

func (s *Server) sent(n int) { s.st.PacketsOut[stats.UDP].Add(uint64(n)) }

func (s *Server) failed(n int) {
	for range n {
		s.st.Drop(stats.DropUDPSendError)
	}
}

// Close stops reading and waits for the readers. A reader blocked in a
// send (a full socket buffer) is woken by the close too.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	serving := s.serving
	s.mu.Unlock()
	err := s.conn.Close()
	if serving {
		<-s.done
	}
	return err
}

// handle applies one datagram and appends its answer to out.
func (s *Server) handle(pkt []byte, from netip.AddrPort, now time.Time, out []byte) []byte {
	var m wire.ClientMessage
	if !s.limit.Allow(from.Addr(), now.Unix()) {
		s.st.Drop(stats.DropRateLimited)
		return out
	}
	if wire.DecodeClient(pkt, &m) != nil {
		s.st.Drop(stats.DropMalformed)
		return out
	}
	return s.core.HandleClient(now.UnixNano(), &m, state.UDP, from, nil, out)
}
