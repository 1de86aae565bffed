//go:build !linux

package udpbatch

import (
	"net"
	"net/netip"
)

// Reader receives datagrams one system call each: batching is
// Linux-only, the interface is the same everywhere.
type Reader struct {
	c    *net.UDPConn
	bufs [][]byte
	lens []int
	from []netip.AddrPort
}

// NewReader prepares buffers of bufSize bytes.
func NewReader(c *net.UDPConn, batch, bufSize int) (*Reader, error) {
	return &Reader{c: c, bufs: [][]byte{make([]byte, bufSize)}, lens: make([]int, 1), from: make([]netip.AddrPort, 1)}, nil
}

// Read waits for one datagram.
func (r *Reader) Read() (int, error) {
	n, from, err := r.c.ReadFromUDPAddrPort(r.bufs[0])
	if err != nil {
		return 0, err
	}
	r.lens[0], r.from[0] = n, from
	return 1, nil
}

// Packet returns datagram i of the last Read and its source.
func (r *Reader) Packet(i int) ([]byte, netip.AddrPort) { return r.bufs[i][:r.lens[i]], r.from[i] }

// Writer sends datagrams one system call each.
type Writer struct {
	c    *net.UDPConn
	b    [][]byte
	to   []netip.AddrPort
	size int
}

// NewWriter prepares a batch of up to batch datagrams.
func NewWriter(c *net.UDPConn, batch int) (*Writer, error) {
	return &Writer{c: c, size: max(batch, 1)}, nil
}

// Len is the number of datagrams queued.
func (w *Writer) Len() int { return len(w.b) }

// Full reports whether Add needs a Flush first.
func (w *Writer) Full() bool { return len(w.b) >= w.size }

// Add queues b for to; b must stay unchanged until Flush.
func (w *Writer) Add(b []byte, to netip.AddrPort) {
	w.b = append(w.b, b)
	w.to = append(w.to, to)
}

// Flush sends everything queued.
func (w *Writer) Flush() (sent, failed int, err error) {
	for i, b := range w.b {
		if _, err := w.c.WriteToUDPAddrPort(b, w.to[i]); err != nil {
			failed++
		} else {
			sent++
		}
	}
	clear(w.b)
	w.b, w.to = w.b[:0], w.to[:0]
	return sent, failed, nil
}
