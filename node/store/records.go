package store

import (
	"encoding/binary"
	"errors"

	"github.com/ddpush/ddpush-operator/node/state"
	"github.com/ddpush/ddpush-operator/node/wire"
)

func getU64(v []byte, def uint64) uint64 {
	if len(v) != 8 {
		return def
	}
	return binary.BigEndian.Uint64(v)
}

// Push is what the store keeps of one accepted push.
type Push struct {
	ID         uint64
	UUID       wire.UUID
	Kind       state.Kind
	Fate       state.Fate
	Size       int    // payload bytes (custom) or 8 (classified)
	Bits       uint64 // classified bits
	Key        string // idempotency key, if any
	AcceptedAt int64
	SentAt     int64
	DoneAt     int64 // when it reached a terminal fate
	// Digest identifies the payload of a custom push made with a key, so
	// that a key reused for different content can be told from a retry.
	// It is kept only for pushes with a key; zero otherwise.
	Digest PayloadDigest
}

// Stored forms of a push: 1 without a digest, 2 with the digest after the
// key. A push without a key is written in form 1, which every version
// reads.
const (
	pushForm1 = 1
	pushForm2 = 2
)

func (p *Push) appendBinary(dst []byte) []byte {
	form := byte(pushForm1)
	if p.Key != "" {
		form = pushForm2
	}
	dst = append(dst, form)
	dst = append(dst, p.UUID[:]...)
	dst = append(dst, byte(p.Kind), byte(p.Fate))
	dst = binary.AppendUvarint(dst, uint64(p.Size))
	dst = binary.BigEndian.AppendUint64(dst, p.Bits)
	dst = binary.AppendVarint(dst, p.AcceptedAt)
	dst = binary.AppendVarint(dst, p.SentAt)
	dst = binary.AppendVarint(dst, p.DoneAt)
	dst = binary.AppendUvarint(dst, uint64(len(p.Key)))
	dst = append(dst, p.Key...)
	if form == pushForm2 {
		dst = append(dst, p.Digest[:]...)
	}
	return dst
}

var errCorrupt = errors.New("corrupt entry")

func (p *Push) unmarshal(id uint64, b []byte) error {
	if len(b) < 1+16+2+1+8 || (b[0] != pushForm1 && b[0] != pushForm2) {
		return errCorrupt
	}
	tail := 0
	if b[0] == pushForm2 {
		tail = len(p.Digest)
	}
	p.ID = id
	copy(p.UUID[:], b[1:17])
	p.Kind, p.Fate = state.Kind(b[17]), state.Fate(b[18])
	b = b[19:]
	size, n := binary.Uvarint(b)
	if n <= 0 || len(b) < n+8 {
		return errCorrupt
	}
	p.Size = int(size)
	p.Bits = binary.BigEndian.Uint64(b[n:])
	b = b[n+8:]
	for _, f := range []*int64{&p.AcceptedAt, &p.SentAt, &p.DoneAt} {
		v, n := binary.Varint(b)
		if n <= 0 {
			return errCorrupt
		}
		*f, b = v, b[n:]
	}
	kl, n := binary.Uvarint(b)
	if n <= 0 || len(b)-n < tail || uint64(len(b)-n-tail) != kl {
		return errCorrupt
	}
	p.Key = string(b[n : len(b)-tail])
	p.Digest = PayloadDigest{}
	copy(p.Digest[:], b[len(b)-tail:])
	return nil
}

// apply moves p to the fate of e, never back from a terminal one.
func (p *Push) apply(e *state.Event) bool {
	if p.Fate.Terminal() {
		return false
	}
	switch {
	case e.Fate == state.Sent:
		if p.Fate == state.Sent {
			return false
		}
		p.SentAt = e.At
	case e.Fate.Terminal():
		p.DoneAt = e.At
		if e.Fate == state.Acknowledged && p.SentAt == 0 {
			p.SentAt = e.At
		}
	}
	p.Fate = e.Fate
	return true
}

// Event is a delivery event with its place in the log.
type Event struct {
	Seq uint64
	state.Event
}

func appendEvent(dst []byte, e *state.Event) []byte {
	dst = append(dst, 1, byte(e.Kind), byte(e.Fate))
	dst = append(dst, e.UUID[:]...)
	dst = binary.AppendUvarint(dst, e.PushID)
	return binary.AppendVarint(dst, e.At)
}

func decodeEvent(seq uint64, b []byte) (Event, error) {
	ev := Event{Seq: seq}
	if len(b) < 3+16 || b[0] != 1 {
		return ev, errCorrupt
	}
	ev.Kind, ev.Fate = state.Kind(b[1]), state.Fate(b[2])
	copy(ev.UUID[:], b[3:19])
	b = b[19:]
	id, n := binary.Uvarint(b)
	if n <= 0 {
		return ev, errCorrupt
	}
	ev.PushID = id
	at, m := binary.Varint(b[n:])
	if m <= 0 || n+m != len(b) {
		return ev, errCorrupt
	}
	ev.At = at
	return ev, nil
}
