package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/ddpush/ddpush-operator/node/wire"
)

// A batch is the payload of one stream message: frames back to back.
// A frame is
//
//	type  1 byte
//	len   uvarint, the body's length (shortest form, at most MaxFrameBody)
//	body  len bytes, laid out per type below; integers are big-endian
//
// Receivers skip (and count) frames of a type they do not know, so a
// newer peer can add types without breaking an older one.

// Type is a frame type.
type Type uint8

// Frame types. Requests go from the dialer (the front) to the listener
// (the home); answers and ToPhone frames come back on the same stream.
const (
	TypeHello       Type = 1 // both ways, first frame of a stream
	TypePhonePacket Type = 2 // front -> home
	TypeToPhone     Type = 3 // home -> front
	TypeDetach      Type = 4 // front -> home
	TypePushReq     Type = 5 // front -> home
	TypePushAns     Type = 6 // home -> front
	TypeLookupReq   Type = 7 // front -> home
	TypeLookupAns   Type = 8 // home -> front
)

var typeNames = [...]string{"", "hello", "phone_packet", "to_phone", "detach", "push_req", "push_ans", "lookup_req", "lookup_ans"}

func (t Type) String() string {
	if int(t) < len(typeNames) && t != 0 {
		return typeNames[t]
	}
	return fmt.Sprintf("type_%d", uint8(t))
}

const (
	// ProtocolVersion is sent in Hello; both sides must speak the same.
	ProtocolVersion = 2
	// MaxFrameBody bounds one frame's body.
	MaxFrameBody = 256 << 10
	// MaxBatchBytes bounds one stream message (a send queue's bytes).
	MaxBatchBytes = 4 << 20
	// MaxPhoneBytes bounds the raw client message in a PhonePacket.
	MaxPhoneBytes = 64
	// MaxToPhoneBytes bounds the bytes a ToPhone carries to a phone.
	MaxToPhoneBytes = 64 << 10
	// MaxKeyLen bounds a relayed push's idempotency key.
	MaxKeyLen = 1024
	// MaxPayloadLen bounds a relayed push's payload.
	MaxPayloadLen = wire.MaxContentLenLimit
	// MaxReasonLen bounds the reason of a refused push.
	MaxReasonLen = 1024
	// MaxLookupBody bounds a lookup's JSON, both ways.
	MaxLookupBody = MaxFrameBody - 16
)

// ErrBadFrame is wrapped by every decoding and encoding error.
var ErrBadFrame = errors.New("bad peer frame")

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadFrame, fmt.Sprintf(format, args...))
}

// Hello opens a stream in both directions: the dialer's first, then the
// listener's answer. A link is up only once both were exchanged.
type Hello struct {
	Version     uint8
	Ordinal     uint16 // the sender's ordinal
	Epoch       uint64 // the sender's slot map epoch
	Incarnation uint64 // changes every time the sender's process starts
}

const helloLen = 1 + 2 + 8 + 8

func (h *Hello) appendBody(b []byte) []byte {
	b = append(b, h.Version)
	b = binary.BigEndian.AppendUint16(b, h.Ordinal)
	b = binary.BigEndian.AppendUint64(b, h.Epoch)
	return binary.BigEndian.AppendUint64(b, h.Incarnation)
}

func (h *Hello) decode(b []byte) error {
	if len(b) != helloLen {
		return badf("hello is %d bytes, want %d", len(b), helloLen)
	}
	h.Version = b[0]
	h.Ordinal = binary.BigEndian.Uint16(b[1:])
	h.Epoch = binary.BigEndian.Uint64(b[3:])
	h.Incarnation = binary.BigEndian.Uint64(b[11:])
	return nil
}

// Transport is how a phone is attached to its front.
type Transport uint8

const (
	UDP Transport = 1
	TCP Transport = 2
)

// Route says how the front reaches a phone: its UDP address, or the id
// of its TCP connection at the front.
type Route struct {
	Transport Transport
	Addr      netip.AddrPort // UDP
	ConnID    uint64         // TCP
}

func (r *Route) size() int {
	if r.Transport == TCP {
		return 1 + 8
	}
	if r.Addr.Addr().Is4() {
		return 1 + 1 + 4 + 2
	}
	return 1 + 1 + 16 + 2
}

func (r *Route) check() error {
	switch r.Transport {
	case TCP:
		return nil
	case UDP:
		if !r.Addr.IsValid() {
			return badf("UDP route without an address")
		}
		if r.Addr.Addr().Zone() != "" {
			return badf("UDP address %s has a zone", r.Addr)
		}
		return nil
	}
	return badf("transport %d", r.Transport)
}

func (r *Route) appendTo(b []byte) []byte {
	b = append(b, byte(r.Transport))
	if r.Transport == TCP {
		return binary.BigEndian.AppendUint64(b, r.ConnID)
	}
	a := r.Addr.Addr()
	if a.Is4() {
		ip := a.As4()
		b = append(b, 4)
		b = append(b, ip[:]...)
	} else {
		ip := a.As16()
		b = append(b, 6)
		b = append(b, ip[:]...)
	}
	return binary.BigEndian.AppendUint16(b, r.Addr.Port())
}

// decode reads a route from the front of b and returns the rest.
func (r *Route) decode(b []byte) ([]byte, error) {
	if len(b) < 1 {
		return nil, badf("route: empty")
	}
	*r = Route{Transport: Transport(b[0])}
	b = b[1:]
	switch r.Transport {
	case TCP:
		if len(b) < 8 {
			return nil, badf("route: TCP connection id truncated")
		}
		r.ConnID = binary.BigEndian.Uint64(b)
		return b[8:], nil
	case UDP:
		if len(b) < 1 {
			return nil, badf("route: address family missing")
		}
		var a netip.Addr
		switch b[0] {
		case 4:
			if len(b) < 1+4+2 {
				return nil, badf("route: IPv4 address truncated")
			}
			a = netip.AddrFrom4([4]byte(b[1:5]))
			b = b[5:]
		case 6:
			if len(b) < 1+16+2 {
				return nil, badf("route: IPv6 address truncated")
			}
			a = netip.AddrFrom16([16]byte(b[1:17]))
			b = b[17:]
		default:
			return nil, badf("route: address family %d", b[0])
		}
		r.Addr = netip.AddrPortFrom(a, binary.BigEndian.Uint16(b))
		return b[2:], nil
	}
	return nil, badf("route: transport %d", r.Transport)
}

// PhonePacket is a client message a front received for a uuid homed
// elsewhere, already rate limited and decoded there.
type PhonePacket struct {
	Route
	Arrival int64  // unix nanoseconds, when the front received it
	Raw     []byte // the client message as it came, 1..MaxPhoneBytes
}

func (p *PhonePacket) size() int { return p.Route.size() + 8 + len(p.Raw) }

func (p *PhonePacket) check() error {
	if len(p.Raw) == 0 || len(p.Raw) > MaxPhoneBytes {
		return badf("phone packet of %d bytes (1 to %d)", len(p.Raw), MaxPhoneBytes)
	}
	return p.Route.check()
}

func (p *PhonePacket) appendBody(b []byte) []byte {
	b = p.Route.appendTo(b)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Arrival))
	return append(b, p.Raw...)
}

func (p *PhonePacket) decode(b []byte) error {
	b, err := p.Route.decode(b)
	if err != nil {
		return err
	}
	if len(b) < 8 {
		return badf("phone packet: arrival time truncated")
	}
	p.Arrival = int64(binary.BigEndian.Uint64(b))
	p.Raw = b[8:]
	if len(p.Raw) == 0 || len(p.Raw) > MaxPhoneBytes {
		return badf("phone packet of %d bytes (1 to %d)", len(p.Raw), MaxPhoneBytes)
	}
	return nil
}

// ToPhone is what a home has for a phone attached to a front.
type ToPhone struct {
	Route
	Bytes []byte // 1..MaxToPhoneBytes
}

func (p *ToPhone) size() int { return p.Route.size() + len(p.Bytes) }

func (p *ToPhone) check() error {
	if len(p.Bytes) == 0 || len(p.Bytes) > MaxToPhoneBytes {
		return badf("to-phone message of %d bytes (1 to %d)", len(p.Bytes), MaxToPhoneBytes)
	}
	return p.Route.check()
}

func (p *ToPhone) appendBody(b []byte) []byte {
	return append(p.Route.appendTo(b), p.Bytes...)
}

func (p *ToPhone) decode(b []byte) error {
	b, err := p.Route.decode(b)
	if err != nil {
		return err
	}
	p.Bytes = b
	if len(b) == 0 || len(b) > MaxToPhoneBytes {
		return badf("to-phone message of %d bytes (1 to %d)", len(b), MaxToPhoneBytes)
	}
	return nil
}

// Detach tells the home that a TCP connection at the front closed, with
// the uuids that were attached to it.
type Detach struct {
	ConnID uint64
	UUIDs  []wire.UUID
}

const maxDetachUUIDs = (MaxFrameBody - 8) / wire.UUIDLen

func (d *Detach) size() int { return 8 + len(d.UUIDs)*wire.UUIDLen }

func (d *Detach) check() error {
	if len(d.UUIDs) > maxDetachUUIDs {
		return badf("detach of %d uuids (at most %d)", len(d.UUIDs), maxDetachUUIDs)
	}
	return nil
}

func (d *Detach) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, d.ConnID)
	for _, u := range d.UUIDs {
		b = append(b, u[:]...)
	}
	return b
}

func (d *Detach) decode(b []byte) error {
	if len(b) < 8 || (len(b)-8)%wire.UUIDLen != 0 {
		return badf("detach of %d bytes is not a connection id and whole uuids", len(b))
	}
	d.ConnID = binary.BigEndian.Uint64(b)
	b = b[8:]
	d.UUIDs = make([]wire.UUID, len(b)/wire.UUIDLen)
	for i := range d.UUIDs {
		d.UUIDs[i] = wire.UUID(b[i*wire.UUIDLen:])
	}
	return nil
}

// PushReq is a push a front relays to the uuid's home. Corr is set by
// the Link.
type PushReq struct {
	Corr uint64
	UUID wire.UUID
	Kind uint8
	Bits uint64
	// SentAt (the front's clock, unix nanoseconds) and Budget (0 for
	// none) say until when the home may start committing the push: the
	// front stops waiting somewhat after SentAt+Budget, and a push it
	// could then only answer "outcome unknown" must not be committed (see
	// core.PushSpec.NotAfter). The home judges SentAt against the
	// smallest clock difference it has seen from that front, so that the
	// pods' clocks need not agree.
	SentAt  int64
	Budget  time.Duration
	Key     string // idempotency key, at most MaxKeyLen bytes
	Payload []byte // at most MaxPayloadLen bytes
}

func (r *PushReq) size() int {
	return 8 + wire.UUIDLen + 1 + 8 + 8 + 8 + uvarintLen(uint64(len(r.Key))) + len(r.Key) + len(r.Payload)
}

func (r *PushReq) check() error {
	if len(r.Key) > MaxKeyLen {
		return badf("push key of %d bytes (at most %d)", len(r.Key), MaxKeyLen)
	}
	if len(r.Payload) > MaxPayloadLen {
		return badf("push payload of %d bytes (at most %d)", len(r.Payload), MaxPayloadLen)
	}
	return nil
}

func (r *PushReq) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, r.Corr)
	b = append(b, r.UUID[:]...)
	b = append(b, r.Kind)
	b = binary.BigEndian.AppendUint64(b, r.Bits)
	b = binary.BigEndian.AppendUint64(b, uint64(r.SentAt))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Budget))
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	return append(b, r.Payload...)
}

func (r *PushReq) decode(b []byte) error {
	const fixed = 8 + wire.UUIDLen + 1 + 8 + 8 + 8
	if len(b) < fixed {
		return badf("push request of %d bytes", len(b))
	}
	r.Corr = binary.BigEndian.Uint64(b)
	r.UUID = wire.UUID(b[8:])
	r.Kind = b[24]
	r.Bits = binary.BigEndian.Uint64(b[25:])
	r.SentAt = int64(binary.BigEndian.Uint64(b[33:]))
	r.Budget = time.Duration(binary.BigEndian.Uint64(b[41:]))
	if r.Budget < 0 {
		return badf("push request budget %d", r.Budget)
	}
	b = b[fixed:]
	n, b, err := readUvarint(b)
	if err != nil {
		return badf("push key length: %v", err)
	}
	if n > MaxKeyLen || n > uint64(len(b)) {
		return badf("push key of %d bytes (at most %d, %d left)", n, MaxKeyLen, len(b))
	}
	r.Key = string(b[:n])
	r.Payload = b[n:]
	if len(r.Payload) > MaxPayloadLen {
		return badf("push payload of %d bytes (at most %d)", len(r.Payload), MaxPayloadLen)
	}
	return nil
}

// PushStatus is what the home made of a relayed push.
type PushStatus uint8

const (
	// PushAccepted: committed at the home.
	PushAccepted PushStatus = 1
	// PushRefused: known not committed (the reason says why).
	PushRefused PushStatus = 2
	// PushInvalid: the home found the push malformed.
	PushInvalid PushStatus = 3
	// PushKeyReused: the idempotency key was first used for another push
	// (ID), which the reason says how this one differs from; nothing was
	// pushed.
	PushKeyReused PushStatus = 4
)

// PushAns answers a PushReq.
type PushAns struct {
	Corr       uint64
	Status     PushStatus
	ID         uint64 // the home's push id
	Fate       uint8
	Duplicate  bool  // the idempotency key was seen before; ID is the first push's
	AcceptedAt int64 // unix nanoseconds
	Reason     string
}

const pushAnsFixed = 8 + 1 + 8 + 1 + 1 + 8

func (a *PushAns) size() int { return pushAnsFixed + len(a.Reason) }

func (a *PushAns) check() error {
	if a.Status < PushAccepted || a.Status > PushKeyReused {
		return badf("push answer status %d", a.Status)
	}
	if len(a.Reason) > MaxReasonLen {
		return badf("push answer reason of %d bytes (at most %d)", len(a.Reason), MaxReasonLen)
	}
	return nil
}

func (a *PushAns) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, a.Corr)
	b = append(b, byte(a.Status))
	b = binary.BigEndian.AppendUint64(b, a.ID)
	b = append(b, a.Fate)
	var dup byte
	if a.Duplicate {
		dup = 1
	}
	b = append(b, dup)
	b = binary.BigEndian.AppendUint64(b, uint64(a.AcceptedAt))
	return append(b, a.Reason...)
}

func (a *PushAns) decode(b []byte) error {
	if len(b) < pushAnsFixed {
		return badf("push answer of %d bytes", len(b))
	}
	a.Corr = binary.BigEndian.Uint64(b)
	a.Status = PushStatus(b[8])
	a.ID = binary.BigEndian.Uint64(b[9:])
	a.Fate = b[17]
	if b[18] > 1 {
		return badf("push answer duplicate flag %d", b[18])
	}
	a.Duplicate = b[18] == 1
	a.AcceptedAt = int64(binary.BigEndian.Uint64(b[19:]))
	a.Reason = string(b[pushAnsFixed:])
	return a.check()
}

// LookupReq asks the home about a uuid; the body is opaque (JSON).
type LookupReq struct {
	Corr uint64
	Body []byte
}

func (r *LookupReq) size() int { return 8 + len(r.Body) }

func (r *LookupReq) check() error {
	if len(r.Body) > MaxLookupBody {
		return badf("lookup of %d bytes (at most %d)", len(r.Body), MaxLookupBody)
	}
	return nil
}

func (r *LookupReq) appendBody(b []byte) []byte {
	return append(binary.BigEndian.AppendUint64(b, r.Corr), r.Body...)
}

func (r *LookupReq) decode(b []byte) error {
	if len(b) < 8 {
		return badf("lookup request of %d bytes", len(b))
	}
	r.Corr = binary.BigEndian.Uint64(b)
	r.Body = b[8:]
	return r.check()
}

// LookupAns answers a LookupReq with an HTTP status code and a body
// (JSON) to pass on as they are.
type LookupAns struct {
	Corr uint64
	Code uint16
	Body []byte
}

func (a *LookupAns) size() int { return 8 + 2 + len(a.Body) }

func (a *LookupAns) check() error {
	if len(a.Body) > MaxLookupBody {
		return badf("lookup answer of %d bytes (at most %d)", len(a.Body), MaxLookupBody)
	}
	return nil
}

func (a *LookupAns) appendBody(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, a.Corr)
	b = binary.BigEndian.AppendUint16(b, a.Code)
	return append(b, a.Body...)
}

func (a *LookupAns) decode(b []byte) error {
	if len(b) < 10 {
		return badf("lookup answer of %d bytes", len(b))
	}
	a.Corr = binary.BigEndian.Uint64(b)
	a.Code = binary.BigEndian.Uint16(b[8:])
	a.Body = b[10:]
	return a.check()
}

// frameLen is the encoded length of a frame with a body of n bytes.
func frameLen(n int) int { return 1 + uvarintLen(uint64(n)) + n }

func appendHeader(b []byte, t Type, n int) []byte {
	return binary.AppendUvarint(append(b, byte(t)), uint64(n))
}

// nextFrame splits the first frame off a batch.
func nextFrame(b []byte) (t Type, body, rest []byte, err error) {
	if len(b) == 0 {
		return 0, nil, nil, badf("empty")
	}
	t = Type(b[0])
	n, after, err := readUvarint(b[1:])
	if err != nil {
		return 0, nil, nil, badf("%s frame length: %v", t, err)
	}
	if n > MaxFrameBody {
		return 0, nil, nil, badf("%s frame of %d bytes (at most %d)", t, n, MaxFrameBody)
	}
	if n > uint64(len(after)) {
		return 0, nil, nil, badf("%s frame of %d bytes truncated to %d", t, n, len(after))
	}
	return t, after[:n], after[n:], nil
}

// readUvarint reads a varint in its shortest form.
func readUvarint(b []byte) (uint64, []byte, error) {
	x, n := binary.Uvarint(b)
	switch {
	case n == 0:
		return 0, nil, errors.New("truncated")
	case n < 0:
		return 0, nil, errors.New("overflows 64 bits")
	case n > 1 && b[n-1] == 0:
		return 0, nil, errors.New("not in shortest form")
	}
	return x, b[n:], nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// body is what every frame type's body can do; encoding through it is
// for the cold paths (handshake, tests), the hot paths call the concrete
// methods so nothing escapes.
type body interface {
	size() int
	check() error
	appendBody([]byte) []byte
}

func (h *Hello) size() int    { return helloLen }
func (h *Hello) check() error { return nil }

// appendFrame adds one whole frame to a batch.
func appendFrame(b []byte, t Type, f body) []byte {
	return f.appendBody(appendHeader(b, t, f.size()))
}
