// Package phone simulates a DDPush v1 client (UDPClientBase or
// TCPClientBase): it heartbeats, receives server messages and acks them
// the way the Java client does. Tests, pushctl and the benchmark use it.
package phone

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// Message is one server message received.
type Message struct {
	AppID byte
	Cmd   byte
	Body  []byte
	At    time.Time
}

// Phone is one simulated client.
type Phone struct {
	UUID  wire.UUID
	AppID byte
	// AutoAck acks 0x10, 0x11 and 0x20 as they arrive, like the Java client.
	AutoAck bool

	conn net.Conn
	tcp  bool
	in   chan Message
	wmu  sync.Mutex
	done chan struct{}
	err  error
}

// Dial connects over "udp" or "tcp" to the client port.
func Dial(network, addr string, u wire.UUID) (*Phone, error) {
	if network != "udp" && network != "tcp" {
		return nil, fmt.Errorf("network %q is not udp or tcp", network)
	}
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to %s %s: %w", network, addr, err)
	}
	p := &Phone{UUID: u, AppID: 1, AutoAck: true, conn: c, tcp: network == "tcp", in: make(chan Message, 256), done: make(chan struct{})}
	go p.read()
	return p, nil
}

// Messages delivers what the node sends.
func (p *Phone) Messages() <-chan Message { return p.in }

// Close disconnects.
func (p *Phone) Close() error {
	err := p.conn.Close()
	<-p.done
	return err
}

// LocalAddr is the phone's own address.
func (p *Phone) LocalAddr() net.Addr { return p.conn.LocalAddr() }

func (p *Phone) send(cmd byte, body []byte) error {
	b := wire.AppendClient(nil, p.AppID, cmd, p.UUID, body)
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := p.conn.Write(b)
	return err
}

// Heartbeat sends 0x00.
func (p *Phone) Heartbeat() error { return p.send(wire.CmdHeartbeat, nil) }

// Ack acknowledges a server message as the Java client does.
func (p *Phone) Ack(m Message) error {
	switch m.Cmd {
	case wire.CmdGeneral:
		return p.send(wire.CmdGeneral, nil)
	case wire.CmdClassified:
		return p.send(wire.CmdClassified, m.Body)
	case wire.CmdCustom:
		return p.send(wire.CmdCustom, nil)
	}
	return nil
}

// SendRaw writes bytes as they are (for malformed-input tests).
func (p *Phone) SendRaw(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.conn.Write(b)
	return err
}

// Next waits up to d for the next message.
func (p *Phone) Next(d time.Duration) (Message, error) {
	select {
	case m, ok := <-p.in:
		if !ok {
			if p.err != nil {
				return Message{}, p.err
			}
			return Message{}, io.EOF
		}
		return m, nil
	case <-time.After(d):
		return Message{}, fmt.Errorf("no message within %v", d)
	}
}

func (p *Phone) read() {
	defer close(p.done)
	defer close(p.in)
	deliver := func(b []byte) {
		var m wire.ServerMessage
		if wire.DecodeServer(b, &m) != nil {
			return // the Java client drops what it cannot parse
		}
		msg := Message{AppID: m.AppID, Cmd: m.Cmd, Body: append([]byte(nil), m.Body...), At: time.Now()}
		if p.AutoAck {
			_ = p.Ack(msg)
		}
		select {
		case p.in <- msg:
		default: // a reader that fell behind loses messages, not the phone
		}
	}
	if !p.tcp {
		buf := make([]byte, wire.ServerHeaderLen+wire.MaxLengthField+1)
		for {
			n, err := p.conn.Read(buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					p.err = err
				}
				return
			}
			deliver(buf[:n])
		}
	}
	// Room for the longest server message the length field allows: a
	// smaller buffer cannot hold a long custom message whole.
	r := bufio.NewReaderSize(p.conn, wire.ServerHeaderLen+wire.MaxLengthField)
	for {
		hdr, err := r.Peek(wire.ServerHeaderLen)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				p.err = err
			}
			return
		}
		n := wire.ServerFrameLen(hdr)
		frame, err := r.Peek(n)
		if err != nil {
			p.err = err
			return
		}
		deliver(frame)
		_, _ = r.Discard(n)
	}
}
