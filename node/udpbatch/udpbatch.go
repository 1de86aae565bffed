// Package udpbatch reads and writes UDP datagrams in batches: on Linux one
// recvmmsg fills a whole batch and one sendmmsg sends one, so a busy
// socket costs two system calls per batch instead of two per datagram.
// Neither side allocates per datagram: buffers, headers and addresses are
// allocated once per Reader and Writer. (golang.org/x/net/ipv4's
// ReadBatch allocates the source address of every datagram, which is why
// the node does not use it.)
//
// The node's UDP server and pushload's do-nothing "ceiling" answerer both
// serve through Serve, so that the benchmark compares the node with what
// this very machinery can do without any state.
package udpbatch

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"time"
)

// Sizes the node's UDP server uses, shared with pushload's ceiling
// answerer so that both serve alike.
const (
	// DefaultBatch is how many datagrams one system call moves at most.
	DefaultBatch = 64
	// BufSize is the receive buffer of one datagram; client messages are
	// at most 29 bytes, anything longer is malformed anyway.
	BufSize = 2048
	// SocketBuffer is the kernel buffer asked for on each side, so that
	// a burst of heartbeats queues instead of being dropped.
	SocketBuffer = 4 << 20
)

// DefaultReaders is how many goroutines read one socket.
func DefaultReaders() int { return max(2, runtime.GOMAXPROCS(0)) }

// Handler answers one datagram received at now (read once per batch): it
// appends its replies to out and returns it. Several replies are cut
// apart with the Split given to Serve. pkt is only valid during the call.
type Handler func(pkt []byte, from netip.AddrPort, now time.Time, out []byte) []byte

// Split reports the length of the first datagram in a reply buffer, in
// 1..len(b).
type Split func(b []byte) int

// Counters are called by Serve after every batch; nil fields are skipped.
type Counters struct {
	// Received counts datagrams read (once handled), Sent datagrams
	// sent, Failed datagrams the kernel refused.
	Received, Sent, Failed func(n int)
}

// Serve runs readers goroutines on conn, each reading batches of up to
// batch datagrams of at most bufSize bytes, calling h for each and
// sending the replies in batches. It returns when conn is closed.
func Serve(conn *net.UDPConn, readers, batch, bufSize int, h Handler, split Split, c Counters) error {
	readers = max(readers, 1)
	var wg sync.WaitGroup
	errs := make([]error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = serveOne(conn, batch, bufSize, h, split, c)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

type reply struct {
	off, end int
	to       netip.AddrPort
}

func serveOne(conn *net.UDPConn, batch, bufSize int, h Handler, split Split, c Counters) error {
	r, err := NewReader(conn, batch, bufSize)
	if err != nil {
		return err
	}
	w, err := NewWriter(conn, batch)
	if err != nil {
		return err
	}
	var arena []byte
	replies := make([]reply, 0, 2*batch)
	for {
		n, err := r.Read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		arena = arena[:0]
		replies = replies[:0]
		now := time.Now()
		for i := range n {
			pkt, from := r.Packet(i)
			off := len(arena)
			arena = h(pkt, from, now, arena)
			for off < len(arena) {
				l := split(arena[off:])
				if l <= 0 || off+l > len(arena) {
					break
				}
				replies = append(replies, reply{off, off + l, from})
				off += l
			}
		}
		// Counted once handled, so that whoever sees the count also sees
		// what the datagrams did.
		if c.Received != nil {
			c.Received(n)
		}
		// Replies are cut only now: the handler's appends may have moved
		// the arena.
		sent, failed := 0, 0
		for i := range replies {
			rp := &replies[i]
			if w.Full() {
				s, f, err := w.Flush()
				sent, failed = sent+s, failed+f
				if err != nil {
					return closedOr(err)
				}
			}
			w.Add(arena[rp.off:rp.end], rp.to)
		}
		if w.Len() > 0 {
			s, f, err := w.Flush()
			sent, failed = sent+s, failed+f
			if err != nil {
				return closedOr(err)
			}
		}
		if sent > 0 && c.Sent != nil {
			c.Sent(sent)
		}
		if failed > 0 && c.Failed != nil {
			c.Failed(failed)
		}
	}
}

func closedOr(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
