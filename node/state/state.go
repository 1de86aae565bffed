// Package state is the per-client state machine of docs/protocol.md section 5:
// one Record per uuid holding only the latest message of each kind, what a
// heartbeat, an ack and a push do to it, and which delivery events follow.
// It is pure: no clock, no I/O, no locks. Callers pass the time in and
// send whatever the transitions return.
package state

import (
	"net/netip"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// Kind is the kind of a pushed message.
type Kind uint8

const (
	General    Kind = 1 // 0x10
	Classified Kind = 2 // 0x11
	Custom     Kind = 3 // 0x20
)

// KindOfCmd maps a wire command to its kind (0 for none).
func KindOfCmd(cmd byte) Kind {
	switch cmd {
	case wire.CmdGeneral:
		return General
	case wire.CmdClassified:
		return Classified
	case wire.CmdCustom:
		return Custom
	}
	return 0
}

// Cmd is the wire command of k.
func (k Kind) Cmd() byte {
	switch k {
	case General:
		return wire.CmdGeneral
	case Classified:
		return wire.CmdClassified
	case Custom:
		return wire.CmdCustom
	}
	return 0
}

func (k Kind) String() string {
	switch k {
	case General:
		return "general"
	case Classified:
		return "classified"
	case Custom:
		return "custom"
	}
	return "unknown"
}

// ParseKind accepts the names String returns.
func ParseKind(s string) (Kind, bool) {
	switch s {
	case "general", "General":
		return General, true
	case "classified", "Classified":
		return Classified, true
	case "custom", "Custom":
		return Custom, true
	}
	return 0, false
}

// Fate is what became of an accepted push.
type Fate uint8

const (
	Queued       Fate = 1 // accepted, client offline
	Sent         Fate = 2 // handed to an online client
	Acknowledged Fate = 3 // the client acked it
	Superseded   Fate = 4 // a newer push of the same kind replaced it before the ack
	Expired      Fate = 5 // its record was removed
)

func (f Fate) String() string {
	switch f {
	case Queued:
		return "queued"
	case Sent:
		return "sent"
	case Acknowledged:
		return "acknowledged"
	case Superseded:
		return "superseded"
	case Expired:
		return "expired"
	}
	return "unknown"
}

// Terminal reports whether nothing can follow f.
func (f Fate) Terminal() bool { return f >= Acknowledged }

// ParseFate accepts the names String returns.
func ParseFate(s string) (Fate, bool) {
	for f := Queued; f <= Expired; f++ {
		if f.String() == s {
			return f, true
		}
	}
	return 0, false
}

// Event says that push PushID reached Fate at time At.
type Event struct {
	PushID uint64
	UUID   wire.UUID
	Kind   Kind
	Fate   Fate
	At     int64 // unix nanoseconds
}

// Policy decides whether a UDP heartbeat with nothing pending is answered
// with 0x00.
type Policy uint8

const (
	PolicyNever          Policy = 0
	PolicyAlways         Policy = 1
	PolicyAddressChanged Policy = 2
)

func (p Policy) String() string {
	switch p {
	case PolicyAlways:
		return "always"
	case PolicyAddressChanged:
		return "address-changed"
	}
	return "never"
}

// ParsePolicy accepts the names String returns and the Java server's
// "sa_changed".
func ParsePolicy(s string) (Policy, bool) {
	switch s {
	case "never":
		return PolicyNever, true
	case "always":
		return PolicyAlways, true
	case "address-changed", "sa_changed":
		return PolicyAddressChanged, true
	}
	return 0, false
}

// Record flags.
const (
	flagHasAddr uint8 = 1 << iota
	// FlagDirty marks a record whose state differs from what the store
	// holds; the table keeps the list of dirty records.
	FlagDirty
	// FlagInUse marks a slab slot that holds a live record.
	FlagInUse
	// FlagHeld marks a record that a commit in progress is changing: the
	// change becomes visible only once it is durable, and until then
	// nothing else may change the record.
	FlagHeld
	// FlagSeenLag marks a record whose last-seen time moved without
	// making it dirty (a heartbeat within the same step, see Heartbeat):
	// the stored time is behind. A graceful stop and a slot move write
	// such records all the same; writing the record back clears it.
	FlagSeenLag
)

// Record is one client. It is kept small because a node holds millions:
// everything beyond the heartbeat state lives in Ext, which idle
// heartbeat-only clients never allocate.
type Record struct {
	UUID     wire.UUID
	LastSeen int64 // unix ns of the last heartbeat, or of the push that created the record
	ip       [16]byte
	port     uint16
	Flags    uint8
	// Front is 1 + the ordinal of the pod whose socket the last UDP
	// heartbeat came through when that pod is not this one (0: this
	// pod). Instant pushes go out from that pod's socket, since the phone
	// only takes packets from the address it talks to. It fits in the
	// padding before Ext and is not stored: a restarted home learns it
	// again from the next heartbeat.
	Front uint16
	Ext   *Ext
}

// Ext is the part of a record that only clients with pushes or a live TCP
// connection need.
type Ext struct {
	// Conn is the client's live TCP connection, opaque to this package.
	Conn any

	GeneralID   uint64 // push id of the pending general notice, 0 if none
	GeneralAt   int64  // time of the last general push (kept after the ack)
	GeneralSent bool

	Mask    uint64 // pending classified bits
	MaskAt  int64  // time of the last classified push
	Classes []ClassPush

	Custom     []byte // pending payload, nil if none; never mutated in place
	CustomID   uint64
	CustomAt   int64 // time of the last custom push
	CustomSent bool
}

// ClassPush is one classified push whose bits are not all acked yet.
type ClassPush struct {
	ID   uint64
	Bits uint64 // bits of this push still unacked
	Sent bool
}

// Addr is the last UDP source address, if any.
func (r *Record) Addr() (netip.AddrPort, bool) {
	if r.Flags&flagHasAddr == 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(netip.AddrFrom16(r.ip).Unmap(), r.port), true
}

// SetAddr records a UDP source address.
func (r *Record) SetAddr(a netip.AddrPort) {
	r.ip = a.Addr().As16()
	r.port = a.Port()
	r.Flags |= flagHasAddr
}

func (r *Record) sameAddr(a netip.AddrPort) bool {
	return r.Flags&flagHasAddr != 0 && r.port == a.Port() && r.ip == a.Addr().As16()
}

// Conn is the live TCP connection, or nil.
func (r *Record) Conn() any {
	if r.Ext == nil {
		return nil
	}
	return r.Ext.Conn
}

// SetConn attaches (or, with nil, detaches) the live TCP connection.
func (r *Record) SetConn(c any) {
	if c == nil {
		if r.Ext != nil {
			r.Ext.Conn = nil
		}
		return
	}
	r.ext().Conn = c
}

// Clone returns a copy of r that shares nothing it may mutate with r: the
// classified list is copied; the custom payload, never mutated in place,
// is shared.
func (r *Record) Clone() Record {
	c := *r
	if r.Ext != nil {
		e := *r.Ext
		e.Classes = append([]ClassPush(nil), r.Ext.Classes...)
		c.Ext = &e
	}
	return c
}

func (r *Record) ext() *Ext {
	if r.Ext == nil {
		r.Ext = &Ext{}
	}
	return r.Ext
}

// UDPOnline reports whether an instant push goes out over UDP: the last
// heartbeat came over UDP less than window ago.
func (r *Record) UDPOnline(now, window int64) bool {
	return r.Flags&flagHasAddr != 0 && now-r.LastSeen < window
}

// Online reports whether the client can receive a push now.
func (r *Record) Online(now, window int64) bool {
	return r.UDPOnline(now, window) || r.Conn() != nil
}

// HasPending reports whether anything waits for an ack.
func (r *Record) HasPending() bool {
	e := r.Ext
	return e != nil && (e.GeneralID != 0 || e.Mask != 0 || e.Custom != nil)
}

// Reply lists the server messages a transition asks to send, in protocol
// order: 0x10, then 0x11, then 0x20; 0x00 only when nothing else goes.
type Reply struct {
	General   bool
	Mask      uint64 // 0x11 with this mask when non-zero
	Custom    []byte // 0x20 with this payload when non-nil
	Heartbeat bool
}

// Empty reports whether nothing is to be sent.
func (p *Reply) Empty() bool {
	return !p.General && p.Mask == 0 && p.Custom == nil && !p.Heartbeat
}

// Append encodes the reply as consecutive server messages with appID.
func (p *Reply) Append(dst []byte, appID byte) []byte {
	if p.General {
		dst = wire.AppendServer(dst, appID, wire.CmdGeneral, nil)
	}
	if p.Mask != 0 {
		dst = wire.AppendServerMask(dst, appID, p.Mask)
	}
	if p.Custom != nil {
		dst = wire.AppendServer(dst, appID, wire.CmdCustom, p.Custom)
	}
	if p.Heartbeat {
		dst = wire.AppendServer(dst, appID, wire.CmdHeartbeat, nil)
	}
	return dst
}

// Transport says how a client message arrived.
type Transport uint8

const (
	UDP Transport = 1
	TCP Transport = 2
)

// Heartbeat applies a heartbeat received at now. For UDP, from is the
// source address; for TCP, conn is the connection (from is ignored). It
// returns every pending message, and 0x00 when nothing is pending and the
// policy asks for it (never over TCP). Pending pushes not reported as sent
// yet are appended to evs as Sent.
//
// The record becomes dirty when what the store keeps of it changes
// meaningfully: a new address, pushes now sent, or a last-seen time that
// entered a new period of seenStep nanoseconds (every heartbeat when
// seenStep is 0). The stored last-seen time is then never more than
// seenStep behind, and a phone that heartbeats often costs one write per
// period instead of one per heartbeat.
func (r *Record) Heartbeat(now int64, t Transport, from netip.AddrPort, conn any, policy Policy, seenStep int64, evs []Event) (Reply, []Event) {
	var rep Reply
	if seenStep <= 0 || r.LastSeen/seenStep != now/seenStep {
		r.Flags |= FlagDirty
	} else if r.LastSeen != now {
		r.Flags |= FlagSeenLag
	}
	r.LastSeen = now
	if t == UDP {
		same := r.sameAddr(from)
		switch policy {
		case PolicyAlways:
			rep.Heartbeat = true
		case PolicyAddressChanged:
			rep.Heartbeat = !same
		}
		if !same {
			r.SetAddr(from)
			r.Flags |= FlagDirty
		}
	} else if conn != nil {
		r.SetConn(conn)
	}
	if e := r.Ext; e != nil {
		rep.General = e.GeneralID != 0
		rep.Mask = e.Mask
		rep.Custom = e.Custom
		n := len(evs)
		evs = r.markSent(now, evs, true, true, true)
		if len(evs) > n {
			r.Flags |= FlagDirty
		}
	}
	if rep.General || rep.Mask != 0 || rep.Custom != nil {
		// 0x00 only answers a heartbeat that gets nothing else.
		rep.Heartbeat = false
	}
	return rep, evs
}

func (r *Record) markSent(now int64, evs []Event, g, c, u bool) []Event {
	e := r.Ext
	if g && e.GeneralID != 0 && !e.GeneralSent {
		e.GeneralSent = true
		evs = append(evs, Event{PushID: e.GeneralID, UUID: r.UUID, Kind: General, Fate: Sent, At: now})
	}
	if c {
		for i := range e.Classes {
			if !e.Classes[i].Sent {
				e.Classes[i].Sent = true
				evs = append(evs, Event{PushID: e.Classes[i].ID, UUID: r.UUID, Kind: Classified, Fate: Sent, At: now})
			}
		}
	}
	if u && e.Custom != nil && !e.CustomSent {
		e.CustomSent = true
		evs = append(evs, Event{PushID: e.CustomID, UUID: r.UUID, Kind: Custom, Fate: Sent, At: now})
	}
	return evs
}

// Ack applies a client's ack of cmd (with the 0x11 mask). It does not count
// as a heartbeat. Pushes that it completes are appended as Acknowledged.
// It reports whether the record changed.
func (r *Record) Ack(now int64, cmd byte, mask uint64, evs []Event) ([]Event, bool) {
	e := r.Ext
	if e == nil {
		return evs, false
	}
	changed := false
	switch cmd {
	case wire.CmdGeneral:
		if e.GeneralID != 0 {
			evs = append(evs, Event{PushID: e.GeneralID, UUID: r.UUID, Kind: General, Fate: Acknowledged, At: now})
			e.GeneralID, e.GeneralSent = 0, false
			changed = true
		}
	case wire.CmdClassified:
		if e.Mask&mask != 0 {
			e.Mask &^= mask
			changed = true
		}
		kept := e.Classes[:0]
		for _, c := range e.Classes {
			if c.Bits&mask != 0 {
				c.Bits &^= mask
				changed = true
			}
			if c.Bits == 0 {
				evs = append(evs, Event{PushID: c.ID, UUID: r.UUID, Kind: Classified, Fate: Acknowledged, At: now})
				continue
			}
			kept = append(kept, c)
		}
		clear(e.Classes[len(kept):])
		e.Classes = kept
		if len(e.Classes) == 0 {
			e.Classes = nil
		}
	case wire.CmdCustom:
		if e.Custom != nil {
			evs = append(evs, Event{PushID: e.CustomID, UUID: r.UUID, Kind: Custom, Fate: Acknowledged, At: now})
			e.Custom, e.CustomID, e.CustomSent = nil, 0, false
			changed = true
		}
	}
	if changed {
		r.Flags |= FlagDirty
	}
	return evs, changed
}

// Push applies an accepted push with id at now. bits is the 0x11 mask,
// payload the 0x20 body (kept as is: the caller hands over ownership). If
// the client is online (window), the returned reply is what goes out at
// once with appId 0, and udp/tcp say over which transports. The push is
// appended as Sent or Queued, and any push it replaces as Superseded.
func (r *Record) Push(now, window int64, id uint64, kind Kind, bits uint64, payload []byte, evs []Event) (rep Reply, udp, tcp bool, _ []Event) {
	e := r.ext()
	udp = r.UDPOnline(now, window)
	tcp = e.Conn != nil
	online := udp || tcp
	fate := Queued
	if online {
		fate = Sent
	}
	switch kind {
	case General:
		if e.GeneralID != 0 {
			evs = append(evs, Event{PushID: e.GeneralID, UUID: r.UUID, Kind: General, Fate: Superseded, At: now})
		}
		e.GeneralID, e.GeneralAt, e.GeneralSent = id, now, online
		rep.General = true
	case Classified:
		e.MaskAt = now
		if bits == 0 {
			// Nothing to deliver: the Java server accepts it and changes
			// nothing, so the push is complete at once.
			evs = append(evs, Event{PushID: id, UUID: r.UUID, Kind: Classified, Fate: Acknowledged, At: now})
			r.Flags |= FlagDirty
			return Reply{}, false, false, evs
		}
		e.Mask |= bits
		// An older push whose unacked bits the new one covers is carried
		// by the new one; this also bounds the list to 64 entries.
		kept := e.Classes[:0]
		for _, c := range e.Classes {
			if c.Bits&^bits == 0 {
				evs = append(evs, Event{PushID: c.ID, UUID: r.UUID, Kind: Classified, Fate: Superseded, At: now})
				continue
			}
			kept = append(kept, c)
		}
		clear(e.Classes[len(kept):])
		e.Classes = append(kept, ClassPush{ID: id, Bits: bits, Sent: online})
		if online {
			// The instant 0x11 carries the whole mask, so every pending
			// classified push is handed over with it.
			evs = r.markSent(now, evs, false, true, false)
		}
		rep.Mask = e.Mask
	case Custom:
		if e.Custom != nil {
			evs = append(evs, Event{PushID: e.CustomID, UUID: r.UUID, Kind: Custom, Fate: Superseded, At: now})
		}
		e.Custom, e.CustomID, e.CustomAt, e.CustomSent = payload, id, now, online
		rep.Custom = payload
	}
	evs = append(evs, Event{PushID: id, UUID: r.UUID, Kind: kind, Fate: fate, At: now})
	r.Flags |= FlagDirty
	if !online {
		return Reply{}, false, false, evs
	}
	return rep, udp, tcp, evs
}

// Expire appends an Expired event for every pending push, for a record
// that is being removed.
func (r *Record) Expire(now int64, evs []Event) []Event {
	e := r.Ext
	if e == nil {
		return evs
	}
	if e.GeneralID != 0 {
		evs = append(evs, Event{PushID: e.GeneralID, UUID: r.UUID, Kind: General, Fate: Expired, At: now})
	}
	for _, c := range e.Classes {
		evs = append(evs, Event{PushID: c.ID, UUID: r.UUID, Kind: Classified, Fate: Expired, At: now})
	}
	if e.Custom != nil {
		evs = append(evs, Event{PushID: e.CustomID, UUID: r.UUID, Kind: Custom, Fate: Expired, At: now})
	}
	return evs
}
