package shard

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"sync"

	"github.com/ddpush/ddpush-operator/node/core"
	"github.com/ddpush/ddpush-operator/node/peer"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/stats"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// A slot move's handoff holds its slots: from the moment the source
// takes their records out of its table until the target serves them (or
// the move is called off), nothing may be decided about them here. Pushes
// wait for the hold to end and then go to whichever pod is home; phone
// packets are kept, up to a bound, and handled the same way.

// maxHeldPackets bounds the phone packets a hold keeps. A handoff lasts
// milliseconds; past the bound packets are dropped and counted, and
// phones repeat them with their next heartbeat.
const maxHeldPackets = 65536

type hold struct {
	set      slotmap.Set
	released chan struct{}

	mu      sync.Mutex
	packets []heldPacket
	closed  bool // no more packets are kept
}

// heldPacket is a phone packet that came in during a hold: at this pod's
// own sockets (from == nil) or relayed by the front from.
type heldPacket struct {
	now  int64
	raw  []byte
	tr   state.Transport
	addr netip.AddrPort
	conn any
	from *peer.Session
	p    peer.PhonePacket
}

// Hold starts holding the slots in set. There is one hold at a time.
func (r *Router) Hold(set slotmap.Set) {
	r.holdp.Store(&hold{set: set, released: make(chan struct{})})
}

// Release ends the hold: what waited is routed by the map in force now.
func (r *Router) Release() {
	h := r.holdp.Swap(nil)
	if h == nil {
		return
	}
	// Packets first, then the pushes that waited: an ack kept here must
	// reach the record before a newer push does, since acks name no
	// message and would ack the newer one.
	h.mu.Lock()
	packets := h.packets
	h.packets = nil
	h.closed = true
	h.mu.Unlock()
	for i := range packets {
		r.replay(&packets[i])
	}
	close(h.released)
}

// heldBy is the hold u's slot is in, if any.
func (r *Router) heldBy(u wire.UUID) *hold {
	if h := r.holdp.Load(); h != nil && h.set.HasUUID(u) {
		return h
	}
	return nil
}

// waitRelease waits, at most until ctx ends, for a hold of u's slot to
// end. It reports false if ctx ended first.
func (r *Router) waitRelease(ctx context.Context, u wire.UUID) bool {
	h := r.heldBy(u)
	if h == nil {
		return true
	}
	select {
	case <-h.released:
		return true
	case <-ctx.Done():
		return false
	}
}

// keep stores a phone packet until the hold ends. It reports false when
// the hold keeps no more.
func (h *hold) keep(p heldPacket) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.packets) >= maxHeldPackets {
		return false
	}
	h.packets = append(h.packets, p)
	return true
}

// replay handles a packet kept by a hold that ended.
func (r *Router) replay(p *heldPacket) {
	if p.from != nil {
		r.replayRelayed(p)
		return
	}
	var m wire.ClientMessage
	if wire.DecodeClient(p.raw, &m) != nil {
		return
	}
	if !r.Local(m.UUID) {
		r.Phone(p.now, m.UUID, p.raw, p.tr, p.addr, p.conn)
		return
	}
	out := r.opt.Core.HandleClient(p.now, &m, p.tr, p.addr, p.conn, nil)
	if len(out) == 0 {
		return
	}
	if p.tr == state.TCP {
		if cs, ok := p.conn.(core.ConnSender); ok {
			cs.Send(out)
		}
		return
	}
	if s := r.udp.Load(); s != nil {
		_ = s.s.SendUDP(out, p.addr)
	}
}

// holdPhone keeps a packet that reached this pod's sockets for a held
// uuid. It reports false when u is not held.
func (r *Router) holdPhone(now int64, u wire.UUID, raw []byte, tr state.Transport, from netip.AddrPort, conn any) bool {
	h := r.heldBy(u)
	if h == nil {
		return false
	}
	if !h.keep(heldPacket{now: now, raw: bytes.Clone(raw), tr: tr, addr: from, conn: conn}) {
		r.opt.Core.Stats().Drop(stats.DropMoveHeld)
	}
	return true
}

// holdRelayed keeps a packet a front relayed here for a held uuid.
func (r *Router) holdRelayed(from *peer.Session, p *peer.PhonePacket, u wire.UUID) bool {
	h := r.heldBy(u)
	if h == nil {
		return false
	}
	cp := *p
	cp.Raw = bytes.Clone(p.Raw)
	if !h.keep(heldPacket{from: from, p: cp}) {
		r.opt.Core.Stats().Drop(stats.DropMoveHeld)
	}
	return true
}

// pushHome accepts p here if this pod is its home once any hold of its
// slot ends, or relays it to its home otherwise: a push relayed here by
// a pod with an older map goes on to the slot's new home, which may be
// the pod it came from (a move's target relays to the source until it
// commits, and the source relays back once it did). Two pods whose maps
// disagree for longer pass a push to and fro only until its time runs
// out, which every hop counts down.
func (r *Router) pushHome(ctx context.Context, p core.PushSpec) (core.PushResult, error) {
	if _, ok := ctx.Deadline(); !ok {
		// A handoff lasts milliseconds; one that waits for a target
		// that does not answer must not keep callers for good.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, relayWait)
		defer cancel()
	}
	for range 3 {
		if !r.waitRelease(ctx, p.UUID) {
			return core.PushResult{}, &UnreachableError{Home: r.opt.Ordinal, Err: errors.New("the uuid's slot was still being moved when the push's time ran out")}
		}
		if r.Local(p.UUID) {
			res, err := r.opt.Core.PushLocal(ctx, p)
			if errors.Is(err, core.ErrSlotMoving) {
				continue
			}
			return res, err
		}
		if r.heldBy(p.UUID) != nil {
			continue
		}
		home, _ := r.Home(p.UUID)
		return r.relayPush(ctx, home, p)
	}
	return core.PushResult{}, &UnreachableError{Home: -1, Err: errors.New("the uuid's slot moved again and again while the push waited")}
}

// deadline is the context a push waits in here: until its NotAfter and
// the commit margin, or relayWait when it has none.
func pushContext(p core.PushSpec) (context.Context, context.CancelFunc) {
	if p.NotAfter.IsZero() {
		return context.WithTimeout(context.Background(), relayWait)
	}
	return context.WithDeadline(context.Background(), p.NotAfter.Add(commitMargin))
}

// Attachment says where a record's TCP connection is, so that a record
// moving to another home keeps reaching its phone: the front holding it,
// that front's incarnation and the connection's id there. A connection
// at this pod gets an id here, as when a packet of it is relayed.
func (r *Router) Attachment(conn any) (front int, incarnation, connID uint64, ok bool) {
	switch c := conn.(type) {
	case nil:
		return 0, 0, 0, false
	case peer.RemoteConn:
		return c.Ordinal(), c.Incarnation(), c.ConnID(), true
	case core.ConnSender:
		return r.opt.Ordinal, r.opt.Incarnation, r.connID(c), true
	}
	return 0, 0, 0, false
}

// ConnOf is what Attachment described, as this pod reaches it: a
// connection here, or one at another front; nil when it is gone.
func (r *Router) ConnOf(front int, incarnation, connID uint64) any {
	if front != r.opt.Ordinal {
		return r.srv.RemoteConnOf(front, incarnation, connID)
	}
	if incarnation != r.opt.Incarnation {
		return nil
	}
	r.connMu.Lock()
	defer r.connMu.Unlock()
	if cs := r.conns[connID]; cs != nil {
		return cs
	}
	return nil
}

// replayRelayed handles a packet a front relayed here during a hold. If
// the slot stayed here it is handled as it came. If it moved, an ack goes
// on to the new home, which would otherwise send the acked message again:
// it travels as if from a UDP phone, since an ack needs no way back to
// the phone and must not make the new home take this pod for the phone's
// front. Anything else is dropped, as for a front with an older map: the
// phone repeats it with its next heartbeat, which its front then relays
// to the new home.
func (r *Router) replayRelayed(p *heldPacket) {
	var m wire.ClientMessage
	if wire.DecodeClient(p.p.Raw, &m) != nil || r.Local(m.UUID) {
		r.PhonePacket(p.from, &p.p)
		return
	}
	home, _ := r.Home(m.UUID)
	l := r.link(home)
	if m.Cmd == wire.CmdHeartbeat || m.Cmd == wire.CmdReset || l == nil {
		r.opt.Core.Stats().Drop(stats.DropNotHome)
		return
	}
	fwd := peer.PhonePacket{Arrival: p.p.Arrival, Raw: p.p.Raw, Route: peer.Route{Transport: peer.UDP, Addr: p.p.Addr}}
	if p.p.Transport == peer.TCP || !fwd.Addr.IsValid() {
		fwd.Addr = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	_ = l.SendPhonePacket(&fwd)
}
