// Package pusher is a Go counterpart of DDPush's Java Pusher: it sends
// push requests to a node's push port and reads the one-byte answers.
package pusher

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// ErrRejected is the node's answer 1.
var ErrRejected = errors.New("push rejected by the node")

// Pusher is one connection to the push port. It is not safe for
// concurrent use: the protocol is one request at a time.
type Pusher struct {
	conn    net.Conn
	timeout time.Duration
	buf     []byte
	AppID   byte
}

// Dial connects to addr (host:9999).
func Dial(addr string, timeout time.Duration) (*Pusher, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("connect to push port %s: %w", addr, err)
	}
	return &Pusher{conn: c, timeout: timeout, AppID: 1}, nil
}

// Close closes the connection.
func (p *Pusher) Close() error { return p.conn.Close() }

// Raw sends an already encoded request and returns the answer byte.
func (p *Pusher) Raw(req []byte) (byte, error) {
	_ = p.conn.SetDeadline(time.Now().Add(p.timeout))
	if _, err := p.conn.Write(req); err != nil {
		return 0, fmt.Errorf("send push: %w", err)
	}
	var ans [1]byte
	if _, err := p.conn.Read(ans[:]); err != nil {
		return 0, fmt.Errorf("read push answer: %w", err)
	}
	return ans[0], nil
}

func (p *Pusher) push(cmd byte, u wire.UUID, body []byte) error {
	p.buf = wire.AppendPush(p.buf[:0], p.AppID, cmd, u, body)
	ans, err := p.Raw(p.buf)
	if err != nil {
		return err
	}
	if ans != wire.PushAccepted {
		return ErrRejected
	}
	return nil
}

// General pushes a 0x10 notice.
func (p *Pusher) General(u wire.UUID) error { return p.push(wire.CmdGeneral, u, nil) }

// Classified pushes 0x11 bits.
func (p *Pusher) Classified(u wire.UUID, bits uint64) error {
	return p.push(wire.CmdClassified, u, binary.BigEndian.AppendUint64(nil, bits))
}

// Custom pushes a 0x20 payload.
func (p *Pusher) Custom(u wire.UUID, payload []byte) error { return p.push(wire.CmdCustom, u, payload) }
