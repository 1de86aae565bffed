package peer

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestLateAnswerCounted(t *testing.T) {
	noLeak(t)
	h := newHome()
	h.noAnswer = true
	srv := startServer(t, h, "", nil)
	l := dial(t, srv.Addr().String(), nil, nil)
	waitUp(t, l)
	_, err := l.Push(ctxFor(t, 200*time.Millisecond), PushReq{UUID: uuidA})
	if !errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "waiting for the answer") {
		t.Fatalf("unanswered push: %v", err)
	}
	h.mu.Lock()
	held := h.held[0]
	h.mu.Unlock()
	if err := held.from.SendPushAns(&PushAns{Corr: held.corr, Status: PushAccepted}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the late answer to be counted", func() bool { return l.Stats().Drops[DropLateAnswer] == 1 })
	// The link is fine and the next push gets its own answer.
	h.mu.Lock()
	h.noAnswer = false
	h.mu.Unlock()
	if a, err := l.Push(ctxFor(t, 5*time.Second), PushReq{UUID: uuidA}); err != nil || a.Corr != held.corr+1 {
		t.Fatalf("next push: %+v, %v", a, err)
	}

	// A push answered with a lookup answer has an unknown outcome.
	h.mu.Lock()
	h.noAnswer = true
	h.mu.Unlock()
	errs := make(chan error, 1)
	go func() {
		_, err := l.Push(ctxFor(t, 10*time.Second), PushReq{UUID: uuidA})
		errs <- err
	}()
	eventually(t, "the third push", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return len(h.held) == 2 })
	h.mu.Lock()
	held = h.held[1]
	h.mu.Unlock()
	if err := held.from.SendLookupAns(&LookupAns{Corr: held.corr, Code: 200}); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; !errors.Is(err, ErrOutcomeUnknown) || !strings.Contains(err.Error(), "lookup_ans") {
		t.Fatalf("push answered by a lookup answer: %v", err)
	}
}

// A RemoteConn keeps working when its front reconnects, and goes dead
// when the front restarts (a new incarnation reuses connection ids).
func TestRemoteConnAcrossIncarnations(t *testing.T) {
	noLeak(t)
	h := newHome()
	srv := startServer(t, h, "", nil)
	addr := srv.Addr().String()
	f1 := &front{}
	l1 := dial(t, addr, f1, nil)
	waitUp(t, l1)
	if err := l1.SendPhonePacket(&PhonePacket{Route: tcpR, Raw: raw21}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the packet", func() bool { return h.packetCount() == 1 })
	rc := h.conns[0]
	l1.Close()
	eventually(t, "the session to end", func() bool { return srv.Session(0) == nil })
	if rc.Send([]byte("x")) {
		t.Fatal("sent with no session")
	}
	if got := srv.Stats()[0].Drops[DropLinkDown]; got != 1 {
		t.Fatalf("link_down drops %d", got)
	}

	same := &front{}
	l2 := dial(t, addr, same, nil) // same incarnation: the front process lives on
	waitUp(t, l2)
	if !rc.Send([]byte("again")) {
		t.Fatal("RemoteConn refused after a reconnect of the same front")
	}
	eventually(t, "ToPhone at the same front", func() bool { return same.count() == 1 })
	l2.Close()

	restarted := &front{}
	l3 := dial(t, addr, restarted, func(o *LinkOptions) { o.Self.Incarnation = 6 })
	waitUp(t, l3)
	if rc.Send([]byte("stale")) {
		t.Fatal("RemoteConn from the front's previous incarnation still sends")
	}
	if got := srv.Stats()[0].Drops[DropStaleConn]; got != 1 {
		t.Fatalf("stale_conn drops %d", got)
	}
	if s := srv.Session(0); s == nil || s.Hello().Incarnation != 6 || s.Ordinal() != 0 {
		t.Fatalf("current session %+v", s)
	}
	for _, o := range []int{7, -1, 512, 1 << 30} {
		if err := srv.SendToPhone(o, &ToPhone{Route: udp4, Bytes: raw21}); !errors.Is(err, ErrLinkDown) {
			t.Fatalf("ToPhone to ordinal %d, which never dialed: %v", o, err)
		}
	}
	if st := srv.Stats(); len(st) != 2 || st[1].Peer != 7 || st[1].Drops[DropLinkDown] != 1 || st[1].Up {
		t.Fatalf("stats after sends to absent ordinals: %+v", st)
	}
	time.Sleep(50 * time.Millisecond)
	if restarted.count() != 0 {
		t.Fatal("the restarted front got a stale frame")
	}
}

// inject puts raw bytes in a queue as if they were frames.
func inject(q *queue, b []byte, frames int) {
	q.mu.Lock()
	q.buf = append(q.buf, b...)
	q.frames += frames
	q.mu.Unlock()
	q.signal()
}

func TestMalformedAndUnexpectedFrames(t *testing.T) {
	noLeak(t)
	h := newHome()
	f := &front{}
	srv := startServer(t, h, "", nil)
	l := dial(t, srv.Addr().String(), f, nil)
	waitUp(t, l)
	sess := srv.Session(0)

	// Home -> front: a request (not for a front), an unknown type, a
	// ToPhone that does not decode, then a good one; then a batch cut
	// short.
	var b []byte
	b = appendFrame(b, TypePushReq, &PushReq{})
	b = append(b, 99, 2, 0, 0)
	b = append(b, byte(TypeToPhone), 2, 9, 9)
	b = appendFrame(b, TypeToPhone, &ToPhone{Route: udp4, Bytes: []byte("ok")})
	inject(&sess.q, b, 4)
	eventually(t, "the good ToPhone", func() bool { return f.count() == 1 })
	inject(&sess.q, []byte{byte(TypeToPhone), 50, 1}, 1)
	eventually(t, "the cut batch", func() bool { return l.Stats().Drops[DropMalformed] == 2 })
	if st := l.Stats(); st.Drops[DropUnexpected] != 2 {
		t.Fatalf("front drops %v", st.Drops)
	}

	// Front -> home: an answer (not for a home), a phone packet that does
	// not decode, then a good one.
	b = appendFrame(nil, TypePushAns, &PushAns{Corr: 1, Status: PushAccepted})
	b = append(b, byte(TypePhonePacket), 3, 1, 9, 9)
	b = appendFrame(b, TypePhonePacket, &PhonePacket{Route: udp4, Raw: raw21})
	inject(&l.q, b, 3)
	eventually(t, "the good packet", func() bool { return h.packetCount() == 1 })
	st := srv.Stats()[0]
	if st.Drops[DropUnexpected] != 1 || st.Drops[DropMalformed] != 1 {
		t.Fatalf("home drops %v", st.Drops)
	}
	if !l.Up() || srv.Session(0) != sess {
		t.Fatal("bad frames took the link down")
	}
}

func TestHandshakeTimeout(t *testing.T) {
	noLeak(t)
	// A listener that accepts and never speaks.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		lis.Close()
		for c := range accepted {
			c.Close()
		}
	}()
	l := dial(t, lis.Addr().String(), nil, func(o *LinkOptions) { o.HandshakeTimeout = 100 * time.Millisecond })
	eventually(t, "the handshake to time out", func() bool { return l.LastError() != "" })
	if l.Up() {
		t.Fatal("up without a handshake")
	}
	t.Logf("last error: %s", l.LastError())
	start := time.Now()
	l.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 5*time.Second
	for _, r := range []float64{0, 0.5, 0.999999} {
		prev := time.Duration(0)
		for n := 0; n < 70; n++ {
			d := backoff(n, lo, hi, func() float64 { return r })
			if d < lo/2 || d > hi {
				t.Fatalf("attempt %d (r=%v): %v outside %v..%v", n, r, d, lo/2, hi)
			}
			if d < prev {
				t.Fatalf("attempt %d (r=%v): %v shorter than %v", n, r, d, prev)
			}
			prev = d
		}
		if last := backoff(69, lo, hi, func() float64 { return r }); last < hi/2 {
			t.Fatalf("the cap is never reached: %v", last)
		}
	}
	if d := backoff(0, lo, hi, func() float64 { return 0 }); d != lo/2 {
		t.Fatalf("first wait %v", d)
	}
	if d := backoff(3, lo, hi, func() float64 { return 0.999999 }); d < 799*time.Millisecond || d > 800*time.Millisecond {
		t.Fatalf("fourth wait %v, want just under 800ms", d)
	}
}

func TestCollector(t *testing.T) {
	noLeak(t)
	h := newHome()
	srv := startServer(t, h, "", nil)
	l := dial(t, srv.Addr().String(), nil, nil)
	waitUp(t, l)
	for i := 0; i < 3; i++ {
		if err := l.SendPhonePacket(&PhonePacket{Route: udp4, Raw: raw21}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "packets", func() bool { return h.packetCount() == 3 })
	bad := dial(t, srv.Addr().String(), nil, func(o *LinkOptions) { o.Token = "nope"; o.Self.Ordinal = 2 })
	eventually(t, "a refusal", func() bool { return srv.Refused() > 0 })
	bad.Close()

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(func() []LinkStats { return append([]LinkStats{l.Stats()}, srv.Stats()...) }, srv.Refused))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	find := func(name string, labels map[string]string) *dto.Metric {
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
						continue next
					}
				}
				return m
			}
		}
		t.Fatalf("no %s %v", name, labels)
		return nil
	}
	if v := find("pushnode_peer_frames_total", map[string]string{"peer": "1", "side": "dialed", "direction": "out"}).GetCounter().GetValue(); v != 4 {
		t.Fatalf("frames out %v, want 4 (hello and 3 packets)", v)
	}
	if v := find("pushnode_peer_frames_total", map[string]string{"peer": "0", "side": "accepted", "direction": "in"}).GetCounter().GetValue(); v != 4 {
		t.Fatalf("frames in at the home %v", v)
	}
	if v := find("pushnode_peer_link_up", map[string]string{"peer": "1", "side": "dialed"}).GetGauge().GetValue(); v != 1 {
		t.Fatalf("link up %v", v)
	}
	if v := find("pushnode_peer_drops_total", map[string]string{"peer": "1", "reason": "queue_full"}).GetCounter().GetValue(); v != 0 {
		t.Fatalf("queue_full %v", v)
	}
	if v := find("pushnode_peer_handshakes_refused_total", nil).GetCounter().GetValue(); v < 1 {
		t.Fatalf("refused %v", v)
	}
}

// TestStreamThatClaimsAnOrdinalAndLeaves: a second stream claiming the
// same ordinal (another process holding the token, or a front's old
// stream) takes over the answers while it runs; when it goes away, the
// front's own stream that is still running is answered on again, not
// nobody.
func TestStreamThatClaimsAnOrdinalAndLeaves(t *testing.T) {
	h := newHome()
	srv := startServer(t, h, "", nil)
	real, impostor := &front{}, &front{}
	lr := dial(t, srv.Addr().String(), real, nil)
	waitUp(t, lr)
	li := dial(t, srv.Addr().String(), impostor, func(o *LinkOptions) { o.Self.Incarnation = 99 })
	waitUp(t, li)
	eventually(t, "the newer stream is current", func() bool {
		s := srv.Session(0)
		return s != nil && s.Hello().Incarnation == 99
	})
	li.Close()
	eventually(t, "the remaining stream is current again", func() bool {
		s := srv.Session(0)
		return s != nil && s.Hello().Incarnation == 5
	})
	if err := srv.SendToPhone(0, &ToPhone{Route: Route{Transport: TCP, ConnID: 1}, Bytes: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the front's own stream gets the frame", func() bool { return real.count() == 1 })
}
