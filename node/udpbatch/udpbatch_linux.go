//go:build linux

package udpbatch

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reader receives batches of datagrams from one socket. It is not safe
// for concurrent use; give each goroutine its own.
type Reader struct {
	rc    syscall.RawConn
	hs    []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	bufs  [][]byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool // bound once: a closure per call would allocate
}

// NewReader prepares batch buffers of bufSize bytes each.
func NewReader(c *net.UDPConn, batch, bufSize int) (*Reader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	batch = max(batch, 1)
	r := &Reader{
		rc:    rc,
		hs:    make([]unix.Mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		names: make([]unix.RawSockaddrInet6, batch),
		bufs:  make([][]byte, batch),
	}
	mem := make([]byte, batch*bufSize)
	for i := range batch {
		r.bufs[i] = mem[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(bufSize)
		r.hs[i].Hdr.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		r.hs[i].Hdr.Iov = &r.iovs[i]
		r.hs[i].Hdr.SetIovlen(1)
	}
	r.fn = r.recv
	return r, nil
}

func (r *Reader) recv(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hs[0])), uintptr(len(r.hs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			r.n, r.errno = int(n), 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false // wait until readable
		default:
			r.n, r.errno = 0, e
			return true
		}
	}
}

// Read waits for at least one datagram and returns how many it read.
func (r *Reader) Read() (int, error) {
	for i := range r.hs {
		r.hs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hs[i].Len = 0
	}
	for {
		if err := r.rc.Read(r.fn); err != nil {
			return 0, err
		}
		if r.errno != 0 {
			// A queued ICMP error (e.g. a port unreachable from an earlier
			// send) surfaces on a read; it says nothing about the next one.
			if r.errno == unix.ECONNREFUSED || r.errno == unix.EHOSTUNREACH || r.errno == unix.ENETUNREACH {
				continue
			}
			return 0, fmt.Errorf("recvmmsg: %w", r.errno)
		}
		return r.n, nil
	}
}

// Packet returns datagram i of the last Read and its source. The bytes
// are overwritten by the next Read.
func (r *Reader) Packet(i int) ([]byte, netip.AddrPort) {
	return r.bufs[i][:r.hs[i].Len], parseAddr(&r.names[i], r.hs[i].Hdr.Namelen)
}

func parseAddr(sa *unix.RawSockaddrInet6, n uint32) netip.AddrPort {
	b := (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(sa))
	port := binary.BigEndian.Uint16(b[2:4])
	switch sa.Family {
	case unix.AF_INET:
		if n < unix.SizeofSockaddrInet4 {
			return netip.AddrPort{}
		}
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
	case unix.AF_INET6:
		if n < unix.SizeofSockaddrInet6 {
			return netip.AddrPort{}
		}
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
	}
	return netip.AddrPort{}
}

// Writer sends batches of datagrams on one socket. It is not safe for
// concurrent use; give each goroutine its own.
type Writer struct {
	rc     syscall.RawConn
	inet6  bool
	hs     []unix.Mmsghdr
	iovs   []unix.Iovec
	names  []unix.RawSockaddrInet6
	n      int
	off    int
	bad    int // refused by Add
	failed int // refused by the kernel
	errno  syscall.Errno
	fn     func(fd uintptr) bool
}

// NewWriter prepares a batch of up to batch datagrams.
func NewWriter(c *net.UDPConn, batch int) (*Writer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var domain int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("socket domain: %w", serr)
	}
	batch = max(batch, 1)
	w := &Writer{
		rc:    rc,
		inet6: domain == unix.AF_INET6,
		hs:    make([]unix.Mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		names: make([]unix.RawSockaddrInet6, batch),
	}
	for i := range batch {
		w.hs[i].Hdr.Name = (*byte)(unsafe.Pointer(&w.names[i]))
		w.hs[i].Hdr.Iov = &w.iovs[i]
		w.hs[i].Hdr.SetIovlen(1)
	}
	w.fn = w.send
	return w, nil
}

// Len is the number of datagrams queued.
func (w *Writer) Len() int { return w.n }

// Full reports whether Add needs a Flush first.
func (w *Writer) Full() bool { return w.n == len(w.hs) }

// Add queues b for to. b must stay unchanged until Flush. A destination
// the socket cannot reach (IPv6 on an IPv4 socket) counts as failed.
func (w *Writer) Add(b []byte, to netip.AddrPort) {
	if w.n == len(w.hs) || len(b) == 0 {
		w.bad++
		return
	}
	sa := &w.names[w.n]
	raw := (*[unix.SizeofSockaddrInet6]byte)(unsafe.Pointer(sa))
	a := to.Addr()
	if w.inet6 {
		sa.Family = unix.AF_INET6
		binary.BigEndian.PutUint16(raw[2:4], to.Port())
		sa.Flowinfo = 0
		sa.Addr = a.As16()
		sa.Scope_id = 0
		w.hs[w.n].Hdr.Namelen = unix.SizeofSockaddrInet6
	} else {
		if a.Is4In6() {
			a = a.Unmap()
		}
		if !a.Is4() {
			w.bad++
			return
		}
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16(raw[2:4], to.Port())
		ip := a.As4()
		copy(raw[4:8], ip[:])
		clear(raw[8:16])
		w.hs[w.n].Hdr.Namelen = unix.SizeofSockaddrInet4
	}
	w.iovs[w.n].Base = &b[0]
	w.iovs[w.n].SetLen(len(b))
	w.n++
}

func (w *Writer) send(fd uintptr) bool {
	for w.off < w.n {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.hs[w.off])), uintptr(w.n-w.off), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			w.off += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false // wait until writable
		case unix.EBADF:
			w.errno = e
			return true
		default:
			// The first datagram failed (e.g. an unreachable
			// destination): drop it and go on with the rest.
			w.off++
			w.failed++
		}
	}
	return true
}

// Flush sends everything queued and reports how many datagrams went out
// and how many were refused. An error means the socket is unusable.
func (w *Writer) Flush() (sent, failed int, err error) {
	w.off, w.errno, w.failed = 0, 0, 0
	if w.n > 0 {
		err = w.rc.Write(w.fn)
		if err == nil && w.errno != 0 {
			err = fmt.Errorf("sendmmsg: %w", w.errno)
		}
	}
	sent = w.off - w.failed
	failed = w.failed + w.bad
	for i := range w.n {
		w.iovs[i].Base = nil // do not keep the caller's buffers alive
	}
	w.n, w.off, w.failed, w.bad = 0, 0, 0, 0
	return max(sent, 0), failed, err
}
