// Package udpserver serves DDPush clients over UDP: one datagram is one
// client message, and every server message of an answer goes back as its
// own datagram to the source. Readers reuse their buffers, so a heartbeat
// costs no allocation.
package udpserver

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/ratelimit"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
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
	wg      sync.WaitGroup
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
	_ = conn.SetReadBuffer(4 << 20)
	_ = conn.SetWriteBuffer(4 << 20)
	return &Server{conn: conn, core: c, limit: limit, st: c.Stats(), log: log, readers: max(2, runtime.GOMAXPROCS(0))}, nil
}

// Addr is the bound address.
func (s *Server) Addr() netip.AddrPort { return s.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// SendUDP implements core.UDPSender.
func (s *Server) SendUDP(b []byte, to netip.AddrPort) error {
	_, err := s.conn.WriteToUDPAddrPort(b, to)
	return err
}

// Serve reads until Close. It starts one reader per CPU.
func (s *Server) Serve() {
	for range s.readers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.read()
		}()
	}
	s.wg.Wait()
}

// Close stops reading and waits for the readers.
func (s *Server) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	return err
}

func (s *Server) read() {
	buf := make([]byte, 2048)
	out := make([]byte, 0, 2*wire.ServerHeaderLen+8+wire.MaxContentLenLimit)
	var m wire.ClientMessage
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("udp read", "err", err)
			continue
		}
		now := time.Now()
		s.st.PacketsIn[stats.UDP].Add(1)
		if !s.limit.Allow(from.Addr(), now.Unix()) {
			s.st.Drop(stats.DropRateLimited)
			continue
		}
		if wire.DecodeClient(buf[:n], &m) != nil {
			s.st.Drop(stats.DropMalformed)
			continue
		}
		out = s.core.HandleClient(now.UnixNano(), &m, state.UDP, from, nil, out[:0])
		for b := out; len(b) > 0; {
			l := wire.ServerFrameLen(b)
			if _, err := s.conn.WriteToUDPAddrPort(b[:l], from); err != nil {
				s.st.Drop(stats.DropUDPSendError)
			} else {
				s.st.PacketsOut[stats.UDP].Add(1)
			}
			b = b[l:]
		}
	}
}
