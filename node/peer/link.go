package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ddpush/ddpush-operator/node/slotmap"
)

var (
	// ErrNotSent: the request is known not to have reached the peer (no
	// link, a full queue, or the link broke or the deadline passed before
	// it was handed to the stream). For a push: certainly not committed.
	ErrNotSent = errors.New("not sent to the peer")
	// ErrOutcomeUnknown: the request was handed to the stream and no
	// answer came (the link broke or the deadline passed). A push may or
	// may not have been committed at the home.
	ErrOutcomeUnknown = errors.New("outcome unknown")

	// ErrLinkDown and ErrQueueFull are the two ways a frame is refused
	// at once; both are ErrNotSent.
	ErrLinkDown  = fmt.Errorf("%w: link is down", ErrNotSent)
	ErrQueueFull = fmt.Errorf("%w: send queue is full", ErrNotSent)
	// ErrClosed: the link or server was closed.
	ErrClosed = fmt.Errorf("%w: closed", ErrNotSent)
)

// FrontHandler takes what a home sends back on a link this pod dialed.
// It is called from the link's reader, one frame at a time: it must not
// block, and p's slices are valid only during the call.
type FrontHandler interface {
	ToPhone(from *Link, p *ToPhone)
}

// LinkOptions configure a Link.
type LinkOptions struct {
	Addr  string // the peer's host:port
	Token string // the PushNode's API token
	// Self is this pod: its ordinal, slot map epoch and incarnation.
	// Version is filled in.
	Self Hello
	// PeerOrdinal is the ordinal expected at Addr; a pod answering with
	// another one (a pod IP reused by another pod) is not linked to.
	PeerOrdinal int
	Handler     FrontHandler // nil drops ToPhone frames (counted)

	QueueFrames int // default 8192
	QueueBytes  int // default 1 MiB, at most MaxBatchBytes
	// CallTimeout bounds Push and Lookup when their context has no
	// deadline; default 5 s.
	CallTimeout time.Duration
	// HandshakeTimeout bounds connecting and exchanging Hello; default 5 s.
	HandshakeTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between connection
	// attempts, which doubles from min to max with jitter; defaults
	// 100 ms and 5 s.
	BackoffMin, BackoffMax time.Duration
	Logger                 *slog.Logger

	// dialOptions are added by tests.
	dialOptions []grpc.DialOption
}

func (o *LinkOptions) defaults() error {
	if o.Addr == "" {
		return errors.New("peer link: no address")
	}
	if o.Token == "" {
		return errors.New("peer link: no token")
	}
	if o.PeerOrdinal < 0 || o.PeerOrdinal >= slotmap.MaxOrdinals {
		return fmt.Errorf("peer link: peer ordinal %d (ordinals are 0-%d)", o.PeerOrdinal, slotmap.MaxOrdinals-1)
	}
	if int(o.Self.Ordinal) >= slotmap.MaxOrdinals {
		return fmt.Errorf("peer link: own ordinal %d (ordinals are 0-%d)", o.Self.Ordinal, slotmap.MaxOrdinals-1)
	}
	if int(o.Self.Ordinal) == o.PeerOrdinal {
		return fmt.Errorf("peer link: ordinal %d would dial itself", o.PeerOrdinal)
	}
	if err := queueDefaults(&o.QueueFrames, &o.QueueBytes); err != nil {
		return fmt.Errorf("peer link: %w", err)
	}
	o.Self.Version = ProtocolVersion
	if o.CallTimeout <= 0 {
		o.CallTimeout = 5 * time.Second
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 100 * time.Millisecond
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(o.BackoffMin, 5*time.Second)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

func queueDefaults(frames, bytes *int) error {
	if *frames <= 0 {
		*frames = 8192
	}
	if *bytes <= 0 {
		*bytes = 1 << 20
	}
	if *bytes > MaxBatchBytes {
		return fmt.Errorf("queue of %d bytes; at most %d", *bytes, MaxBatchBytes)
	}
	if *bytes < frameLen(MaxFrameBody) {
		return fmt.Errorf("queue of %d bytes cannot hold the largest frame (%d bytes)", *bytes, frameLen(MaxFrameBody))
	}
	return nil
}

// Link is this pod's side of the stream it dials to one peer: it sends
// the requests of a front and receives the home's answers and ToPhone
// frames. It reconnects by itself until Close.
type Link struct {
	opt LinkOptions
	log *slog.Logger
	st  counters

	q       queue
	pending map[uint64]*call // guarded by q.mu
	corr    atomic.Uint64

	toPhone ToPhone // reused by the reader for each ToPhone frame

	up      atomic.Bool
	peer    atomic.Pointer[Hello]
	lastErr atomic.Pointer[string]

	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	closeMu sync.Once
}

// Dial starts a link; it connects in the background (see Up, WaitUp).
func Dial(opt LinkOptions) (*Link, error) {
	if err := opt.defaults(); err != nil {
		return nil, err
	}
	l := &Link{
		opt:     opt,
		log:     opt.Logger.With("peer", opt.PeerOrdinal, "addr", opt.Addr),
		pending: map[uint64]*call{},
		done:    make(chan struct{}),
	}
	l.q.init(opt.QueueFrames, opt.QueueBytes)
	l.ctx, l.cancel = context.WithCancel(context.Background())
	go l.run()
	return l, nil
}

// Addr is the peer's address the link dials.
func (l *Link) Addr() string { return l.opt.Addr }

// Up reports whether the link is up: the handshake is done and the
// stream has not failed since.
func (l *Link) Up() bool { return l.up.Load() }

// WaitUp waits until the link is up or ctx ends (for start-up and tests).
func (l *Link) WaitUp(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !l.Up() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("peer %d (%s) not up: %w (last error: %s)", l.opt.PeerOrdinal, l.opt.Addr, ctx.Err(), l.LastError())
		case <-l.done:
			return ErrClosed
		case <-t.C:
		}
	}
	return nil
}

// PeerHello is what the peer said in its last handshake.
func (l *Link) PeerHello() (Hello, bool) {
	h := l.peer.Load()
	if h == nil {
		return Hello{}, false
	}
	return *h, true
}

// PeerOrdinal is the ordinal this link dials.
func (l *Link) PeerOrdinal() int { return l.opt.PeerOrdinal }

// LastError is why the link last went down or failed to come up.
func (l *Link) LastError() string {
	if s := l.lastErr.Load(); s != nil {
		return *s
	}
	return ""
}

// Stats returns a snapshot of the link's counters.
func (l *Link) Stats() LinkStats {
	s := LinkStats{Peer: l.opt.PeerOrdinal, Side: Dialed, Addr: l.opt.Addr, Up: l.Up(), LastError: l.LastError()}
	l.st.snapshot(&s)
	return s
}

// Close stops the link: pending calls end (ErrOutcomeUnknown for those
// already handed to the stream, ErrNotSent for the others) and every
// goroutine of the link has returned when Close returns.
func (l *Link) Close() error {
	l.closeMu.Do(l.cancel)
	<-l.done
	return nil
}

func (l *Link) run() {
	defer close(l.done)
	attempt := 0
	for {
		wasUp, err := l.session()
		if l.ctx.Err() != nil {
			return
		}
		msg := err.Error()
		if prev := l.lastErr.Swap(&msg); wasUp {
			l.log.Warn("peer link down", "err", err)
		} else if prev == nil || *prev != msg {
			l.log.Warn("peer link cannot connect", "err", err)
		}
		if wasUp {
			attempt = 0
		}
		d := backoff(attempt, l.opt.BackoffMin, l.opt.BackoffMax, rand.Float64)
		attempt++
		t := time.NewTimer(d)
		select {
		case <-l.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// backoff is the wait before attempt n (from 0): min doubled n times,
// capped at max, then a random point in its upper half.
func backoff(n int, lo, hi time.Duration, rnd func() float64) time.Duration {
	d := hi
	if n < 32 && lo<<n > 0 && lo<<n < hi {
		d = lo << n
	}
	return d/2 + time.Duration(rnd()*float64(d/2))
}

var errHandshakeTimeout = errors.New("handshake timed out")

// session runs one stream: connect, handshake, then read until it fails.
func (l *Link) session() (wasUp bool, err error) {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(codec{}),
			grpc.MaxCallRecvMsgSize(MaxBatchBytes+1024),
			grpc.MaxCallSendMsgSize(MaxBatchBytes+1024),
		),
		grpc.WithInitialWindowSize(flowWindow),
		grpc.WithInitialConnWindowSize(flowWindow),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: l.opt.HandshakeTimeout}),
		// A plain dialer: peer links never go through a proxy named in
		// the environment.
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}),
	}, l.opt.dialOptions...)
	cc, err := grpc.NewClient("passthrough:///"+l.opt.Addr, opts...)
	if err != nil {
		return false, fmt.Errorf("dialing: %w", err)
	}
	defer cc.Close()

	ctx, cancel := context.WithCancelCause(l.ctx)
	defer cancel(nil)
	hs := time.AfterFunc(l.opt.HandshakeTimeout, func() { cancel(errHandshakeTimeout) })
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+l.opt.Token)
	stream, err := cc.NewStream(ctx, &streamDesc, fullMethod)
	if err != nil {
		hs.Stop()
		return false, fmt.Errorf("opening the stream: %w", streamErr(ctx, err))
	}
	hello := appendFrame(nil, TypeHello, &l.opt.Self)
	if err := stream.SendMsg(&batchMsg{b: hello}); err != nil {
		if errors.Is(err, io.EOF) {
			// The server ended the stream; RecvMsg has its status.
			err = stream.RecvMsg(&batchMsg{})
		}
		hs.Stop()
		return false, fmt.Errorf("sending hello: %w", streamErr(ctx, err))
	}
	l.st.countOut(1, len(hello))
	in := &batchMsg{}
	if err := stream.RecvMsg(in); err != nil {
		hs.Stop()
		return false, fmt.Errorf("waiting for hello: %w", streamErr(ctx, err))
	}
	if !hs.Stop() {
		return false, errHandshakeTimeout
	}
	t, body, rest, err := nextFrame(in.b)
	var h Hello
	if err == nil && t != TypeHello {
		err = badf("first frame is %s, not hello", t)
	}
	if err == nil {
		err = h.decode(body)
	}
	if err != nil {
		return false, fmt.Errorf("handshake: %w", err)
	}
	if h.Version != ProtocolVersion {
		return false, fmt.Errorf("handshake: the peer speaks version %d, this pod %d", h.Version, ProtocolVersion)
	}
	if int(h.Ordinal) != l.opt.PeerOrdinal {
		return false, fmt.Errorf("handshake: %s is ordinal %d, not %d (stale slot map?)", l.opt.Addr, h.Ordinal, l.opt.PeerOrdinal)
	}
	l.peer.Store(&h)
	l.st.connects.Add(1)
	l.st.framesIn.Add(1)
	l.st.bytesIn.Add(uint64(len(in.b) - len(rest)))
	l.st.batchesIn.Add(1)
	l.dispatch(rest)

	l.q.setOpen(true)
	l.up.Store(true)
	l.log.Info("peer link up", "peer_epoch", h.Epoch, "peer_incarnation", h.Incarnation)

	werr := make(chan error, 1)
	go func() {
		err := l.q.writeLoop(ctx, stream.SendMsg, &l.st)
		if !errors.Is(err, io.EOF) {
			cancel(err)
		} // else the server ended the stream and the reader gets its status
		werr <- err
	}()
	for {
		if err = stream.RecvMsg(in); err != nil {
			break
		}
		l.st.batchesIn.Add(1)
		l.dispatch(in.b)
	}
	cancel(err)
	<-werr
	l.up.Store(false)
	l.fail()
	return true, streamErr(ctx, err)
}

// streamErr prefers why we cancelled the stream over how gRPC saw it.
func streamErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("%s: %s", s.Code(), s.Message())
	}
	return err
}

// fail ends a stream's calls once its writer has stopped: those handed
// to the stream have an unknown outcome, the rest were not sent.
func (l *Link) fail() {
	l.q.mu.Lock()
	l.q.open = false
	flushed := l.q.frames
	l.q.buf, l.q.frames = l.q.buf[:0], 0
	clear(l.q.calls)
	l.q.calls = l.q.calls[:0]
	pending := l.pending
	l.pending = map[uint64]*call{}
	l.q.mu.Unlock()
	l.st.drops[DropFlushed].Add(uint64(flushed))
	why := "the link broke"
	if l.ctx.Err() != nil {
		why = "the link was closed"
	}
	for _, c := range pending {
		if c.state.CompareAndSwap(callQueued, callAbandoned) {
			c.err = fmt.Errorf("peer %d: %w: %s before it was sent", l.opt.PeerOrdinal, ErrNotSent, why)
		} else {
			c.err = fmt.Errorf("peer %d: %w: %s before the answer came", l.opt.PeerOrdinal, ErrOutcomeUnknown, why)
		}
		close(c.done)
	}
}

// dispatch hands a batch from the home to the handler and the callers.
func (l *Link) dispatch(b []byte) {
	for len(b) > 0 {
		t, body, rest, err := nextFrame(b)
		if err != nil {
			l.st.drop(DropMalformed)
			l.log.Warn("malformed batch from peer", "err", err)
			return
		}
		l.st.framesIn.Add(1)
		l.st.bytesIn.Add(uint64(len(b) - len(rest)))
		b = rest
		switch t {
		case TypeToPhone:
			p := &l.toPhone
			if err := p.decode(body); err != nil {
				l.st.drop(DropMalformed)
				continue
			}
			if l.opt.Handler == nil {
				l.st.drop(DropNoHandler)
				continue
			}
			l.opt.Handler.ToPhone(l, p)
		case TypePushAns:
			var a PushAns
			if err := a.decode(body); err != nil {
				l.st.drop(DropMalformed)
				continue
			}
			if c := l.answered(a.Corr, t); c != nil {
				c.push = a
				close(c.done)
			}
		case TypeLookupAns:
			var a LookupAns
			if err := a.decode(body); err != nil {
				l.st.drop(DropMalformed)
				continue
			}
			if c := l.answered(a.Corr, t); c != nil {
				a.Body = append([]byte(nil), a.Body...)
				c.look = a
				close(c.done)
			}
		default:
			l.st.drop(DropUnexpected)
		}
	}
}

// answered takes the call an answer is for, or counts a late answer.
// An answer of the wrong type ends its call with an unknown outcome.
func (l *Link) answered(corr uint64, t Type) *call {
	l.q.mu.Lock()
	c := l.pending[corr]
	delete(l.pending, corr)
	l.q.mu.Unlock()
	switch {
	case c == nil:
		l.st.drop(DropLateAnswer)
		return nil
	case c.kind != t:
		l.st.drop(DropUnexpected)
		c.err = fmt.Errorf("peer %d: %w: answered with a %s frame", l.opt.PeerOrdinal, ErrOutcomeUnknown, t)
		close(c.done)
		return nil
	}
	return c
}

// SendPhonePacket queues a phone packet for the home. It never blocks:
// with the link down or the queue full the packet is dropped, counted,
// and ErrLinkDown or ErrQueueFull returned.
func (l *Link) SendPhonePacket(p *PhonePacket) error {
	if err := p.check(); err != nil {
		return err
	}
	n := p.size()
	q := &l.q
	q.mu.Lock()
	if err := l.admit(frameLen(n), false); err != nil {
		q.mu.Unlock()
		return err
	}
	q.buf = p.appendBody(appendHeader(q.buf, TypePhonePacket, n))
	q.frames++
	q.mu.Unlock()
	q.signal()
	return nil
}

// SendDetach queues a Detach for the home, like SendPhonePacket.
func (l *Link) SendDetach(d *Detach) error {
	if err := d.check(); err != nil {
		return err
	}
	n := d.size()
	q := &l.q
	q.mu.Lock()
	if err := l.admit(frameLen(n), false); err != nil {
		q.mu.Unlock()
		return err
	}
	q.buf = d.appendBody(appendHeader(q.buf, TypeDetach, n))
	q.frames++
	q.mu.Unlock()
	q.signal()
	return nil
}

// admit checks that a frame of n bytes can be queued; the caller holds q.mu.
func (l *Link) admit(n int, call bool) error {
	if !l.q.open {
		l.st.drop(DropLinkDown)
		if l.ctx.Err() != nil {
			return ErrClosed
		}
		return ErrLinkDown
	}
	if !l.q.room(n, call) {
		l.st.drop(DropQueueFull)
		return ErrQueueFull
	}
	return nil
}

// Push relays a push to the home and waits for its answer, until ctx's
// deadline (or CallTimeout). r.Corr is set here. A PushAns comes back
// whatever the home decided (accepted, refused, invalid); the error is
// ErrNotSent when the push certainly did not reach the home and
// ErrOutcomeUnknown when it may have.
func (l *Link) Push(ctx context.Context, r PushReq) (PushAns, error) {
	if err := r.check(); err != nil {
		return PushAns{}, fmt.Errorf("peer %d: %w: %v", l.opt.PeerOrdinal, ErrNotSent, err)
	}
	c := &call{corr: l.corr.Add(1), kind: TypePushAns, done: make(chan struct{})}
	r.Corr = c.corr
	r.SentAt = time.Now().UnixNano()
	n := r.size()
	if err := l.enqueueCall(c, frameLen(n), func(b []byte) []byte { return r.appendBody(appendHeader(b, TypePushReq, n)) }); err != nil {
		return PushAns{}, err
	}
	if err := l.wait(ctx, c); err != nil {
		return PushAns{}, err
	}
	return c.push, nil
}

// Lookup asks the home about a uuid; body and the answer are opaque (the
// HTTP API's JSON). Errors as for Push.
func (l *Link) Lookup(ctx context.Context, body []byte) (LookupAns, error) {
	c := &call{corr: l.corr.Add(1), kind: TypeLookupAns, done: make(chan struct{})}
	r := LookupReq{Corr: c.corr, Body: body}
	if err := r.check(); err != nil {
		return LookupAns{}, fmt.Errorf("peer %d: %w: %v", l.opt.PeerOrdinal, ErrNotSent, err)
	}
	n := r.size()
	if err := l.enqueueCall(c, frameLen(n), func(b []byte) []byte { return r.appendBody(appendHeader(b, TypeLookupReq, n)) }); err != nil {
		return LookupAns{}, err
	}
	if err := l.wait(ctx, c); err != nil {
		return LookupAns{}, err
	}
	return c.look, nil
}

func (l *Link) enqueueCall(c *call, n int, encode func([]byte) []byte) error {
	q := &l.q
	q.mu.Lock()
	if err := l.admit(n, true); err != nil {
		q.mu.Unlock()
		return fmt.Errorf("peer %d: %w", l.opt.PeerOrdinal, err)
	}
	start := len(q.buf)
	q.buf = encode(q.buf)
	q.frames++
	q.calls = append(q.calls, queuedCall{c: c, start: start, end: len(q.buf)})
	l.pending[c.corr] = c
	q.mu.Unlock()
	q.signal()
	return nil
}

func (l *Link) wait(ctx context.Context, c *call) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.opt.CallTimeout)
		defer cancel()
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
	}
	l.q.mu.Lock()
	mine := l.pending[c.corr] == c
	if mine {
		delete(l.pending, c.corr)
	}
	l.q.mu.Unlock()
	if !mine { // answered or failed meanwhile
		<-c.done
		return c.err
	}
	if c.state.CompareAndSwap(callQueued, callAbandoned) {
		return fmt.Errorf("peer %d: %w: %v while queued", l.opt.PeerOrdinal, ErrNotSent, ctx.Err())
	}
	return fmt.Errorf("peer %d: %w: %v waiting for the answer", l.opt.PeerOrdinal, ErrOutcomeUnknown, ctx.Err())
}
