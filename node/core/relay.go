package core

import (
	"context"
	"net/netip"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// Relay is how the core of one pod of a sharded PushNode reaches the
// homes of uuids it does not own, and the pods that hold the sockets of
// phones it does own. A core without a relay is a whole node: every uuid
// is its own.
//
// Its methods are called on the per-packet paths: they must not block.
type Relay interface {
	// Local reports whether this pod is the home of u.
	Local(u wire.UUID) bool
	// Phone relays a client message (raw, as it came) for a uuid homed
	// elsewhere. For TCP,
	// conn is the phone's connection here (a ConnSender).
	Phone(now int64, u wire.UUID, raw []byte, tr state.Transport, from netip.AddrPort, conn any)
	// DetachPhone tells u's home that conn, a TCP connection here, closed.
	DetachPhone(u wire.UUID, conn any)
	// Push relays a valid push to its home and returns the home's answer;
	// an error means the push was not accepted (see the relay's errors
	// for whether it may still have been committed).
	Push(ctx context.Context, p PushSpec) (PushResult, error)
	// ToPhoneUDP has the pod with ordinal front send msg to a phone that
	// talks to that pod's socket from address to.
	ToPhoneUDP(front int, to netip.AddrPort, msg []byte)
}

type relayHolder struct{ r Relay }

// SetRelay makes the core part of a sharded PushNode.
func (c *Core) SetRelay(r Relay) { c.relay.Store(&relayHolder{r}) }

// DetachConns forgets every connection match picks (the connections of a
// front process that is gone) and returns how many it forgot. It visits
// every record, so it is for rare events.
func (c *Core) DetachConns(match func(conn any) bool) int {
	n := 0
	c.table.Range(func(r *state.Record) bool {
		if conn := r.Conn(); conn != nil && match(conn) {
			r.SetConn(nil)
			n++
		}
		return true
	})
	return n
}
