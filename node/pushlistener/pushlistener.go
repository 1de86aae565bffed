// Package pushlistener serves app servers on the push port (9999): one
// push request at a time per connection, each answered with one byte once
// the push is durable (0) or refused (1).
package pushlistener

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/tcpaccept"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// Options bound what one connection may cost.
type Options struct {
	// IdleTimeout closes a connection with no request for this long (the
	// Java server uses 600 s).
	IdleTimeout time.Duration
	// FrameTimeout closes a connection whose request, once started, does
	// not arrive in full within this time.
	FrameTimeout time.Duration
	// MaxConns caps concurrent connections; 0 means no cap.
	MaxConns int
}

// PushListener is the push port.
type PushListener struct {
	ln      net.Listener
	core    *core.Core
	st      *stats.Stats
	log     *slog.Logger
	opt     Options
	ctx     context.Context
	cancel  context.CancelFunc
	conns   sync.Map
	n       atomic.Int64
	closing atomic.Bool
	wg      sync.WaitGroup
}

// Listen binds addr.
func Listen(addr string, c *core.Core, opt Options, log *slog.Logger) (*PushListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 600 * time.Second
	}
	if opt.FrameTimeout <= 0 {
		opt.FrameTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &PushListener{ln: ln, core: c, st: c.Stats(), log: log, opt: opt, ctx: ctx, cancel: cancel}, nil
}

// Addr is the bound address.
func (l *PushListener) Addr() netip.AddrPort { return l.ln.Addr().(*net.TCPAddr).AddrPort() }

// Serve accepts until Close.
func (l *PushListener) Serve() error {
	return tcpaccept.Loop(l.ln, l.opt.MaxConns, &l.n, func() { l.st.Drop(stats.DropPushConnLimit) }, l.log, func(nc net.Conn) {
		l.conns.Store(nc, struct{}{})
		l.wg.Add(1)
		go l.serveConn(nc)
	})
}

// Close stops accepting, closes every connection (a push being committed
// still finishes and is answered if it can be) and waits.
func (l *PushListener) Close() error {
	l.closing.Store(true)
	err := l.ln.Close()
	l.conns.Range(func(k, _ any) bool {
		_ = k.(net.Conn).SetReadDeadline(time.Now())
		return true
	})
	l.wg.Wait()
	l.cancel()
	return err
}

func (l *PushListener) serveConn(nc net.Conn) {
	defer func() {
		nc.Close()
		l.conns.Delete(nc)
		l.n.Add(-1)
		l.wg.Done()
	}()
	max := l.core.MaxContentLen()
	r := bufio.NewReaderSize(nc, wire.MaxPushFrameLen(max))
	var p wire.PushRequest
	answer := []byte{0}
	for {
		_ = nc.SetReadDeadline(time.Now().Add(l.opt.IdleTimeout))
		if _, err := r.Peek(1); err != nil {
			if isTimeout(err) && !l.closing.Load() {
				l.st.Drop(stats.DropPushIdle)
			}
			return
		}
		_ = nc.SetReadDeadline(time.Now().Add(l.opt.FrameTimeout))
		hdr, err := r.Peek(wire.PushHeaderLen)
		if err != nil {
			if isTimeout(err) {
				l.st.Drop(stats.DropPushSlowFrame)
			}
			return
		}
		n, err := wire.PushFrameLen(hdr, max)
		if err != nil {
			// The Java server closes without answering.
			l.st.Drop(stats.DropPushViolation)
			return
		}
		frame, err := r.Peek(n)
		if err != nil {
			if isTimeout(err) {
				l.st.Drop(stats.DropPushSlowFrame)
			}
			return
		}
		answer[0] = l.handle(frame, &p)
		if _, err := r.Discard(n); err != nil {
			return
		}
		_ = nc.SetWriteDeadline(time.Now().Add(l.opt.FrameTimeout))
		if _, err := nc.Write(answer); err != nil {
			return
		}
	}
}

func (l *PushListener) handle(frame []byte, p *wire.PushRequest) byte {
	if err := wire.DecodePush(frame, l.core.MaxContentLen(), p); err != nil {
		l.st.Push(stats.FromPushPort, state.KindOfCmd(frame[2]), stats.PushRejected)
		return wire.PushRejected
	}
	// Each kind takes only its own field from the body: an 8-byte custom
	// payload is data, never bits.
	spec := core.PushSpec{UUID: p.UUID, Kind: state.KindOfCmd(p.Cmd)}
	switch spec.Kind {
	case state.Classified:
		spec.Bits = p.Mask()
	case state.Custom:
		spec.Payload = append([]byte(nil), p.Body...)
	}
	if _, err := l.core.Push(l.ctx, spec); err != nil {
		l.log.Warn("push not accepted", "uuid", p.UUID.String(), "err", err)
		l.st.Push(stats.FromPushPort, spec.Kind, stats.PushRejected)
		return wire.PushRejected
	}
	l.st.Push(stats.FromPushPort, spec.Kind, stats.PushAccepted)
	return wire.PushAccepted
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
