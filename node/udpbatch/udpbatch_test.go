package udpbatch

import (
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// echo answers every datagram twice: the datagram itself, then a one-byte
// trailer, as two replies cut apart by split.
func echo(pkt []byte, _ netip.AddrPort, _ time.Time, out []byte) []byte {
	out = append(out, byte(len(pkt)))
	out = append(out, pkt...)
	return append(out, 1, '!')
}

func split(b []byte) int { return 1 + int(b[0]) }

func serve(t *testing.T, readers, batch int) (*net.UDPConn, *atomic.Int64) {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- Serve(conn, readers, batch, BufSize, echo, split, Counters{Sent: func(n int) { sent.Add(int64(n)) }})
	}()
	t.Cleanup(func() {
		conn.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return conn, &sent
}

func TestServeAnswersEveryDatagramInOrder(t *testing.T) {
	srv, sent := serve(t, 2, 8)
	const clients, each = 4, 200
	errs := make(chan error, clients)
	for c := range clients {
		go func() {
			conn, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			buf := make([]byte, 64)
			for i := range each {
				msg := []byte{byte(c), byte(i)}
				if _, err := conn.Write(msg); err != nil {
					errs <- err
					return
				}
				_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := conn.Read(buf)
				if err != nil {
					errs <- err
					return
				}
				if n != 3 || buf[0] != 2 || buf[1] != byte(c) || buf[2] != byte(i) {
					errs <- fmt.Errorf("echo % x, want 02 %02x %02x", buf[:n], c, i)
					return
				}
				n, err = conn.Read(buf)
				if err != nil || n != 2 || buf[1] != '!' {
					errs <- fmt.Errorf("trailer % x, %v", buf[:n], err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The count is added after each batch is sent, so it may trail the
	// last datagrams the clients read by a moment.
	deadline := time.Now().Add(5 * time.Second)
	for sent.Load() < 2*clients*each && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := sent.Load(); got != 2*clients*each {
		t.Fatalf("counted %d datagrams sent, want %d", got, 2*clients*each)
	}
}

func TestReaderReportsSources(t *testing.T) {
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	r, err := NewReader(srv, 4, 64)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range []string{"a", "bb", "ccc"} {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for len(got) < 3 {
		n, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			pkt, from := r.Packet(i)
			if from != c.LocalAddr().(*net.UDPAddr).AddrPort() {
				t.Fatalf("source %v, want %v", from, c.LocalAddr())
			}
			got = append(got, string(pkt))
		}
	}
	if got[0] != "a" || got[1] != "bb" || got[2] != "ccc" {
		t.Fatalf("read %q", got)
	}
}

func TestWriterCountsUnreachableDestinations(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	w, err := NewWriter(conn, 4)
	if err != nil {
		t.Fatal(err)
	}
	w.Add([]byte("to peer"), peer.LocalAddr().(*net.UDPAddr).AddrPort())
	w.Add([]byte("v6 on a v4 socket"), netip.MustParseAddrPort("[2001:db8::1]:9"))
	w.Add([]byte("mapped v4"), netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("127.0.0.1").As16()), peer.LocalAddr().(*net.UDPAddr).AddrPort().Port()))
	sent, failed, err := w.Flush()
	if err != nil || sent != 2 || failed != 1 {
		t.Fatalf("sent %d, failed %d, err %v; want 2, 1, nil", sent, failed, err)
	}
	buf := make([]byte, 64)
	for _, want := range []string{"to peer", "mapped v4"} {
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := peer.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("peer read %q, %v; want %q", buf[:n], err, want)
		}
	}
}
