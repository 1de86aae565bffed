package peer

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The benchmarks compare the gRPC link with the least a link can be: the
// same frames, queue and batching writer over a plain TCP connection with
// a 4-byte length before each batch. CPU is the whole process's (both
// ends of the link), per relayed frame.

// countingHome counts phone packets and answers pushes at once.
type countingHome struct {
	packets atomic.Int64
	target  int64
	done    chan struct{}
	once    sync.Once
}

func newCountingHome(target int) *countingHome {
	return &countingHome{target: int64(target), done: make(chan struct{})}
}

func (h *countingHome) phonePacket(p *PhonePacket) {
	if h.packets.Add(1) == h.target {
		h.once.Do(func() { close(h.done) })
	}
}

func (h *countingHome) PhonePacket(_ *Session, p *PhonePacket) { h.phonePacket(p) }
func (h *countingHome) Detach(*Session, *Detach)               {}
func (h *countingHome) LookupReq(*Session, *LookupReq)         {}
func (h *countingHome) PushReq(s *Session, r *PushReq) {
	_ = s.SendPushAns(&PushAns{Corr: r.Corr, Status: PushAccepted, ID: r.Corr})
}

// relay sends n packets through send, retrying while the queue is full,
// and reports frames/s and CPU per frame once the home has them all.
func relay(b *testing.B, h *countingHome, send func(*PhonePacket) error) {
	p := &PhonePacket{Route: udp4, Arrival: 1, Raw: raw21}
	retries := 0
	b.ReportAllocs()
	cpu0, t0 := processCPU(), time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for {
			err := send(p)
			if err == nil {
				break
			}
			if !errors.Is(err, ErrQueueFull) {
				b.Fatal(err)
			}
			retries++
			time.Sleep(20 * time.Microsecond) // not a spin: CPU is counted

		}
	}
	select {
	case <-h.done:
	case <-time.After(60 * time.Second):
		b.Fatalf("home got %d of %d packets", h.packets.Load(), b.N)
	}
	b.StopTimer()
	elapsed, cpu := time.Since(t0), processCPU()-cpu0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "frames/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/frame")
	b.ReportMetric(float64(retries)/float64(b.N), "full-retries/frame")
}

func BenchmarkRelayPhonePackets(b *testing.B) {
	b.Run("grpc", func(b *testing.B) {
		h := newCountingHome(b.N)
		srv := startServer(b, h, "", nil)
		l := dial(b, srv.Addr().String(), nil, nil)
		waitUp(b, l)
		relay(b, h, l.SendPhonePacket)
		if st := l.Stats(); st.BatchesOut > 0 {
			b.ReportMetric(float64(st.FramesOut)/float64(st.BatchesOut), "frames/batch")
		}
	})
	b.Run("tcp", func(b *testing.B) {
		h := newCountingHome(b.N)
		r := newRawPair(b, func(t Type, body []byte) {
			var p PhonePacket
			if t == TypePhonePacket && p.decode(body) == nil {
				h.phonePacket(&p)
			}
		})
		relay(b, h, r.sendPhonePacket)
		b.ReportMetric(float64(r.st.framesOut.Load())/float64(r.st.batchesOut.Load()), "frames/batch")
	})
}

func BenchmarkPushRoundTrip(b *testing.B) {
	b.Run("grpc", func(b *testing.B) {
		srv := startServer(b, newCountingHome(0), "", nil)
		l := dial(b, srv.Addr().String(), nil, nil)
		waitUp(b, l)
		req := PushReq{UUID: uuidA, Kind: 3, Key: "relay/1/1", Payload: []byte("hello")}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := l.Push(b.Context(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("grpc-parallel", func(b *testing.B) {
		srv := startServer(b, newCountingHome(0), "", nil)
		l := dial(b, srv.Addr().String(), nil, nil)
		waitUp(b, l)
		b.SetParallelism(8)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			req := PushReq{UUID: uuidA, Kind: 3, Key: "relay/1/1", Payload: []byte("hello")}
			for pb.Next() {
				if _, err := l.Push(b.Context(), req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("tcp", func(b *testing.B) {
		// Ping-pong on one connection: write a request batch, read the
		// answer batch.
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer lis.Close()
		go func() {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			var buf, out []byte
			for {
				batch, err := readBatch(c, &buf)
				if err != nil {
					return
				}
				out = out[:0]
				for len(batch) > 0 {
					t, body, rest, err := nextFrame(batch)
					if err != nil {
						return
					}
					batch = rest
					var r PushReq
					if t == TypePushReq && r.decode(body) == nil {
						out = appendFrame(out, TypePushAns, &PushAns{Corr: r.Corr, Status: PushAccepted, ID: r.Corr})
					}
				}
				if err := writeBatch(c, out); err != nil {
					return
				}
			}
		}()
		c, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		req := PushReq{UUID: uuidA, Kind: 3, Key: "relay/1/1", Payload: []byte("hello")}
		var buf, out []byte
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			req.Corr = uint64(i)
			out = appendFrame(out[:0], TypePushReq, &req)
			if err := writeBatch(c, out); err != nil {
				b.Fatal(err)
			}
			batch, err := readBatch(c, &buf)
			if err != nil {
				b.Fatal(err)
			}
			var a PushAns
			if t, body, _, err := nextFrame(batch); err != nil || t != TypePushAns || a.decode(body) != nil || a.Corr != req.Corr {
				b.Fatalf("answer %s %v", t, err)
			}
		}
	})
}

// rawPair is the hand-rolled baseline: a queue and writer like a Link's,
// over TCP with length-prefixed batches.
type rawPair struct {
	q  queue
	st counters
}

func newRawPair(b *testing.B, onFrame func(Type, []byte)) *rawPair {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var buf []byte
		for {
			batch, err := readBatch(c, &buf)
			if err != nil {
				return
			}
			for len(batch) > 0 {
				t, body, rest, err := nextFrame(batch)
				if err != nil {
					return
				}
				batch = rest
				onFrame(t, body)
			}
		}
	}()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	r := &rawPair{}
	r.q.init(8192, 1<<20)
	r.q.setOpen(true)
	stop := make(chan struct{})
	ctx, cancel := contextWithDone(stop)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = r.q.writeLoop(ctx, func(m any) error { return writeBatch(c, m.(*batchMsg).b) }, &r.st)
	}()
	b.Cleanup(func() {
		close(stop)
		cancel()
		c.Close()
		lis.Close()
		wg.Wait()
	})
	return r
}

func (r *rawPair) sendPhonePacket(p *PhonePacket) error {
	n := p.size()
	q := &r.q
	q.mu.Lock()
	if !q.room(frameLen(n), false) {
		q.mu.Unlock()
		return ErrQueueFull
	}
	q.buf = p.appendBody(appendHeader(q.buf, TypePhonePacket, n))
	q.frames++
	q.mu.Unlock()
	q.signal()
	return nil
}

func writeBatch(w io.Writer, batch []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(batch)))
	bufs := net.Buffers{hdr[:], batch}
	_, err := bufs.WriteTo(w)
	return err
}

func readBatch(r io.Reader, buf *[]byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n > MaxBatchBytes {
		return nil, errors.New("batch too large")
	}
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	*buf = (*buf)[:n]
	_, err := io.ReadFull(r, *buf)
	return *buf, err
}

func contextWithDone(stop <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
