package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// A fleet is many simulated phones sharing a few UDP sockets: phone i
// uses socket i % len(socks), so each phone always heartbeats from the
// same source address as a real one does. Datagrams are sent and received
// in batches (sendmmsg/recvmmsg through golang.org/x/net) so that the
// generator costs little next to the server it measures.
type fleet struct {
	ids   []wire.UUID
	socks []*phoneSock
	appID byte
}

// batchConn is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// phoneSock is one UDP socket of a fleet. It is used by one goroutine.
type phoneSock struct {
	id    int
	conn  *net.UDPConn
	bc    batchConn
	wms   []ipv4.Message
	wbuf  []byte
	wlen  []int // lengths of the queued datagrams in wbuf
	rms   []ipv4.Message
	Sent  int64
	Recvd int64
}

// rbufSize bounds one server message a phone can receive.
const rbufSize = 2048

func newFleet(server string, ids []wire.UUID, sockets, batch int, appID byte) (*fleet, error) {
	ra, err := resolveUDP(server)
	if err != nil {
		return nil, err
	}
	sockets = max(1, min(sockets, max(len(ids), 1)))
	batch = max(batch, 1)
	f := &fleet{ids: ids, appID: appID}
	for i := range sockets {
		c, err := net.DialUDP("udp", nil, ra)
		if err != nil {
			f.close()
			return nil, fmt.Errorf("open phone socket %d: %w", i, err)
		}
		_ = c.SetReadBuffer(1 << 20)
		_ = c.SetWriteBuffer(1 << 20)
		s := &phoneSock{id: i, conn: c, wms: make([]ipv4.Message, batch), rms: make([]ipv4.Message, batch)}
		if ra.IP.To4() != nil {
			s.bc = ipv4.NewPacketConn(c)
		} else {
			s.bc = ipv6.NewPacketConn(c)
		}
		mem := make([]byte, batch*rbufSize)
		for j := range s.rms {
			s.rms[j].Buffers = [][]byte{mem[j*rbufSize : (j+1)*rbufSize]}
		}
		for j := range s.wms {
			s.wms[j].Buffers = make([][]byte, 1)
		}
		f.socks = append(f.socks, s)
	}
	return f, nil
}

func (f *fleet) close() {
	for _, s := range f.socks {
		s.conn.Close()
	}
}

// phones returns the indices of the phones of socket s.
func (f *fleet) phones(s int) []int {
	var out []int
	for i := s; i < len(f.ids); i += len(f.socks) {
		out = append(out, i)
	}
	return out
}

// sender returns a socket that shares s's connection but has its own
// send queue, for a second goroutine sending on it.
func (s *phoneSock) sender() *phoneSock {
	w := &phoneSock{id: s.id, conn: s.conn, bc: s.bc, wms: make([]ipv4.Message, len(s.wms))}
	for j := range w.wms {
		w.wms[j].Buffers = make([][]byte, 1)
	}
	return w
}

// queue adds a client message to the socket's next batch.
func (s *phoneSock) queue(appID, cmd byte, u wire.UUID, body []byte) {
	n := len(s.wbuf)
	s.wbuf = wire.AppendClient(s.wbuf, appID, cmd, u, body)
	s.wlen = append(s.wlen, len(s.wbuf)-n)
}

// pending is the number of queued datagrams.
func (s *phoneSock) pending() int { return len(s.wlen) }

// flush sends every queued datagram in batches.
func (s *phoneSock) flush() error {
	off := 0
	q := s.wlen
	for len(q) > 0 {
		k := min(len(q), len(s.wms))
		for j := range k {
			s.wms[j].Buffers[0] = s.wbuf[off : off+q[j]]
			off += q[j]
		}
		ms := s.wms[:k]
		for len(ms) > 0 {
			_ = s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			n, err := s.bc.WriteBatch(ms, 0)
			if err != nil {
				s.reset()
				return fmt.Errorf("send: %w", err)
			}
			s.Sent += int64(n)
			ms = ms[n:]
		}
		q = q[k:]
	}
	s.reset()
	return nil
}

func (s *phoneSock) reset() {
	s.wbuf = s.wbuf[:0]
	s.wlen = s.wlen[:0]
	for j := range s.wms {
		s.wms[j].Buffers[0] = nil
	}
}

// read waits until deadline for a batch of datagrams; it returns 0 and no
// error when the deadline passes. Datagram j is s.msg(j).
func (s *phoneSock) read(deadline time.Time) (int, error) {
	_ = s.conn.SetReadDeadline(deadline)
	n, err := s.bc.ReadBatch(s.rms, 0)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, nil
		}
		return 0, err
	}
	s.Recvd += int64(n)
	return n, nil
}

func (s *phoneSock) msg(j int) []byte { return s.rms[j].Buffers[0][:s.rms[j].N] }

// isRefused reports an ICMP port unreachable on a connected socket: the
// server is not listening (yet, or any more).
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
