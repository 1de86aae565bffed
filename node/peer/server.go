package peer

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ddpush/ddpush-operator/node/lograte"
	"github.com/ddpush/ddpush-operator/node/slotmap"
)

// HomeHandler takes what fronts send to this pod. Its methods are called
// from the reader of the front's stream, one frame at a time: they must
// not block (a push commit is handed to other goroutines, which answer
// later with from.SendPushAns), and the frame's slices are valid only
// during the call.
type HomeHandler interface {
	PhonePacket(from *Session, p *PhonePacket)
	Detach(from *Session, d *Detach)
	PushReq(from *Session, r *PushReq)
	LookupReq(from *Session, r *LookupReq)
}

// ServerOptions configure a Server.
type ServerOptions struct {
	Addr  string // listen address, e.g. ":9977"
	Token string // the PushNode's API token
	// Self is this pod: its ordinal, slot map epoch and incarnation.
	// Version is filled in.
	Self    Hello
	Handler HomeHandler
	// QueueFrames and QueueBytes bound each session's send queue
	// (answers and ToPhone frames); defaults as for a Link.
	QueueFrames, QueueBytes int
	Logger                  *slog.Logger
	// OnSession, when set, is called as a front's stream comes up, with
	// the front's ordinal and process incarnation, before any of its
	// frames is handled. It must not block.
	OnSession func(ordinal int, incarnation uint64)
	// OnSessionEnd, when set, is called once a front's stream has ended
	// and no frame of it will be handled any more. It must not block.
	OnSessionEnd func(ordinal int, incarnation uint64)

	// serverOptions are added by tests.
	serverOptions []grpc.ServerOption
}

// Server listens for the streams other pods dial to this one.
type Server struct {
	opt     ServerOptions
	log     *slog.Logger
	lis     net.Listener
	gs      *grpc.Server
	token   [sha256.Size]byte
	refused atomic.Uint64
	logs    *lograte.Limiter

	mu     sync.Mutex
	peers  map[int]*inbound
	closed bool

	serveDone chan struct{}
	closeOnce sync.Once
}

// inbound is what the server keeps per dialing ordinal across streams.
type inbound struct {
	ordinal int
	cur     atomic.Pointer[Session]
	liveMu  sync.Mutex
	live    []*Session // every session of this ordinal still running, oldest first
	st      counters
	addr    atomic.Pointer[string]
}

// Session is one stream a front dialed to this pod.
type Session struct {
	srv   *Server
	in    *inbound
	hello Hello
	q     queue

	// Decoded frames handed to the handler, reused by the reader (one
	// per session) so that nothing is allocated per frame.
	packet PhonePacket
	push   PushReq
	lookup LookupReq
}

// Listen binds the address and serves peer streams in the background.
func Listen(opt ServerOptions) (*Server, error) {
	if opt.Token == "" {
		return nil, errors.New("peer server: no token")
	}
	if opt.Handler == nil {
		return nil, errors.New("peer server: no handler")
	}
	if int(opt.Self.Ordinal) >= slotmap.MaxOrdinals {
		return nil, fmt.Errorf("peer server: own ordinal %d (ordinals are 0-%d)", opt.Self.Ordinal, slotmap.MaxOrdinals-1)
	}
	if err := queueDefaults(&opt.QueueFrames, &opt.QueueBytes); err != nil {
		return nil, fmt.Errorf("peer server: %w", err)
	}
	opt.Self.Version = ProtocolVersion
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	lis, err := net.Listen("tcp", opt.Addr)
	if err != nil {
		return nil, fmt.Errorf("peer server: %w", err)
	}
	s := &Server{
		opt:       opt,
		log:       opt.Logger,
		logs:      lograte.New(opt.Logger, time.Second),
		lis:       lis,
		token:     sha256.Sum256([]byte("Bearer " + opt.Token)),
		peers:     map[int]*inbound{},
		serveDone: make(chan struct{}),
	}
	s.gs = grpc.NewServer(append([]grpc.ServerOption{
		grpc.ForceServerCodecV2(codec{}),
		grpc.MaxRecvMsgSize(MaxBatchBytes + 1024),
		grpc.MaxSendMsgSize(MaxBatchBytes + 1024),
		grpc.InitialWindowSize(flowWindow),
		grpc.InitialConnWindowSize(flowWindow),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WaitForHandlers(true),
	}, opt.serverOptions...)...)
	s.gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: serviceName,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    methodName,
			Handler:       func(_ any, ss grpc.ServerStream) error { return s.serve(ss) },
			ServerStreams: true,
			ClientStreams: true,
		}},
	}, s)
	go func() {
		defer close(s.serveDone)
		_ = s.gs.Serve(lis) // returns once Stop has been called
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Refused counts the streams refused before a session began (bad or
// missing token, bad hello).
func (s *Server) Refused() uint64 { return s.refused.Load() }

// Close ends every session and stops listening; when it returns every
// handler call and goroutine of the server has returned.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.gs.Stop()
	})
	<-s.serveDone
	return nil
}

// Session is the current session from an ordinal, or nil.
func (s *Server) Session(ordinal int) *Session {
	s.mu.Lock()
	in := s.peers[ordinal]
	s.mu.Unlock()
	if in == nil {
		return nil
	}
	return in.cur.Load()
}

// Stats returns a snapshot per ordinal that ever dialed this server.
func (s *Server) Stats() []LinkStats {
	s.mu.Lock()
	ins := make([]*inbound, 0, len(s.peers))
	for _, in := range s.peers {
		ins = append(ins, in)
	}
	s.mu.Unlock()
	sort.Slice(ins, func(i, j int) bool { return ins[i].ordinal < ins[j].ordinal })
	out := make([]LinkStats, len(ins))
	for i, in := range ins {
		out[i] = LinkStats{Peer: in.ordinal, Side: Accepted, Up: in.cur.Load() != nil}
		if a := in.addr.Load(); a != nil {
			out[i].Addr = *a
		}
		in.st.snapshot(&out[i])
	}
	return out
}

// end forgets a session that stopped. If it was the one answered on,
// the newest session still running takes over: a stream that claimed
// the ordinal and went away (another process with the token, or an old
// stream of a front that reconnected) must not leave the front's own
// live stream unused.
func (in *inbound) end(sess *Session) {
	in.liveMu.Lock()
	defer in.liveMu.Unlock()
	kept := in.live[:0]
	for _, x := range in.live {
		if x != sess {
			kept = append(kept, x)
		}
	}
	clear(in.live[len(kept):])
	in.live = kept
	if in.cur.Load() == sess {
		var next *Session
		if n := len(kept); n > 0 {
			next = kept[n-1]
		}
		in.cur.Store(next)
	}
}

func (s *Server) inbound(ordinal int) *inbound {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.peers[ordinal]
	if in == nil {
		in = &inbound{ordinal: ordinal}
		s.peers[ordinal] = in
	}
	return in
}

func (s *Server) refuse(code codes.Code, format string, args ...any) error {
	s.refused.Add(1)
	err := status.Errorf(code, "peer link: "+format, args...)
	// Anyone who can reach the port can make this line: one per second.
	s.logs.Log(slog.LevelWarn, "peer stream refused", "peer stream refused", "err", err)
	return err
}

// serve runs one stream a front dialed: check the token, exchange Hello,
// then read until the stream ends while a writer sends what this pod
// queues for the front.
func (s *Server) serve(ss grpc.ServerStream) error {
	ctx := ss.Context()
	from := "unknown"
	if p, ok := grpcpeer.FromContext(ctx); ok {
		from = p.Addr.String()
	}
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) != 1 {
		return s.refuse(codes.Unauthenticated, "missing bearer token (from %s)", from)
	}
	got := sha256.Sum256([]byte(auth[0]))
	if subtle.ConstantTimeCompare(got[:], s.token[:]) != 1 {
		return s.refuse(codes.Unauthenticated, "invalid bearer token (from %s)", from)
	}

	in := &batchMsg{}
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	t, body, rest, err := nextFrame(in.b)
	var h Hello
	if err == nil && t != TypeHello {
		err = badf("first frame is %s, not hello", t)
	}
	if err == nil {
		err = h.decode(body)
	}
	switch {
	case err != nil:
		return s.refuse(codes.InvalidArgument, "handshake from %s: %v", from, err)
	case h.Version != ProtocolVersion:
		return s.refuse(codes.FailedPrecondition, "%s speaks version %d, this pod %d", from, h.Version, ProtocolVersion)
	case int(h.Ordinal) >= slotmap.MaxOrdinals:
		return s.refuse(codes.InvalidArgument, "%s says it is ordinal %d (ordinals are 0-%d)", from, h.Ordinal, slotmap.MaxOrdinals-1)
	case h.Ordinal == s.opt.Self.Ordinal:
		return s.refuse(codes.FailedPrecondition, "%s says it is ordinal %d, which is this pod's", from, h.Ordinal)
	}
	hello := appendFrame(nil, TypeHello, &s.opt.Self)
	if err := ss.SendMsg(&batchMsg{b: hello}); err != nil {
		return err
	}

	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return status.Error(codes.Unavailable, "peer server closing")
	}
	sess := &Session{srv: s, in: s.inbound(int(h.Ordinal)), hello: h}
	sess.q.init(s.opt.QueueFrames, s.opt.QueueBytes)
	sess.q.setOpen(true)
	sess.in.addr.Store(&from)
	sess.in.st.connects.Add(1)
	sess.in.st.countOut(1, len(hello))
	sess.in.st.framesIn.Add(1)
	sess.in.st.bytesIn.Add(uint64(len(in.b) - len(rest)))
	sess.in.st.batchesIn.Add(1)
	// The newest stream from an ordinal is the one to answer on: a front
	// opens a new one only after giving up the old.
	sess.in.liveMu.Lock()
	sess.in.live = append(sess.in.live, sess)
	sess.in.cur.Store(sess)
	sess.in.liveMu.Unlock()
	if s.opt.OnSession != nil {
		s.opt.OnSession(int(h.Ordinal), h.Incarnation)
	}
	s.log.Info("peer session up", "peer", h.Ordinal, "addr", from, "peer_epoch", h.Epoch, "peer_incarnation", h.Incarnation)

	wctx, cancel := context.WithCancel(ctx)
	werr := make(chan error, 1)
	go func() {
		err := sess.q.writeLoop(wctx, ss.SendMsg, &sess.in.st)
		// A dead writer takes nothing more.
		sess.in.st.drops[DropFlushed].Add(uint64(sess.q.setOpen(false)))
		werr <- err
	}()
	sess.dispatch(rest)
	for {
		if err = ss.RecvMsg(in); err != nil {
			break
		}
		sess.in.st.batchesIn.Add(1)
		sess.dispatch(in.b)
	}
	cancel()
	<-werr
	sess.in.st.drops[DropFlushed].Add(uint64(sess.q.setOpen(false)))
	sess.in.end(sess)
	if s.opt.OnSessionEnd != nil {
		s.opt.OnSessionEnd(int(h.Ordinal), h.Incarnation)
	}
	s.log.Info("peer session down", "peer", h.Ordinal, "addr", from, "err", err)
	return nil
}

// Hello is what the front said when it opened this session.
func (ss *Session) Hello() Hello { return ss.hello }

// Ordinal is the front's ordinal.
func (ss *Session) Ordinal() int { return int(ss.hello.Ordinal) }

func (ss *Session) dispatch(b []byte) {
	st := &ss.in.st
	h := ss.srv.opt.Handler
	for len(b) > 0 {
		t, body, rest, err := nextFrame(b)
		if err != nil {
			st.drop(DropMalformed)
			ss.srv.log.Warn("malformed batch from peer", "peer", ss.hello.Ordinal, "err", err)
			return
		}
		st.framesIn.Add(1)
		st.bytesIn.Add(uint64(len(b) - len(rest)))
		b = rest
		switch t {
		case TypePhonePacket:
			p := &ss.packet
			if err := p.decode(body); err != nil {
				st.drop(DropMalformed)
				continue
			}
			h.PhonePacket(ss, p)
		case TypeDetach:
			var d Detach
			if err := d.decode(body); err != nil {
				st.drop(DropMalformed)
				continue
			}
			h.Detach(ss, &d)
		case TypePushReq:
			r := &ss.push
			if err := r.decode(body); err != nil {
				st.drop(DropMalformed)
				continue
			}
			h.PushReq(ss, r)
		case TypeLookupReq:
			r := &ss.lookup
			if err := r.decode(body); err != nil {
				st.drop(DropMalformed)
				continue
			}
			h.LookupReq(ss, r)
		default:
			st.drop(DropUnexpected)
		}
	}
}

// SendToPhone queues a ToPhone for the front on this session. It never
// blocks; with the session gone or its queue full the frame is dropped,
// counted, and ErrLinkDown or ErrQueueFull returned.
func (ss *Session) SendToPhone(p *ToPhone) error {
	if err := p.check(); err != nil {
		return err
	}
	n := p.size()
	q := &ss.q
	q.mu.Lock()
	if err := ss.admit(frameLen(n), false); err != nil {
		q.mu.Unlock()
		return err
	}
	q.buf = p.appendBody(appendHeader(q.buf, TypeToPhone, n))
	q.frames++
	q.mu.Unlock()
	q.signal()
	return nil
}

// SendPushAns queues the answer to a PushReq that came on this session.
// An answer that cannot be sent leaves the front with an unknown outcome,
// which it resolves by retrying with the push's idempotency key.
func (ss *Session) SendPushAns(a *PushAns) error {
	if err := a.check(); err != nil {
		return err
	}
	return ss.send(TypePushAns, a)
}

// SendLookupAns queues the answer to a LookupReq that came on this session.
func (ss *Session) SendLookupAns(a *LookupAns) error {
	if err := a.check(); err != nil {
		return err
	}
	return ss.send(TypeLookupAns, a)
}

func (ss *Session) send(t Type, f body) error {
	n := f.size()
	q := &ss.q
	q.mu.Lock()
	if err := ss.admit(frameLen(n), true); err != nil {
		q.mu.Unlock()
		return err
	}
	q.buf = f.appendBody(appendHeader(q.buf, t, n))
	q.frames++
	q.mu.Unlock()
	q.signal()
	return nil
}

func (ss *Session) admit(n int, answer bool) error {
	if !ss.q.open {
		ss.in.st.drop(DropLinkDown)
		return ErrLinkDown
	}
	if !ss.q.room(n, answer) {
		ss.in.st.drop(DropQueueFull)
		return ErrQueueFull
	}
	return nil
}

// SendToPhone queues a ToPhone for the front with this ordinal, on its
// current session (for UDP phones, whose address outlives sessions).
func (s *Server) SendToPhone(ordinal int, p *ToPhone) error {
	sess := s.Session(ordinal)
	if sess == nil {
		s.dropFor(ordinal, DropLinkDown)
		return ErrLinkDown
	}
	return sess.SendToPhone(p)
}

// CountDrop counts a frame for the pod with ordinal that was dropped
// before it reached a link (the front found no link to route it on).
func (s *Server) CountDrop(ordinal int, d Drop) { s.dropFor(ordinal, d) }

// dropFor counts a drop against an ordinal that has no session; ordinals
// no pod can have are not given counters.
func (s *Server) dropFor(ordinal int, d Drop) {
	if ordinal >= 0 && ordinal < slotmap.MaxOrdinals {
		s.inbound(ordinal).st.drop(d)
	}
}

// RemoteConn is a phone's TCP connection held by a front, as the home's
// record keeps it: comparable, and Send queues a ToPhone to that front.
// It stays usable across reconnects of the same front process, and goes
// dead (drops, counted as stale_conn) once the front restarts, since its
// connection ids then name other connections.
type RemoteConn struct {
	srv         *Server
	ordinal     int
	incarnation uint64
	connID      uint64
}

// RemoteConn is the front's TCP connection connID, seen on this session.
func (ss *Session) RemoteConn(connID uint64) RemoteConn {
	return RemoteConn{srv: ss.srv, ordinal: int(ss.hello.Ordinal), incarnation: ss.hello.Incarnation, connID: connID}
}

// Ordinal is the front holding the connection.
func (c RemoteConn) Ordinal() int { return c.ordinal }

// Incarnation is the front process the connection belongs to.
func (c RemoteConn) Incarnation() uint64 { return c.incarnation }

// ConnID is the connection's id at the front.
func (c RemoteConn) ConnID() uint64 { return c.connID }

// Send queues b for the phone; false when it was dropped. It implements
// the core's ConnSender.
func (c RemoteConn) Send(b []byte) bool {
	sess := c.srv.Session(c.ordinal)
	if sess == nil {
		c.srv.dropFor(c.ordinal, DropLinkDown)
		return false
	}
	if sess.hello.Incarnation != c.incarnation {
		sess.in.st.drop(DropStaleConn)
		return false
	}
	return sess.SendToPhone(&ToPhone{Route: Route{Transport: TCP, ConnID: c.connID}, Bytes: b}) == nil
}

// RemoteConnOf is connection connID of incarnation incarnation of the
// front with this ordinal, as a record that moved here from another home
// keeps it.
func (s *Server) RemoteConnOf(ordinal int, incarnation, connID uint64) RemoteConn {
	return RemoteConn{srv: s, ordinal: ordinal, incarnation: incarnation, connID: connID}
}
