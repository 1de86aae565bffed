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
	"time"

	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/lograte"
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
	// MaxConnsPerSource caps concurrent connections from one address, so
	// that one app server cannot take every place; 0 means no cap.
	MaxConnsPerSource int
}

// PushListener is the push port.
type PushListener struct {
	ln     *tcpaccept.Listener
	core   *core.Core
	st     *stats.Stats
	log    *slog.Logger
	logs   *lograte.Limiter
	opt    Options
	ctx    context.Context
	cancel context.CancelFunc
}

// Listen binds addr.
func Listen(addr string, c *core.Core, opt Options, log *slog.Logger) (*PushListener, error) {
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 600 * time.Second
	}
	if opt.FrameTimeout <= 0 {
		opt.FrameTimeout = 10 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	st := c.Stats()
	ln, err := tcpaccept.Listen(addr, tcpaccept.Options{
		Limits: tcpaccept.Limits{MaxConns: opt.MaxConns, MaxConnsPerSource: opt.MaxConnsPerSource},
		Name:   "push",
		Log:    log,
		Refused: func(r tcpaccept.Refusal) {
			if r == tcpaccept.OverSource {
				st.Drop(stats.DropPushPerSource)
			} else {
				st.Drop(stats.DropPushConnLimit)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &PushListener{ln: ln, core: c, st: st, log: log, logs: lograte.New(log, 10*time.Second), opt: opt, ctx: ctx, cancel: cancel}, nil
}

// Addr is the bound address.
func (l *PushListener) Addr() netip.AddrPort { return l.ln.AddrPort() }

// Conns is the number of open push connections.
func (l *PushListener) Conns() int { return l.ln.Open() }

// Serve accepts until Shutdown.
func (l *PushListener) Serve() error { return l.ln.Serve(l.serveConn) }

// Shutdown stops accepting and ends every connection: a push being read
// or committed is still answered, then its connection closes; an idle
// connection closes at once. Past ctx, connections are closed by force.
func (l *PushListener) Shutdown(ctx context.Context) error {
	err := l.ln.Shutdown(ctx)
	l.cancel()
	return err
}

// Close is Shutdown without a deadline of its own (the drain is still
// bounded: reads end at once, writes within a few seconds).
func (l *PushListener) Close() error { return l.Shutdown(context.Background()) }

func (l *PushListener) serveConn(nc *tcpaccept.Conn) {
	defer nc.Close()
	max := l.core.MaxContentLen()
	r := bufio.NewReaderSize(nc, wire.MaxPushFrameLen(max))
	var p wire.PushRequest
	answer := []byte{0}
	// A read failing because the listener drains is a shutdown, not a
	// peer's fault: it is not counted as a drop.
	dropUnlessDraining := func(err error, d stats.Drop) {
		if isTimeout(err) && !nc.Draining() {
			l.st.Drop(d)
		}
	}
	for !nc.Draining() {
		_ = nc.SetReadDeadline(time.Now().Add(l.opt.IdleTimeout))
		if _, err := r.Peek(1); err != nil {
			dropUnlessDraining(err, stats.DropPushIdle)
			return
		}
		_ = nc.SetReadDeadline(time.Now().Add(l.opt.FrameTimeout))
		hdr, err := r.Peek(wire.PushHeaderLen)
		if err != nil {
			dropUnlessDraining(err, stats.DropPushSlowFrame)
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
			dropUnlessDraining(err, stats.DropPushSlowFrame)
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
		// Once per interval: while the store cannot be written, every
		// push of every connection fails the same way.
		l.logs.Log(slog.LevelWarn, "push not accepted", "push not accepted", "uuid", p.UUID.String(), "err", err)
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
