package peer

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"
)

const testToken = "s3cret-token"

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// home is a HomeHandler that records what arrives and answers pushes
// and lookups at once, unless told to hold them.
type home struct {
	mu      sync.Mutex
	packets []PhonePacket
	detach  []Detach
	pushes  []PushReq
	conns   []RemoteConn
	held    []heldPush // pushes left unanswered (noAnswer)

	hold     chan struct{} // when set, PushReq waits on it before answering (blocking the reader)
	noAnswer bool          // when set, pushes are recorded and never answered
	got      chan struct{} // signalled (non-blocking) on every push
	block    chan struct{} // when set, PhonePacket waits on it (stalls the stream's reader)
	unblock  func()        // closes block once
}

type heldPush struct {
	from *Session
	corr uint64
}

func newHome() *home { return &home{got: make(chan struct{}, 1024)} }

func (h *home) PhonePacket(from *Session, p *PhonePacket) {
	if h.block != nil {
		<-h.block
	}
	c := *p
	c.Raw = append([]byte(nil), p.Raw...)
	h.mu.Lock()
	h.packets = append(h.packets, c)
	if p.Transport == TCP {
		h.conns = append(h.conns, from.RemoteConn(p.ConnID))
	}
	h.mu.Unlock()
}

func (h *home) Detach(_ *Session, d *Detach) {
	h.mu.Lock()
	h.detach = append(h.detach, *d)
	h.mu.Unlock()
}

func (h *home) PushReq(from *Session, r *PushReq) {
	c := *r
	c.Payload = append([]byte(nil), r.Payload...)
	h.mu.Lock()
	h.pushes = append(h.pushes, c)
	noAnswer := h.noAnswer
	h.mu.Unlock()
	select {
	case h.got <- struct{}{}:
	default:
	}
	if noAnswer {
		h.mu.Lock()
		h.held = append(h.held, heldPush{from, r.Corr})
		h.mu.Unlock()
		return
	}
	if h.hold != nil {
		<-h.hold
	}
	_ = from.SendPushAns(&PushAns{Corr: r.Corr, Status: PushAccepted, ID: 1000 + r.Corr, Fate: 1, AcceptedAt: 42, Reason: ""})
}

func (h *home) LookupReq(from *Session, r *LookupReq) {
	body := append([]byte(`{"echo":`), r.Body...)
	body = append(body, '}')
	_ = from.SendLookupAns(&LookupAns{Corr: r.Corr, Code: 200, Body: body})
}

func (h *home) pushCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.pushes)
}

func (h *home) packetCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.packets)
}

// front is a FrontHandler that records ToPhone frames.
type front struct {
	mu  sync.Mutex
	got []ToPhone
}

func (f *front) ToPhone(_ *Link, p *ToPhone) {
	c := *p
	c.Bytes = append([]byte(nil), p.Bytes...)
	f.mu.Lock()
	f.got = append(f.got, c)
	f.mu.Unlock()
}

func (f *front) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.got)
}

// startServer listens on 127.0.0.1 port 0 (or addr) as ordinal 1.
func startServer(t testing.TB, h HomeHandler, addr string, mod func(*ServerOptions)) *Server {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	opt := ServerOptions{Addr: addr, Token: testToken, Self: Hello{Ordinal: 1, Epoch: 3, Incarnation: 77}, Handler: h, Logger: quiet}
	if mod != nil {
		mod(&opt)
	}
	s, err := Listen(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dial links ordinal 0 to the server at addr (ordinal 1).
func dial(t testing.TB, addr string, f FrontHandler, mod func(*LinkOptions)) *Link {
	t.Helper()
	opt := LinkOptions{
		Addr: addr, Token: testToken, PeerOrdinal: 1,
		Self:       Hello{Ordinal: 0, Epoch: 3, Incarnation: 5},
		Handler:    f,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Logger: quiet,
	}
	if mod != nil {
		mod(&opt)
	}
	l, err := Dial(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func waitUp(t testing.TB, l *Link) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.WaitUp(ctx); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond for up to 10 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// noLeak checks, after the test's own cleanups, that the goroutines it
// started are gone (gRPC's transports end shortly after Close).
func noLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines left over (%d before):\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}
