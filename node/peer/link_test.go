package peer

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ddpush/ddpush-operator/node/wire"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestRelayBothWays(t *testing.T) {
	noLeak(t)
	h := newHome()
	f := &front{}
	srv := startServer(t, h, "", nil)
	l := dial(t, srv.Addr().String(), f, nil)
	waitUp(t, l)
	if ph, ok := l.PeerHello(); !ok || ph.Ordinal != 1 || ph.Incarnation != 77 || ph.Epoch != 3 {
		t.Fatalf("peer hello %+v", ph)
	}

	// Front -> home: phone packets of every route, and a detach.
	sent := []PhonePacket{
		{Route: udp4, Arrival: 1, Raw: raw21},
		{Route: udp6, Arrival: 2, Raw: raw21[:1]},
		{Route: tcpR, Arrival: 3, Raw: bytes.Repeat([]byte{9}, wire.MaxClientMessageLen)},
	}
	for i := range sent {
		if err := l.SendPhonePacket(&sent[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.SendDetach(&Detach{ConnID: 8, UUIDs: []wire.UUID{uuidA}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "packets at the home", func() bool { return h.packetCount() == len(sent) })
	h.mu.Lock()
	for i := range sent {
		if got := h.packets[i]; got.Route != sent[i].Route || got.Arrival != sent[i].Arrival || !bytes.Equal(got.Raw, sent[i].Raw) {
			t.Errorf("packet %d: got %+v want %+v", i, got, sent[i])
		}
	}
	h.mu.Unlock()
	eventually(t, "the detach", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.detach) == 1 })

	// A push and a lookup, answered.
	ans, err := l.Push(ctxFor(t, 5*time.Second), PushReq{UUID: uuidA, Kind: 3, Key: "k1", Payload: []byte("hi")})
	if err != nil || ans.Status != PushAccepted || ans.ID != 1000+ans.Corr || ans.AcceptedAt != 42 {
		t.Fatalf("push: %+v, %v", ans, err)
	}
	h.mu.Lock()
	p := h.pushes[0]
	h.mu.Unlock()
	if p.Key != "k1" || string(p.Payload) != "hi" || p.UUID != uuidA || p.Kind != 3 {
		t.Fatalf("home got push %+v", p)
	}
	la, err := l.Lookup(ctxFor(t, 5*time.Second), []byte(`"x"`))
	if err != nil || la.Code != 200 || string(la.Body) != `{"echo":"x"}` {
		t.Fatalf("lookup: %+v %q, %v", la, la.Body, err)
	}

	// Home -> front: to a UDP phone through the server, to a TCP phone
	// through the RemoteConn the record would keep.
	if err := srv.SendToPhone(0, &ToPhone{Route: udp4, Bytes: []byte("udp answer")}); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	rc := h.conns[0]
	h.mu.Unlock()
	if rc.Ordinal() != 0 || rc.ConnID() != tcpR.ConnID {
		t.Fatalf("remote conn %+v", rc)
	}
	if rc2 := srv.Session(0).RemoteConn(tcpR.ConnID); rc2 != rc {
		t.Fatal("two RemoteConns for the same connection are not ==")
	}
	if !rc.Send([]byte("tcp answer")) {
		t.Fatal("RemoteConn.Send refused")
	}
	eventually(t, "ToPhone frames at the front", func() bool { return f.count() == 2 })
	if g := f.got; string(g[0].Bytes) != "udp answer" || g[0].Route != udp4 || string(g[1].Bytes) != "tcp answer" || g[1].Route != (Route{Transport: TCP, ConnID: tcpR.ConnID}) {
		t.Fatalf("front got %+v", g)
	}

	// Counters on both sides agree (hello included).
	ls := l.Stats()
	eventually(t, "server counters", func() bool { return srv.Stats()[0].FramesIn == ls.FramesOut })
	ss := srv.Stats()[0]
	if ls.FramesOut != 1+6 || ls.FramesIn != 1+2+2 || !ls.Up || ls.Connects != 1 || ls.Side != Dialed {
		t.Fatalf("link stats %+v", ls)
	}
	if ss.Peer != 0 || !ss.Up || ss.Side != Accepted || ss.FramesOut != ls.FramesIn || ss.BytesIn != ls.BytesOut || ss.BytesOut != ls.BytesIn || ss.BatchesIn != ls.BatchesOut {
		t.Fatalf("server stats %+v (link %+v)", ss, ls)
	}
	for d, n := range ls.Drops {
		if n != 0 {
			t.Errorf("link dropped %d (%s)", n, Drop(d))
		}
	}
}

func TestBadTokenRefused(t *testing.T) {
	noLeak(t)
	h := newHome()
	srv := startServer(t, h, "", nil)
	l := dial(t, srv.Addr().String(), nil, func(o *LinkOptions) { o.Token = "wrong" })
	eventually(t, "a refusal", func() bool { return srv.Refused() >= 2 && l.LastError() != "" })
	if l.Up() {
		t.Fatal("link up with a wrong token")
	}
	if !strings.Contains(l.LastError(), "Unauthenticated") || !strings.Contains(l.LastError(), "invalid bearer token") {
		t.Fatalf("last error %q", l.LastError())
	}
	if srv.Session(0) != nil || len(srv.Stats()) != 0 {
		t.Fatal("a session exists for a refused dialer")
	}
	if _, err := l.Push(ctxFor(t, time.Second), PushReq{}); !errors.Is(err, ErrNotSent) || !errors.Is(err, ErrLinkDown) {
		t.Fatalf("push on a refused link: %v", err)
	}
	if err := l.SendPhonePacket(&PhonePacket{Route: udp4, Raw: raw21}); !errors.Is(err, ErrLinkDown) {
		t.Fatalf("packet on a refused link: %v", err)
	}
	if st := l.Stats(); st.Drops[DropLinkDown] != 2 || st.Connects != 0 {
		t.Fatalf("stats %+v", st)
	}

	// No token at all, and a token in the wrong form.
	for _, md := range []metadata.MD{nil, metadata.Pairs("authorization", testToken), metadata.Pairs("authorization", "Bearer "+testToken+"x")} {
		cc, err := grpc.NewClient("passthrough:///"+srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx := metadata.NewOutgoingContext(ctxFor(t, 5*time.Second), md)
		st, err := cc.NewStream(ctx, &streamDesc, fullMethod, grpc.ForceCodecV2(codec{}))
		if err == nil {
			err = st.RecvMsg(&batchMsg{})
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("metadata %v: %v", md, err)
		}
		cc.Close()
	}
	if h.pushCount() != 0 || h.packetCount() != 0 {
		t.Fatal("the home saw frames from a refused dialer")
	}
}

func TestHandshakeRefusals(t *testing.T) {
	noLeak(t)
	srv := startServer(t, newHome(), "", nil)
	// The address now belongs to ordinal 1; the map says 2.
	stale := dial(t, srv.Addr().String(), nil, func(o *LinkOptions) { o.PeerOrdinal = 2 })
	eventually(t, "the wrong-ordinal error", func() bool { return strings.Contains(stale.LastError(), "is ordinal 1, not 2") })
	// A dialer claiming the server's own ordinal (two pods think they
	// are ordinal 1).
	twin2 := dial(t, srv.Addr().String(), nil, func(o *LinkOptions) { o.Self.Ordinal = 1; o.PeerOrdinal = 2 })
	eventually(t, "the twin refusal", func() bool { return strings.Contains(twin2.LastError(), "which is this pod's") })
	if stale.Up() || twin2.Up() {
		t.Fatal("a refused link is up")
	}
	// Nobody listening.
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := lis.Addr().String()
	lis.Close()
	gone := dial(t, addr, nil, nil)
	eventually(t, "a connection error", func() bool { return strings.Contains(gone.LastError(), "Unavailable") })
}

func TestDialOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		mod  func(*LinkOptions)
		want string
	}{
		{"no address", func(o *LinkOptions) { o.Addr = "" }, "no address"},
		{"no token", func(o *LinkOptions) { o.Token = "" }, "no token"},
		{"itself", func(o *LinkOptions) { o.PeerOrdinal = 0 }, "would dial itself"},
		{"peer 512", func(o *LinkOptions) { o.PeerOrdinal = 512 }, "peer ordinal 512"},
		{"peer -1", func(o *LinkOptions) { o.PeerOrdinal = -1 }, "peer ordinal -1"},
		{"self 512", func(o *LinkOptions) { o.Self.Ordinal = 512 }, "own ordinal 512"},
		{"queue too big", func(o *LinkOptions) { o.QueueBytes = MaxBatchBytes + 1 }, "at most"},
		{"queue too small", func(o *LinkOptions) { o.QueueBytes = 1000 }, "cannot hold the largest frame"},
	} {
		opt := LinkOptions{Addr: "127.0.0.1:1", Token: "t", PeerOrdinal: 1}
		tt.mod(&opt)
		if _, err := Dial(opt); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	for _, tt := range []struct {
		name string
		opt  ServerOptions
		want string
	}{
		{"no token", ServerOptions{Addr: "127.0.0.1:0", Handler: newHome()}, "no token"},
		{"no handler", ServerOptions{Addr: "127.0.0.1:0", Token: "t"}, "no handler"},
		{"ordinal 512", ServerOptions{Addr: "127.0.0.1:0", Token: "t", Handler: newHome(), Self: Hello{Ordinal: 512}}, "own ordinal 512"},
		{"bad address", ServerOptions{Addr: "127.0.0.1:99999", Token: "t", Handler: newHome()}, "invalid port"},
	} {
		if s, err := Listen(tt.opt); err == nil || !strings.Contains(err.Error(), tt.want) {
			if s != nil {
				s.Close()
			}
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}

// The home dies while pushes wait for their answers: those end with
// ErrOutcomeUnknown, pushes after that with ErrNotSent until the home is
// back, then they work again on the same Link.
func TestPeerKilledMidStream(t *testing.T) {
	noLeak(t)
	h := newHome()
	h.noAnswer = true
	srv := startServer(t, h, "", nil)
	addr := srv.Addr().String()
	l := dial(t, addr, nil, nil)
	waitUp(t, l)

	const inflight = 5
	errs := make(chan error, inflight)
	for i := 0; i < inflight; i++ {
		go func() {
			_, err := l.Push(ctxFor(t, 30*time.Second), PushReq{UUID: uuidA, Kind: 1})
			errs <- err
		}()
	}
	eventually(t, "the pushes at the home", func() bool { return h.pushCount() == inflight })
	srv.Close()
	for i := 0; i < inflight; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrNotSent) {
				t.Fatalf("in-flight push ended with %v, want ErrOutcomeUnknown", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("in-flight pushes did not end when the peer died")
		}
	}
	eventually(t, "the link to go down", func() bool { return !l.Up() })
	for i := 0; i < 3; i++ {
		_, err := l.Push(ctxFor(t, 5*time.Second), PushReq{UUID: uuidA, Kind: 1})
		if !errors.Is(err, ErrNotSent) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("push with the home down: %v, want ErrNotSent", err)
		}
	}

	h2 := newHome()
	srv2 := startServer(t, h2, addr, nil)
	_ = srv2
	waitUp(t, l)
	ans, err := l.Push(ctxFor(t, 5*time.Second), PushReq{UUID: uuidA, Kind: 1})
	if err != nil || ans.Status != PushAccepted {
		t.Fatalf("push after the home came back: %+v, %v", ans, err)
	}
	if st := l.Stats(); st.Connects != 2 || st.Drops[DropLinkDown] != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// stalledPair is a link whose writer is stuck in SendMsg: the home's
// reader blocks in PhonePacket and the HTTP/2 windows are small, so the
// stream stops taking data and frames stay in the link's queue. With
// full, frames are added until the queue refuses one.
func stalledPair(t *testing.T, queueFrames int, full bool) (*home, *Link) {
	h := newHome()
	h.block = make(chan struct{})
	srv := startServer(t, h, "", func(o *ServerOptions) {
		o.serverOptions = []grpc.ServerOption{grpc.InitialWindowSize(64 << 10), grpc.InitialConnWindowSize(64 << 10)}
	})
	l := dial(t, srv.Addr().String(), nil, func(o *LinkOptions) {
		o.QueueFrames = queueFrames
		o.dialOptions = []grpc.DialOption{grpc.WithInitialWindowSize(64 << 10), grpc.WithInitialConnWindowSize(64 << 10)}
	})
	waitUp(t, l)
	unblock := sync.OnceFunc(func() { close(h.block) })
	t.Cleanup(unblock) // before the server's Close, which waits for the reader
	h.unblock = unblock
	big := &PhonePacket{Route: udp4, Raw: make([]byte, MaxPhoneBytes)}
	eventually(t, "the writer to stall", func() bool {
		refused := false
		for i := 0; i < 1000 && !refused; i++ {
			err := l.SendPhonePacket(big)
			refused = errors.Is(err, ErrQueueFull)
			if err != nil && !refused {
				t.Fatal(err)
			}
		}
		if full && !refused {
			return false
		}
		// Stuck: frames queued and no batch sent for a while.
		batches := l.Stats().BatchesOut
		time.Sleep(100 * time.Millisecond)
		l.q.mu.Lock()
		queued := l.q.frames
		l.q.mu.Unlock()
		return queued > 0 && l.Stats().BatchesOut == batches && (!full || queued == queueFrames)
	})
	return h, l
}

func TestQueueFullDropCounted(t *testing.T) {
	noLeak(t)
	const limit = 100
	_, l := stalledPair(t, limit, true)
	before := l.Stats().Drops[DropQueueFull]
	if before == 0 {
		t.Fatal("no queue_full drop counted")
	}
	if err := l.SendPhonePacket(&PhonePacket{Route: udp4, Raw: raw21}); !errors.Is(err, ErrQueueFull) || !errors.Is(err, ErrNotSent) {
		t.Fatalf("send on a full queue: %v", err)
	}
	if err := l.SendDetach(&Detach{ConnID: 1}); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("detach on a full queue: %v", err)
	}
	if got := l.Stats().Drops[DropQueueFull]; got != before+2 {
		t.Fatalf("queue_full drops %d, want %d", got, before+2)
	}
	// Pushes have a reserve of as many frames again; past it they are
	// refused at once, and the queued ones expire unsent.
	const pushes = limit + 50
	errs := make(chan error, pushes)
	for i := 0; i < pushes; i++ {
		go func() {
			_, err := l.Push(ctxFor(t, 2*time.Second), PushReq{UUID: uuidA})
			errs <- err
		}()
	}
	full, expired := 0, 0
	for i := 0; i < pushes; i++ {
		err := <-errs
		switch {
		case errors.Is(err, ErrQueueFull):
			full++
		case errors.Is(err, ErrNotSent) && strings.Contains(err.Error(), "while queued"):
			expired++
		default:
			t.Errorf("push: %v", err)
		}
	}
	if full != pushes-limit || expired != limit {
		t.Fatalf("%d pushes refused (queue full), %d expired while queued; want %d and %d", full, expired, pushes-limit, limit)
	}
	if !l.Up() {
		t.Fatal("a full queue took the link down")
	}
}

// A push whose deadline passes while it is still queued comes back
// ErrNotSent and never reaches the home, even once the stream moves again.
func TestExpiredQueuedPushIsNeverSent(t *testing.T) {
	noLeak(t)
	h, l := stalledPair(t, 1<<20, false)
	_, err := l.Push(ctxFor(t, 100*time.Millisecond), PushReq{UUID: uuidA, Key: "expired"})
	if !errors.Is(err, ErrNotSent) || errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "while queued") {
		t.Fatalf("push queued behind a stuck writer: %v", err)
	}
	h.unblock()
	// The stream is ordered: once this push is answered, everything
	// queued before it has reached the home.
	ans, err := l.Push(ctxFor(t, 10*time.Second), PushReq{UUID: uuidA, Key: "after"})
	if err != nil || ans.Status != PushAccepted {
		t.Fatalf("push after the stall: %+v, %v", ans, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pushes) != 1 || h.pushes[0].Key != "after" {
		t.Fatalf("the home got %d pushes (%+v); the expired one must not be among them", len(h.pushes), h.pushes)
	}
	if len(h.packets) == 0 {
		t.Fatal("the queued packets around the expired push were lost")
	}
}

// A push still queued when the link goes away comes back ErrNotSent.
func TestQueuedPushAtCloseIsNotSent(t *testing.T) {
	noLeak(t)
	h, l := stalledPair(t, 1<<20, false)
	errs := make(chan error, 1)
	go func() {
		_, err := l.Push(ctxFor(t, 30*time.Second), PushReq{UUID: uuidA, Key: "queued"})
		errs <- err
	}()
	eventually(t, "the push to be queued", func() bool {
		l.q.mu.Lock()
		defer l.q.mu.Unlock()
		return len(l.q.calls) == 1
	})
	l.Close()
	if err := <-errs; !errors.Is(err, ErrNotSent) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("queued push at Close: %v", err)
	}
	if st := l.Stats(); st.Drops[DropFlushed] == 0 {
		t.Fatalf("queued frames discarded at Close are not counted: %+v", st)
	}
	h.unblock()
	if h.pushCount() != 0 {
		t.Fatal("the home got the push")
	}
}

func TestCloseUnderLoad(t *testing.T) {
	noLeak(t)
	h := newHome()
	srv := startServer(t, h, "", nil)
	f := &front{}
	l := dial(t, srv.Addr().String(), f, nil)
	waitUp(t, l)
	stop := make(chan struct{})
	done := make(chan struct{})
	const workers = 6
	for w := 0; w < workers; w++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				switch w % 3 {
				case 0:
					err = l.SendPhonePacket(&PhonePacket{Route: tcpR, Raw: raw21})
				case 1:
					_, err = l.Push(context.Background(), PushReq{UUID: uuidA, Kind: 3, Payload: []byte("x")})
				case 2:
					if s := srv.Session(0); s != nil {
						err = s.SendToPhone(&ToPhone{Route: udp4, Bytes: raw21})
					}
				}
				if err != nil {
					time.Sleep(100 * time.Microsecond)
				}
			}
		}()
	}
	// Pushes wait behind whole batches of packets here, so few get
	// through; a couple is enough to know the calls are in flight.
	eventually(t, "traffic", func() bool { return h.pushCount() >= 2 && h.packetCount() > 100 && f.count() > 100 })
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		l.Close()
		srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close under load did not return")
	}
	t.Logf("closed under load in %v", time.Since(start))
	close(stop)
	for w := 0; w < workers; w++ {
		<-done
	}
	if err := l.SendPhonePacket(&PhonePacket{Route: tcpR, Raw: raw21}); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after Close: %v", err)
	}
	if _, err := l.Push(context.Background(), PushReq{}); !errors.Is(err, ErrNotSent) {
		t.Fatalf("push after Close: %v", err)
	}
	l.Close() // twice is fine
	srv.Close()
}
